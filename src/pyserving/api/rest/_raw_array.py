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
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import orjson
import simdjson

__all__ = ["RawArray", "try_parse", "gc_paused"]

_KEY = re.compile(rb'"(instances|inputs)"[ \t\n\r]*:[ \t\n\r]*\[')
_NUMBER_CHARS = b"0123456789.eE+-"
_NUMBER_AND_WS = _NUMBER_CHARS + b" \t\n\r"
_NOT_INTEGER = re.compile(rb"[.eE]")
_SENTINEL_TEXT = "\x00pyserving-raw-array-" + secrets.token_hex(16)
_SENTINEL = orjson.dumps(_SENTINEL_TEXT)
_MAX_RANK = 32
_WS = rb"[ \t\n\r]*"
# An array text over _SPLIT_BYTES is parsed in pieces of about _PIECE bytes, cut between
# its top-level elements: each piece is checked and parsed while it is in the CPU's cache,
# and a parser never holds more than a piece (a whole 80 MB array took 0.26 s with a warm
# parser, ~1.5 s with a new one, which then held ~440 MB; in pieces 0.19 s, ~3 MB).
_SPLIT_BYTES = 1 << 20
_PIECE = 1 << 19
# simdjson parsers are reused: a parser keeps the buffers of the largest document it parsed
# (~5.5x its size), and a new one pays their page faults. Only parsers that stayed small
# are kept.
_POOL_SIZE = 2
_POOLED_BYTES = 4 << 20
_pool: list[Any] = []
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
    """A validated numeric JSON array kept as numpy data: its numbers in document order, in
    one or more flat int64/float64 parts (the pieces it was parsed in), and its shape.

    `materialize()` returns the nested-list value the generic parser would have produced
    (needed only for error messages and non-numeric target dtypes)."""

    __slots__ = ("_body", "_start", "_end", "shape", "_parts", "_flat", "_value")

    def __init__(self, body: bytes, start: int, end: int, shape: tuple[int, ...],
                 parts: list[np.ndarray]):
        self._body = body
        self._start = start
        self._end = end
        self.shape = shape
        self._parts = parts
        self._flat: np.ndarray | None = parts[0] if len(parts) == 1 else None
        self._value: Any = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def flat(self) -> np.ndarray:
        """All the numbers, flat: int64 when every one is a JSON integer, else float64 (as
        numpy reads the same values from lists)."""
        if self._flat is None:
            parts = self._parts
            if any(p.dtype != np.int64 for p in parts):
                parts = [p.astype(np.float64, copy=False) for p in parts]
            self._flat = np.concatenate(parts)
        return self._flat

    def as_float(self, dtype: Any) -> np.ndarray:
        """The array as floating `dtype`: `flat` cast, integers through float64 (as TF reads
        them), written part by part, so a big array never has a float64 copy made whole
        (for 10,000 images: 62 MB of fresh memory and its page faults, per request)."""
        out = np.empty(math.prod(self.shape), dtype)
        at = 0
        for part in self._parts:
            out[at:at + part.size] = part if part.dtype.kind == "f" else part.astype(np.float64)
            at += part.size
        return out.reshape(self.shape)

    def surrounding(self) -> bytes:
        """The body without the array's bytes."""
        return self._body[:self._start] + self._body[self._end:]

    def materialize(self) -> Any:
        if self._value is None:
            with gc_paused():
                self._value = orjson.loads(self._body[self._start:self._end])
        return self._value

    def __repr__(self) -> str:
        return f"RawArray(shape={self.shape}, parts={len(self._parts)})"


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


def _acquire() -> Any:
    try:
        return _pool.pop()  # (list.pop and append are atomic: no lock)
    except IndexError:
        return simdjson.Parser()


def _release(parser: Any, largest: int) -> None:
    if largest <= _POOLED_BYTES and len(_pool) < _POOL_SIZE:
        _pool.append(parser)


def _numbers(parser: Any, text: bytes | memoryview, integers: bool) -> np.ndarray | None:
    """The numbers of the JSON array `text` in document order -- int64 when every token
    is a JSON integer (`integers`: no `.`, `e` or `E` in the text), else float64, as numpy
    reads the same values from lists -- or None when simdjson refuses the text (not JSON,
    or a number it cannot represent)."""
    try:
        doc = parser.parse(text)
        try:
            buffer = doc.as_buffer(of_type="i" if integers else "d")
        finally:
            del doc  # a parser is reused only once its document is gone
    except (TypeError, ValueError, RuntimeError):  # simdjson's errors (e.g. BIGINT_ERROR)
        return None
    return np.frombuffer(buffer, dtype=np.int64 if integers else np.float64)


