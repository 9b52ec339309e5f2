"""Local mode: the `loraplane` command (run, serve, chat, list, eval, demo) on one machine, no cluster."""
