"""The object-store contract: where the archive's bytes live.

Keys are relative, `/`-separated paths such as `m/cpu/2026-11-01/x.parquet`. A key
has no leading or trailing slash, no empty segment, and no segment starting with a dot (stores
keep their temporary files under such names, so they can never collide with a real object).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tierflow._archive._errors import ArchiveError

__all__ = ["ObjectInfo", "ObjectStore", "check_key"]


@dataclass(frozen=True, slots=True, order=True)
class ObjectInfo:
    """A stored object: its key and its size in bytes."""

    key: str
    size: int


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise ArchiveError."""
    segments = key.split("/")
    if not key or any(not part or part.startswith(".") for part in segments) or "\\" in key:
        raise ArchiveError(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    """A namespace of objects under one root URL.

    The contract every implementation keeps:

    - Writes are atomic per object: until `put_*` returns, readers see the previous object under
      the key (or none), never part of the new one; if `put_*` raises, the previous object is
      still there, whole. A write that returned is durable.
    - A write replaces whatever object was under the key.
    - Objects being written are never listed, opened or counted by `exists`.
    - Missing objects: `open` and `size` raise `ObjectNotFoundError`; `delete` does nothing.
    - Every other failure of the backend is raised as `ArchiveError`, never as a driver's error.
    - Safe to share between threads.
    """

    #: Where the store's root is, as the user named it (`file:///…`, a path, `s3://…`).
    url: str

    @abstractmethod
    def put_file(self, key: str, source: Path) -> None:
        """Store the content of the local file `source` under `key`. `source` is left in place."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        """Store the concatenation of `chunks` under `key`, consuming them one at a time. If
        iterating `chunks` raises, nothing is stored and the error propagates unchanged."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`."""
        self.put_stream(key, [data])

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for reading: a seekable binary file, which the caller closes."""

    def get_bytes(self, key: str) -> bytes:
        """The whole object, in memory (meant for small objects such as manifests)."""
        with self.open(key) as file:
            return file.read()

    @abstractmethod
    def list_prefix(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix, so `a/b` matches
        `a/b/c` and `a/bc`), in key order. The empty prefix lists the whole store."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under `key`, if there is one."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where the object lives for tools outside tierflow (DuckDB): a local path, or an
        `s3://bucket/key` URL."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
