"""Pages served to browsers."""
