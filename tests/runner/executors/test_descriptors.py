"""Which of the runner's descriptors a command could inherit, and how they are kept from it."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

from pgquartz.runner.executors import descriptors


@pytest.fixture
def held(tmp_path: pathlib.Path) -> Iterator[int]:
    """An inheritable descriptor, as a C library may leave one."""
    fd = os.open(tmp_path / "held", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(fd, True)
    yield fd
    os.close(fd)


def test_the_listing_finds_inheritable_descriptors_only(held: int, tmp_path: pathlib.Path) -> None:
    private = os.open(tmp_path / "private", os.O_CREAT | os.O_WRONLY)  # Python's: close-on-exec
    try:
        found = descriptors.inheritable_descriptors()
    finally:
        os.close(private)
    assert found is not None and held in found and private not in found
    assert all(fd > 2 for fd in found)


def test_the_first_commands_are_given_the_listing(held: int) -> None:
    inheritance = descriptors.Inheritance(close_range_after=2)
    assert held in (inheritance.to_close() or [])
    assert held in (inheritance.to_close() or [])
    assert os.get_inheritable(held)  # the runner's own descriptors are left as they are


def test_later_commands_have_every_descriptor_marked_close_on_exec_in_one_call(held: int) -> None:
    if descriptors.close_range_marker() is None:
        pytest.skip("close_range(2) with CLOSE_RANGE_CLOEXEC is not available here (Linux < 5.11?)")
    os.set_inheritable(held, True)  # the probe above marked it already
    standard = [os.get_inheritable(fd) for fd in (0, 1, 2)]
    inheritance = descriptors.Inheritance(close_range_after=1)
    assert held in (inheritance.to_close() or [])
    assert inheritance.to_close() == []
    assert not os.get_inheritable(held)
    assert [os.get_inheritable(fd) for fd in (0, 1, 2)] == standard  # what a command inherits


def test_without_close_range_later_commands_keep_the_listing(
    held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(descriptors, "close_range_marker", lambda: None)
    inheritance = descriptors.Inheritance(close_range_after=0)
    assert held in (inheritance.to_close() or [])
    assert os.get_inheritable(held)
