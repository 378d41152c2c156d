-- The SQLite store's queries, looked up by name (`tierflow._state._sql.queries("sqlite")`).
-- Times are microseconds since the Unix epoch, UTC. The schema is in migrations/sqlite/.
-- The rules (what a claim may take, what a row becomes) are Python, in tierflow._state._rules:
-- these statements only read and write rows.

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version) VALUES (?);

-- name: ensure_job
INSERT INTO jobs (job, watermark) VALUES (?, ?) ON CONFLICT (job) DO NOTHING;

-- name: watermark
SELECT watermark FROM jobs WHERE job = ?;

-- name: set_watermark
UPDATE jobs SET watermark = ? WHERE job = ?;

-- name: jobs
SELECT job FROM jobs ORDER BY job;

-- name: entry
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = ? AND window_start = ?;

-- name: entries
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = ? AND window_start >= ? AND window_start < ?
ORDER BY window_start;

-- name: parked_entries
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = ? AND parked = 1 AND window_start >= ? AND window_start < ?
ORDER BY window_start;

-- name: done_from
-- The done windows from a watermark on, oldest first, a batch at a time: how far it reaches.
SELECT window_start, window_stop FROM runs
WHERE job = ? AND window_start >= ? AND status IN ('succeeded', 'skipped')
ORDER BY window_start
LIMIT ?;

-- name: ranges_from
-- The ledger ranges from a watermark on (after a failed backfill, the watermark lies behind
-- some), a batch at a time.
SELECT window_start, window_stop FROM ledger_ranges
WHERE job = ? AND window_start >= ?
ORDER BY window_start
LIMIT ?;

-- name: ranges_overlapping
-- The ledger ranges holding windows that start in [?, ?).
SELECT window_start, window_stop, window_length, status, attempts, attempt_base, error,
       started_at, finished_at
FROM ledger_ranges WHERE job = ? AND window_stop > ? AND window_start < ?
ORDER BY window_start;

-- name: ranges_touching
-- The ledger ranges a fold of windows in [?, ?] may merge with: those overlapping or adjacent.
SELECT window_start, window_stop, window_length, status, attempts, attempt_base, error,
       started_at, finished_at
FROM ledger_ranges WHERE job = ? AND window_stop >= ? AND window_start <= ?
ORDER BY window_start;

-- name: fold_candidates
-- The done windows that stop at or before a limit (behind the watermark): a fold makes them
-- ranges. Every earlier fold took all of them, so only the new ones (and running backfills,
-- which the status excludes) lie there.
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs
WHERE job = ? AND window_start < ? AND window_stop <= ? AND status IN ('succeeded', 'skipped')
ORDER BY window_start;

-- name: delete_folded
DELETE FROM runs
WHERE job = ? AND window_start < ? AND window_stop <= ? AND status IN ('succeeded', 'skipped');

-- name: delete_range
DELETE FROM ledger_ranges WHERE job = ? AND window_start = ?;

-- name: insert_range
INSERT INTO ledger_ranges (job, window_start, window_stop, window_length, status, attempts,
                           attempt_base, error, started_at, finished_at)
VALUES (:job, :window_start, :window_stop, :window_length, :status, :attempts, :attempt_base,
        :error, :started_at, :finished_at);

-- name: census_counts
SELECT status, parked, COUNT(*) FROM runs
WHERE job = ? AND window_start >= ? AND window_stop <= ?
GROUP BY status, parked;

-- name: census_running
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = ? AND window_start >= ? AND window_stop <= ? AND status = 'running'
ORDER BY window_start;

-- name: history_overlapping
-- The history rows holding windows in [?, ?): the last attempt each window's history holds
-- (a window without a ledger row, new or forgotten by `reset`, numbers on from it).
SELECT window_start, window_stop, windows, attempt FROM attempts
WHERE job = ? AND window_stop > ? AND window_start < ?;

-- name: running_attempts
-- The attempts a run is making: its finish (or a claim taking its windows over) settles them.
SELECT id, window_start, window_stop, windows FROM attempts
WHERE run_id = ? AND status = 'running' AND job = ?;

-- name: settle_attempt
-- A history row (or the part of it kept under its id when it is split) and how it ended.
UPDATE attempts SET window_start = :window_start, window_stop = :window_stop,
                    windows = :windows, status = :status, finished_at = :finished_at,
                    duration_s = :duration_s, query_hash = :query_hash,
                    template_version = :template_version, error = :error
WHERE id = :id;

-- name: split_attempt
-- Another part of a history row that is split: its windows, attempt, run and start, and how
-- that part ended (or that it still runs).
INSERT INTO attempts (job, window_start, window_stop, windows, attempt, run_id, status,
                      started_at, finished_at, duration_s, query_hash, template_version, error,
                      reason)
