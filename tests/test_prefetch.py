"""training/prefetch.py: device batches ahead of their step, with the data state of the
batches consumed (what a checkpoint must record for an exact resume)."""

import pytest

from secoustic_jax.training.prefetch import DevicePrefetch


class Counter:
    """A source whose state is the index of the next batch; batch i is {"i": i}."""

    def __init__(self, n: int = 100):
        self.next_index, self.n, self.closed = 0, n, False

    def __iter__(self):
        return self

    def __next__(self):
        if self.next_index >= self.n:
            raise StopIteration
        self.next_index += 1
        return {"i": self.next_index - 1}

    def get_state(self):
        return {"next": self.next_index}

    def set_state(self, state):
        self.next_index = state["next"]

    def close(self):
        self.closed = True


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_order_lookahead_and_consumed_state(size):
    src, put_calls = Counter(), []
    feed = DevicePrefetch(src, lambda b: put_calls.append(b["i"]) or ("on device", b["i"]), size)
    assert feed.get_state() == {"next": 0}
    for k in range(1, 8):
        assert next(feed) == ("on device", k - 1)
        assert src.next_index == k + size  # `size` batches transferred ahead
        assert feed.get_state() == {"next": k}  # ... but the state is that of k consumed
    assert put_calls == list(range(7 + size))  # each batch transferred once, in order


def test_resume_from_its_state_gives_the_same_batches():
    a = DevicePrefetch(Counter(), lambda b: b["i"], 2)
    first = [next(a) for _ in range(5)]
    state = a.get_state()
    b = DevicePrefetch(Counter(), lambda b: b["i"], 2)
    b.set_state(state)
    assert first + [next(b) for _ in range(5)] == list(range(10))
    a.set_state({"next": 1})  # a set_state drops what was queued
    assert next(a) == 1 and a.get_state() == {"next": 2}


def test_end_of_source_serves_what_was_queued_then_stops():
    feed = DevicePrefetch(Counter(n=3), lambda b: b["i"], 2)
    assert [next(feed) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(feed)


def test_close_reaches_the_source_and_bad_size_is_refused():
    src = Counter()
    DevicePrefetch(src, lambda b: b, 1).close()
    assert src.closed
    with pytest.raises(ValueError, match="size must be >= 0"):
        DevicePrefetch(Counter(), lambda b: b, -1)
