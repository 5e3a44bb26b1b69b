"""The client's settings: where to connect (`Target`), TLS, and the retry policy."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import Code, ServingError

__all__ = ["TLS", "Retry", "Target", "parse_target"]


@dataclass(frozen=True)
class TLS:
    """TLS settings: `ca_file` to trust (default: the system's), `cert_file` and `key_file`
    for a client certificate (mTLS), `server_name` to expect in the server's certificate
    when it differs from the host connected to."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def grpc_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) as grpc.ssl_channel_credentials takes them."""
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        return read(self.ca_file), read(self.key_file), read(self.cert_file)


@dataclass(frozen=True)
class Retry:
    """Retries of a failed call: up to `attempts` tries in all, after waits growing from
    `backoff_seconds` by `multiplier` up to `max_backoff_seconds`, each drawn at random
    between half and all of that (jitter, so that clients restarted together do not
    retry together). Only errors whose code is in `on` are retried (UNAVAILABLE: the server
    could not be reached, is restarting, or answered 503), only for calls that are safe
    to repeat (every call but `reload_config`), and never past the call's deadline.
    `Retry(attempts=1)` turns retries off."""

    attempts: int = 4
    backoff_seconds: float = 0.1
    multiplier: float = 2.0
    max_backoff_seconds: float = 2.0
    on: frozenset[Code] = field(default_factory=lambda: frozenset({Code.UNAVAILABLE}))

    def delay(self, error: ServingError, attempt: int, idempotent: bool, remaining_seconds: float) -> float | None:
        """Seconds to wait before try `attempt + 1` (counting from 0), or None: give up."""
        if not idempotent or error.code not in self.on or attempt + 1 >= self.attempts:
            return None
        wait = min(self.max_backoff_seconds, self.backoff_seconds * self.multiplier ** attempt)
        wait *= random.uniform(0.5, 1.0)
        return wait if wait < remaining_seconds else None


@dataclass(frozen=True)
class Target:
    protocol: str      # "grpc" or "rest"
    address: str       # host:port for gRPC; the base URL for REST
    secure: bool


def parse_target(target: str) -> Target:
    """`host:port` or `grpc://host:port` (gRPC; `grpcs://` with TLS), `http(s)://host:port[/prefix]` (REST)."""
    if "://" not in target:
        return Target("grpc", target, False)
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return Target("rest", target.rstrip("/"), scheme == "https")
    if scheme in ("grpc", "grpcs"):
        return Target("grpc", parts.netloc, scheme == "grpcs")
    raise ValueError(f"target {target!r}: use host:port for gRPC or http(s)://host:port for REST")
