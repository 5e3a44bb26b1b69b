"""What TLS and authentication cost, in one run: the same model behind three servers.

    python bench/auth_tls.py                       # ~6 minutes: 5 repetitions of 3 s runs
    python bench/auth_tls.py --reps 2 --duration 2 # a quick look

Servers (each pinned to CPU 0, clients on CPU 1, as `bench/run.py` does): `plain` (no TLS,
no authentication), `tls` (`--ssl_config_file` and `--rest_api_ssl_config_file`, an ECDSA
P-256 certificate), `auth` (no TLS, `--auth_config_file` with one API key and a JWT issuer
whose RS256 public key is a PEM file). Scenarios, interleaved (every scenario once per
repetition, the order rotated each time), medians reported:

- sequential single-image latency (p50), REST (wrk, 1 connection) and gRPC (one synchronous
  Python client): plain, TLS, API key, JWT (one token reused: verified once, then cached);
- 64-client throughput, REST (wrk) and gRPC (`bench/loadgen.py`): plain and TLS; and the
  same pair on the floor (`bench/floor_server.py`: the HTTP and gRPC stacks answering the
  model's answer at once, without and with the server's TLS contexts), which tells what TLS
  costs the stack itself (MNIST only).

Printed: a table of medians and the ratios to plain (latency added in microseconds for the
credentials). The client's TLS work runs on the client core, so a ratio is the server's
cost; wrk keeps its connections, so handshakes are not in the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import run as bench  # noqa: E402  (bench/run.py: servers, wrk, loadgen, payloads)
from auth_support import CertificateAuthority, TokenIssuer, sha256_hex, ssl_config_text  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"


@dataclass
class SecureServer(bench.Server):
    tls_ca: str | None = None
    bearer: str | None = None

    def available(self, model: str) -> bool:
        if self.tls_ca is None and self.bearer is None:
            return super().available(model)
        conn: http.client.HTTPConnection
        if self.tls_ca is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.rest_port, timeout=2,
                                               context=ssl.create_default_context(cafile=self.tls_ca))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=2)
        try:
            conn.request("GET", f"/v1/models/{model}",
                         headers={"Authorization": f"Bearer {self.bearer}"} if self.bearer else {})
            response = conn.getresponse()
            return response.status == 200 and b'"AVAILABLE"' in response.read()
        except OSError:
            return False
        finally:
            conn.close()


def start_servers(work: Path, model: str) -> tuple[dict[str, SecureServer], str]:
    """(servers, a JWT for the auth server)."""
    ca = CertificateAuthority("bench-ca")
    (work / "ca.pem").write_bytes(ca.pem)
    (work / "tls.config").write_text(ssl_config_text(ca.issue("localhost", server=True)))
    issuer = TokenIssuer("https://bench.issuer", "pyserving")
    issuer.add_key("bench")
    (work / "jwt.pem").write_bytes(issuer.public_pem("bench"))
    (work / "auth.yaml").write_text(
        f"api_keys:\n  - {{sha256: {sha256_hex(API_KEY)}, scopes: [infer, read]}}\n"
        f"jwt:\n  issuer: {issuer.issuer}\n  audience: {issuer.audience}\n  algorithms: [RS256]\n"
        f"  public_key_file: {work / 'jwt.pem'}\n")
    token = issuer.token("bench", lifetime=24 * 3600)
    config = work / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "{model}" base_path: "{work / "models" / model}" '
                      'model_platform: "tensorflow" } }\n')
    variants = {
        "plain": ([], None, None),
        "tls": ([f"--ssl_config_file={work / 'tls.config'}", f"--rest_api_ssl_config_file={work / 'tls.config'}"],
                str(work / "ca.pem"), None),
        "auth": ([f"--auth_config_file={work / 'auth.yaml'}"], None, API_KEY),
    }
    servers = {}
    for name, (extra, ca_file, key) in variants.items():
        rest, grpc_port = bench.free_port(), bench.free_port()
        cmd = [bench.PY, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest}",
               f"--model_config_file={config}", "--file_system_poll_wait_seconds=0", *extra]
        servers[name] = SecureServer(name, cmd, [model], rest, grpc_port, work / f"{name}.log", tls_ca=ca_file,
                                     bearer=key)
    for server in servers.values():
        bench.log(f"starting {server.name}")
        server.start()
    return servers, token


def start_floors(work: Path, servers: dict[str, SecureServer], payload: dict[str, Path]) -> dict[str, bench.Server]:
    """The floor server without and with TLS, answering the plain server's MNIST answer."""
    return {"floor": bench.start_floor(work, servers["plain"], payload),
            "floor_tls": bench.start_floor(work, servers["plain"], payload, "floor_tls",
                                           (f"--ssl_config_file={work / 'tls.config'}",))}


