"""Re-checking an archive against its manifests, and its manifests against what is stored."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._manifest import (
    MANIFESTS,
    ArchivedFile,
    WindowManifest,
    legacy_manifest_key,
    manifest_key,
)
from tierflow._archive._parquet import read_row_count, sha256_of
from tierflow._archive._store import ObjectStore
from tierflow._windows import Window

__all__ = ["ProblemKind", "VerifyProblem", "verify_archive"]


class ProblemKind(StrEnum):
    MISSING = "missing"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    ROW_COUNT_MISMATCH = "row_count_mismatch"
    UNREADABLE = "unreadable"
    BAD_MANIFEST = "bad_manifest"
    ORPHAN = "orphan"


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """Something wrong with one file (or manifest), named by its key in the archive."""

    path: str
    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def verify_archive(store: ObjectStore) -> list[VerifyProblem]:
    """Check every manifest and every file each names, then that every other stored object is
    named by a manifest; see `ParquetArchive.verify`."""
    problems: list[VerifyProblem] = []
    named: set[str] = set()
    read: dict[tuple[str, Window], str] = {}
    # Key order puts `_manifests/m/` before `_manifests/measurement=`: of a window's manifests
    # of both layouts (a re-run crashed before removing the old one), the new one comes first
    # and is the one readers read; the old one and its files are orphans.
    for info in store.list_prefix(MANIFESTS):
        try:
            manifest = WindowManifest.from_json(store.get_bytes(info.key), key=info.key)
            _check_key(manifest, info.key)
        except ArchiveError as exc:
            problems.append(VerifyProblem(info.key, ProblemKind.BAD_MANIFEST, str(exc)))
            continue
        window = (manifest.measurement, manifest.window)
        if (replacing := read.get(window)) is not None:
            detail = f"replaced by {replacing}, which is the one read"
            problems.append(VerifyProblem(info.key, ProblemKind.ORPHAN, detail))
            continue
        read[window] = info.key
        for file in manifest.files:
            named.add(file.path)
            problems.extend(verify_file(store, file))
    problems.extend(
        VerifyProblem(info.key, ProblemKind.ORPHAN, "stored, but no manifest names it")
        for info in store.list_prefix()
        if not info.key.startswith(MANIFESTS) and info.key not in named
    )
    return problems


def _check_key(manifest: WindowManifest, key: str) -> None:
    """ArchiveError unless `key` is the manifest's key in this layout or the one before `m/`,
    so a manifest stored under another window's key is caught."""
    if key not in {
        manifest_key(manifest.measurement, manifest.window),
        legacy_manifest_key(manifest.measurement, manifest.window),
    }:
        detail = f"describes {manifest.measurement!r} {manifest.window}, not what its key names"
        raise ArchiveError(f"manifest {key} {detail}")


def verify_file(store: ObjectStore, file: ArchivedFile) -> list[VerifyProblem]:
    """The problems of one archived file: missing; else its checksum, then its row count."""
    problems = []
    try:
        handle = store.open(file.path)
    except ObjectNotFoundError:
        return [VerifyProblem(file.path, ProblemKind.MISSING, "named by the manifest, not stored")]
    with handle:
        sha256, size = sha256_of(handle)
        if sha256 != file.sha256:
            detail = (
                f"sha256 {sha256} ({size} bytes), manifest says {file.sha256} ({file.size} bytes)"
            )
            problems.append(VerifyProblem(file.path, ProblemKind.CHECKSUM_MISMATCH, detail))
        handle.seek(0)
        try:
            rows = read_row_count(handle)
        except ArchiveError as exc:
            return [*problems, VerifyProblem(file.path, ProblemKind.UNREADABLE, str(exc))]
    if rows != file.rows:
        detail = f"the file holds {rows} rows, the manifest says {file.rows}"
        problems.append(VerifyProblem(file.path, ProblemKind.ROW_COUNT_MISMATCH, detail))
    return problems
