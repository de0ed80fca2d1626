"""Batches placed on the devices ahead of the step that consumes them.

`DevicePrefetch(source, put, size)` keeps `size` batches already transferred (`put`: host
batch -> global device arrays, i.e. `sharding.global_batch`), so the host-to-device copy
of batch n+1 overlaps step n on an accelerator instead of waiting behind its dispatch.

The data state it reports is that of the batches *consumed*, not of the ones waiting in
the queue: it records the source's state before pulling each batch, so a checkpoint taken
after k steps resumes at batch k + 1 whatever the queue held (resume exactness).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator


class DevicePrefetch:
    """Iterator over device batches of `source`, `size` ahead (0: none, put on demand).

    source: an iterator with get_state() / set_state(state) (and optionally close()), as
    the training sources of training/data.py.
    """

    def __init__(self, source: Iterator, put: Callable[[Any], Any], size: int = 2):
        if size < 0:
            raise ValueError(f"DevicePrefetch: size must be >= 0, got {size}")
        self.source, self.put, self.size = source, put, size
        self._queue: collections.deque = collections.deque()  # (state before, device batch)

    def __iter__(self):
        return self

    def _pull(self) -> None:
        before = self.source.get_state()
        self._queue.append((before, self.put(next(self.source))))

    def __next__(self):
        if not self._queue:
            self._pull()
        # Top up to `size` waiting batches behind the one handed out. A source that ends
        # meanwhile ends the top-up; the batches already queued are still served.
        try:
            while len(self._queue) <= self.size:
                self._pull()
        except StopIteration:
            pass
        return self._queue.popleft()[1]

    def get_state(self):
        """The source's state after the last consumed batch."""
        return self._queue[0][0] if self._queue else self.source.get_state()

    def set_state(self, state) -> None:
        self._queue.clear()
        self.source.set_state(state)

    def close(self) -> None:
        self._queue.clear()
        if hasattr(self.source, "close"):
            self.source.close()
