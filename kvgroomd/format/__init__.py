"""The ds4 snapshot format: names, headers, prefix keys. Pure."""
