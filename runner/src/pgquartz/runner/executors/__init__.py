"""Executors: I/O at the edge. One module per command type, independent of each other."""
