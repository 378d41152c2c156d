"""The archive's errors, re-exported from `tierflow._errors` (where every error lives) so the
archive package's callers need not care where."""

from __future__ import annotations

from tierflow._errors import ArchiveError, ObjectNotFoundError

__all__ = ["ArchiveError", "ObjectNotFoundError"]
