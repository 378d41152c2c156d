-- tierflow state on PostgreSQL, version 2 (SQLite's version 6): cost that does not grow with
-- history.
--
-- ledger_ranges: contiguous done windows behind the watermark folded into one row each (by
-- `finish`, see tierflow._state._rules.fold): the windows of length window_length from
-- window_start to window_stop, alike in status, attempts, attempt_base and error, with the
-- earliest start and the latest finish among them. A window is in `runs` or in a range, never
-- both: a claim of a window inside a range carves it out in the claim's transaction. Folding
-- and carving happen under the job's row lock (jobs FOR UPDATE).
CREATE TABLE ledger_ranges (
    job           text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_stop   timestamptz NOT NULL,
    window_length interval    NOT NULL CHECK (window_length > interval '0'),
    status        text        NOT NULL CHECK (status IN ('succeeded', 'skipped')),
    attempts      integer     NOT NULL,
    attempt_base  integer     NOT NULL,
    error         text,
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (job, window_start)
);

CREATE INDEX ledger_ranges_by_stop ON ledger_ranges (job, window_stop);

-- attempts: one row per attempt at a contiguous run of `windows` windows of equal length
-- claimed together (window_start to window_stop), instead of one per window; each existing row
-- is a run of one window.
ALTER TABLE attempts ADD COLUMN windows integer NOT NULL DEFAULT 1 CHECK (windows > 0);
ALTER TABLE attempts DROP CONSTRAINT attempts_job_window_start_attempt_key;

-- The rows a window's history overlaps (attempt numbers of windows without a ledger row).
CREATE INDEX attempts_by_stop ON attempts (job, window_stop);
-- The attempts a run is making (what its finish, or a takeover, settles): running rows only.
CREATE INDEX attempts_running ON attempts (run_id) WHERE status = 'running';
-- Pruning past keep_history reads the oldest finished attempts.
CREATE INDEX attempts_by_finish ON attempts (job, finished_at);
