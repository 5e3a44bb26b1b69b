"""Security material for tests and the bench: certificates (`cryptography`), API keys and
their auth file, JWTs (PyJWT) and a JWKS served on loopback.

    ca = CertificateAuthority("test-ca")
    server = ca.issue("server", server=True)          # SAN localhost, 127.0.0.1, ::1
    client = ca.issue("ops-client")                   # clientAuth
    ssl_config_text(server, ca=ca, client_verify=True)  # an SSLConfig file's text
    issuer = TokenIssuer("https://issuer.test", "pyserving")
    with JwksServer(issuer) as jwks: ... jwks.url, jwks.hits
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    name: str
    key_pem: bytes
    cert_pem: bytes
    serial: int

    def write(self, directory: Path) -> tuple[str, str]:
        """(cert path, key path), for clients that take files."""
        cert, key = directory / f"{self.name}.pem", directory / f"{self.name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return str(cert), str(key)


class CertificateAuthority:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, *, server: bool = False, rsa_key: bool = False) -> Issued:
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key \
            else ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        serial = x509.random_serial_number()
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        if server:
            sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.IPAddress(ipaddress.ip_address("::1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(name, _pem_key(key), cert.public_bytes(serialization.Encoding.PEM), serial)


def ssl_config_text(server: Issued, *, ca: CertificateAuthority | None = None, client_verify: bool = False) -> str:
    """A text-format SSLConfig (PEM contents, as TF Serving's --ssl_config_file takes)."""
    def q(b: bytes) -> str:
        return b.decode().replace("\n", "\\n")

    text = f'server_key: "{q(server.key_pem)}"\nserver_cert: "{q(server.cert_pem)}"\n'
    if ca is not None:
        text += f'custom_ca: "{q(ca.pem)}"\n'
    if client_verify:
        text += "client_verify: true\n"
    return text


class TokenIssuer:
    """An identity provider: RSA signing keys by kid, tokens, the JWKS document."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []

    def add_key(self, kid: str, *, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def public_pem(self, kid: str) -> bytes:
        return self.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, kid: str, *, scope: str = "infer read", lifetime: float = 300, **claims: Any) -> str:
        now = time.time()
        payload = {"iss": self.issuer, "aud": self.audience, "sub": "tester", "iat": int(now),
                   "exp": int(now + lifetime), "scope": scope, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


class JwksServer:
    """Serves `issuer.jwks()` (as it is at each request) on a loopback port; counts hits."""

    def __init__(self, issuer: TokenIssuer) -> None:
        outer = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
