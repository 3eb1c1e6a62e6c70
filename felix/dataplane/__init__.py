"""felix's dataplane layer: the only place that changes the kernel."""
