"""The shell around the core: watch, read, apply, the loop, notify, metrics."""
