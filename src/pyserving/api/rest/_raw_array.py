"""Fast path for a body whose `"instances"` or `"inputs"` value is a rectangular array
of plain JSON numbers (images, embeddings...), the common case of every size.

Building Python floats inside nested lists is what makes such bodies slow (orjson +
np.asarray: ~5 s for 10,000 MNIST images, mostly cyclic-GC work on the lists; 150 us for
one). Here the array's bytes are checked with two `bytes.translate` passes and its numbers
are parsed by simdjson straight into a flat buffer (`try_parse` says how the checks add up
to "a valid JSON array of numbers of this shape"), so the result equals what the generic
path produces. Anything else (strings, NaN, ragged, other layouts, numbers simdjson cannot
represent) returns None and the caller takes the generic path, with its own errors.
"""

from __future__ import annotations

import gc
import math
import re
import secrets
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import orjson
import simdjson

__all__ = ["RawArray", "try_parse", "gc_paused"]

_KEY = re.compile(rb'"(instances|inputs)"[ \t\n\r]*:[ \t\n\r]*\[')
_NUMBER_CHARS = b"0123456789.eE+-"
_NUMBER_AND_WS = _NUMBER_CHARS + b" \t\n\r"
_SENTINEL_TEXT = "\x00pyserving-raw-array-" + secrets.token_hex(16)
_SENTINEL = orjson.dumps(_SENTINEL_TEXT)
_CHUNK = 1 << 18
_MAX_RANK = 32
# simdjson parsers are reused: a parser keeps the buffers of the largest document it parsed
# (~5.5x its size: 440 MB after an 80 MB body), and a reused one skips their page faults
# (~0.2 s at 80 MB). Small parsers are kept; one big parser is kept only while big bodies
# keep coming (dropped once a small parse sees it unused for _BIG_IDLE_SECONDS).
_POOL_SIZE = 2
_SMALL_BODY = 1 << 20
_BIG_IDLE_SECONDS = 30.0
_pool: list[Any] = []
_big: list[tuple[Any, float]] = []
_pool_lock = threading.Lock()
# Skeletons of recently seen small arrays -> their shape: clients send the same shape over
# and over, and a dict lookup is cheaper than reading the shape off and re-checking it.
_KNOWN_SHAPES = 256
_KNOWN_SHAPE_BYTES = 1 << 16
_known_shapes: dict[bytes, tuple[int, ...]] = {}

_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while millions of containers are created (it would otherwise
    re-scan them over and over: 4.4 s instead of 0.75 s for 170 MB of nested lists)."""
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


class RawArray:
    """A validated numeric JSON array kept as numpy data (flat float64/int64 + shape).

    `materialize()` returns the nested-list value the generic parser would have produced
    (needed only for error messages and non-numeric target dtypes)."""

    __slots__ = ("_body", "_start", "_end", "shape", "flat", "_value")

    def __init__(self, body: bytes, start: int, end: int, shape: tuple[int, ...], flat: np.ndarray):
        self._body = body
        self._start = start
        self._end = end
        self.shape = shape
        self.flat = flat
        self._value: Any = None

    def __len__(self) -> int:
        return self.shape[0]

    def surrounding(self) -> bytes:
        """The body without the array's bytes."""
        return self._body[:self._start] + self._body[self._end:]

    def materialize(self) -> Any:
        if self._value is None:
            with gc_paused():
                self._value = orjson.loads(self._body[self._start:self._end])
        return self._value

    def __repr__(self) -> str:
        return f"RawArray(shape={self.shape}, dtype={self.flat.dtype})"


def _shape_of(struct: bytes) -> list[int] | None:
    """Read the shape off the first path of the bracket/comma skeleton."""
    k = len(struct) - len(struct.lstrip(b"["))
    if k == 0 or k > _MAX_RANK:
        return None
    j = struct.find(b"]", k - 1)
    if j < 0 or struct[k:j].strip(b","):
        return None
    dims = [j - k + 1]
    block = j - k + 2  # length of one innermost "[,,]"
    for level in range(k - 2, -1, -1):
        e = struct.find(b"]" * (k - level), level)
        if e < 0:
            return None
        total = e + (k - level) - level
        d, rem = divmod(total - 1, block + 1)
        if rem or d < 1:
            return None
        dims.insert(0, d)
        block = total
    return dims


