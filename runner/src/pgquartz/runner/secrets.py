"""Where a password comes from: a file (a mounted Kubernetes Secret) or an environment variable.

Shared by the PostgreSQL connections and the etcd client, so both read secrets
the same way and say the same things when one is missing. The messages name the
file or the variable, never the value.
"""

from __future__ import annotations

import os
import pathlib


class SecretUnavailable(Exception):
    """The configured file cannot be read, or the variable is not set."""


def read(*, file: str | None, env: str | None, what: str) -> str | None:
    """The secret from ``file`` (trailing newline dropped) or ``env``; None when neither is set.

    ``what`` names the setting in messages, e.g. ``"passwordFile"`` / ``"etcd passwordEnv"``.
    """
    if file is not None:
        try:
            return pathlib.Path(file).expanduser().read_text().rstrip("\r\n")
        except OSError as error:
            raise SecretUnavailable(
                f"cannot read the {what}File {file!r}: {error.strerror or error}"
            ) from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SecretUnavailable(f"the environment variable {env} ({what}Env) is not set")
        return value
    return None
