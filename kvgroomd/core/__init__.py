"""The decision core: index, supersession, scoring, eviction. Pure."""
