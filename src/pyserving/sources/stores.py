"""Object stores: which store a path names, and how to reach it.

A base path or config file path is remote when it starts with `s3://`, `gs://` (or
`gcs://`), `az://` or `abfs://`/`abfss://`; `file://` names a local path. fsspec does the
talking (s3fs, gcsfs, adlfs: the `s3`, `gcs` and `azure` extras); this module only turns
the environment TF Serving's users know into their options, once per scheme:

* S3 (TF Serving's own variables first): `S3_ENDPOINT` (host:port, no scheme) with
  `S3_USE_HTTPS` (default 1) and `S3_VERIFY_SSL` (default 1), `AWS_REGION`,
  `S3_CONNECT_TIMEOUT_MSEC` / `S3_REQUEST_TIMEOUT_MSEC`. The AWS SDK reads the rest itself:
  `AWS_ENDPOINT_URL[_S3]`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
  `AWS_PROFILE`, the shared config and credentials files, role credentials. A custom
  endpoint is addressed path-style (bucket in the path, as TF's S3 client did): MinIO and
  other S3-compatible stores need it.
* GCS: `STORAGE_EMULATOR_HOST` (then anonymous), `GOOGLE_APPLICATION_CREDENTIALS`, else the
  library's default credential chain; `GOOGLE_CLOUD_PROJECT`.
* Azure: `AZURE_STORAGE_CONNECTION_STRING`, or `AZURE_STORAGE_ACCOUNT` (`_NAME`) with
  `AZURE_STORAGE_KEY` (`AZURE_STORAGE_ACCOUNT_KEY`) or `AZURE_STORAGE_SAS_TOKEN`, else the
  default Azure credential chain.

Listing caches are off: every poll must see the store as it is now. Errors become
`ServingError`s whose messages never carry a secret (`store_error`).

Thread-safety: `filesystem()` may be called from any thread; fsspec's filesystems run
their I/O on their own event loop thread and are safe to share.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Mapping

from pyserving.errors import Code, ServingError

__all__ = ["REMOTE_SCHEMES", "is_remote", "local_path", "filesystem", "split_remote", "store_error",
           "read_bytes", "read_text", "store_extra"]

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


def store_extra(path: str) -> str:
    """The pip extra whose library serves `path`'s scheme (for error messages)."""
    return _EXTRAS[REMOTE_SCHEMES[_scheme(path)]]


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
        options["endpoint_url"] = endpoint
    if endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        config["s3"] = {"addressing_style": "path"}
    if not _flag(env, "S3_VERIFY_SSL", True):
        client["verify"] = False
    region = env.get("AWS_REGION", "").strip()
    if region:
        client["region_name"] = region
    return options


def gcs_options(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if env.get("STORAGE_EMULATOR_HOST"):
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
_filesystems: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}  # guarded by _lock


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
    """(filesystem, path within it) for a remote URL; the filesystem is shared per scheme
    and account. Raises ServingError when the scheme's library is not installed."""
    protocol = REMOTE_SCHEMES[_scheme(url)]
    cls = _filesystem_class(protocol)
    from_url = cls._get_kwargs_from_urls(url)  # e.g. the account of abfs://container@account...
    key = (protocol, tuple(sorted(from_url.items())))
    with _lock:
        fs = _filesystems.get(key)
        if fs is None:
            options = _OPTIONS[protocol](os.environ if env is None else env)
            options.update(from_url)
            fs = cls(**options, use_listings_cache=False, skip_instance_cache=True)
            _filesystems[key] = fs
    return fs, cls._strip_protocol(url).rstrip("/")


def filesystem(url: str) -> Any:
    return split_remote(url)[0]


# Secrets that may appear in a library's message (a connection string, a SAS signature).
_SECRET_PATTERNS = [re.compile(r"(AccountKey|SharedAccessSignature|sig|Signature|X-Amz-Signature|"
                               r"X-Amz-Credential|X-Amz-Security-Token|access_token)=[^;&\s'\"]+",
                               re.IGNORECASE)]
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
                     "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_SECRET")


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` without any secret it might quote."""
    env = os.environ if env is None else env
    for name in _SECRET_VARIABLES:
        value = env.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "<redacted>")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "=<redacted>", text)
    return text


def store_error(exc: BaseException, url: str) -> ServingError:
    """A store failure as a ServingError: the store's own message, never a secret."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, FileNotFoundError):
        code = Code.NOT_FOUND
    elif isinstance(exc, PermissionError):
        code = Code.PERMISSION_DENIED
    else:
        code = Code.UNAVAILABLE
    reason = str(exc.args[-1] if isinstance(exc, OSError) and exc.args else exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and reason in (url, url.partition("://")[2]):
        reason = "No such file or directory"
    return ServingError(code, redact(f"{reason}"))


def read_bytes(path: str) -> bytes:
    """A whole file, local or remote; raises OSError (remote failures too, as OSError)."""
    if not is_remote(path):
        with open(local_path(path), "rb") as f:
            return f.read()
    try:
        fs, inner = split_remote(path)
        return bytes(fs.cat_file(inner))
    except ServingError as err:
        raise OSError(err.message) from None
    except Exception as exc:  # the libraries raise their own types for network failures
        raise OSError(store_error(exc, path).message) from None


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")
