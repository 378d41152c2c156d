"""The runner: plans each job's due windows, claims them, runs them with the executor of the
job's kind and records every outcome with the watermark in the state store.

- `_results`: what it reports (`BatchRun`, `WindowRun`, `JobPlan`, `JobStatus`, `ClaimView`).
- `_planning`: what is due, when a job next wakes, where it stands (reads the store).
- `_executors`: one executor per job kind, and `attempt`, which runs one and says how it went.
- `_capacity`: the per-connection and global gates a batch waits at, at-risk first, and the
  state store's slots that hold those limits across workers (PostgreSQL).
- `_loop`: `Runner`, the claim/run/finish loop (leases, heartbeat, outcome and watermark).
"""

from tierflow._runner._loop import Progress, Runner
from tierflow._runner._planning import LATE_DATA, Mode, select_jobs
from tierflow._runner._results import BatchRun, ClaimView, JobPlan, JobStatus, WindowRun

__all__ = [
    "LATE_DATA",
    "BatchRun",
    "ClaimView",
    "JobPlan",
    "JobStatus",
    "Mode",
    "Progress",
    "Runner",
    "WindowRun",
    "select_jobs",
]
