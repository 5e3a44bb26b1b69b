"""`--model_base_path_allowlist`: the roots a config reload request may point base paths at.

A local base path is resolved (`..` and every symlink followed, as a load would) and must
be a root or under one; a store URL (`s3://bucket/models/m`) must start with a URL root
followed by `/`, and may not contain a `..` segment. Every refusal says the same thing
whether the path exists, is a file, a folder or nothing, so a client learns nothing about
what lies outside the roots.
"""

from __future__ import annotations

import os
import posixpath
from typing import Iterable

from pyserving.errors import Code, ServingError

__all__ = ["BasePathAllowlist", "parse_allowlist"]


def parse_allowlist(text: str) -> tuple[str, ...]:
    return tuple(root.strip() for root in text.split(",") if root.strip())


def _is_url(path: str) -> bool:
    return "://" in path


class BasePathAllowlist:
    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = tuple(roots)
        self._local = tuple(os.path.realpath(r) for r in self.roots if not _is_url(r))
        self._urls = tuple(r.rstrip("/") for r in self.roots if _is_url(r))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def allows(self, base_path: str) -> bool:
        """Blocking (it resolves symlinks): call it off the event loop."""
        if not self.roots:
            return True
        if _is_url(base_path):
            scheme, _, rest = base_path.partition("://")
            if ".." in rest.split("/") or "\\" in rest:
                return False
            normal = scheme + "://" + posixpath.normpath(rest).lstrip("/")
            return any(normal == root or normal.startswith(root + "/") for root in self._urls)
        if "\0" in base_path:
            return False
        resolved = os.path.realpath(base_path)
        return any(resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep) for root in self._local)

    def check(self, base_paths: Iterable[str]) -> None:
        """PERMISSION_DENIED for the first base path outside every root."""
        for path in base_paths:
            if not self.allows(path):
                raise ServingError(
                    Code.PERMISSION_DENIED,
                    f"Model base path {path} is not under an allowed root (--model_base_path_allowlist)")
