"""Access control: identities, groups and per-method ACLs kept in tdb (see model, files, store)."""
