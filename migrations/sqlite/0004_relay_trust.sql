-- What the relay's trust boundary needs to remember, on every instance and across restarts.

-- The ids of sealed frames an agent sent (reports, rotations), kept until such a frame could no
-- longer be accepted anyway: a second copy of one is refused.
CREATE TABLE relay_frames (
    agent_id    TEXT NOT NULL,
    frame_id    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, frame_id)
);
CREATE INDEX relay_frames_expiry ON relay_frames(expires_at);

-- When an agent's answer to a writeback was taken: a finished writeback is final, and any later
-- answer for its id is refused. An answer that came after the person was told "not confirmed"
-- is kept beside what the person saw, never over it.
ALTER TABLE writebacks ADD COLUMN result_at INTEGER;
ALTER TABLE writebacks ADD COLUMN late_outcome_code TEXT;

-- A full sync that would have removed more of a directory's people than allowed: held, not
-- applied, until an administrator applies it or a later full sync removes fewer.
CREATE TABLE sync_holds (
    directory     TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    started_at    INTEGER NOT NULL,           -- people not seen since then would be removed
    would_remove  INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    held_at       INTEGER NOT NULL
);
