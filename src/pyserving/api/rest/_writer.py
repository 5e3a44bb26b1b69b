"""Tensor -> JSON text, laid out exactly as TF Serving's RapidJSON PrettyWriter does.

Numbers are turned into a list of tokens in bulk (one C-level pass, no Python bytecode
per element), then the brackets, separators and indentation of a whole tensor are
computed with numpy from each element's flat index and spliced in with one `str.join`.

Float rule (`WriteDecimal` in util/json_tensor.cc): `%g` (6 significant digits, absl
StrCat); if that text does not parse back (as float for DT_FLOAT, double for DT_DOUBLE)
to the same value, `%.9g` / `%.17g`; `.0` appended when the text has neither `.` nor `e`;
NaN / Infinity / -Infinity as bare tokens. Whether the 6-digit text round-trips is
decided arithmetically for the whole array (scale by a power of ten, round, scale back,
compare) -- exact because every step is a single correctly rounded IEEE operation on
exactly representable values; elements where that argument does not hold (a rounding
decision within 1e-6 of a tie, powers of ten beyond 1e22, a float32 double-rounding
midpoint) are decided by formatting and exact rational comparison, one by one.
"""

from __future__ import annotations

import base64
import struct
from fractions import Fraction
from typing import Sequence

import numpy as np

from pyserving.api.rest._rapidjson import quote

__all__ = ["float_tokens", "int_tokens", "bool_tokens", "string_tokens", "layout",
           "layout_rows", "empty_layout", "b64_token"]

_POW10 = np.array([10.0**i for i in range(23)])  # exact doubles
# Up to this many elements a tensor is written element by element in Python (a few
# microseconds) instead of with the array passes below (~40 numpy calls, ~50 us however
# small the tensor: one image's 10 class scores).
SMALL = 64
_F32 = struct.Struct("<f")
_D64 = struct.Struct("<d")
_F32_MIN_NORMAL = 1.1754943508222875e-38
_INF = float("inf")
_FMT_G, _FMT_1F, _FMT_LONG = 0, 1, 2


