-- tierflow state, version 5: what decides each job's output (kind, resolved tiers, schedule,
-- measurements, aggregates, template hash…), recorded with its ledger, so a job redefined under
-- the same name is noticed instead of silently keeping the old watermark. body is canonical
-- JSON (tierflow._definitions); a job without a row was never seen, or predates this version.
CREATE TABLE job_definitions (
    job         TEXT    PRIMARY KEY,
    digest      TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
);
