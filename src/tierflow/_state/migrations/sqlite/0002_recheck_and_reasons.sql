-- tierflow state, version 2: why each attempt ran, and the source fingerprint a window was
-- aggregated from (to re-run it when late data changes the source).
ALTER TABLE attempts ADD COLUMN reason TEXT NOT NULL DEFAULT 'scheduled';
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
CREATE INDEX attempts_by_reason ON attempts (job, reason);
