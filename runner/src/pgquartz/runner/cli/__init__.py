"""The command line: argument parsing, and wiring loader, engine and reporters together."""