def _integers(text: bytes, start: int = 0, end: int | None = None) -> bool:
    return _NOT_INTEGER.search(text, start, len(text) if end is None else end) is None


def _whole(body: bytes, start: int, end: int) -> tuple[tuple[int, ...], list[np.ndarray]] | None:
    """The array checked and parsed at once (small arrays, or big ones with big elements)."""
    view = memoryview(body)[start:end]
    struct = view.tobytes().translate(None, _NUMBER_AND_WS)
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
    parser = _acquire()
    flat = _numbers(parser, view, _integers(body, start, end))
    _release(parser, len(view))
    return None if flat is None or flat.size != math.prod(dims) else (dims, [flat])


def _row_skeleton(body: bytes, start: int) -> bytes | None:
    """The skeleton of the first element of the array at `start` (b"" for a number), if
    it ends within the first _SPLIT_BYTES bytes."""
    struct = body[start:start + _SPLIT_BYTES].translate(None, _NUMBER_AND_WS)
    rank = len(struct) - len(struct.lstrip(b"[")) - 1
    if rank == 0:
        return b""
    close = struct.find(b"]" * rank, rank + 1) if 0 < rank <= _MAX_RANK else -1
    return struct[1:close + rank] if close >= 0 else None


def _pieces(body: bytes, start: int, end: int) -> tuple[tuple[int, ...], list[np.ndarray]] | None:
    """A big array, in pieces of whole top-level elements. Every piece's skeleton must be
    `count` copies of the first element's (a valid one) joined by commas, and simdjson must
    read `count` elements' worth of numbers from it; pieces are cut after a run of `rank`
    closing brackets and a comma, so together they spell exactly the array's text."""
    row = _row_skeleton(body, start)
    if row is None:  # elements as big as the array may be: nothing to gain
        return _whole(body, start, end)
    row_dims: tuple[int, ...] = ()
    if row:
        found = _shape_of(row)
        if found is None or _skeleton(found) != row:
            return None
        row_dims = tuple(found)
    rank = len(row_dims)
    row_size = math.prod(row_dims)
    cut = re.compile(b"".join([rb"\]", (_WS + rb"\]") * (rank - 1), _WS, b","]) if rank else b",")
    parts: list[np.ndarray] = []
    rows = largest = 0
    expected: dict[int, bytes] = {}
    parser = _acquire()
    view = memoryview(body)
    try:
        a, last = start + 1, end - 1  # inside the outer brackets
        while a < last:
            m = cut.search(body, a + _PIECE, last) if a + _PIECE < last else None
            if m is None:
                b = last
            else:
                b = body.rindex(b"]", a, m.end()) + 1 if rank else m.start()
            text = b"".join((b"[", view[a:b], b"]"))  # one copy
            largest = max(largest, len(text))
            struct = text.translate(None, _NUMBER_AND_WS)
            count, rem = divmod(len(struct) - 1, len(row) + 1)
            if rem or count < 1:
                return None
            want = expected.get(count)
            if want is None:
                want = expected[count] = b"[" + b",".join([row] * count) + b"]"
            if struct != want:
                return None
            numbers = _numbers(parser, text, _integers(text))
            if numbers is None or numbers.size != count * row_size:
                return None
            parts.append(numbers)
            rows += count
            a = m.end() if m is not None else last
    finally:
        _release(parser, largest)
    return (rows, *row_dims), parts


def try_parse(body: bytes) -> dict[str, Any] | None:
    """The top-level object with its `instances`/`inputs` array replaced by a `RawArray`,
    or None (then the generic parser decides, with its own errors).

    The candidate array runs from the key's `[` to the last `]` before the next `"` (or
    the end): every byte in it must be a number byte, whitespace, `[`, `]` or `,`, and with
    number bytes and whitespace deleted it must equal the canonical skeleton of one
    rectangular shape (read off its first path; for a big array, piece by piece, see
    `_pieces`). simdjson then validates the slice as JSON
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
    parsed = _whole(body, start, end) if end - start <= _SPLIT_BYTES else _pieces(body, start, end)
    if parsed is None:
        return None
    dims, parts = parsed
    try:
        doc = orjson.loads(body[:start] + _SENTINEL + body[end:])
    except orjson.JSONDecodeError:
        return None
    key = m.group(1).decode()
    if not isinstance(doc, dict) or doc.get(key) != _SENTINEL_TEXT:
        return None
    doc[key] = RawArray(body, start, end, dims, parts)
    return doc
