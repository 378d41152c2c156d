"""The runner: plans a job's due windows, claims them, runs them on their engines and records
every outcome and the watermark together in the state store."""

from tierflow._runner._loop import (
    BatchRun,
    ClaimView,
    JobPlan,
    JobStatus,
    Runner,
    WindowRun,
    select_jobs,
)

__all__ = [
    "BatchRun",
    "ClaimView",
    "JobPlan",
    "JobStatus",
    "Runner",
    "WindowRun",
    "select_jobs",
]
