"""The real Helm engine (helm-sdkpy, Python >= 3.12) as a subprocess the tests drive.

The test suite runs on Python 3.11; helm-sdkpy needs 3.12, so it lives in its
own virtual environment (``.venv-helm``, made by ``dev.py setup``) and this
script runs there: it reads one request as JSON on stdin, runs ``install`` or
``upgrade`` against the cluster of the kubeconfig it is given, and prints the
release (its ``manifest`` is the rendered chart) or the error as JSON.
``HELM_DRIVER=memory`` keeps Helm's release records in memory: stored as
Secrets they would be protobuf, which the emulated API cannot read.
Only the standard library and helm_sdkpy may be imported here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

_CONFIGURATIONS: dict = {}


async def _run(request: dict) -> dict:
    # helm_sdkpy is installed in .venv-helm, the interpreter this script runs in, not in .venv
    from helm_sdkpy import actions  # pyright: ignore[reportMissingImports]

    where = (request["namespace"], request["kubeconfig"])
    if where not in _CONFIGURATIONS:  # one per cluster: the memory driver's releases live in it
        _CONFIGURATIONS[where] = actions.Configuration(namespace=where[0], kubeconfig=where[1])
    config = _CONFIGURATIONS[where]
    options = {"values": request.get("values") or {}, "wait": False, "timeout": 60}
    if request["action"] == "install":
        return await actions.Install(config).run(request["release"], request["chart"], **options)
    return await actions.Upgrade(config).run(request["release"], request["chart"], **options)


def main() -> int:
    os.environ["HELM_DRIVER"] = "memory"
    request = json.load(sys.stdin)
    try:
        requests = request if isinstance(request, list) else [request]
        results = [asyncio.run(_run(one)) for one in requests]
    except Exception as error:  # the engine's refusal is the answer
        json.dump({"error": f"{type(error).__name__}: {error}"}, sys.stdout)
        return 1
    json.dump(results if isinstance(request, list) else results[0], sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
