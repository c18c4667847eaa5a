-- The agents connected to each portal instance now, as that instance writes them every second:
-- how one instance finds an agent connected to another, and how any instance's health page shows
-- every agent. Rows not renewed within the liveness window are those of an instance that died.
CREATE TABLE relay_presence (
    instance      TEXT NOT NULL,
    conn_id       BIGINT NOT NULL,
    agent_id      TEXT NOT NULL,
    status_json   TEXT NOT NULL,              -- the agent's last sealed status report
    connected_at  BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    PRIMARY KEY (instance, conn_id)
);

-- Requests counted per fixed window of time, for the rate limits every instance must share (first
-- steps per client address and per account): one row per key and window, counted up in one
-- statement that refuses past the limit. Old windows go by the periodic task.
CREATE TABLE rate_counts (
    bucket        TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    n             BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_counts_when ON rate_counts(window_start);
