"""A command inherits stdin, stdout and stderr, and no other descriptor of the runner.

Python opens its own descriptors close-on-exec, but a C library may leave one
inheritable, and ``os.posix_spawn`` (before Python 3.13) has no ``close_fds``.
Two ways to keep such descriptors out of a command, both ending in the same
state:

- list ``/proc/self/fd`` and close each inheritable descriptor in the child
  (file actions of the spawn): about 30 µs per command with a few dozen open;
- one ``close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`` call (Linux 5.11+) marking
  every descriptor above 2 close-on-exec in the runner itself: about 1 µs, but
  it needs ctypes, whose import costs about 2 ms.

:class:`Inheritance` lists for the first commands of a run and switches to
``close_range`` once a run has started :data:`CLOSE_RANGE_AFTER` of them (a job
of many short commands, where the listing is a tenth of the runner's own time
per command); where the call is refused (an older kernel, a seccomp policy, an
architecture whose syscall number is not known here) it keeps listing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

CLOSE_RANGE_AFTER = 32
"""Commands started with a listing of /proc/self/fd before close_range(2) takes over."""

_CLOSE_RANGE = {"x86_64": 436, "aarch64": 436}
"""close_range's syscall number where it is known (one number on every architecture since Linux 5.1,
but a wrong number is a different call: only these are used)."""
_CLOSE_RANGE_CLOEXEC = 4


def inheritable_descriptors() -> list[int] | None:
    """The descriptors above 2 an exec would pass on, or None without /proc."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    found = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the descriptor that listed the directory, closed since
                continue
    return found


def close_range_marker() -> Callable[[], bool] | None:
    """A function marking every descriptor above 2 close-on-exec (True when it did), if this system
    lets one call do it; None if not."""
    number = _CLOSE_RANGE.get(os.uname().machine) if hasattr(os, "uname") else None
    if number is None:
        return None
    import ctypes  # only here: its import is what the listing saves only on long runs

    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = (ctypes.c_long, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint)

    def mark() -> bool:
        return bool(syscall(number, 3, 0xFFFFFFFF, _CLOSE_RANGE_CLOEXEC) == 0)

    return mark if mark() else None


class Inheritance:
    """What to close in the next command's child so that it inherits only 0, 1 and 2 (one per process)."""

    def __init__(self, close_range_after: int = CLOSE_RANGE_AFTER) -> None:
        self._started = 0
        self._close_range_after = close_range_after
        self._mark: Callable[[], bool] | None = None
        self._tried = False

    def to_close(self) -> list[int] | None:
        """The descriptors to close in the child ([] when none is inheritable), or None when that
        cannot be known (no /proc): then the caller must start the child in a way that closes them."""
        self._started += 1
        if self._started > self._close_range_after:
            if not self._tried:
                self._tried = True
                self._mark = close_range_marker()
            if self._mark is not None and self._mark():
                return []
        return inheritable_descriptors()