def scenarios(servers: dict[str, SecureServer], token: str, model: str, payload: dict[str, Path],
              duration: float, use_wrk: bool,
              floors: dict[str, bench.Server] | None = None) -> dict[str, Callable[[], dict[str, float]]]:
    body_json, body_bin = payload[f"{model}_json"], payload[f"{model}_bin"]
    path = f"/v1/models/{model}:predict"
    ca = str(servers["tls"].tls_ca)
    creds = {"plain": ("plain", None), "tls": ("tls", None), "key": ("auth", API_KEY), "jwt": ("auth", token)}

    def rest(variant: str, conns: int) -> Callable[[], dict[str, float]]:
        name, secret = creds[variant]
        server = servers[name]
        headers = (f"Authorization: Bearer {secret}",) if secret else ()
        if use_wrk:
            return lambda: bench.run_wrk(server.rest_port, path, body_json, conns, duration,
                                         scheme="https" if name == "tls" else "http", headers=headers)
        extra = (*(a for h in headers for a in ("--header", h)), *(("--tls-ca", ca) if name == "tls" else ()))
        return lambda: bench.run_loadgen("http", server.rest_port, body_json, conns, duration, path=path, extra=extra)

    def grpc(variant: str, conns: int) -> Callable[[], dict[str, float]]:
        name, secret = creds[variant]
        server = servers[name]
        extra = (*(("--metadata", f"authorization: Bearer {secret}") if secret else ()),
                 *(("--tls-ca", ca) if name == "tls" else ()))
        assert server.grpc_port is not None
        return lambda: bench.run_loadgen("grpc", server.grpc_port, body_bin, conns, duration, extra=extra)

    table: dict[str, Callable[[], dict[str, float]]] = {}
    for variant in creds:
        table[f"rest_seq_{variant}"] = rest(variant, 1)
        table[f"grpc_seq_{variant}"] = grpc(variant, 1)
    for variant in ("plain", "tls"):
        table[f"rest_64_{variant}"] = rest(variant, 64)
        table[f"grpc_64_{variant}"] = grpc(variant, 64)
    for name, floor in (floors or {}).items():
        secure = name.endswith("_tls")
        rest_port, grpc_port = floor.rest_port, floor.grpc_port
        assert grpc_port is not None
        if use_wrk:
            table[f"rest_64_{name}"] = (lambda p=rest_port, t=secure: bench.run_wrk(
                p, path, body_json, 64, duration, scheme="https" if t else "http"))
        else:
            table[f"rest_64_{name}"] = (lambda p=rest_port, t=secure: bench.run_loadgen(
                "http", p, body_json, 64, duration, path=path, extra=("--tls-ca", ca) if t else ()))
        table[f"grpc_64_{name}"] = (lambda p=grpc_port, t=secure: bench.run_loadgen(
            "grpc", p, body_bin, 64, duration, extra=("--tls-ca", ca) if t else ()))
    return table


def report(samples: dict[str, list[dict[str, float]]]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    lines = ["| scenario | p50 ms | req/s | errors | runs |", "|---|---|---|---|---|"]
    for name, runs in samples.items():
        lines.append(f"| {name} | {med(name, 'p50_ms'):.3f} | {med(name, 'rps'):.0f} | "
                     f"{sum(int(r.get('errors', 0)) for r in runs)} | {len(runs)} |")
    lines += ["", "| ratio to plain | REST | gRPC |", "|---|---|---|"]
    for variant, what in (("tls", "sequential p50, TLS"), ("key", "sequential p50, API key"),
                          ("jwt", "sequential p50, JWT")):
        cells = []
        for proto in ("rest", "grpc"):
            plain, other = med(f"{proto}_seq_plain", "p50_ms"), med(f"{proto}_seq_{variant}", "p50_ms")
            cells.append(f"{other / plain:.3f} ({(other - plain) * 1000:+.0f} µs)")
        lines.append(f"| {what} | {cells[0]} | {cells[1]} |")
    cells = [f"{med(f'{p}_64_tls', 'rps') / med(f'{p}_64_plain', 'rps'):.3f}" for p in ("rest", "grpc")]
    lines.append(f"| 64-client throughput, TLS | {cells[0]} | {cells[1]} |")
    if "rest_64_floor_tls" in samples:
        cells = [f"{med(f'{p}_64_floor_tls', 'rps') / med(f'{p}_64_floor', 'rps'):.3f}" for p in ("rest", "grpc")]
        lines.append(f"| 64-client throughput, TLS, the stack alone (floor) | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    ap.add_argument("--model", choices=("mnist", "half_plus_two"), default="mnist")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        bench.log("wrk not found (apt-get install wrk): REST load comes from bench/loadgen.py")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pyserving-bench-auth-"))
    work.mkdir(parents=True, exist_ok=True)
    payload = bench.prepare(work, big=False)
    servers, token = start_servers(work, args.model)
    floors: dict[str, bench.Server] = {}
    started = time.perf_counter()
    try:
        if args.model == "mnist":
            floors = start_floors(work, servers, payload)
        table = scenarios(servers, token, args.model, payload, args.duration, use_wrk, floors)
        names = list(table)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for rep in range(args.reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:  # every pair alternates its order across repetitions
                samples[name].append(table[name]())
            bench.log(f"repetition {rep + 1}/{args.reps} done")
    finally:
        for server in [*servers.values(), *floors.values()]:
            server.stop()
    print(f"# TLS and authentication, {args.model}, {args.reps} repetitions of {args.duration:g} s "
          f"({time.perf_counter() - started:.0f} s; REST client: {'wrk' if use_wrk else 'bench/loadgen.py'})\n")
    print(report(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