def _scale(a: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a * 10**k, correctly rounded where |k| <= 22 (else flagged)."""
    bad = np.abs(k) > 22
    p = _POW10[np.minimum(np.abs(k), 22)]
    with np.errstate(over="ignore", under="ignore"):
        return np.where(k >= 0, a * p, a / p), bad


def _exact_f32(text: str) -> np.float32:
    """Correctly rounded decimal -> float32 (absl::SimpleAtof), no double rounding."""
    x = Fraction(text)
    f = np.float32(float(x))
    best, best_err = f, abs(Fraction(float(f)) - x) if np.isfinite(f) else None
    for g in (np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf))):
        if not np.isfinite(g):
            continue
        err = abs(Fraction(float(g)) - x)
        if best_err is None or err < best_err or (
                err == best_err and int(g.view(np.uint32)) % 2 == 0):
            best, best_err = g, err
    return best


def _six_digits_round_trip(v: np.ndarray, double: bool) -> np.ndarray:
    """For finite non-zero float64 `v` (holding float32 values unless `double`): does
    `'%g' % v` parse back to the same float32/float64?"""
    a = np.abs(v)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log10(a)).astype(np.int64)
    q, bad = _scale(a, 5 - e)
    m = np.rint(q)
    adjust = (m >= 1e6).astype(np.int64) - (m < 1e5)
    if adjust.any():  # log10 was off by one, or the rounding carried into a new digit
        e = e + adjust
        q, bad = _scale(a, 5 - e)
        m = np.rint(q)
    frac = q - np.floor(q)
    uncertain = bad | (np.abs(frac - 0.5) < 1e-6) | (m < 1e5) | (m >= 1e6)
    d, bad2 = _scale(m, e - 5)
    uncertain |= bad2
    if double:
        ok = d == a
    else:
        a32 = a.astype(np.float32)
        with np.errstate(over="ignore"):
            f = d.astype(np.float32)
        ok = f == a32
        # d -> float32 rounds twice (decimal -> double -> float) only if d sits exactly
        # on a float32 midpoint; decide those exactly.
        f64 = f.astype(np.float64)
        up = np.nextafter(f, np.float32(np.inf)).astype(np.float64)
        dn = np.nextafter(f, np.float32(0)).astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            uncertain |= (d == (f64 + up) / 2) | (d == (f64 + dn) / 2) | ~np.isfinite(f)
    for i in np.flatnonzero(uncertain):
        x = float(v[i])
        text = "%g" % x
        ok[i] = (float(text) == x) if double else (_exact_f32(text) == np.float32(x))
    return ok


def float_tokens(values: np.ndarray, double: bool) -> list[str]:
    """WriteDecimal for every element (C order). float16/bfloat16 go as float32."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if flat.size <= SMALL:
        return [_decimal(x, double) for x in flat.tolist()]
    with np.errstate(all="ignore"):
        return _float_tokens(flat, double)


def _decimal(x: float, double: bool) -> str:
    """WriteDecimal of one value (a float32 value held as a double unless `double`)."""
    if x != x:
        return "NaN"
    if x == _INF or x == -_INF:
        return "Infinity" if x > 0 else "-Infinity"
    text = "%g" % x
    y = float(text)
    if y != x and (double or not _f32_round_trips(text, y, x)):
        text = ("%.17g" if double else "%.9g") % x
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _f32_round_trips(text: str, y: float, x: float) -> bool:
    """Does decimal `text` (parsed correctly rounded to the double `y`) round to the
    float32 `x`? Going through the double is exact unless `y` sits on a float32 midpoint
    (or below the float32 normal range, where midpoints are coarser): decided exactly."""
    bits = int.from_bytes(_D64.pack(y), "little")
    if abs(y) < _F32_MIN_NORMAL or bits & 0x1FFFFFFF == 0x10000000:
        return bool(_exact_f32(text) == np.float32(x))
    try:
        return _F32.unpack(_F32.pack(y))[0] == x
    except OverflowError:  # beyond float32's range: rounds to infinity
        return False


_TOKEN_SLICE = 1 << 16


def _float_tokens(v: np.ndarray, double: bool) -> list[str]:
    n = v.size
    if n == 0:
        return []
    finite = np.isfinite(v)
    nonzero = finite & (v != 0)
    ok6 = np.ones(n, dtype=bool)
    if nonzero.all():
        ok6 = _six_digits_round_trip(v, double)
    elif nonzero.any():
        ok6[nonzero] = _six_digits_round_trip(v[nonzero], double)
    a = np.abs(v)
    with np.errstate(invalid="ignore"):
        integral = finite & (v == np.trunc(v))
    long_limit = 1e17 if double else 1e9
    # A text without '.'/'e' is exactly an integral value printed in fixed notation,
    # which '%.1f' prints with the '.0' TF appends.
    dot0 = integral & np.where(ok6, a < 1e6, a < long_limit)
    codes = np.where(dot0, _FMT_1F, np.where(ok6, _FMT_G, _FMT_LONG))
    fmts = ("%g", "%.1f", "%.17g" if double else "%.9g")
    vals = v.tolist()
    first = int(codes[0])
    # In slices: one `list(map(...))` over millions of values holds the GIL for seconds,
    # and the event loop needs it in between.
    tokens: list[str] = []
    if (codes == first).all():
        fmt = fmts[first].__mod__
        for start in range(0, n, _TOKEN_SLICE):
            tokens += map(fmt, vals[start:start + _TOKEN_SLICE])
    else:
        formats = np.array(fmts, dtype=object)[codes].tolist()
        for start in range(0, n, _TOKEN_SLICE):
            end = start + _TOKEN_SLICE
            tokens += map(str.__mod__, formats[start:end], vals[start:end])
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            x = vals[i]
            tokens[i] = "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")
    return tokens


def int_tokens(values: np.ndarray) -> list[str]:
    return list(map(str, np.asarray(values).reshape(-1).tolist()))


_BOOL_TABLE = np.array(["false", "true"], dtype=object)


def bool_tokens(values: np.ndarray) -> list[str]:
    return _BOOL_TABLE[np.asarray(values, dtype=bool).reshape(-1).astype(np.intp)].tolist()


def _as_bytes(x: object) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8", "surrogatepass")
    if isinstance(x, (bytearray, memoryview, np.bytes_)):
        return bytes(x)
    return str(x).encode("utf-8")


def b64_token(data: bytes, depth: int) -> str:
    """`{"b64": "..."}` as PrettyWriter writes an object opened at `depth` levels."""
    inner = " " * (4 * (depth + 1))
    return ('{\n' + inner + '"b64": "' + base64.b64encode(data).decode("ascii") + '"\n'
            + " " * (4 * depth) + "}")


def string_tokens(values: np.ndarray, as_b64: bool, depth: int) -> list[str]:
    """DT_STRING elements: raw strings (invalid UTF-8 replaced so the JSON stays valid;
    TF writes the bytes as they are) or b64 objects."""
    flat = np.asarray(values, dtype=object).reshape(-1).tolist()
    if as_b64:
        return [b64_token(_as_bytes(x), depth) for x in flat]
    return [quote(_as_bytes(x).decode("utf-8", "replace")) for x in flat]


