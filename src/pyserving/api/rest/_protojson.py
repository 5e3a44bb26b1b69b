"""The protobuf JSON printer's text (`MessageToJsonString` with `add_whitespace`), for
values already converted to plain dicts/lists (`json_format.MessageToDict`).

Layout (protobuf `json/internal/unparser.cc` + `writer.h`, same as the older ESF
`JsonObjectWriter`): one space of indentation per level, `"key": value`, the comma at the
end of the line, empty containers as `{}` / `[]`. The caller adds the final newline.
Field order is the caller's; `order_signature_def_map` rearranges a SignatureDefMap the
way TF Serving's printer emits it (declaration order, a set oneof member last).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

__all__ = ["dumps", "quote", "order_signature_def_map"]


def _must_escape(cp: int) -> bool:
    # protobuf json/internal/writer.cc: MustEscape (besides the JSON-mandated ones)
    return (cp < 0x20 or 0x7F <= cp <= 0x9F or cp in (0x3C, 0x3E, 0xFEFF, 0xFFF9, 0xFFFA, 0xFFFB,
                                                      0x00AD, 0x06DD, 0x070F, 0x17B4, 0x17B5, 0xE0001)
            or 0x0600 <= cp <= 0x0603 or 0x200B <= cp <= 0x200F or 0x2028 <= cp <= 0x202E
            or 0x2060 <= cp <= 0x2064 or 0x206A <= cp <= 0x206F or 0x1D173 <= cp <= 0x1D17A
            or 0xE0020 <= cp <= 0xE007F)


_SHORT = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x0C: "\\f", 0x08: "\\b", 0x5C: "\\\\"}


# Printable ASCII that the writer copies as is: all of it but '"', '\\', '<' and '>'.
_PLAIN = re.compile(r'[\x20\x21\x23-\x3b\x3d\x3f-\x5b\x5d-\x7e]*')


def quote(text: str) -> str:
    if _PLAIN.fullmatch(text):  # names, states, versions: nothing to look at one by one
        return '"' + text + '"'
    return _quote_each(text)


def _quote_each(text: str) -> str:
    out = ['"']
    for ch in text:
        cp = ord(ch)
        if cp in _SHORT:
            out.append(_SHORT[cp])
        elif 0xD800 <= cp <= 0xDFFF:
            out.append(" ")  # undecodable input becomes a space in protobuf's writer
        elif _must_escape(cp):
            if cp < 0x10000:
                out.append("\\u%04x" % cp)
            else:
                s = cp - 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (s >> 10), 0xDC00 + (s & 0x3FF)))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(v: float) -> str:
    if math.isnan(v):
        return '"NaN"'
    if math.isinf(v):
        return '"Infinity"' if v > 0 else '"-Infinity"'
    text = "%.15g" % v  # io::SimpleDtoa
    if float(text) != v:
        text = "%.17g" % v
    return text


def dumps(value: Any, indent: int = 0) -> str:
    # scalars first: they are most of the calls, and a Mapping check on them is an ABC lookup
    if isinstance(value, str):
        return quote(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pad = "\n" + " " * (indent + 1)
        body = ",".join(pad + quote(str(k)) + ": " + dumps(v, indent + 1) for k, v in value.items())
        return "{" + body + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        pad = "\n" + " " * (indent + 1)
        body = ",".join(pad + dumps(v, indent + 1) for v in value)
        return "[" + body + "\n" + " " * indent + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _reorder(d: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {k: d[k] for k in order if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


# Declaration order; a oneof member that is set comes after the plain fields.
_TENSOR_INFO = ("dtype", "tensor_shape", "name", "coo_sparse", "composite_tensor")
_SIGNATURE_DEF = ("inputs", "outputs", "method_name", "defaults")
_SHAPE = ("dim", "unknown_rank")
_DIM = ("size", "name")
_TENSOR_PROTO = ("dtype", "tensor_shape", "version_number", "tensor_content", "half_val",
                 "float_val", "double_val", "int_val", "string_val", "scomplex_val", "int64_val",
                 "bool_val", "dcomplex_val", "resource_handle_val", "variant_val", "uint32_val",
                 "uint64_val", "float8_val")


def _shape(s: Any) -> Any:
    if not isinstance(s, Mapping):
        return s
    out = _reorder(s, _SHAPE)
    if isinstance(out.get("dim"), list):
        out["dim"] = [_reorder(d, _DIM) if isinstance(d, Mapping) else d for d in out["dim"]]
    return out


def _tensor_info(t: Any) -> Any:
    if not isinstance(t, Mapping):
        return t
    out = _reorder(t, _TENSOR_INFO)
    if "tensor_shape" in out:
        out["tensor_shape"] = _shape(out["tensor_shape"])
    return out


def _tensor_proto(t: Any) -> Any:
    if not isinstance(t, Mapping):
        return t
    out = _reorder(t, _TENSOR_PROTO)
    if "tensor_shape" in out:
        out["tensor_shape"] = _shape(out["tensor_shape"])
    return out


def order_signature_def_map(m: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(m)
    sigs = out.get("signature_def")
    if isinstance(sigs, Mapping):
        ordered = {}
        for name, sig in sigs.items():
            if isinstance(sig, Mapping):
                sig = _reorder(sig, _SIGNATURE_DEF)
                for key in ("inputs", "outputs"):
                    if isinstance(sig.get(key), Mapping):
                        sig[key] = {k: _tensor_info(v) for k, v in sig[key].items()}
                if isinstance(sig.get("defaults"), Mapping):
                    sig["defaults"] = {k: _tensor_proto(v) for k, v in sig["defaults"].items()}
            ordered[name] = sig
        out["signature_def"] = ordered
    return out
