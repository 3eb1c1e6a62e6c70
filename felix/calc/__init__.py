"""felix's calculation layer: datastore state in, desired dataplane state out. No I/O."""
