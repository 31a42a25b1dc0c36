"""The cyclic garbage collector kept out of start-up, and away from what start-up made.

Before its first command a run imports a few hundred modules and turns the job
file into its model: tens of thousands of objects (a 3000-command file alone
makes some 15 000 YAML nodes and as many values), nearly all of which live as
long as the process. The collector, triggered every 700 new objects, would walk
them again and again, up to full collections of everything made so far: about
a tenth of loading a big job file here, for nothing found.

So the ``pgquartz`` command (:func:`pause`, first thing) starts without the
collector, and the run (:func:`resume`, just before its event loop starts)
freezes what exists then (moved to the permanent generation, which collections
never walk) and turns the collector on again for what the run itself makes:
events, results, tasks. What start-up made and dropped in cycles, if anything,
stays: a few objects, once. In-process callers of ``main`` (tests, embedding)
never paused the collector and are left as they are.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off for start-up (the command's entry point only)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Start-up is over: freeze what it made, and collect again from here on, if :func:`pause` stopped it."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
