"""TLS material from a text-format `SSLConfig` (TF Serving's `--ssl_config_file`: PEM
contents in `server_key`, `server_cert`, `custom_ca`, and `client_verify`), for both ports,
and reloadable: `TlsFile.poll()` rereads the file and a changed one applies to every new
connection (connections already open keep theirs).

- REST: `rest_context()` is an `ssl.SSLContext` whose `wrap_bio` (what asyncio's and
  uvloop's TLS transports call for each new connection) uses the newest context built
  from the file. Each is TLS 1.2 or newer with forward-secret AEAD suites only; mutual
  TLS when `client_verify` (a client without a certificate signed by `custom_ca` fails the
  handshake).
- gRPC: `grpc_credentials()` are dynamic credentials; gRPC asks for the newest certificate
  before each handshake. Whether a client certificate is required is fixed at start.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from google.protobuf import text_format

from pyserving.errors import StartupError
from pyserving.protos.config_protos import SSLConfig, parse_text
from pyserving.sources import stores

__all__ = ["TlsMaterial", "TlsError", "TlsFile", "read_tls_material", "server_context", "peer_names_of"]

log = logging.getLogger("pyserving.tls")

# TLS 1.2 suites with forward secrecy and AEAD; TLS 1.3's are all of that kind.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP"


class TlsError(ValueError):
    pass


@dataclass(frozen=True)
class TlsMaterial:
    server_key: str
    server_cert: str
    custom_ca: str
    client_verify: bool


def read_tls_material(path: str, flag: str) -> tuple[str, TlsMaterial]:
    """(the file's text, its material); TlsError (with the flag's name) when unusable.
    Blocking: run it off the event loop."""
    try:
        text = stores.read_text(path)
        config = parse_text(SSLConfig, text)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise TlsError(f"invalid --{flag} {path}: {exc}") from None
    if not config.server_key or not config.server_cert:
        raise TlsError(f"--{flag} {path} must set server_key and server_cert")
    if config.client_verify and not config.custom_ca:
        raise TlsError(f"--{flag} {path} sets client_verify without custom_ca")
    material = TlsMaterial(config.server_key, config.server_cert, config.custom_ca, config.client_verify)
    server_context(material)  # checks that the key, the certificate and the CA load
    return text, material


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """A server context for `material`; TlsError when the PEM does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    # load_cert_chain reads files only: the PEM goes through a private directory, removed at once
    with tempfile.TemporaryDirectory(prefix="pyserving-tls-") as directory:
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        for name, data in ((cert, material.server_cert), (key, material.server_key)):
            with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(data)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"server_key / server_cert do not load: {exc}") from None
    if material.custom_ca:
        try:
            context.load_verify_locations(cadata=material.custom_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(f"custom_ca does not load: {exc}") from None
    if material.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _ReloadingContext(ssl.SSLContext):
    """Hands each new connection to the newest context (`current`)."""

    current: ssl.SSLContext

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False,
                 server_hostname: Any = None, session: Any = None) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
                                     session=session)


def peer_names_of(certificate: dict[str, Any] | None) -> list[str]:
    """A verified peer certificate's subject CN(s) and SAN values (`SSLObject.getpeercert()`)."""
    if not certificate:
        return []
    names = [value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for _kind, value in certificate.get("subjectAltName", ())]
    return names


class TlsFile:
    """One `SSLConfig` file, read at start (StartupError when unusable) and by each `poll()`."""

    def __init__(self, path: str, flag: str) -> None:
        self.path = path
        self.flag = flag
        try:
            self._text, self.material = read_tls_material(path, flag)
        except TlsError as exc:
            raise StartupError(f"Failed to start server. Error: {exc}") from None
        self._rest: _ReloadingContext | None = None
        self._grpc_started = False
        self._grpc_lock = threading.Lock()  # gRPC's handshake thread takes what a poll leaves
        self._grpc_pending: Any = None  # guarded by _grpc_lock

    def poll(self) -> bool:
        """Reread the file (blocking: off the loop); True when new material applies. A file
        that does not load is logged and the current material kept."""
        try:
            text = stores.read_text(self.path)
            if text == self._text:
                return False
            text, material = read_tls_material(self.path, self.flag)
        except (OSError, UnicodeDecodeError, TlsError) as exc:
            log.error("TLS material of --%s not reloaded, the current one stays: %s", self.flag, exc)
            return False
        self._text, self.material = text, material
        if self._rest is not None:
            self._rest.current = server_context(material)
        if self._grpc_started:
            configuration = self._grpc_configuration(material)
            with self._grpc_lock:
                self._grpc_pending = configuration
        log.info("TLS material reloaded from %s (--%s): new connections use it", self.path, self.flag)
        return True

    # -- REST -------------------------------------------------------------------------------
    def rest_context(self) -> ssl.SSLContext:
        if self._rest is None:
            self._rest = _ReloadingContext(ssl.PROTOCOL_TLS_SERVER)
            self._rest.current = server_context(self.material)
        return self._rest

    # -- gRPC -------------------------------------------------------------------------------
    @staticmethod
    def _grpc_configuration(material: TlsMaterial) -> Any:
        import grpc

        return grpc.ssl_server_certificate_configuration(
            [(material.server_key.encode(), material.server_cert.encode())],
            root_certificates=material.custom_ca.encode() if material.custom_ca else None)

    def _fetch_grpc_configuration(self) -> Any:
        # called by gRPC before each handshake, on its own thread: None keeps the current one
        with self._grpc_lock:
            pending, self._grpc_pending = self._grpc_pending, None
        return pending

    def grpc_credentials(self) -> Any:
        import grpc

        try:
            initial = self._grpc_configuration(self.material)
            self._grpc_started = True
            return grpc.dynamic_ssl_server_credentials(initial, self._fetch_grpc_configuration,
                                                       require_client_authentication=self.material.client_verify)
        except (ValueError, TypeError) as exc:
            raise StartupError(f"Failed to start server. Error: invalid --{self.flag} {self.path}: {exc}") from None
