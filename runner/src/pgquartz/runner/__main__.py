"""Allows ``python -m pgquartz.runner``, the same as the ``pgquartz`` command."""

from pgquartz.runner.cli import main

main.run()
