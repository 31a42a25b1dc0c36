"""Allows ``python -m pgquartz.operator``, the same as the ``pgquartz-operator`` command."""

from pgquartz.operator import main

raise SystemExit(main.main())
