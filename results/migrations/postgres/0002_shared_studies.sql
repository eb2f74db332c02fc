-- dyno results store, schema version 2 (PostgreSQL dialect): tuning studies that resume and that
-- several worker processes share. migrations/sqlite/ holds the same statements.
-- A study is found by name (get-or-create), so names become unique; a database that already
-- holds duplicates keeps the oldest under its name and renames the others to `NAME#ID`.
-- A trial may now be queued (`pending`) before any worker claims it (`running`, `worker` set);
-- `trial_key` is the tuner's identity of a trial (NULL for trials recorded before this), unique
-- within its study so that two workers never queue the same one. `params` (the point and its
-- fidelity) and `settings` (the tuner's settings) are JSON documents the store does not read.
-- Trial status has no CHECK constraint, so the new `pending` and `infeasible` need no change;
-- (study_id, number) is already unique by the table constraint of 0001.

ALTER TABLE studies ADD COLUMN settings TEXT;
UPDATE studies SET name = name || '#' || CAST(id AS TEXT)
    WHERE id NOT IN (SELECT MIN(id) FROM studies GROUP BY name);
CREATE UNIQUE INDEX studies_name ON studies (name);

ALTER TABLE trials ADD COLUMN trial_key TEXT;
ALTER TABLE trials ADD COLUMN params TEXT;
ALTER TABLE trials ADD COLUMN worker TEXT;
CREATE UNIQUE INDEX trials_study_key ON trials (study_id, trial_key);
CREATE INDEX trials_study_status ON trials (study_id, status, number);
