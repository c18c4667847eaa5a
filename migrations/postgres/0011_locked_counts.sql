-- The counts that limits make, each under its subject's advisory lock. A statement that counts
-- and writes only below a limit must not count before another such statement about the same
-- subject has committed. Taking the lock inside the statement is not enough by itself: under
-- READ COMMITTED a statement's snapshot is taken when it starts, before the lock. A VOLATILE
-- function takes a snapshot of its own for each query it runs, so these take the lock first and
-- then count what was committed before it was theirs. A statement that counts only through them
-- is serialized by itself, without a transaction around it (one trip to the server where it
-- took three: begin with the lock, the statement, commit).
--
-- The lock's number is the one the portal takes before a transaction of several statements:
-- the first 8 bytes of the SHA-256 of the subject's key, big-endian (`store::batch::lock_key`).
-- In PL/pgSQL: called from PL/pgSQL, a SQL function is planned again at each call (50 µs here).
-- The counts are STRICT: one given a NULL takes no lock, and counts nothing either.
CREATE FUNCTION passback_lock_key(key TEXT) RETURNS BIGINT
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN ('x' || encode(substr(sha256(convert_to(key, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint;
END
$$;

-- A subject's events of one kind since a time (the resets that block self-service).
CREATE FUNCTION passback_gate_events_of(of_subject TEXT, of_kind TEXT, since BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(passback_lock_key('gate_events:' || of_subject));
    RETURN (SELECT COUNT(*) FROM gate_events WHERE subject = of_subject AND kind = of_kind AND at > since);
END
$$;

-- A subject's change-form attempts since a time.
CREATE FUNCTION passback_change_attempts_of(of_subject TEXT, since BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(passback_lock_key('change_attempts:' || of_subject));
    RETURN (SELECT COUNT(*) FROM change_attempts WHERE subject = of_subject AND at > since);
END
$$;

-- The codes made for a person since a time.
CREATE FUNCTION passback_verification_codes_of(of_directory TEXT, of_anchor TEXT, since BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(passback_lock_key('verification_codes:' || of_directory || '|' || of_anchor));
    RETURN (SELECT COUNT(*) FROM verification_codes
            WHERE directory = of_directory AND anchor = of_anchor AND created_at > since);
END
$$;
