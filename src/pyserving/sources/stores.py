"""Object stores: which store a path names, and how to reach it.

A base path or config file path is remote when it starts with `s3://`, `gs://` (or
`gcs://`), `az://` or `abfs://`/`abfss://`; `file://` names a local path. fsspec does the
talking (s3fs, gcsfs, adlfs: the `s3`, `gcs` and `azure` extras); this module only turns
the environment TF Serving's users know into their options (every function that reads the
environment takes an `env` mapping, `os.environ` when omitted):

* S3 (TF Serving's own variables first): `S3_ENDPOINT` (host:port, no scheme) with
  `S3_USE_HTTPS` (default 1) and `S3_VERIFY_SSL` (default 1), `AWS_REGION`,
  `S3_CONNECT_TIMEOUT_MSEC` / `S3_REQUEST_TIMEOUT_MSEC`; then the AWS SDK's own
  `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` and `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
  `AWS_SESSION_TOKEN`. The SDK finds the rest itself: `AWS_PROFILE`, the shared config and
  credentials files, role credentials. A custom endpoint is addressed path-style (bucket in
  the path, as TF's S3 client did): MinIO and other S3-compatible stores need it.
* GCS: `STORAGE_EMULATOR_HOST` (its endpoint, anonymous), `GOOGLE_APPLICATION_CREDENTIALS`,
  else the library's default credential chain; `GOOGLE_CLOUD_PROJECT`.
* Azure: `AZURE_STORAGE_CONNECTION_STRING`, or `AZURE_STORAGE_ACCOUNT` (`_NAME`) with
  `AZURE_STORAGE_KEY` (`AZURE_STORAGE_ACCOUNT_KEY`) or `AZURE_STORAGE_SAS_TOKEN`, else the
  default Azure credential chain.

Listing caches are off: every poll must see the store as it is now. Errors become
`ServingError`s whose messages never carry a secret (`store_error`).

Thread-safety: `split_remote()` may be called from any thread; fsspec's filesystems run
their I/O on their own event loop thread and are safe to share.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Mapping

from pyserving.errors import Code, ServingError

__all__ = ["REMOTE_SCHEMES", "is_remote", "local_path", "split_remote", "store_error",
           "read_bytes", "read_text"]

# URL scheme -> fsspec protocol
REMOTE_SCHEMES = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "az", "abfs": "az", "abfss": "az"}
_EXTRAS = {"s3": "s3", "gcs": "gcs", "az": "azure"}
_MODULES = {"s3": "s3fs", "gcs": "gcsfs", "az": "adlfs"}


def _scheme(path: str) -> str:
    head, sep, _ = path.partition("://")
    return head.lower() if sep else ""


def is_remote(path: str) -> bool:
    return _scheme(path) in REMOTE_SCHEMES


def local_path(path: str) -> str:
    """`file:///abs/path` -> `/abs/path`; any other path unchanged."""
    if _scheme(path) == "file":
        return "/" + path.partition("://")[2].lstrip("/")
    return path



def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return max(0.001, int(env[name]) / 1000)
    except (KeyError, ValueError):
        return default


def s3_options(env: Mapping[str, str]) -> dict[str, Any]:
    client: dict[str, Any] = {}
    config: dict[str, Any] = {
        "connect_timeout": _seconds(env, "S3_CONNECT_TIMEOUT_MSEC", 10.0),
        "read_timeout": _seconds(env, "S3_REQUEST_TIMEOUT_MSEC", 60.0),
        # A few quick retries: an unreachable store is reported, and retried by the next poll.
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    options: dict[str, Any] = {"client_kwargs": client, "config_kwargs": config}
    endpoint = env.get("S3_ENDPOINT", "").strip()
    if endpoint:
        if "://" not in endpoint:
            endpoint = ("https://" if _flag(env, "S3_USE_HTTPS", True) else "http://") + endpoint
    else:
        # The SDK would read these from os.environ itself; taken here so that an `env`
        # other than os.environ is obeyed too.
        endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint:
        options["endpoint_url"] = endpoint
        config["s3"] = {"addressing_style": "path"}
    for option, name in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                         ("token", "AWS_SESSION_TOKEN")):
        if env.get(name):
            options[option] = env[name]
    if not _flag(env, "S3_VERIFY_SSL", True):
        client["verify"] = False
    region = env.get("AWS_REGION", "").strip()
    if region:
        client["region_name"] = region
    return options


def gcs_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    emulator = env.get("STORAGE_EMULATOR_HOST", "").strip()
    if emulator:
        # Google's clients take host:port as well as a URL; gcsfs needs the URL.
        options["endpoint_url"] = emulator if "://" in emulator else "http://" + emulator
        options["token"] = "anon"  # the emulator takes no credentials; no metadata-server probe
    elif env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        options["token"] = "google_default"
    project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
    if project:
        options["project"] = project
    return options


def azure_options(env: Mapping[str, str]) -> dict[str, Any]:
    connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        return {"connection_string": connection_string}
    options: dict[str, Any] = {}
    account = env.get("AZURE_STORAGE_ACCOUNT") or env.get("AZURE_STORAGE_ACCOUNT_NAME")
    if account:
        options["account_name"] = account
    key = env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_ACCOUNT_KEY")
    if key:
        options["account_key"] = key
    sas = env.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        options["sas_token"] = sas
    return options


_OPTIONS = {"s3": s3_options, "gcs": gcs_options, "az": azure_options}
_lock = threading.Lock()
_filesystems: dict[tuple[str, str], Any] = {}  # (protocol, options as JSON) -> filesystem; guarded by _lock


def _filesystem_class(protocol: str) -> Any:
    try:
        if protocol == "gcs":
            # The plain GCS filesystem: gcsfs's default class first probes the bucket's type
            # over gRPC, which emulators and proxies do not speak.
            from gcsfs.core import GCSFileSystem
            return GCSFileSystem
        import fsspec
        return fsspec.get_filesystem_class(protocol)
    except ImportError:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"Model stores on {protocol} need the {_MODULES[protocol]} library: pip install "
            f"'pyserving[{_EXTRAS[protocol]}]'",
        ) from None


def split_remote(url: str, env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(filesystem, path within it) for a remote URL, reached with the options `env` (default
    os.environ) gives. One filesystem is shared by all the URLs with the same options (same
    scheme, account, endpoint, credentials); a change of environment gets a new one.
    Raises ServingError when the scheme's library is not installed."""
    protocol = REMOTE_SCHEMES[_scheme(url)]
    cls = _filesystem_class(protocol)
    options = _OPTIONS[protocol](os.environ if env is None else env)
    options.update(cls._get_kwargs_from_urls(url))  # e.g. the account of abfs://container@account...
    key = (protocol, json.dumps(options, sort_keys=True, default=repr))
    with _lock:
        fs = _filesystems.get(key)
        if fs is None:
            fs = cls(**options, use_listings_cache=False, skip_instance_cache=True)
            _filesystems[key] = fs
    return fs, cls._strip_protocol(url).rstrip("/")



