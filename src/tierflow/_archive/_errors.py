"""The archive's errors, under tierflow's one root.

`ArchiveError` belongs in `tierflow._errors` with its siblings; it lives here only until that
module is free to edit, and the package re-exports it so callers need not care where.
"""

from __future__ import annotations

from tierflow._errors import TierflowError

__all__ = ["ArchiveError", "ObjectNotFoundError"]


class ArchiveError(TierflowError):
    """The archive or its object store failed: unreachable, refused, corrupt, or given points it
    cannot hold (outside the window, a name used both as a tag and a field)."""


class ObjectNotFoundError(ArchiveError):
    """The object store holds no object under the key asked for."""
