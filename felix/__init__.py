"""felix: the per-host dataplane agent (issue 4 builds it on the datastore layer)."""
