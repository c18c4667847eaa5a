-- The security questions a person is asked, drawn once and kept for a day: asking again shows
-- the same ones, so an attacker cannot draw until they get questions they know.
CREATE TABLE question_draws (
    directory    TEXT NOT NULL,
    anchor       TEXT NOT NULL,
    questions    TEXT NOT NULL,               -- JSON array of question ids, in the order asked
    drawn_at     INTEGER NOT NULL,
    answered_at  INTEGER,                     -- answered right since the draw
    PRIMARY KEY (directory, anchor)
);

-- A person's session epoch: raised by every reset, change, unlock and security-info change, which
-- ends every session of theirs signed in under an older one (on every instance).
CREATE TABLE person_epochs (
    directory  TEXT NOT NULL,
    anchor     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor)
);

-- Failed verifications are counted per client address too (IPv6 by its /64), so that guessing
-- spread over many accounts from one place is limited.
ALTER TABLE gate_events ADD COLUMN client TEXT;
CREATE INDEX gate_events_client ON gate_events(client, kind, at);
CREATE INDEX gate_events_at ON gate_events(kind, at);

-- When an alert of each kind was last e-mailed: at most one an hour, whichever instance sends it.
CREATE TABLE alerts_sent (
    kind  TEXT PRIMARY KEY,
    at    INTEGER NOT NULL
);

-- When the directory last saw each person's password set: a change made elsewhere outdates the
-- portal's copy of a hash-synced password, which is then dropped.
ALTER TABLE directory_users ADD COLUMN password_changed_at INTEGER;
