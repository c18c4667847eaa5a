-- passback schema, SQLite. Secrets are stored only as hashes or as ciphertext.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    directories   TEXT NOT NULL,            -- JSON array: the only directory ids it may serve
    secret_hash   BLOB NOT NULL,            -- SHA-256 of the 256-bit relay secret
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

CREATE TABLE agent_keys (
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    version          INTEGER NOT NULL,
    public_key_pem   TEXT NOT NULL,
    package_key_enc  BLOB NOT NULL,          -- AES-256-GCM under the configured data key
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, version)
);

CREATE TABLE enrollment_tokens (
    token_hash  BLOB PRIMARY KEY,            -- SHA-256 of the token
    name        TEXT NOT NULL,
    directories TEXT NOT NULL,               -- JSON array, handed on to the agent it enrolls
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE directory_users (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    dn            TEXT NOT NULL,
    username      TEXT NOT NULL,             -- lower-cased
    email         TEXT,                      -- as synced
    email_lc      TEXT,                      -- lower-cased, for lookups
    other_emails  TEXT NOT NULL DEFAULT '[]', -- JSON array of further addresses
    mobile        TEXT,
    display_name  TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    locked        INTEGER NOT NULL,
    protected     INTEGER NOT NULL DEFAULT 0,
    synced_at     INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor)
);
CREATE INDEX directory_users_username ON directory_users(username);
CREATE INDEX directory_users_email ON directory_users(email_lc);

CREATE TABLE directory_policies (
    directory   TEXT PRIMARY KEY,
    policy_json TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE verification_codes (
    id          TEXT PRIMARY KEY,
    directory   TEXT NOT NULL,
    anchor      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,               -- HMAC-SHA256 (key derived from the data key), hex
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    used_at     INTEGER
);
CREATE INDEX verification_codes_target ON verification_codes(directory, anchor, created_at);

-- One row per writeback the portal sent; msg_id is the one-use key of the form that caused it,
-- so a second submit of the same form cannot write twice.
CREATE TABLE writebacks (
    msg_id        TEXT PRIMARY KEY,
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    op            TEXT NOT NULL,
    support_code  TEXT NOT NULL,
    agent_id      TEXT,                      -- the agent the request was sent to
    created_at    INTEGER NOT NULL,
    outcome_code  TEXT,
    outcome_json  TEXT,
    finished_at   INTEGER
);

-- Append-only from the application's point of view: it never updates or deletes rows.
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    operation     TEXT NOT NULL,
    directory     TEXT,
    anchor        TEXT,
    target        TEXT,
    outcome_code  TEXT NOT NULL,
    raw           TEXT NOT NULL DEFAULT '',
    support_code  TEXT NOT NULL,
    client        TEXT
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_support_code ON audit(support_code);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;

-- Accounts that live only in the portal (cloud-only): no directory, no writeback.
CREATE TABLE cloud_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,      -- lower-cased
    email         TEXT,
    email_lc      TEXT,
    display_name  TEXT NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    password_hash TEXT,                      -- argon2id PHC string; NULL until first set
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX cloud_users_email ON cloud_users(email_lc);

-- The portal's copy of a hash-synced person's password hash (argon2id), replaced only after a
-- successful writeback.
CREATE TABLE password_hashes (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor)
);

-- One person's kind, where it differs from their directory's.
CREATE TABLE user_kind_overrides (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    user_kind     TEXT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

-- Attempts to change a password with the current one, per person (or per unmatched name), so that
-- the change form cannot be used to guess passwords. A row is kept only for a wrong current
-- password; while an attempt runs it counts too, so parallel guesses cannot exceed the limit.
CREATE TABLE change_attempts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    subject  TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX change_attempts_subject ON change_attempts(subject, at);
