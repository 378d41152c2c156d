-- The PostgreSQL store's queries, looked up by name (`tierflow._state._sql.queries("postgres")`).
-- Parameters are psycopg's (%s, %(name)s), bound server-side. Times are timestamptz. The schema
-- is in migrations/postgres/. The rules (what a claim may take, what a row becomes) are Python,
-- in tierflow._state._rules: these statements only read, lock and write rows.

-- name: migration_lock
-- Held to the end of the migrating transaction: workers starting at once migrate one at a time,
-- and every one but the first finds nothing left to do. (The key is "tierflow" in ASCII.)
SELECT pg_advisory_xact_lock(8388347322973319031);

-- name: has_schema_migrations
-- Asked first: CREATE TABLE IF NOT EXISTS needs the CREATE right even when the table exists,
-- and a worker that finds the schema current needs no DDL right at all.
SELECT (to_regclass('schema_migrations') IS NOT NULL)::integer;

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version) VALUES (%s);

-- name: ensure_job
INSERT INTO jobs (job, watermark) VALUES (%s, %s) ON CONFLICT (job) DO NOTHING;

-- name: watermark
SELECT watermark FROM jobs WHERE job = %s;

-- name: lock_watermark
-- A finish or reset locks its job's row first: watermark moves of one job happen one at a time,
-- each seeing the windows the one before recorded.
SELECT watermark FROM jobs WHERE job = %s FOR UPDATE;

-- name: set_watermark
UPDATE jobs SET watermark = %s WHERE job = %s;

-- name: jobs
SELECT job FROM jobs ORDER BY job;

-- name: entries
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %(job)s AND window_start >= %(since)s
  AND (%(until)s::timestamptz IS NULL OR window_start < %(until)s)
ORDER BY window_start;

-- name: entries_at
-- Rows of the given windows as last committed, without locking (a claim reads those another
-- transaction has locked this way, to say who holds them).
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %s AND window_start = ANY(%s)
ORDER BY window_start;

-- name: claim_entries
-- The rows a claim may judge: those no other transaction has locked (another worker claiming,
-- renewing or finishing them right now). Locked in window order, as every statement here does.
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %s AND window_start = ANY(%s)
ORDER BY window_start
FOR UPDATE SKIP LOCKED;

-- name: lock_entries
-- The rows a renew or finish checks and writes, locked (waiting for a claim on them to end).
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %s AND window_start = ANY(%s)
ORDER BY window_start
FOR UPDATE;

-- name: parked_entries
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %(job)s AND parked
  AND (%(start)s::timestamptz IS NULL OR window_start >= %(start)s)
  AND (%(stop)s::timestamptz IS NULL OR window_start < %(stop)s)
ORDER BY window_start
FOR UPDATE;

-- name: done_from
-- The done windows from a watermark on, oldest first, a batch at a time: how far it reaches.
SELECT window_start, window_stop FROM runs
WHERE job = %s AND window_start >= %s AND status IN ('succeeded', 'skipped')
ORDER BY window_start
LIMIT %s;

-- name: ranges_from
-- The ledger ranges from a watermark on (after a failed backfill, the watermark lies behind
-- some), a batch at a time.
SELECT window_start, window_stop FROM ledger_ranges
WHERE job = %s AND window_start >= %s
ORDER BY window_start
LIMIT %s;

-- name: ranges_overlapping
-- The ledger ranges holding windows that start in [since, until) (until None: no end).
SELECT window_start, window_stop, window_length, status, attempts, attempt_base, error,
       started_at, finished_at
FROM ledger_ranges
WHERE job = %(job)s AND window_stop > %(since)s
  AND (%(until)s::timestamptz IS NULL OR window_start < %(until)s)
ORDER BY window_start;

