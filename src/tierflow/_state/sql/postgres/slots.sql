-- The statements of the cluster-wide slots (`tierflow._state._slots`), looked up by name. A slot
-- is a session-level advisory lock in the two-key space, (scope key, index): it is held until
-- the worker's slot connection unlocks it or ends (a killed worker's ends with its socket). The
-- one-key space (the migration lock) is separate. They run in autocommit: no transaction stays
-- open while a slot is held.

-- name: take_slot
-- The first free index below the limit, skipping those this worker already holds (a session may
-- take its own advisory lock again, so only the worker knows which are its own). A recursive
-- query tries one index per step and stops at the first it locks: a plain SELECT … LIMIT 1 may
-- call pg_try_advisory_lock on more rows than it returns (and keep those locks). None locked:
-- no row.
WITH RECURSIVE tried (i, got) AS (
    SELECT -1, false
    UNION ALL
    SELECT i + 1,
           CASE WHEN i + 1 = ANY (%(mine)s::integer[]) THEN false
                ELSE pg_try_advisory_lock(%(scope)s::integer, i + 1) END
    FROM tried
    WHERE NOT got AND i + 1 < %(limit)s::integer
)
SELECT i FROM tried WHERE got;

-- name: retake_slot
-- Take again, on a new connection, a slot the lost one held (while its request is in flight).
SELECT pg_try_advisory_lock(%s::integer, %s::integer);

-- name: release_slot
SELECT pg_advisory_unlock(%s::integer, %s::integer);
