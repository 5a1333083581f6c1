"""The CES thread pool: segments mapped in parallel, results in order, a bounded window in flight.

zstd, the AEAD and BLAKE3 release the GIL, so threads keep every core busy; one pool per process.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="wgtlab-ces")
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child inherits the pool object but none of its threads: start a fresh one.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _window() -> int:
    # Two segments per core in flight: enough to keep every core busy while the caller's
    # thread reads and writes, few enough that memory stays a handful of segments.
    return 2 * (os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on the CES pool, results in order, at most ``window`` in flight.

    ``items`` is consumed lazily on the caller's thread (reading input happens there).
    """
    pool, limit = _executor(), window or _window()
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error or an early close: drop what has not started, and wait for what has, so
        # no segment is still being written into the caller's buffers after we return.
        for future in pending:
            future.cancel()
        wait(pending)
