"""`pyserving-client`: predict, metadata and status from the command line.

    pyserving-client predict --model mnist --input x.npy [--grpc localhost:8500 | --rest http://localhost:8501]
    pyserving-client predict --model siamese --input img1=a.npy --input img2=b.npy --output out.npz
    pyserving-client metadata --model mnist
    pyserving-client status --model mnist            # exit 0 only if a version is AVAILABLE

Inputs are .npy files (one array; `name=file.npy` to name it) or an .npz (its names).
Outputs are printed as JSON (name -> dtype, shape, values), or saved with --output (.npz
or, for one output, .npy). Exit status: 0 done, 1 the call failed (one line on stderr,
`CODE: message`), 2 a usage mistake. Fit for a Docker HEALTHCHECK:
`pyserving-client status --model m --rest http://localhost:8501 --timeout 3`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._client import Client
from ._config import TLS
from .errors import ServingError

DEFAULT_GRPC = "localhost:8500"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--grpc", metavar="HOST:PORT", help=f"gRPC port to call (default {DEFAULT_GRPC})")
    where.add_argument("--rest", metavar="URL", help="REST base URL to call, e.g. http://localhost:8501")
    common.add_argument("--model", required=True, help="model name")
    which = common.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: the latest)")
    which.add_argument("--label", help="version label, e.g. stable")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per call, retries included (default 30)")
    common.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                        help="header / gRPC metadata sent with the call (repeatable)")
    common.add_argument("--ca-file", help="CA certificate(s) to trust (TLS)")
    common.add_argument("--cert-file", help="client certificate (mTLS)")
    common.add_argument("--key-file", help="client key (mTLS)")
    common.add_argument("--tls", action="store_true", help="gRPC over TLS with the system's CAs")

    parser = argparse.ArgumentParser(prog="pyserving-client", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", parents=[common], help="run a signature on arrays from .npy/.npz files")
    predict.add_argument("--input", action="append", required=True, metavar="[NAME=]FILE",
                         help="an .npy (optionally NAME=) or an .npz of named arrays (repeatable)")
    predict.add_argument("--signature", help="signature name (default serving_default)")
    predict.add_argument("--output", metavar="FILE", help="save outputs to FILE (.npz, or .npy for one output)")
    commands.add_parser("metadata", parents=[common], help="print the model's signatures as JSON")
    commands.add_parser("status", parents=[common], help="print version states; exit 1 unless one is AVAILABLE")
    return parser


def _inputs(specs: Sequence[str]) -> Any:
    named: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                named.update({k: archive[k] for k in archive.files})
        elif name:
            named[name] = np.load(path, allow_pickle=False)
        else:
            if len(specs) != 1:
                raise SystemExit("pyserving-client: with several --input, name each one (NAME=FILE)")
            return np.load(path, allow_pickle=False)
    return named


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind == "O":
        return [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    if array.dtype.kind == "c":
        return [[v.real, v.imag] for v in array.ravel().tolist()]
    return array.astype(np.float64).tolist() if array.dtype.kind == "f" and array.dtype.itemsize < 4 else array.tolist()


def _save(outputs: dict[str, np.ndarray], path: str) -> None:
    if path.endswith(".npy"):
        if len(outputs) != 1:
            raise SystemExit(f"pyserving-client: {len(outputs)} outputs need an .npz, not {path}")
        np.save(path, next(iter(outputs.values())), allow_pickle=False)
    else:
        savez: Any = np.savez  # numpy's stub types **arrays as its keyword arguments
        savez(path, **outputs)


def _client(args: argparse.Namespace) -> Client:
    headers = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep:
            raise SystemExit(f"pyserving-client: --header {header!r}: expected NAME=VALUE")
        headers[name] = value
    tls: TLS | bool | None = None
    if args.ca_file or args.cert_file:
        tls = TLS(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    elif args.tls:
        tls = True
    target = args.rest or args.grpc or DEFAULT_GRPC
    return Client(target, timeout=args.timeout, headers=headers, tls=tls)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command == "predict":
                outputs = client.predict(args.model, _inputs(args.input), version=args.version, label=args.label,
                                         signature=args.signature)
                if args.output:
                    _save(outputs, args.output)
                    print(f"saved {', '.join(sorted(outputs))} to {Path(args.output)}")
                else:
                    print(json.dumps({name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": _jsonable(a)}
                                      for name, a in sorted(outputs.items())}, indent=1))
                return 0
            if args.command == "metadata":
                metadata = client.metadata(args.model, version=args.version, label=args.label)
                print(json.dumps(asdict(metadata), indent=1, default=str))
                return 0
            statuses = client.status(args.model, version=args.version, label=args.label)
            for s in statuses:
                line = f"version {s.version}: {s.state}"
                print(line + (f" ({s.error_code}: {s.error_message})" if s.error_code != "OK" else ""))
            return 0 if any(s.state == "AVAILABLE" for s in statuses) else 1
    except ServingError as error:
        print(f"pyserving-client: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"pyserving-client: {error}", file=sys.stderr)
        return 1
