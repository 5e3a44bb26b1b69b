"""Authentication, authorization and TLS for every port (all off unless configured).

`Security.from_options(options, metrics)` builds what the flags ask for:
- `guard` (`--auth_config_file`): API keys, JWTs and client certificates mapped to the
  scopes `infer`, `read`, `admin` (see `config.py`, `guard.py`); None when off;
- `rest_tls` / `grpc_tls` (`--rest_api_ssl_config_file`, `--ssl_config_file`): `TlsFile`s;
- `allowlist` (`--model_base_path_allowlist`): where config reloads may point.

`start()` fetches JWT keys and polls the files every `--security_files_poll_wait_seconds`
(off the loop): a changed auth file or SSL config applies to new requests and connections;
one that does not parse is logged and the current one kept. The front ends ask `guard`
on every request but the health probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pyserving.auth.allowlist import BasePathAllowlist, parse_allowlist
from pyserving.auth.config import ADMIN, INFER, READ, SCOPES, AuthConfig, AuthConfigError, parse_auth_config
from pyserving.auth.guard import UNAUTHENTICATED_MESSAGE, Guard, bearer_token
from pyserving.auth.tls import TlsFile, peer_names_of
from pyserving.errors import StartupError
from pyserving.sources import stores

__all__ = ["Security", "Guard", "TlsFile", "BasePathAllowlist", "AuthConfig", "AuthConfigError",
           "parse_auth_config", "bearer_token", "peer_names_of", "INFER", "READ", "ADMIN", "SCOPES",
           "UNAUTHENTICATED_MESSAGE"]

log = logging.getLogger("pyserving.auth")


def _read_auth_config(path: str) -> tuple[str, AuthConfig]:
    try:
        text = stores.read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"cannot read {path}: {exc}") from None
    try:
        return text, parse_auth_config(text)
    except AuthConfigError as exc:
        raise AuthConfigError(f"{path}: {exc}") from None


class Security:
    def __init__(self, *, guard: Guard | None, auth_path: str = "", auth_text: str = "",
                 rest_tls: TlsFile | None = None, grpc_tls: TlsFile | None = None,
                 allowlist: BasePathAllowlist | None = None, poll_wait_seconds: float = 0) -> None:
        self.guard = guard
        self.rest_tls = rest_tls
        self.grpc_tls = grpc_tls
        self.allowlist = allowlist if allowlist is not None else BasePathAllowlist(())
        self._auth_path = auth_path
        self._auth_text = auth_text
        self._poll_wait_seconds = poll_wait_seconds
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_options(cls, options: Any, denials: Any = None) -> Security:
        """StartupError when a file is unusable. `denials(entrypoint, reason)` counts denials."""
        guard, text = None, ""
        if options.auth_config_file:
            try:
                text, config = _read_auth_config(options.auth_config_file)
                guard = Guard(config, denials=denials)
            except AuthConfigError as exc:
                raise StartupError(f"Failed to start server. Error: invalid --auth_config_file {exc}") from None
        return cls(
            guard=guard, auth_path=options.auth_config_file, auth_text=text,
            rest_tls=TlsFile(options.rest_api_ssl_config_file, "rest_api_ssl_config_file")
            if options.rest_api_ssl_config_file else None,
            grpc_tls=TlsFile(options.ssl_config_file, "ssl_config_file") if options.ssl_config_file else None,
            allowlist=BasePathAllowlist(parse_allowlist(options.model_base_path_allowlist)),
            poll_wait_seconds=options.security_files_poll_wait_seconds,
        )

    async def start(self) -> None:
        if self.guard is not None:
            await self.guard.start()
            log.info("Authentication on: %d API key(s), JWT %s, %d client certificate name(s)",
                     len(self.guard.config.api_keys), "on" if self.guard.config.jwt else "off",
                     len(self.guard.config.client_certificates))
        polled = self.guard is not None or self.rest_tls is not None or self.grpc_tls is not None
        if polled and self._poll_wait_seconds > 0:
            self._task = asyncio.create_task(self._poll_loop(), name="security-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.guard is not None:
            await self.guard.stop()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_wait_seconds)
            try:
                await self.poll()
            except Exception:  # a bug must not end the polling: the next round tries again
                log.exception("Rereading the security files failed")

    async def poll(self) -> None:
        """Reread every file once (off the loop) and apply what changed."""
        for tls in (self.rest_tls, self.grpc_tls):
            if tls is not None:
                await asyncio.to_thread(tls.poll)
        if self.guard is None:
            return
        try:
            text = await asyncio.to_thread(stores.read_text, self._auth_path)
            if text == self._auth_text:
                return
            self._auth_text = text  # a broken file is reported once, not at every poll
            config = parse_auth_config(text)
            await self.guard.reload(config)
        except (OSError, UnicodeDecodeError, AuthConfigError) as exc:
            log.error("--auth_config_file %s not reloaded, the current rules stay: %s", self._auth_path, exc)
            return
        log.info("Auth config reloaded from %s: %d API key(s), JWT %s, %d client certificate name(s)",
                 self._auth_path, len(config.api_keys), "on" if config.jwt else "off",
                 len(config.client_certificates))
