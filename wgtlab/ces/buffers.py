"""Buffers CES writes segments into: results filled once, in place, and a scratch per thread.

Large fresh memory is slow to touch the first time, so each result is written exactly once.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from typing import Any

# Whether OutputBuffer builds its ``bytes`` in place: CPython's C API allows it (through
# ctypes); elsewhere a bytearray is filled and copied once.
IN_PLACE = sys.implementation.name == "cpython"

_scratch = threading.local()  # per-thread buffer for decrypted segments


class OutputBuffer:
    """A ``bytes`` of ``size`` to fill through ``view`` (any threads, disjoint slices), then
    ``take()`` it. Nobody else sees the bytes until then.

    In place, this is the C API's way to build bytes (``PyBytes_FromStringAndSize(NULL, n)``:
    the contents are uninitialised until the creator fills them), so the result is written
    once, with no copy; that saves a pass costing as much as decompressing (or sealing) it.
    Otherwise (not CPython, or ``in_place=False``) a ``bytearray`` is filled and copied once.
    """

    __slots__ = ("_data", "view")

    def __init__(self, size: int, *, in_place: bool | None = None) -> None:
        if in_place is None:
            in_place = IN_PLACE
        self._data: bytes | bytearray
        if not in_place:
            self._data = bytearray(size)
            self.view = memoryview(self._data)
            return
        self._data, self.view = _bytes_in_place(size)

    def take(self) -> bytes:
        """The filled bytes. Releases ``view``: every write into it must be done."""
        self.view.release()
        return self._data if isinstance(self._data, bytes) else bytes(self._data)


def _bytes_in_place(size: int) -> tuple[bytes, memoryview]:
    """A new, uninitialised ``bytes`` of ``size`` and a writable view of its contents."""
    from_string_and_size, as_string = _c_api()
    data = from_string_and_size(None, size)
    array = (ctypes.c_char * size).from_address(as_string(data))
    # The memory belongs to the bytes: the array (and so every view of it) keeps them alive.
    array._owner = data  # type: ignore[attr-defined]
    return data, memoryview(array).cast("B")


@functools.cache
def _c_api() -> tuple[Any, Any]:
    # Declared on first use, so importing this module on another Python never touches the C API.
    if sys.implementation.name != "cpython":
        raise RuntimeError("bytes cannot be built in place on this Python; use in_place=False")
    from_string_and_size = ctypes.pythonapi.PyBytes_FromStringAndSize
    from_string_and_size.restype = ctypes.py_object
    from_string_and_size.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
    as_string = ctypes.pythonapi.PyBytes_AsString
    as_string.restype = ctypes.c_void_p
    as_string.argtypes = (ctypes.py_object,)
    return from_string_and_size, as_string


def scratch(size: int) -> memoryview:
    """``size`` bytes of this thread's reusable buffer: valid until the thread asks again.

    Reused because fresh memory is slow to touch; at least 1 MiB, grown as segments need.
    """
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _scratch.buffer = bytearray(max(size, 1 << 20))
    return memoryview(buffer)[:size]


_reused = threading.local()  # per-thread bytes a segment is sealed into before erasure coding


def reusable_bytes(size: int) -> tuple[bytes, memoryview]:
    """A ``bytes`` of ``size`` this thread may fill through the view and hand to a function
    that only reads it while called (pyeclib's encode takes only ``bytes``, and copies).

    The same object is handed out again for the same size once nobody else holds it, so a
    hot loop of equal segments touches fresh memory once, not once per segment. The caller
    must not keep the bytes, nor let them escape, past its next call here.
    """
    cached = getattr(_reused, "pair", None)
    # References when free: the thread-local tuple, the view's array owner, getrefcount's own.
    if cached is not None and len(cached[0]) == size and sys.getrefcount(cached[0]) <= 3:
        return cached
    _reused.pair = None  # held elsewhere, or another size: let it go
    pair: tuple[bytes, memoryview] = _bytes_in_place(size)  # CPython only (see IN_PLACE)
    _reused.pair = pair
    return pair
