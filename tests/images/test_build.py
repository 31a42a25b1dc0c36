"""images/build.py's pure parts: what makes a rebuild install the checkout's pgquartz."""

from __future__ import annotations

import pathlib

from tests.support.images import build


def test_the_wheels_digest_follows_every_wheels_name_and_content(tmp_path: pathlib.Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pgquartz-0.1.0-py3-none-any.whl").write_bytes(b"first build")
    (wheels / "kopf-1.45.2-py3-none-any.whl").write_bytes(b"kopf")
    (wheels / "notes.txt").write_text("not a wheel")
    first = build.digest(wheels)
    assert build.digest(wheels) == first
    (wheels / "notes.txt").write_text("still not a wheel")
    assert build.digest(wheels) == first
    (wheels / "pgquartz-0.1.0-py3-none-any.whl").write_bytes(b"second build, same version")
    second = build.digest(wheels)
    assert second != first
    (wheels / "kopf-1.45.2-py3-none-any.whl").rename(wheels / "kopf-1.46.0-py3-none-any.whl")
    assert build.digest(wheels) not in (first, second)
