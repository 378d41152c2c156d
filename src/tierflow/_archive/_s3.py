"""The object store on S3 (or an S3-compatible service), through fsspec/s3fs.

Imported only for `s3://` URLs, so an install without the `archive-s3` extra never needs s3fs.
An S3 PUT is atomic per object (a multipart upload becomes visible only when completed), which
is all the archive needs: it writes each data object, then the manifest that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, cast

from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._store import ObjectInfo, ObjectStore, check_key

__all__ = ["S3ObjectStore"]


class S3ObjectStore(ObjectStore):
    """Objects under `s3://bucket/prefix`. `storage_options` go to `s3fs.S3FileSystem`
    (`endpoint_url`, `key`, `secret`, `client_kwargs={"region_name": …}`, …); without them the
    usual AWS environment variables and profiles apply."""

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        if not url.startswith("s3://"):
            raise ArchiveError(f"not an s3:// url: {url!r}")
        root = url.removeprefix("s3://").strip("/")
        if not root or root.startswith("/"):
            raise ArchiveError(f"s3 url {url!r} names no bucket")
        try:
            import fsspec  # type: ignore[import-untyped, unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ArchiveError(
                "s3:// archives need s3fs: pip install 'tierflow[archive-s3]'"
            ) from exc
        self.url = url
        self.root = root
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        options.update(storage_options or {})
        with _mapped(url):
            #: The fsspec filesystem, for tools that can use one (DuckDB's `register_filesystem`).
            self.filesystem: Any = fsspec.filesystem("s3", **options)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put_file(self, key: str, source: Path) -> None:
        path = self._path(key)
        with _mapped(key, writing=True):
            self.filesystem.put_file(str(source), path)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        path = self._path(key)
        # Without autocommit the upload is a multipart upload that only `commit` completes, so
        # an abandoned one never becomes visible; `discard` aborts it.
        with _mapped(key, writing=True):
            target = self.filesystem.open(path, "wb", autocommit=False)
        try:
            for chunk in chunks:
                with _mapped(key, writing=True):
                    target.write(chunk)
            with _mapped(key, writing=True):
                target.close()
        except BaseException:
            with suppress(Exception):
                target.close()
            with suppress(Exception):
                target.discard()
            raise
        with _mapped(key, writing=True):
            target.commit()

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _mapped(key, writing=True):
            self.filesystem.pipe_file(path, data)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        with _mapped(key):
            return cast(BinaryIO, self.filesystem.open(path, "rb"))

    def list_prefix(self, prefix: str = "") -> Iterator[ObjectInfo]:
        directory, _, _ = prefix.rpartition("/")
        base = f"{self.root}/{check_key(directory)}" if directory else self.root
        with _mapped(prefix):
            found = self.filesystem.find(base, detail=True)
        start = len(self.root) + 1
        infos = [
            ObjectInfo(name[start:], int(info["size"]))
            for name, info in found.items()
            if info.get("type") == "file" and name[start:].startswith(prefix)
        ]
        return iter(sorted(infos))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with _mapped(key):
                self.filesystem.rm_file(path)
        except ObjectNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with _mapped(key):
            return bool(self.filesystem.isfile(path))

    def size(self, key: str) -> int:
        path = self._path(key)
        with _mapped(key):
            info = self.filesystem.info(path)
        if info.get("type") != "file":
            raise ObjectNotFoundError(f"no object {key!r}")
        return int(info["size"])

    def uri(self, key: str) -> str:
        return f"s3://{self._path(key)}"

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r})"


@contextmanager
def _mapped(key: str, *, writing: bool = False) -> Iterator[None]:
    # s3fs turns S3's NoSuchKey/404 into FileNotFoundError and other refusals into OSError
    # subclasses (PermissionError, …); botocore's own errors can still escape for transport
    # failures, so anything else is wrapped too.
    try:
        yield
    except FileNotFoundError as exc:
        if writing:
            raise ArchiveError(f"s3 archive cannot write {key!r}: {exc}") from exc
        raise ObjectNotFoundError(f"no object {key!r}") from exc
    except ArchiveError:
        raise
    except Exception as exc:
        raise ArchiveError(f"s3 archive failed on {key!r}: {type(exc).__name__}: {exc}") from exc
