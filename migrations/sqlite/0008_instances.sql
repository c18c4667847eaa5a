-- The agents connected to each portal instance now, as that instance writes them every second:
-- how one instance finds an agent connected to another, and how any instance's health page shows
-- every agent. Rows not renewed within the liveness window are those of an instance that died.
CREATE TABLE relay_presence (
    instance      TEXT NOT NULL,
    conn_id       INTEGER NOT NULL,
    agent_id      TEXT NOT NULL,
    status_json   TEXT NOT NULL,              -- the agent's last sealed status report
    connected_at  INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    PRIMARY KEY (instance, conn_id)
);

-- The rate limits every instance must share (first steps per client address and per account), as
-- a generic cell rate algorithm: per key, the theoretical arrival time of the next request (Unix
-- microseconds), moved on by one interval per request taken, in one statement that refuses a
-- request that would move it more than the window ahead. A row in the past is a full allowance:
-- the periodic task deletes it.
CREATE TABLE rate_limits (
    bucket  TEXT PRIMARY KEY,
    tat     INTEGER NOT NULL
);
CREATE INDEX rate_limits_when ON rate_limits(tat);
