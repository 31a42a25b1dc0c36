from hypothesis import given
from hypothesis import strategies as st

from pgquartz.runner.executors.capture import BoundedCapture, Limits


def test_small_output_is_kept_whole() -> None:
    capture = BoundedCapture(Limits(head=100, tail=100))
    capture.feed(b"hello\n")
    capture.feed(b"world\n")
    result = capture.result()
    assert result.text == "hello\nworld\n"
    assert result.total_bytes == 12 and not result.truncated


def test_large_output_keeps_head_and_tail_and_counts_everything() -> None:
    capture = BoundedCapture(Limits(head=6, tail=6))
    for index in range(1000):
        capture.feed(f"line {index:04d}\n".encode())
    result = capture.result()
    assert result.total_bytes == 10 * 1000
    assert result.dropped_bytes == 10 * 1000 - 12
    assert result.text.startswith("line 0")
    assert result.text.endswith("0999\n")
    assert f"[... {result.dropped_bytes} bytes not kept ...]" in result.text


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    capture = BoundedCapture()
    capture.feed(b"\xff\xfeok\n")
    assert capture.result().text.endswith("ok\n")


@given(st.lists(st.binary(max_size=50), max_size=40), st.integers(0, 30), st.integers(0, 30))
def test_head_and_tail_are_exactly_the_streams_ends(chunks: list[bytes], head: int, tail: int) -> None:
    capture = BoundedCapture(Limits(head=head, tail=tail))
    for chunk in chunks:
        capture.feed(chunk)
    stream = b"".join(chunks)
    assert capture.total_bytes == len(stream)
    assert bytes(capture._head) == stream[:head]
    if len(stream) > head:
        rest = stream[head:]
        assert bytes(capture._tail) == (rest[-tail:] if tail else b"")
