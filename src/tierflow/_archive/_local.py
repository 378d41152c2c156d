"""The object store on a local (or mounted) filesystem."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._store import ObjectInfo, ObjectStore, check_key

__all__ = ["LocalObjectStore"]

_COPY_CHUNK = 1 << 20


class LocalObjectStore(ObjectStore):
    """Objects are files under `root`, keys their relative paths.

    A write goes to a hidden temporary file in the target's own directory, is fsynced, then
    renamed over the target with `os.replace` (atomic within one filesystem) and the directory
    fsynced, so a crash leaves the old file or the new one, never a torn one. Temporary files of
    a crashed write keep their dot-name and stay invisible to every method.
    """

    def __init__(self, root: Path | str, *, url: str | None = None) -> None:
        self.root = Path(root).absolute()
        self.url = url or str(self.root)
        with _mapped(self.url):
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_file(self, key: str, source: Path) -> None:
        def copy(target: BinaryIO) -> None:
            with open(source, "rb") as file:
                while chunk := file.read(_COPY_CHUNK):
                    target.write(chunk)

        self._write(key, copy)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        def write(target: BinaryIO) -> None:
            for chunk in chunks:
                target.write(chunk)

        self._write(key, write)

    def _write(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        path = self._path(key)
        with _mapped(key, writing=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(handle, "wb") as target:
                    fill(target)
                    target.flush()
                    os.fsync(target.fileno())
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_directory(path.parent)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        with _mapped(key):
            return open(path, "rb")

    def list_prefix(self, prefix: str = "") -> Iterator[ObjectInfo]:
        directory, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*check_key(directory).split("/")) if directory else self.root
        found: list[ObjectInfo] = []
        with _mapped(prefix):
            for current, dirs, files in os.walk(base):
                dirs[:] = [name for name in dirs if not name.startswith(".")]
                relative = Path(current).relative_to(self.root).as_posix()
                for name in files:
                    key = name if relative == "." else f"{relative}/{name}"
                    if not name.startswith(".") and key.startswith(prefix):
                        with suppress(FileNotFoundError):  # deleted while we walked
                            found.append(ObjectInfo(key, (Path(current) / name).stat().st_size))
        return iter(sorted(found))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _mapped(key):
            path.unlink(missing_ok=True)
            _fsync_directory(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        with _mapped(key):
            if not path.is_file():
                raise FileNotFoundError(key)
            return path.stat().st_size

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"


def _fsync_directory(directory: Path) -> None:
    # Makes a rename or unlink itself durable; some filesystems cannot open a directory.
    try:
        handle = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        with suppress(OSError):
            os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def _mapped(key: str, *, writing: bool = False) -> Iterator[None]:
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if writing:
            raise ArchiveError(f"local archive cannot write {key!r}: {exc}") from exc
        raise ObjectNotFoundError(f"no object {key!r}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise ArchiveError(f"local archive failed on {key!r}: {exc}") from exc
