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

import bisect
import gc
import itertools
import math
import re
import secrets
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import orjson
import simdjson

__all__ = ["Chunks", "RawArray", "try_parse", "gc_paused"]

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
_CARRY_MAX = 4 << 20
# A body that arrived in chunks (`Chunks`) is searched for its key in its first _HEAD bytes.
_HEAD = 1 << 16
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


class Chunks:
    """A body as the chunks it arrived in, read as one byte string. A big body is never
    joined on the fast path: joining 79 MB takes ~45 ms, most of it faulting in fresh pages,
    while chunks of ~1 MiB reuse memory the allocator already has."""

    __slots__ = ("parts", "_starts", "size")

    def __init__(self, parts: Sequence[bytes]):
        self.parts = [p for p in parts if p]
        self._starts = list(itertools.accumulate((len(p) for p in self.parts), initial=0))
        self.size = self._starts[-1]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> bytes:
        a, b, _ = key.indices(self.size)
        return b"".join(self.views(a, b))

    def _index(self, at: int) -> int:
        """The index of the part holding byte `at`."""
        return bisect.bisect_right(self._starts, at) - 1

    def views(self, a: int, b: int) -> Iterator[memoryview]:
        """Bytes a..b, part by part, without copying."""
        b = min(b, self.size)
        if a >= b:
            return
        i = self._index(a)
        while a < b:
            base = self._starts[i]
            part = self.parts[i]
            stop = min(b - base, len(part))
            yield memoryview(part)[a - base:stop]
            a = base + stop
            i += 1

    def find(self, byte: bytes, a: int) -> int:
        """The first `byte` at or after `a`, or -1."""
        i = self._index(a) if a < self.size else len(self.parts)
        for i in range(i, len(self.parts)):
            base = self._starts[i]
            at = self.parts[i].find(byte, max(a - base, 0))
            if at >= 0:
                return base + at
        return -1

    def rfind(self, byte: bytes, a: int, b: int) -> int:
        """The last `byte` in a..b, or -1."""
        b = min(b, self.size)
        if a >= b:
            return -1
        for i in range(self._index(b - 1), self._index(a) - 1, -1):
            base = self._starts[i]
            at = self.parts[i].rfind(byte, max(a - base, 0), b - base)
            if at >= 0:
                return base + at
        return -1


class RawArray:
    """A validated numeric JSON array kept as numpy data: its numbers in document order, in
    one or more flat int64/float64 parts (the pieces it was parsed in), and its shape.

    `materialize()` returns the nested-list value the generic parser would have produced
    (needed only for error messages and non-numeric target dtypes)."""

    __slots__ = ("_body", "_start", "_end", "shape", "_parts", "_flat", "_value")

    def __init__(self, body: bytes | Chunks, start: int, end: int, shape: tuple[int, ...],
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


def _integers(text: bytes | memoryview) -> bool:
    return _NOT_INTEGER.search(text) is None


def _whole(view: bytes | memoryview) -> tuple[tuple[int, ...], list[np.ndarray]] | None:
    """The array `view` checked and parsed at once (small arrays, or big ones with big
    elements)."""
    struct = bytes(view).translate(None, _NUMBER_AND_WS)
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
    flat = _numbers(parser, view, _integers(view))
    _release(parser, len(view))
    return None if flat is None or flat.size != math.prod(dims) else (dims, [flat])


def _row_skeleton(head: bytes) -> bytes | None:
    """The skeleton of the first element of the array `head` starts (b"" for a number),
    if it ends within `head`."""
    struct = head.translate(None, _NUMBER_AND_WS)
    rank = len(struct) - len(struct.lstrip(b"[")) - 1
    if rank == 0:
        return b""
    close = struct.find(b"]" * rank, rank + 1) if 0 < rank <= _MAX_RANK else -1
    return struct[1:close + rank] if close >= 0 else None


def _pieces(body: bytes | Chunks, start: int, end: int) -> tuple[tuple[int, ...], list[np.ndarray]] | None:
    """A big array, in pieces of whole top-level elements. Every piece's skeleton must be
    `count` copies of the first element's (a valid one) joined by commas, and simdjson must
    read `count` elements' worth of numbers from it; pieces are cut after a run of `rank`
    closing brackets and a comma, none is empty, and the last one ends at the array's
    closing bracket, so together they spell exactly the array's text."""
    row = _row_skeleton(body[start:min(end, start + _SPLIT_BYTES)])
    if row is None:  # elements as big as the array may be: nothing to gain
        return _whole(body[start:end])
    row_dims: tuple[int, ...] = ()
    if row:
        found = _shape_of(row)
        if found is None or _skeleton(found) != row:
            return None
        row_dims = tuple(found)
    rank = len(row_dims)
    row_size = math.prod(row_dims)
    cut = re.compile(b"".join([rb"(\]", (_WS + rb"\]") * (rank - 1), b")", _WS, b","]) if rank else b"(),")
    parts: list[np.ndarray] = []
    expected: dict[int, bytes] = {}
    parser = _acquire()
    largest = 0

    def piece(view: bytes | memoryview) -> bool:
        nonlocal largest
        text = b"".join((b"[", view, b"]"))  # one copy
        largest = max(largest, len(text))
        struct = text.translate(None, _NUMBER_AND_WS)
        count, rem = divmod(len(struct) - 1, len(row) + 1)
        if rem or count < 1:
            return False
        want = expected.get(count)
        if want is None:
            want = expected[count] = b"[" + b",".join([row] * count) + b"]"
        if struct != want:
            return False
        numbers = _numbers(parser, text, _integers(text))
        if numbers is None or numbers.size != count * row_size:
            return False
        parts.append(numbers)
        return True

    try:
        carry: bytes | memoryview = b""
        chunks = body if isinstance(body, Chunks) else Chunks([body])
        for view in chunks.views(start + 1, end - 1):  # inside the outer brackets
            buf = b"".join((carry, view)) if carry else view
            a = 0
            while a + _PIECE < len(buf):
                m = cut.search(buf, a + _PIECE)
                if m is None:
                    break
                if not piece(buf[a:m.end(1)]):
                    return None
                a = m.end()
            carry = buf[a:]
            if len(carry) > _CARRY_MAX:  # no cut for long (elements this big are rare)
                return _whole(body[start:end])
        if not carry or not piece(carry):  # (a cut right before the end: a trailing comma)
            return None
    finally:
        _release(parser, largest)
    rows = sum(p.size for p in parts) // row_size
    return (rows, *row_dims), parts


def try_parse(body: bytes | Chunks) -> dict[str, Any] | None:
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
    rectangular array of numbers of that shape.

    A body in `Chunks` is never joined here; its key must be in its first _HEAD bytes."""
    m = _KEY.search(body if isinstance(body, bytes) else body[:_HEAD])
    if m is None:
        return None
    start = m.end() - 1
    quote = body.find(b'"', start)
    end = body.rfind(b"]", start, quote if quote >= 0 else len(body)) + 1
    if end <= start:
        return None
    if end - start > _SPLIT_BYTES:
        parsed = _pieces(body, start, end)
    else:
        parsed = _whole(memoryview(body)[start:end] if isinstance(body, bytes) else body[start:end])
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
