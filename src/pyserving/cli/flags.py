"""The command line: `tensorflow_model_server`'s flags parsed into `ServerOptions`.

The flag table is `ServerOptions` (pyserving/options.py). Parsing follows TF's rules
(`--name=value`, booleans as `--flag`, `--flag=true|false`, later occurrences win). Unlike
TF Serving, which prints "unknown argument" and serves with the mistyped feature off, an
unknown argument is an error, with the nearest flag name suggested. Flags accepted for
compatibility that change nothing are marked `inert` and logged when set.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any, Callable

from pyserving.options import ServerOptions, is_inert, option_help, option_parser

__all__ = ["Flag", "FLAGS", "ServerOptions", "FlagError", "parse_flags", "usage",
           "unknown_argument_message"]


class FlagError(Exception):
    pass


@dataclass(frozen=True)
class Flag:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    inert: bool = False  # accepted for compatibility; no effect here


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _int(text: str) -> int:
    return int(text.strip())


_PARSERS: dict[Any, Callable[[str], Any]] = {"int": _int, "bool": _bool, "float": float, "str": str}

FLAGS: tuple[Flag, ...] = tuple(
    Flag(f.name, option_parser(f.name) or _PARSERS[f.type], f.default, option_help(f.name), is_inert(f.name))
    for f in fields(ServerOptions)
)

_BY_NAME = {f.name: f for f in FLAGS}


def usage(prog: str = "tensorflow_model_server") -> str:
    lines = [f"usage: {prog}", "Flags:"]
    for f in FLAGS:
        kind = {bool: "bool", int: "int32", float: "float", str: "string"}.get(type(f.default), "string")
        lines.append(f"\t--{f.name}={f.default}\t{kind}\t{f.help}")
    return "\n".join(lines)


def parse_flags(argv: list[str]) -> tuple[ServerOptions, list[str], bool]:
    """Parse `argv` (without the program name).

    Returns (options, unknown_arguments, help_requested). Raises FlagError for a
    malformed value.
    """
    values: dict[str, Any] = {}
    unknown: list[str] = []
    help_requested = False
    for arg in argv:
        if arg in ("--help", "-help", "-h", "--helpfull"):
            help_requested = True
            continue
        if not arg.startswith("-"):
            unknown.append(arg)
            continue
        body = arg.lstrip("-")
        name, sep, text = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None and not sep and name.startswith("no") and _BY_NAME.get(name[2:]) is not None:
            flag, text, sep = _BY_NAME[name[2:]], "false", "="
        if flag is None:
            unknown.append(arg)
            continue
        if not sep:
            if isinstance(flag.default, bool):
                text = "true"
            else:
                raise FlagError(f"Missing value for flag --{name} (flags are written --{name}=value)")
        try:
            values[flag.name] = flag.type(text)
        except ValueError as exc:
            raise FlagError(f"Illegal value '{text}' specified for flag '{flag.name}': {exc}") from None
    options = ServerOptions(**values)
    return options, unknown, help_requested


# Names other model servers use for what TF Serving calls otherwise.
_OTHER_SERVERS_NAMES = {
    "grpc_port": "port",
    "http_port": "rest_api_port",
    "rest_port": "rest_api_port",
    "model_path": "model_base_path",
    "model_repository": "model_base_path",
    "model_config": "model_config_file",
}


def unknown_argument_message(arg: str) -> str:
    """One line naming the argument and, for a mistyped flag, the nearest real one."""
    if not arg.startswith("-"):
        return f"unknown argument {arg!r}: flags are written --name=value"
    name = arg.lstrip("-").partition("=")[0]
    guess = _OTHER_SERVERS_NAMES.get(name)
    if guess is None:
        # A flag's last word (--batching for --enable_batching) says more than spelling
        # alone (--batching_mode is closer letter for letter).
        close = [n for n in _BY_NAME if n.endswith("_" + name)][:1]
        close = close or difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.6)
        # A part of a longer name (--batching for --enable_batching); under 4 letters a part
        # matches too much to be a hint.
        if not close and len(name) >= 4:
            close = [n for n in _BY_NAME if name in n]
        guess = close[0] if close else None
    return f"unknown flag --{name}" + (f" (did you mean --{guess}?)" if guess else "")


def set_flags(options: Any) -> list[str]:
    """Names of inert flags the user set to a non-default value."""
    return [f.name for f in FLAGS if f.inert and getattr(options, f.name) != f.default]
