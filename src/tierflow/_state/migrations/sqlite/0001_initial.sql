-- tierflow state, version 1. Times are microseconds since the Unix epoch, UTC.
CREATE TABLE jobs (
    job        TEXT    PRIMARY KEY,
    watermark  INTEGER NOT NULL
);

-- The ledger: the latest state of each window, unique on (job, window start).
CREATE TABLE runs (
    job              TEXT    NOT NULL,
    window_start     INTEGER NOT NULL,
    window_stop      INTEGER NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_id           TEXT,
    started_at       INTEGER,
    finished_at      INTEGER,
    lease_expires_at INTEGER,
    duration_s       REAL,
    query_hash       TEXT,
    template_version TEXT,
    error            TEXT,
    PRIMARY KEY (job, window_start)
) WITHOUT ROWID;

CREATE INDEX runs_by_status ON runs (job, status);

-- Every attempt, kept for good: the history that native InfluxDB tasks throw away after 3 days.
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    job              TEXT    NOT NULL,
    window_start     INTEGER NOT NULL,
    window_stop      INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    run_id           TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    duration_s       REAL,
    query_hash       TEXT,
    template_version TEXT,
    error            TEXT,
    UNIQUE (job, window_start, attempt)
);

CREATE INDEX attempts_by_job ON attempts (job, id);