def _skeleton(dims: list[int]) -> bytes:
    s = b"[" + b"," * (dims[-1] - 1) + b"]"
    for d in reversed(dims[:-1]):
        s = b"[" + b",".join([s] * d) + b"]"
    return s


def _acquire(size: int) -> Any:
    with _pool_lock:
        if size > _SMALL_BODY:
            if _big:
                return _big.pop()[0]
        elif _pool:
            return _pool.pop()
    return simdjson.Parser()


def _release(parser: Any, size: int) -> None:
    now = time.monotonic()
    with _pool_lock:
        if size > _SMALL_BODY:
            if not _big:
                _big.append((parser, now))
            return
        if len(_pool) < _POOL_SIZE:
            _pool.append(parser)
        if not (_big and now - _big[0][1] > _BIG_IDLE_SECONDS):
            return
        idle = [_big.pop()[0]]
    # Unmapping hundreds of MB takes milliseconds: the last reference goes in another thread,
    # not on the caller's (maybe the event loop's) time.
    threading.Thread(target=idle.clear, daemon=True, name="pyserving-parser-drop").start()


def _numbers(view: memoryview, integers: bool) -> np.ndarray | None:
    """The array's numbers in document order -- int64 when every token is a JSON integer,
    else float64, as numpy reads the same values from lists -- or None when simdjson
    refuses the text (not JSON, or a number it cannot represent)."""
    parser = _acquire(len(view))
    try:
        doc = parser.parse(view)
        try:
            buffer = doc.as_buffer(of_type="i" if integers else "d")
        finally:
            del doc  # a parser is reused only once its document is gone
    except (TypeError, ValueError, RuntimeError):  # simdjson's errors (e.g. BIGINT_ERROR)
        buffer = None
    _release(parser, len(view))
    return None if buffer is None else np.frombuffer(buffer, dtype=np.int64 if integers else np.float64)


def try_parse(body: bytes) -> dict[str, Any] | None:
    """The top-level object with its `instances`/`inputs` array replaced by a `RawArray`,
    or None (then the generic parser decides, with its own errors).

    The candidate array runs from the key's `[` to the last `]` before the next `"` (or
    the end): every byte in it must be a number byte, whitespace, `[`, `]` or `,`, and with
    number bytes and whitespace deleted it must equal the canonical skeleton of one
    rectangular shape (read off its first path). simdjson then validates the slice as JSON
    and yields its numbers, whose count must be the shape's size (an empty innermost `[]`
    has the same skeleton as a one-number one); orjson validates the rest of the document
    with the array replaced by a sentinel, which must come back as the key's value.
    Together these hold exactly when the body is a JSON object whose key holds a
    rectangular array of numbers of that shape."""
    m = _KEY.search(body)
    if m is None:
        return None
    start = m.end() - 1
    quote = body.find(b'"', start)
    end = body.rfind(b"]", start, quote if quote >= 0 else len(body)) + 1
    if end <= start:
        return None
    view = memoryview(body)[start:end]
    struct = view.tobytes().translate(None, _NUMBER_AND_WS) if len(view) < _CHUNK else b"".join(
        view[i:i + _CHUNK].tobytes().translate(None, _NUMBER_AND_WS) for i in range(0, len(view), _CHUNK))
    known = len(struct) <= _KNOWN_SHAPE_BYTES  # (a big skeleton is not worth hashing)
    dims = _known_shapes.get(struct) if known else None
    if dims is None:
        found = _shape_of(struct)
        if found is None or _skeleton(found) != struct:
            return None
        dims = tuple(found)
        if known:
            if len(_known_shapes) >= _KNOWN_SHAPES:
                _known_shapes.clear()
            _known_shapes[struct] = dims
    del struct
    integers = body.find(b".", start, end) < 0 and body.find(b"e", start, end) < 0 \
        and body.find(b"E", start, end) < 0
    flat = _numbers(view, integers)
    if flat is None or flat.size != math.prod(dims):
        return None
    try:
        doc = orjson.loads(body[:start] + _SENTINEL + body[end:])
    except orjson.JSONDecodeError:
        return None
    key = m.group(1).decode()
    if not isinstance(doc, dict) or doc.get(key) != _SENTINEL_TEXT:
        return None
    doc[key] = RawArray(body, start, end, dims, flat)
    return doc
