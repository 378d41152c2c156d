-- tierflow state, version 6: cost that does not grow with history.
--
-- ledger_ranges: contiguous done windows behind the watermark folded into one row each (by
-- `finish`, see tierflow._state._rules.fold): the windows of length window_length from
-- window_start to window_stop, alike in status, attempts, attempt_base and error, with the
-- earliest start and the latest finish among them. A window is in `runs` or in a range, never
-- both: a claim of a window inside a range carves it out in the claim's transaction.
CREATE TABLE ledger_ranges (
    job           TEXT    NOT NULL,
    window_start  INTEGER NOT NULL,
    window_stop   INTEGER NOT NULL,
    window_length INTEGER NOT NULL CHECK (window_length > 0),
    status        TEXT    NOT NULL CHECK (status IN ('succeeded', 'skipped')),
    attempts      INTEGER NOT NULL,
    attempt_base  INTEGER NOT NULL,
    error         TEXT,
    started_at    INTEGER,
    finished_at   INTEGER,
    PRIMARY KEY (job, window_start)
) WITHOUT ROWID;

CREATE INDEX ledger_ranges_by_stop ON ledger_ranges (job, window_stop);

-- attempts: one row per attempt at a contiguous run of `windows` windows of equal length
-- claimed together (window_start to window_stop), instead of one per window: rebuilt without
-- the unique (job, window_start, attempt), each existing row a run of one window.
CREATE TABLE attempts_v6 (
    id               INTEGER PRIMARY KEY,
    job              TEXT    NOT NULL,
    window_start     INTEGER NOT NULL,
    window_stop      INTEGER NOT NULL,
    windows          INTEGER NOT NULL DEFAULT 1 CHECK (windows > 0),
    attempt          INTEGER NOT NULL,
    run_id           TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    duration_s       REAL,
    query_hash       TEXT,
    template_version TEXT,
    error            TEXT,
    reason           TEXT    NOT NULL DEFAULT 'scheduled'
);

INSERT INTO attempts_v6 (id, job, window_start, window_stop, windows, attempt, run_id, status,
                         started_at, finished_at, duration_s, query_hash, template_version,
                         error, reason)
SELECT id, job, window_start, window_stop, 1, attempt, run_id, status, started_at, finished_at,
       duration_s, query_hash, template_version, error, reason
FROM attempts;

DROP TABLE attempts;
ALTER TABLE attempts_v6 RENAME TO attempts;

CREATE INDEX attempts_by_job ON attempts (job, id);
CREATE INDEX attempts_by_reason ON attempts (job, reason);
-- The rows a window's history overlaps (attempt numbers of windows without a ledger row).
CREATE INDEX attempts_by_stop ON attempts (job, window_stop);
-- The attempts a run is making (what its finish, or a takeover, settles): running rows only.
CREATE INDEX attempts_running ON attempts (run_id) WHERE status = 'running';
-- Pruning past keep_history reads the oldest finished attempts.
CREATE INDEX attempts_by_finish ON attempts (job, finished_at);
