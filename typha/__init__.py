"""typha: datastore fan-out cache for large clusters (a later issue builds it)."""