SELECT job, :window_start, :window_stop, :windows, attempt, run_id, :status, started_at,
       :finished_at, :duration_s, :query_hash, :template_version, :error, reason
FROM attempts WHERE id = :id;

-- name: claim_run
-- Write the row `_rules.claimed` made (named parameters: the columns of `_sqlite._row`).
INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id, started_at,
                  finished_at, lease_expires_at, duration_s, error, fingerprint, parked,
                  attempt_base, holder_host, holder_pid, holder_started)
VALUES (:job, :window_start, :window_stop, :status, :attempts, :run_id, :started_at,
        :finished_at, :lease_expires_at, NULL, :error, :fingerprint, :parked,
        :attempt_base, :holder_host, :holder_pid, :holder_started)
ON CONFLICT (job, window_start) DO UPDATE SET
    window_stop = excluded.window_stop, status = excluded.status,
    attempts = excluded.attempts, run_id = excluded.run_id, started_at = excluded.started_at,
    finished_at = excluded.finished_at, lease_expires_at = excluded.lease_expires_at,
    duration_s = NULL, error = excluded.error, fingerprint = excluded.fingerprint,
    parked = excluded.parked, attempt_base = excluded.attempt_base,
    holder_host = excluded.holder_host, holder_pid = excluded.holder_pid,
    holder_started = excluded.holder_started;

-- name: insert_attempt
INSERT INTO attempts (job, window_start, window_stop, windows, attempt, run_id, status,
                      started_at, reason)
VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?);

-- name: renew_lease
UPDATE runs SET lease_expires_at = ? WHERE job = ? AND window_start = ?;

-- name: finish_run
-- Write the row `_rules.finished` made, with what the outcome says of the run.
UPDATE runs SET status = :status, finished_at = :finished_at,
                lease_expires_at = :lease_expires_at, error = :error,
                fingerprint = :fingerprint, parked = :parked, duration_s = :duration_s,
                query_hash = :query_hash, template_version = :template_version
WHERE job = :job AND window_start = :window_start;

-- name: requeue_run
-- Write the row `_rules.requeued` made.
UPDATE runs SET parked = :parked, finished_at = :finished_at, attempt_base = :attempt_base
WHERE job = :job AND window_start = :window_start;

-- name: count_attempts
SELECT COALESCE(SUM(windows), 0) FROM attempts WHERE job = ? AND reason = ?;

-- name: history
SELECT window_start, window_stop, attempt, run_id, status, started_at, finished_at,
       duration_s, query_hash, template_version, error, reason, windows
FROM attempts WHERE job = ?
ORDER BY id DESC LIMIT ?;

-- name: prune_history
-- Attempts finished before the cutoff that succeeded or were skipped and whose windows a
-- ledger range holds (the range row is their record now); failures and attempts at windows
-- with a row of their own stay.
DELETE FROM attempts
WHERE job = :job AND finished_at < :cutoff AND status IN ('succeeded', 'skipped')
  AND EXISTS (SELECT 1 FROM ledger_ranges AS r
              WHERE r.job = attempts.job AND r.window_start <= attempts.window_start
                AND r.window_stop >= attempts.window_stop);

-- name: definition
SELECT body FROM job_definitions WHERE job = ?;

-- name: record_definition
INSERT INTO job_definitions (job, digest, body) VALUES (?, ?, ?)
ON CONFLICT (job) DO UPDATE SET
    digest = excluded.digest, body = excluded.body, recorded_at = CURRENT_TIMESTAMP;

-- name: forget_runs
DELETE FROM runs WHERE job = ? AND window_start >= ?;

-- name: beat
-- A worker's beat: registers it the first time, then keeps its row current; `last_seen` never
-- moves back (a delayed beat arriving after a later one).
INSERT INTO workers (host, pid, process_started, version, started_at, last_seen, stopped_at, jobs)
VALUES (:host, :pid, :process_started, :version, :started_at, :last_seen, :stopped_at, :jobs)
ON CONFLICT (host, pid, process_started) DO UPDATE SET
    version = excluded.version, started_at = excluded.started_at,
    last_seen = max(workers.last_seen, excluded.last_seen),
    stopped_at = excluded.stopped_at, jobs = excluded.jobs;

-- name: forget_workers
DELETE FROM workers WHERE last_seen < ?;

-- name: workers
SELECT host, pid, process_started, version, started_at, last_seen, stopped_at, jobs
FROM workers WHERE last_seen >= ?
ORDER BY started_at, host, pid, process_started;
