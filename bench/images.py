"""Image benchmark: the images' sizes, and ``podman run`` of the runner image to a finished trivial job
against ``podman run`` of the base image running ``true``, in the same run (container start to exit).

The base is the one the images are built on (tests/support/images.py): the difference is pgquartz's
own start-up (Python, imports, loading and planning the job, tini) inside a container.
"""

from __future__ import annotations

import pathlib
import statistics
import time

from tests.support import images

POD = ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "65532:65532"]


def _seconds(*args: str) -> float:
    start = time.perf_counter()
    images.podman(*args)
    return time.perf_counter() - start


def bench(work: pathlib.Path, runs: int) -> None:
    if images.MISSING:
        print(f"images     skipped: {images.WHY_NOT}")
        return
    built = images.built()
    sizes = {}
    for name, image in [*built.items(), ("base", images.build.LOCAL_BASE)]:
        sizes[name] = int(images.podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    job = work / "job"
    job.mkdir()
    (job / "trivial.yml").write_text("steps: {a: {commands: [{inline: 'true'}]}}\n")
    mount = ["-v", f"{job}:/job:ro"]
    runner, base = [], []
    for _ in range(runs):  # interleaved, so both see the same machine
        base.append(_seconds(*POD, images.build.LOCAL_BASE, "true"))
        runner.append(_seconds(*POD, *mount, built["runner"], "run", "/job/trivial.yml"))
    ratio = statistics.median(runner) / statistics.median(base)
    print(
        "images     sizes: "
        + ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in sizes.items())
        + f"\n           podman run of the runner to a finished trivial job {statistics.median(runner):.2f}s"
        f" (min {min(runner):.2f}s) vs the base running true {statistics.median(base):.2f}s"
        f" (min {min(base):.2f}s) → {ratio:.2f}×"
    )
