"""``pgquartz-operator``'s entry point: a clear word when the operator's dependencies are missing.

``pip install pgquartz`` installs the runner and both commands; the operator's
own dependencies (kopf, pydantic, prometheus-client) come with the
``operator`` extra. Without them the command says what to install and exits 2,
instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import sys

NEEDED = ("kopf", "pydantic", "prometheus_client")


def missing() -> list[str]:
    absent = []
    for module in NEEDED:
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(module)
    return absent


def main() -> int:
    absent = missing()
    if absent:
        print(
            f"pgquartz-operator: {', '.join(absent)} not installed: the operator needs"
            " pip install 'pgquartz[operator]'",
            file=sys.stderr,
        )
        return 2
    from pgquartz.operator import main as operator_main

    return operator_main.main()


if __name__ == "__main__":
    raise SystemExit(main())
