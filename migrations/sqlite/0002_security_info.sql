-- Security info (the methods a person registered to prove who they are) and the limits on
-- verification. A person is (directory, anchor); a cloud-only account has directory ''.
-- Secrets are stored only as ciphertext (TOTP seeds, under the data key) or argon2id hashes.

CREATE TABLE totp_secrets (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    secret_enc    BLOB NOT NULL,             -- AES-256-GCM under the data key, bound to the person
    created_at    INTEGER NOT NULL,
    confirmed_at  INTEGER,                   -- NULL while enrolment waits for its first code
    last_step     INTEGER NOT NULL DEFAULT 0, -- the newest time step used: never accepted again
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE security_answers (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    question      TEXT NOT NULL,             -- a predefined question's id, or "custom:<n>"
    answer_hash   TEXT NOT NULL,             -- argon2id of the normalised answer
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor, question)
);

-- An e-mail address the person registered (and proved, with a code) for verification codes.
CREATE TABLE alternate_emails (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    email         TEXT NOT NULL,
    verified_at   INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor)
);

-- When the person last reviewed their security info (for re-confirmation every N days).
CREATE TABLE security_info_reviews (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    reviewed_at   INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor)
);

-- Failed verifications and completed resets, per person, for the hourly limits.
CREATE TABLE gate_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    subject   TEXT NOT NULL,
    kind      TEXT NOT NULL,                 -- 'failure' or 'reset'
    method    TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX gate_events_subject ON gate_events(subject, kind, at);

-- A person blocked from self-service until a time (after too many failures or resets).
CREATE TABLE self_service_blocks (
    subject   TEXT PRIMARY KEY,
    until     INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    at        INTEGER NOT NULL
);

-- Proof-of-work challenges already used: each solves one first step only.
CREATE TABLE spent_challenges (
    nonce       TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
