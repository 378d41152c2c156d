-- tierflow state, version 6 (to be renumbered 7 when the ledger rework's version 6 lands): the
-- workers. Each `tierflow run` daemon registers itself, named by the process that holds its
-- claims (host, pid, the process's start), and beats every few seconds, so `status` shows the
-- live workers and those that stopped beating. Times are microseconds since the epoch, UTC;
-- `jobs` is a JSON array of job names.
CREATE TABLE workers (
    host            TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    process_started TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    stopped_at      INTEGER,
    jobs            TEXT    NOT NULL,
    PRIMARY KEY (host, pid, process_started)
);

CREATE INDEX workers_by_last_seen ON workers (last_seen);
