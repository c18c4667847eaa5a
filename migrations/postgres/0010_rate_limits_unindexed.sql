-- Every request a rate limit counts moves its row's time on: with an index on that time, each
-- also rewrote an index page (and, on PostgreSQL, could not update the row in place). The table
-- holds a row per client address or account seen within the last hour at most, so the periodic
-- task that deletes the rows whose allowance is whole again reads it all, once a minute.
DROP INDEX rate_limits_when;
