"""kvgroomd: a daemon that grooms ds4-server's disk KV-cache directory.

The flow, one module each: watch (inotify events) -> read (parse a file with
snapshot) -> index -> supersede / evict with scoring (pure decisions) ->
unlink (the only deleter) -> log. `groom` ties them together for one
directory and `daemon` runs it under systemd.
"""
