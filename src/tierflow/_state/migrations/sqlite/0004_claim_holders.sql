-- tierflow state, version 4: who holds a running window's claim (host, pid, and the process's
-- start, so a reused pid is not mistaken for it): a claim whose holder died is taken over at once.
ALTER TABLE runs ADD COLUMN holder_host TEXT;
ALTER TABLE runs ADD COLUMN holder_pid INTEGER;
ALTER TABLE runs ADD COLUMN holder_started TEXT;