-- name: ranges_touching
-- The ledger ranges a fold of windows in [first start, last stop] may merge with: those overlapping or
-- adjacent (under the job's lock: folds and carve-outs of a job happen one at a time).
SELECT window_start, window_stop, window_length, status, attempts, attempt_base, error,
       started_at, finished_at
FROM ledger_ranges WHERE job = %s AND window_stop >= %s AND window_start <= %s
ORDER BY window_start;

-- name: fold_candidates
-- The done windows that stop at or before a limit (behind the watermark): a fold makes them
-- ranges. Every earlier fold took all of them, so only the new ones (and running backfills,
-- which the status excludes) lie there.
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs
WHERE job = %s AND window_start < %s AND window_stop <= %s AND status IN ('succeeded', 'skipped')
ORDER BY window_start;

-- name: delete_folded
DELETE FROM runs
WHERE job = %s AND window_start < %s AND window_stop <= %s AND status IN ('succeeded', 'skipped');

-- name: delete_range
DELETE FROM ledger_ranges WHERE job = %s AND window_start = %s;

-- name: insert_range
INSERT INTO ledger_ranges (job, window_start, window_stop, window_length, status, attempts,
                           attempt_base, error, started_at, finished_at)
VALUES (%(job)s, %(window_start)s, %(window_stop)s, %(window_length)s, %(status)s,
        %(attempts)s, %(attempt_base)s, %(error)s, %(started_at)s, %(finished_at)s);

-- name: census_counts
SELECT status, parked, COUNT(*) FROM runs
WHERE job = %s AND window_start >= %s AND window_stop <= %s
GROUP BY status, parked;

-- name: census_running
SELECT window_start, window_stop, status, attempts, run_id, started_at, finished_at,
       lease_expires_at, error, fingerprint, parked, attempt_base, holder_host, holder_pid,
       holder_started
FROM runs WHERE job = %s AND window_start >= %s AND window_stop <= %s AND status = 'running'
ORDER BY window_start;

-- name: history_overlapping
-- The history rows holding windows in [since, until): the last attempt each window's history holds
-- (a window without a ledger row, new or forgotten by `reset`, numbers on from it).
SELECT window_start, window_stop, windows, attempt FROM attempts
WHERE job = %s AND window_stop > %s AND window_start < %s;

-- name: running_attempts
-- The attempts a run is making: its finish (or a claim taking its windows over) settles them.
-- Locked: the run's finish and a claim taking its windows over split them one at a time.
SELECT id, window_start, window_stop, windows FROM attempts
WHERE run_id = %s AND status = 'running' AND job = %s
ORDER BY id
FOR UPDATE;

-- name: settle_attempt
-- A history row (or the part of it kept under its id when it is split) and how it ended.
UPDATE attempts SET window_start = %(window_start)s, window_stop = %(window_stop)s,
                    windows = %(windows)s, status = %(status)s,
                    finished_at = %(finished_at)s, duration_s = %(duration_s)s,
                    query_hash = %(query_hash)s, template_version = %(template_version)s,
                    error = %(error)s
WHERE id = %(id)s;

-- name: split_attempt
-- Another part of a history row that is split: its windows, attempt, run and start, and how
-- that part ended (or that it still runs).
INSERT INTO attempts (job, window_start, window_stop, windows, attempt, run_id, status,
                      started_at, finished_at, duration_s, query_hash, template_version, error,
                      reason)
SELECT job, %(window_start)s, %(window_stop)s, %(windows)s, attempt, run_id, %(status)s,
       started_at, %(finished_at)s, %(duration_s)s, %(query_hash)s, %(template_version)s,
       %(error)s, reason
FROM attempts WHERE id = %(id)s;

-- name: claim_run
-- Write the row `_rules.claimed` made over a row this transaction has locked.
UPDATE runs SET status = %(status)s, attempts = %(attempts)s, run_id = %(run_id)s,
                started_at = %(started_at)s, finished_at = %(finished_at)s,
                lease_expires_at = %(lease_expires_at)s, duration_s = NULL, error = %(error)s,
                fingerprint = %(fingerprint)s, parked = %(parked)s,
                attempt_base = %(attempt_base)s, holder_host = %(holder_host)s,
                holder_pid = %(holder_pid)s, holder_started = %(holder_started)s
WHERE job = %(job)s AND window_start = %(window_start)s;

-- name: claim_new_run
-- Write the row `_rules.claimed` made for a window without one, unless another transaction
-- made it meanwhile (then nothing is returned, and that window is not taken).
INSERT INTO runs (job, window_start, window_stop, status, attempts, run_id, started_at,
                  finished_at, lease_expires_at, error, fingerprint, parked, attempt_base,
                  holder_host, holder_pid, holder_started)
VALUES (%(job)s, %(window_start)s, %(window_stop)s, %(status)s, %(attempts)s, %(run_id)s,
        %(started_at)s, %(finished_at)s, %(lease_expires_at)s, %(error)s, %(fingerprint)s,
        %(parked)s, %(attempt_base)s, %(holder_host)s, %(holder_pid)s, %(holder_started)s)
ON CONFLICT (job, window_start) DO NOTHING
RETURNING window_start;

-- name: insert_attempt
INSERT INTO attempts (job, window_start, window_stop, windows, attempt, run_id, status,
                      started_at, reason)
VALUES (%s, %s, %s, %s, %s, %s, 'running', %s, %s);

-- name: renew_lease
UPDATE runs SET lease_expires_at = %s WHERE job = %s AND window_start = ANY(%s);

-- name: finish_run
-- Write the row `_rules.finished` made, with what the outcome says of the run.
UPDATE runs SET status = %(status)s, finished_at = %(finished_at)s,
                lease_expires_at = %(lease_expires_at)s, error = %(error)s,
                fingerprint = %(fingerprint)s, parked = %(parked)s, duration_s = %(duration_s)s,
                query_hash = %(query_hash)s, template_version = %(template_version)s
WHERE job = %(job)s AND window_start = %(window_start)s;

-- name: requeue_run
-- Write the row `_rules.requeued` made.
UPDATE runs SET parked = %(parked)s, finished_at = %(finished_at)s,
                attempt_base = %(attempt_base)s
WHERE job = %(job)s AND window_start = %(window_start)s;

-- name: count_attempts
SELECT COALESCE(SUM(windows), 0) FROM attempts WHERE job = %s AND reason = %s;

-- name: history
SELECT window_start, window_stop, attempt, run_id, status, started_at, finished_at,
       duration_s, query_hash, template_version, error, reason, windows
FROM attempts WHERE job = %s
ORDER BY id DESC LIMIT %s;

-- name: prune_history
-- Attempts finished before the cutoff that succeeded or were skipped and whose windows a
-- ledger range holds (the range row is their record now); failures and attempts at windows
-- with a row of their own stay.
DELETE FROM attempts AS a
WHERE a.job = %(job)s AND a.finished_at < %(cutoff)s AND a.status IN ('succeeded', 'skipped')
  AND EXISTS (SELECT 1 FROM ledger_ranges AS r
              WHERE r.job = a.job AND r.window_start <= a.window_start
                AND r.window_stop >= a.window_stop);

-- name: definition
SELECT body FROM job_definitions WHERE job = %s;

-- name: record_definition
INSERT INTO job_definitions (job, digest, body) VALUES (%s, %s, %s)
ON CONFLICT (job) DO UPDATE SET
    digest = excluded.digest, body = excluded.body, recorded_at = now();

-- name: forget_runs
DELETE FROM runs WHERE job = %s AND (%s::timestamptz IS NULL OR window_start >= %s);

-- name: beat
-- A worker's beat: registers it the first time, then keeps its row current; `last_seen` never
-- moves back (a delayed beat arriving after a later one).
INSERT INTO workers (host, pid, process_started, version, started_at, last_seen, stopped_at, jobs)
VALUES (%(host)s, %(pid)s, %(process_started)s, %(version)s, %(started_at)s, %(last_seen)s,
        %(stopped_at)s, %(jobs)s)
ON CONFLICT (host, pid, process_started) DO UPDATE SET
    version = excluded.version, started_at = excluded.started_at,
    last_seen = GREATEST(workers.last_seen, excluded.last_seen),
    stopped_at = excluded.stopped_at, jobs = excluded.jobs;

-- name: forget_workers
DELETE FROM workers WHERE last_seen < %s;

-- name: workers
SELECT host, pid, process_started, version, started_at, last_seen, stopped_at, jobs
FROM workers WHERE last_seen >= %s
ORDER BY started_at, host, pid, process_started;
