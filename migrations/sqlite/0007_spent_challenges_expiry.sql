-- Spent proof-of-work challenges are forgotten once they expire by the periodic task (an indexed
-- range), no longer by a scan of the whole table on each first step.
CREATE INDEX spent_challenges_expiry ON spent_challenges(expires_at);
