"""Re-checking an archive against its manifests."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tierflow._archive._errors import ArchiveError, ObjectNotFoundError
from tierflow._archive._manifest import ArchivedFile, WindowManifest, parse_manifest_key
from tierflow._archive._parquet import read_row_count, sha256_of
from tierflow._archive._store import ObjectStore

__all__ = ["ProblemKind", "VerifyProblem", "verify_manifests"]


class ProblemKind(StrEnum):
    MISSING = "missing"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    ROW_COUNT_MISMATCH = "row_count_mismatch"
    UNREADABLE = "unreadable"
    BAD_MANIFEST = "bad_manifest"


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """Something wrong with one file (or manifest), named by its key in the archive."""

    path: str
    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def verify_manifests(store: ObjectStore, prefix: str) -> list[VerifyProblem]:
    """Check every manifest under `prefix` and every file each names; see
    `ParquetArchive.verify`."""
    problems: list[VerifyProblem] = []
    for info in store.list_prefix(prefix):
        named = parse_manifest_key(info.key)
        try:
            manifest = WindowManifest.from_json(store.get_bytes(info.key), key=info.key)
        except ArchiveError as exc:
            problems.append(VerifyProblem(info.key, ProblemKind.BAD_MANIFEST, str(exc)))
            continue
        if named != (manifest.measurement, manifest.window):
            detail = f"describes {manifest.measurement!r} {manifest.window}, not what its key names"
            problems.append(VerifyProblem(info.key, ProblemKind.BAD_MANIFEST, detail))
        for file in manifest.files:
            problems.extend(verify_file(store, file))
    return problems


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