def _open_close_counts(n: int, shape: Sequence[int], period: int) -> tuple[np.ndarray, np.ndarray]:
    """For each flat element index: how many arrays open right before it and close right
    after it, for a tensor of `shape` repeated every `period` elements."""
    idx = np.arange(n, dtype=np.int64)
    if period != n:
        idx %= period
    n_open = np.zeros(n, dtype=np.intp)
    n_close = np.zeros(n, dtype=np.intp)
    block = 1
    for d in reversed(shape):
        block *= d
        if block == 1:
            n_open += 1
            n_close += 1
            continue
        n_open += (idx % block) == 0
        n_close += ((idx + 1) % block) == 0
    return n_open, n_close


def _tables(k: int, single_line: bool, depth: int) -> tuple[str, list[str], list[str]]:
    """(prefix of the first element, prefixes by #opened arrays, suffixes by #closed)."""
    if single_line:
        first = "[" * k
        pre = [", " + "[" * t for t in range(k + 1)]
        suf = ["]" * c for c in range(k + 1)]
        return first, pre, suf

    def opening(levels: range) -> str:
        return "".join("[\n" + " " * (4 * (depth + lvl + 1)) for lvl in levels)

    first = opening(range(k))
    pre = [",\n" + " " * (4 * (depth + k - t)) + opening(range(k - t, k)) for t in range(k + 1)]
    suf = ["".join("\n" + " " * (4 * (depth + lvl)) + "]" for lvl in range(k - 1, k - 1 - c, -1))
           for c in range(k + 1)]
    return first, pre, suf


def _nested(tokens: list[str], shape: Sequence[int], single_line: bool, depth: int) -> str:
    """`layout` for small tensors, by recursion."""
    if len(shape) == 1:
        items = tokens
    else:
        step = len(tokens) // shape[0]
        items = [_nested(tokens[i:i + step], shape[1:], single_line, depth + 1)
                 for i in range(0, len(tokens), step)]
    if single_line:
        return "[" + ", ".join(items) + "]"
    indent = "\n" + " " * (4 * (depth + 1))
    return "[" + indent + ("," + indent).join(items) + "\n" + " " * (4 * depth) + "]"


def layout(tokens: list[str], shape: Sequence[int], single_line: bool, depth: int) -> str:
    """The tensor as nested arrays. `single_line`: kFormatSingleLineArray (row format);
    else one element per line, indented for arrays opened at `depth` levels."""
    k = len(shape)
    if k == 0:
        return tokens[0]
    n = len(tokens)
    if n == 0:
        return empty_layout(shape, single_line, depth)
    if n <= SMALL:
        return _nested(tokens, shape, single_line, depth)
    first, pre_tab, suf_tab = _tables(k, single_line, depth)
    n_open, n_close = _open_close_counts(n, shape, n)
    pre = np.array(pre_tab, dtype=object)[n_open]
    pre[0] = first
    suf = np.array(suf_tab, dtype=object)[n_close]
    pieces: list[str | None] = [None] * (3 * n)
    pieces[0::3] = pre.tolist()
    pieces[1::3] = tokens
    pieces[2::3] = suf.tolist()
    return "".join(pieces)  # type: ignore[arg-type]


def layout_rows(tokens: list[str], shape: Sequence[int]) -> list[str]:
    """Single-line text of each row (sub-tensor along dim 0) of a rank >= 1 tensor."""
    rows = shape[0]
    sub = tuple(shape[1:])
    if not sub:
        return tokens
    per_row = int(np.prod(sub))
    if per_row == 0:
        return [empty_layout(sub, True, 0)] * rows
    if len(tokens) <= SMALL:
        return [_nested(tokens[i:i + per_row], sub, True, 0) for i in range(0, len(tokens), per_row)]
    first, pre_tab, suf_tab = _tables(len(sub), True, 0)
    n = len(tokens)
    n_open, n_close = _open_close_counts(n, sub, per_row)
    pre = np.array(pre_tab, dtype=object)[n_open]
    pre[::per_row] = first
    suf_tab = list(suf_tab)
    suf_tab[len(sub)] += "\x00"  # only a row's last element closes every sub-level
    suf = np.array(suf_tab, dtype=object)[n_close]
    pieces: list[str | None] = [None] * (3 * n)
    pieces[0::3] = pre.tolist()
    pieces[1::3] = tokens
    pieces[2::3] = suf.tolist()
    return "".join(pieces).split("\x00")[:-1]  # type: ignore[arg-type]


def empty_layout(shape: Sequence[int], single_line: bool, depth: int) -> str:
    """A tensor with no elements (some dimension is 0): nested empty arrays."""
    if shape[0] == 0:
        return "[]"
    child = empty_layout(shape[1:], single_line, depth + 1)
    if single_line:
        return "[" + ", ".join([child] * shape[0]) + "]"
    sep = "\n" + " " * (4 * (depth + 1))
    return "[" + sep + ("," + sep).join([child] * shape[0]) + "\n" + " " * (4 * depth) + "]"