# Secrets that may appear in a library's message (a connection string, a SAS signature).
_SECRET_PATTERNS = [re.compile(r"\b(AccountKey|SharedAccessSignature|sig|Signature|X-Amz-Signature|"
                               r"X-Amz-Credential|X-Amz-Security-Token|access_token)=[^;&\s'\"]+",
                               re.IGNORECASE)]
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
                     "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET")


def _secrets(env: Mapping[str, str]) -> list[str]:
    values = [env.get(name, "") for name in _SECRET_VARIABLES]
    # A connection string's key or signature may be quoted without its name.
    connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING", "")
    values += [m.group(2) for m in re.finditer(r"(AccountKey|SharedAccessSignature)=([^;]+)",
                                               connection_string, re.IGNORECASE)]
    # Short values would redact ordinary words.
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` without any secret it might quote."""
    for value in _secrets(os.environ if env is None else env):
        text = text.replace(value, "<redacted>")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "=<redacted>", text)
    return text


_MAX_REASON = 500


def store_error(exc: BaseException, url: str, env: Mapping[str, str] | None = None) -> ServingError:
    """A store failure as a ServingError: the store's own message, never a secret of `env`
    (default os.environ)."""
    if isinstance(exc, ServingError):
        return exc
    reason = str(exc.args[-1] if isinstance(exc, OSError) and exc.args else exc)
    # The Azure SDK appends the whole response body; the rest is one line.
    reason = " ".join(reason.split("\nContent:", 1)[0].split()) or type(exc).__name__
    if len(reason) > _MAX_REASON:
        reason = reason[:_MAX_REASON] + "..."
    # HTTP statuses of the errors the libraries do not translate: the Azure SDK's
    # status_code, gcsfs's code, aiohttp's status.
    status = next((s for s in (getattr(exc, n, None) for n in ("status_code", "code", "status"))
                   if isinstance(s, int)), None)
    if isinstance(exc, FileNotFoundError) or status == 404:
        code = Code.NOT_FOUND
        if not any(c.isspace() for c in reason):
            # Only a path or a request URL (gcsfs says which URL failed): no more than the name.
            reason = "No such file or directory"
    elif isinstance(exc, PermissionError) or status in (401, 403) or reason.startswith("Forbidden"):
        code = Code.PERMISSION_DENIED  # gcsfs: a plain OSError("Forbidden: ...") for a 403
    else:
        code = Code.UNAVAILABLE
    return ServingError(code, redact(reason, env))


_OS_ERRORS: dict[Code, type[OSError]] = {Code.NOT_FOUND: FileNotFoundError,
                                          Code.PERMISSION_DENIED: PermissionError}


def read_bytes(path: str, env: Mapping[str, str] | None = None) -> bytes:
    """A whole file, local or remote; raises OSError (remote failures too, as OSError, with
    the store's message less its secrets)."""
    if not is_remote(path):
        with open(local_path(path), "rb") as f:
            return f.read()
    try:
        fs, inner = split_remote(path, env)
        return bytes(fs.cat_file(inner))
    except Exception as exc:  # the libraries raise their own types for network failures
        err = store_error(exc, path, env)
        raise _OS_ERRORS.get(err.code, OSError)(err.message) from None


def read_text(path: str, env: Mapping[str, str] | None = None) -> str:
    """`read_bytes` decoded as UTF-8 (UnicodeDecodeError if it is not)."""
    return read_bytes(path, env).decode("utf-8")
