-- tierflow state on PostgreSQL, version 1: what SQLite versions 1 to 5 hold, in one step
-- (no PostgreSQL store existed before). Times are timestamptz (microseconds, UTC instants).
CREATE TABLE jobs (
    job        text        PRIMARY KEY,
    watermark  timestamptz NOT NULL
);

-- The ledger: the latest state of each window, unique on (job, window start). Claims lock these
-- rows (FOR UPDATE SKIP LOCKED); `holder_*` name the process of a running window's claim.
CREATE TABLE runs (
    job              text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_stop      timestamptz NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned', 'skipped')),
    attempts         integer     NOT NULL DEFAULT 0,
    run_id           text,
    started_at       timestamptz,
    finished_at      timestamptz,
    lease_expires_at timestamptz,
    duration_s       double precision,
    query_hash       text,
    template_version text,
    error            text,
    fingerprint      text,
    parked           boolean     NOT NULL DEFAULT false,
    attempt_base     integer     NOT NULL DEFAULT 0,
    holder_host      text,
    holder_pid       integer,
    holder_started   text,
    PRIMARY KEY (job, window_start)
);

CREATE INDEX runs_by_status ON runs (job, status);

-- Every attempt, kept for good.
CREATE TABLE attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job              text        NOT NULL,
    window_start     timestamptz NOT NULL,
    window_stop      timestamptz NOT NULL,
    attempt          integer     NOT NULL,
    run_id           text        NOT NULL,
    status           text        NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    duration_s       double precision,
    query_hash       text,
    template_version text,
    error            text,
    reason           text        NOT NULL DEFAULT 'scheduled',
    UNIQUE (job, window_start, attempt)
);

CREATE INDEX attempts_by_job ON attempts (job, id);
CREATE INDEX attempts_by_reason ON attempts (job, reason);

-- What decides each job's output (canonical JSON, tierflow._definitions).
CREATE TABLE job_definitions (
    job         text        PRIMARY KEY,
    digest      text        NOT NULL,
    body        text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
