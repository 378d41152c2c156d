-- tierflow state, version 3: windows that failed max_window_attempts times are parked until
-- `tierflow retry` re-queues them; attempt_base is the attempt count at the last re-queue.
ALTER TABLE runs ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
