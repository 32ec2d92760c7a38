"""The burner helper (placeholder docstring; API documented below once settled)."""
