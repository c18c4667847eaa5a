-- Every portal instance that runs on this database, as it stamps itself every second by the
-- database's clock: the health page shows which are alive and which stopped, and a form sent
-- again after the instance that took it first stopped answering is carried on by another.
CREATE TABLE portal_instances (
    instance    TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);
CREATE INDEX portal_instances_seen ON portal_instances(last_seen);

-- The instance that claimed a writeback and waits for its answer.
ALTER TABLE writebacks ADD COLUMN instance TEXT;
-- The agent's whole answer when it came after the person was shown "not confirmed" (the code
-- alone is in late_outcome_code): a form sent again shows it.
ALTER TABLE writebacks ADD COLUMN late_outcome_json TEXT;
