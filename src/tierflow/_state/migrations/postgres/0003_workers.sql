-- tierflow state on PostgreSQL, version 2 (to be renumbered 3 when the ledger rework's version 2
-- lands): the workers. Each `tierflow run` daemon registers itself, named by the process that
-- holds its claims (host, pid, the process's start), and beats every few seconds, so `status`
-- shows the live workers and those that stopped beating.
CREATE TABLE workers (
    host            text        NOT NULL,
    pid             integer     NOT NULL,
    process_started text        NOT NULL,
    version         text        NOT NULL,
    started_at      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    stopped_at      timestamptz,
    jobs            text[]      NOT NULL,
    PRIMARY KEY (host, pid, process_started)
);

CREATE INDEX workers_by_last_seen ON workers (last_seen);
