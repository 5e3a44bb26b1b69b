"""What TF Serving's RapidJSON (v1.1.0, pinned in `tensorflow_serving/workspace.bzl`) does,
re-done in Python for the cases where the exact text matters.

- `parse(buf)`: a byte-exact model of `Document::ParseStream` with
  `kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag` over an
  `EncodedInputStream<UTF8<>, MemoryStream>` (`util/json_tensor.cc: ParseJson`). It is only
  used when the fast parsers refuse a body, to say *why* with RapidJSON's message and byte
  offset, and to accept the few tokens they reject (`Inf`, `-NaN`, surrogate escapes...).
  Pure Python and slow: error path and oddities only.
- `debug_string(value)`: `JsonValueToDebugString` -- the JSON text quoted inside error
  messages (PrettyWriter, single-line arrays, cut once the buffer reaches 256 bytes).
- `quote(text)`: `Writer::WriteString` escaping.
- `format_double(d)`: `Writer::WriteDouble` (Grisu2 digits + `Prettify`).

Values are the usual Python JSON values. RapidJSON's number kinds map as: a JSON integer
token in [-2**63, 2**64) is an `int`; anything else (fraction, exponent, bigger integers,
NaN/Inf) is a double. `is_double` tells the two apart for Python ints that came from a
parser that keeps big integers exact.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["JsonParseError", "parse", "debug_string", "quote", "format_double", "json_type",
           "is_double", "INT64_MIN", "INT64_MAX", "UINT64_MAX"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
_DBL_MAX_DIV_10 = int(1.7976931348623157e307)
_DBL_MAX_DIGITS = len(str(_DBL_MAX_DIV_10)) + 1  # 309: an integer part this long may fit

# rapidjson/error/en.h (v1.1.0)
_DOCUMENT_EMPTY = "The document is empty."
_ROOT_NOT_SINGULAR = "The document root must not be followed by other values."
_VALUE_INVALID = "Invalid value."
_OBJECT_MISS_NAME = "Missing a name for object member."
_OBJECT_MISS_COLON = "Missing a colon after a name of object member."
_OBJECT_MISS_COMMA = "Missing a comma or '}' after an object member."
_ARRAY_MISS_COMMA = "Missing a comma or ']' after an array element."
_UNICODE_HEX = "Incorrect hex digit after \\u escape in string."
_SURROGATE = "The surrogate pair in string is invalid."
_ESCAPE_INVALID = "Invalid escape character in string."
_MISS_QUOTE = "Missing a closing quotation mark in string."
_NUMBER_TOO_BIG = "Number too big to be stored in double."
_MISS_FRACTION = "Miss fraction part in number."
_MISS_EXPONENT = "Miss exponent in number."


class JsonParseError(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at offset: {offset}")
        self.reason = reason
        self.offset = offset


# Iterative parser states (reader.h).
_START, _FINISH, _OBJ_INIT, _MEMBER_KEY, _KV_DELIM, _MEMBER_VALUE, _MEMBER_DELIM, \
    _ARR_INIT, _ELEMENT, _ELEM_DELIM = range(10)

_WS = b" \t\n\r"
_WS_RUN = re.compile(rb"[ \t\n\r]*")
_STRING_SPECIAL = re.compile(rb'["\\\x00-\x1f]')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NAN_INF_TAIL = re.compile(rb"(\.([0-9]*))?([eE]([+-]?)([0-9]*))?")
_ESCAPES = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
            ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse(buf: bytes) -> Any:
    """Parse like TF Serving; raises `JsonParseError(reason, offset)`."""
    n = len(buf)
    i = 0
    # EncodedInputStream<UTF8<>, MemoryStream> drops each BOM byte it sees, in order.
    for bom in (0xEF, 0xBB, 0xBF):
        if i < n and buf[i] == bom:
            i += 1

    def skip_ws(i: int) -> int:
        return _WS_RUN.match(buf, i).end()  # type: ignore[union-attr]  # C speed: a body may be 1 GiB of it

    # Each frame: [container, state to restore on close, pending key]
    stack: list[list[Any]] = []
    state = _START
    root: Any = None
    i = skip_ws(i)
    while i < n and buf[i] != 0:
        c = buf[i]
        if state in (_START, _KV_DELIM, _ARR_INIT, _ELEM_DELIM):
            if c == 0x5B or c == 0x7B:  # [ {
                restore = _ELEMENT if state in (_ARR_INIT, _ELEM_DELIM) else (
                    _MEMBER_VALUE if state == _KV_DELIM else _START)
                stack.append([[] if c == 0x5B else {}, restore, None])
                state = _ARR_INIT if c == 0x5B else _OBJ_INIT
                i += 1
            elif c == 0x5D and state in (_ARR_INIT, _ELEM_DELIM):  # ]
                if state == _ELEM_DELIM:  # trailing comma
                    raise JsonParseError(_VALUE_INVALID, i)
                i += 1
                state, root = _close(stack, root)
            elif c in (0x5D, 0x7D, 0x2C, 0x3A):  # ] } , :  -> Predict() gives Error
                raise JsonParseError(_DOCUMENT_EMPTY if state == _START else _VALUE_INVALID, i)
            else:
                value, i = _parse_scalar(buf, i, n)
                if state == _START:
                    root, state = value, _FINISH
                else:
                    _attach(stack[-1], value)
                    state = _MEMBER_VALUE if state == _KV_DELIM else _ELEMENT
        elif state in (_OBJ_INIT, _MEMBER_DELIM):
            if c == 0x22:
                key, i = _parse_string(buf, i, n)
                stack[-1][2] = key
                state = _MEMBER_KEY
            elif c == 0x7D and state == _OBJ_INIT:
                i += 1
                state, root = _close(stack, root)
            else:
                raise JsonParseError(_OBJECT_MISS_NAME, i)
        elif state == _MEMBER_KEY:
            if c != 0x3A:
                raise JsonParseError(_OBJECT_MISS_COLON, i)
            i += 1
            state = _KV_DELIM
        elif state == _MEMBER_VALUE:
            if c == 0x2C:
                i += 1
                state = _MEMBER_DELIM
            elif c == 0x7D:
                i += 1
                state, root = _close(stack, root)
            else:
                raise JsonParseError(_OBJECT_MISS_COMMA, i)
        else:  # _ELEMENT
            if c == 0x2C:
                i += 1
                state = _ELEM_DELIM
            elif c == 0x5D:
                i += 1
                state, root = _close(stack, root)
            else:
                raise JsonParseError(_ARRAY_MISS_COMMA, i)
        if state == _FINISH:
            return root
        i = skip_ws(i)
    # End of input (or a NUL byte, which MemoryStream's Peek() cannot tell apart).
    raise JsonParseError({
        _START: _DOCUMENT_EMPTY, _OBJ_INIT: _OBJECT_MISS_NAME, _MEMBER_DELIM: _OBJECT_MISS_NAME,
        _MEMBER_KEY: _OBJECT_MISS_COLON, _MEMBER_VALUE: _OBJECT_MISS_COMMA,
        _KV_DELIM: _VALUE_INVALID, _ARR_INIT: _VALUE_INVALID, _ELEM_DELIM: _VALUE_INVALID,
        _ELEMENT: _ARRAY_MISS_COMMA,
    }[state], i)


def _attach(frame: list[Any], value: Any) -> None:
    container = frame[0]
    if isinstance(container, list):
        container.append(value)
    else:
        # Document::FindMember returns the first of duplicated names.
        container.setdefault(frame[2], value)


def _close(stack: list[list[Any]], root: Any) -> tuple[int, Any]:
    container, restore, _ = stack.pop()
    if restore == _START:
        return _FINISH, container
    _attach(stack[-1], container)
    return restore, root


def _expect(buf: bytes, i: int, n: int, word: bytes) -> int:
    """Consume `word` after its first byte; error at the first byte that differs."""
    for ch in word[1:]:
        i += 1
        if i >= n or buf[i] != ch:
            raise JsonParseError(_VALUE_INVALID, i)
    return i + 1


def _parse_scalar(buf: bytes, i: int, n: int) -> tuple[Any, int]:
    c = buf[i]
    if c == 0x6E:  # n
        return None, _expect(buf, i, n, b"null")
    if c == 0x74:
        return True, _expect(buf, i, n, b"true")
    if c == 0x66:
        return False, _expect(buf, i, n, b"false")
    if c == 0x22:
        return _parse_string(buf, i, n)
    return _parse_number(buf, i, n)


def _parse_string(buf: bytes, i: int, n: int) -> tuple[str, int]:
    out = bytearray()
    i += 1
    while True:
        m = _STRING_SPECIAL.search(buf, i)
        if m is None:
            out += buf[i:]
            raise JsonParseError(_MISS_QUOTE, n)
        j = m.start()
        out += buf[i:j]
        c = buf[j]
        if c == 0x22:
            return out.decode("utf-8", "surrogateescape"), j + 1
        if c == 0:
            raise JsonParseError(_MISS_QUOTE, j)
        if c != 0x5C:  # control character (v1.1.0 reports it as an invalid escape)
            raise JsonParseError(_ESCAPE_INVALID, j)
        escape_offset = j
        e = buf[j + 1] if j + 1 < n else 0
        if e in _ESCAPES:
            out += _ESCAPES[e]
            i = j + 2
        elif e == 0x75:  # u
            cp, i = _hex4(buf, j + 2, n, escape_offset)
            if 0xD800 <= cp <= 0xDBFF:
                if not (i + 1 < n and buf[i] == 0x5C and buf[i + 1] == 0x75):
                    raise JsonParseError(_SURROGATE, escape_offset)
                cp2, i = _hex4(buf, i + 2, n, escape_offset)
                if not 0xDC00 <= cp2 <= 0xDFFF:
                    raise JsonParseError(_SURROGATE, escape_offset)
                cp = (((cp - 0xD800) << 10) | (cp2 - 0xDC00)) + 0x10000
            # v1.1.0 encodes a lone low surrogate as-is (3 bytes of invalid UTF-8).
            out += chr(cp).encode("utf-8", "surrogatepass")
        else:
            raise JsonParseError(_ESCAPE_INVALID, escape_offset)


def _hex4(buf: bytes, i: int, n: int, escape_offset: int) -> tuple[int, int]:
    if i + 4 > n or any(b not in _HEX for b in buf[i:i + 4]):
        raise JsonParseError(_UNICODE_HEX, escape_offset)
    return int(buf[i:i + 4], 16), i + 4


def _parse_number(buf: bytes, i: int, n: int) -> tuple[Any, int]:
    start = i
    m = _NUMBER.match(buf, i)
    if m is not None:
        j = m.end()
        nxt = buf[j] if j < n else 0
        if m.group(2) is None and m.group(1) is None and nxt == 0x2E:  # "1." -> fraction expected
            raise JsonParseError(_MISS_FRACTION, j + 1)
        if m.group(2) is None and nxt in (0x65, 0x45):
            k = j + 1
            if k < n and buf[k] in (0x2B, 0x2D):
                k += 1
            raise JsonParseError(_MISS_EXPONENT, k)
        text = m.group(0)
        frac, exp = m.group(1), m.group(2)
        body = text.lstrip(b"-")
        int_digits = body[:len(body) - len(frac or b"") - len(exp or b"")]
        if len(int_digits) > _DBL_MAX_DIGITS:
            # Beyond DBL_MAX whatever the digits; also keeps int() off a huge digit run
            # (Python refuses to convert more than 4300 digits).
            raise JsonParseError(_NUMBER_TOO_BIG, start)
        big = int(int_digits) > (2**63 if text[:1] == b"-" else UINT64_MAX)
        if big and len(int_digits) > 1 and int(int_digits[:-1]) >= _DBL_MAX_DIV_10:
            raise JsonParseError(_NUMBER_TOO_BIG, start)  # reader.h: "Force double for big integer"
        if frac is None and exp is None:
            return (float(text) if big else int(text)), j
        _check_exponent(b"" if big else int_digits, frac, exp, start)
        return float(text), j  # may be +-inf: v1.1.0 has no overflow check here
    # Not a plain number: '-' alone, NaN/Inf, or garbage.
    minus = i < n and buf[i] == 0x2D
    if minus:
        i += 1
    c = buf[i] if i < n else 0
    if c == 0x4E:  # NaN
        i = _expect(buf, i, n, b"NaN")
        d = math.nan
    elif c == 0x49:  # Inf / Infinity
        i = _expect(buf, i, n, b"Inf")
        if i < n and buf[i] == 0x69:
            i = _expect(buf, i, n, b"inity")
        d = -math.inf if minus else math.inf
    else:
        raise JsonParseError(_VALUE_INVALID, i)
    # v1.1.0 keeps reading a fraction/exponent after NaN/Inf and then reports the digits
    # read there (as if the integer part were 0) instead of NaN/Inf.
    tail = _NAN_INF_TAIL.match(buf, i)
    assert tail is not None
    if tail.group(1) is not None and not tail.group(2):
        raise JsonParseError(_MISS_FRACTION, tail.start(1) + 1)
    if tail.group(3) is not None and not tail.group(5):
        raise JsonParseError(_MISS_EXPONENT, tail.end(4))
    if tail.end() == i:
        return d, i
    _check_exponent(b"0", tail.group(1), tail.group(3), start)
    v = float(b"0" + tail.group(0))
    return (-v if minus else v), tail.end()


def _check_exponent(int_digits: bytes, frac: bytes | None, exp: bytes | None, start: int) -> None:
    """reader.h: a positive exponent above `308 - expFrac` stops the parse, where -expFrac
    counts the fraction digits that went into the significand (`int_digits` empty when the
    integer part already overflowed to double, which skips that accounting)."""
    if exp is None or exp[1:2] == b"-":
        return
    exp_frac = 0
    if frac and int_digits:
        i64 = int(int_digits)
        sig = 0 if int_digits == b"0" else min(len(int_digits), 20) - 1
        d_digits = False
        for ch in frac[1:]:
            if not d_digits:
                if i64 > 0x1FFFFFFFFFFFFF:
                    d_digits = True
                else:
                    i64 = i64 * 10 + ch - 48
                    exp_frac -= 1
                    if i64:
                        sig += 1
                    continue
            if sig < 17:
                exp_frac -= 1
                if i64 or ch != 48:
                    i64 = i64 or 1
                    sig += 1
    digits = exp[1:].lstrip(b"+").lstrip(b"0") or b"0"
    if len(digits) > 6 or int(digits) > 308 - exp_frac:
        raise JsonParseError(_NUMBER_TOO_BIG, start)


# --------------------------------------------------------------------------- writing

_QUOTE_TABLE = {c: "\\u%04X" % c for c in range(0x20)}
_QUOTE_TABLE.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
                     0x22: '\\"', 0x5C: "\\\\"})


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def quote(text: str) -> str:
    """`Writer::WriteString`: escape `"`, `\\` and control characters; keep the rest."""
    if _NEEDS_ESCAPE.search(text) is None:  # the common case, without a per-character table walk
        return '"' + text + '"'
    return '"' + text.translate(_QUOTE_TABLE) + '"'


def format_double(d: float) -> str:
    """`Writer::WriteDouble` for a finite double (`internal::dtoa` + `Prettify`)."""
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    sign = "-" if d < 0 else ""
    r = repr(abs(d))  # shortest round-trip digits, as Grisu2 nearly always finds
    mant, _, e = r.partition("e")
    exp10 = int(e) if e else 0
    ip, _, fp = mant.partition(".")
    # value = int(ip + fp) * 10**(exp10 - len(fp)); move trailing zeros into the exponent.
    alldigits = (ip + fp).lstrip("0")
    digits = alldigits.rstrip("0")
    k = exp10 - len(fp) + len(alldigits) - len(digits)
    length = len(digits)
    kk = length + k
    if 0 <= k and kk <= 21:
        s = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        s = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        s = "0." + "0" * (-kk) + digits
    elif length == 1:
        s = digits + "e" + str(kk - 1)
    else:
        s = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + s


def is_double(v: Any) -> bool:
    """True for JSON numbers RapidJSON stores as double (`Value::IsDouble`)."""
    if type(v) is float:
        return True
    return type(v) is int and not INT64_MIN <= v <= UINT64_MAX


def json_type(v: Any) -> str:
    """`JsonTypeString` in json_tensor.cc."""
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, (list, tuple)) or hasattr(v, "materialize"):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


_MAX_DEBUG_BYTES = 256


class _Stop(Exception):
    pass


def debug_string(value: Any, limit: int = _MAX_DEBUG_BYTES) -> str:
    """`JsonValueToDebugString`: RapidJSON PrettyWriter (4-space indent, single-line
    arrays); every write is refused once the buffer holds `limit` bytes or more, and
    NaN/Inf stop it (the writer has no kWriteNanAndInfFlag)."""
    out: list[str] = []
    size = 0
    levels: list[list[Any]] = []  # [in_array, value_count]

    def put(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text.encode("utf-8", "surrogateescape"))

    def prefix() -> None:
        if size >= limit:
            raise _Stop
        if levels:
            top = levels[-1]
            if top[0]:
                if top[1] > 0:
                    put(", ")
            else:
                if top[1] > 0:
                    put(",\n" if top[1] % 2 == 0 else ": ")
                else:
                    put("\n")
                if top[1] % 2 == 0:
                    put(" " * (4 * len(levels)))
            top[1] += 1

    # Iterative walk: a work stack of values and end markers.
    _END_OBJ, _END_ARR = object(), object()
    work: list[Any] = [value]
    try:
        while work:
            v = work.pop()
            if v is _END_OBJ or v is _END_ARR:
                if size >= limit:
                    raise _Stop
                top = levels.pop()
                if v is _END_OBJ:
                    if top[1]:
                        put("\n" + " " * (4 * len(levels)))
                    put("}")
                else:
                    put("]")
                continue
            if isinstance(v, _Key):
                prefix()
                put(quote(v.name))
                continue
            if hasattr(v, "materialize"):
                v = v.materialize()
            if isinstance(v, dict):
                prefix()
                put("{")
                levels.append([False, 0])
                work.append(_END_OBJ)
                for k, item in reversed([kv for kv in v.items() if isinstance(kv[0], str)]):
                    work.append(item)
                    work.append(_Key(k))
            elif isinstance(v, list):
                prefix()
                put("[")
                levels.append([True, 0])
                work.append(_END_ARR)
                work.extend(reversed(v))
            else:
                prefix()
                if v is None:
                    put("null")
                elif v is True:
                    put("true")
                elif v is False:
                    put("false")
                elif isinstance(v, str):
                    # One long string would be the whole message (TF Serving writes it all): cut.
                    put(quote(v) if len(v) <= limit else quote(v[:limit]) + "...")
                elif is_double(v):
                    d = float(v)
                    if not math.isfinite(d):
                        raise _Stop
                    put(format_double(d))
                else:
                    put(str(int(v)))
    except _Stop:
        pass
    return "".join(out)


class _Key:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name
