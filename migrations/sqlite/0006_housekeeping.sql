-- Old rows are deleted by a periodic task, by time: these indexes make that a range, not a scan
-- of the whole table (which grew with history and sat on the request path).
CREATE INDEX gate_events_when ON gate_events(at);
CREATE INDEX change_attempts_when ON change_attempts(at);
