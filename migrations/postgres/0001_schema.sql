-- passback schema, PostgreSQL: the same tables and columns as the SQLite migrations together
-- (a test compares them), in PostgreSQL's types. Times are Unix seconds (BIGINT); flags are
-- BOOLEAN. Secrets are stored only as hashes or as ciphertext.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    directories   TEXT NOT NULL,            -- JSON array: the only directory ids it may serve
    secret_hash   BYTEA NOT NULL,           -- SHA-256 of the 256-bit relay secret
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE agent_keys (
    agent_id         TEXT NOT NULL REFERENCES agents(id),
    version          BIGINT NOT NULL,
    public_key_pem   TEXT NOT NULL,
    package_key_enc  BYTEA NOT NULL,         -- AES-256-GCM under the configured data key
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (agent_id, version)
);

CREATE TABLE enrollment_tokens (
    token_hash  BYTEA PRIMARY KEY,           -- SHA-256 of the token
    name        TEXT NOT NULL,
    directories TEXT NOT NULL,               -- JSON array, handed on to the agent it enrolls
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
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
    enabled       BOOLEAN NOT NULL,
    locked        BOOLEAN NOT NULL,
    protected     BOOLEAN NOT NULL DEFAULT FALSE,
    synced_at     BIGINT NOT NULL,
    groups        TEXT NOT NULL DEFAULT '[]', -- JSON array of lower-cased group DNs
    password_changed_at BIGINT,
    PRIMARY KEY (directory, anchor)
);
CREATE INDEX directory_users_username ON directory_users(username);
CREATE INDEX directory_users_email ON directory_users(email_lc);

CREATE TABLE directory_policies (
    directory   TEXT PRIMARY KEY,
    policy_json TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE verification_codes (
    id          TEXT PRIMARY KEY,
    directory   TEXT NOT NULL,
    anchor      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    used_at     BIGINT
);
CREATE INDEX verification_codes_target ON verification_codes(directory, anchor, created_at);

CREATE TABLE writebacks (
    msg_id        TEXT PRIMARY KEY,
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    op            TEXT NOT NULL,
    support_code  TEXT NOT NULL,
    agent_id      TEXT,
    created_at    BIGINT NOT NULL,
    outcome_code  TEXT,
    outcome_json  TEXT,
    finished_at   BIGINT,
    result_at     BIGINT,
    late_outcome_code TEXT
);

-- Append-only from the application's point of view: it never updates or deletes rows.
CREATE TABLE audit (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT NOT NULL,
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
CREATE INDEX audit_actor ON audit(actor, at);
CREATE INDEX audit_target ON audit(target, at);
CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only';
END;
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();

CREATE TABLE cloud_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT,
    email_lc      TEXT,
    display_name  TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    must_change   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX cloud_users_email ON cloud_users(email_lc);

CREATE TABLE password_hashes (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE user_kind_overrides (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    user_kind     TEXT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE change_attempts (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject  TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX change_attempts_subject ON change_attempts(subject, at);
CREATE INDEX change_attempts_when ON change_attempts(at);

CREATE TABLE totp_secrets (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    secret_enc    BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    confirmed_at  BIGINT,
    last_step     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE security_answers (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    question      TEXT NOT NULL,
    answer_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (directory, anchor, question)
);

CREATE TABLE alternate_emails (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    email         TEXT NOT NULL,
    verified_at   BIGINT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE security_info_reviews (
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    reviewed_at   BIGINT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE gate_events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject   TEXT NOT NULL,
    kind      TEXT NOT NULL,
    method    TEXT NOT NULL,
    at        BIGINT NOT NULL,
    client    TEXT
);
CREATE INDEX gate_events_subject ON gate_events(subject, kind, at);
CREATE INDEX gate_events_client ON gate_events(client, kind, at);
CREATE INDEX gate_events_at ON gate_events(kind, at);
CREATE INDEX gate_events_when ON gate_events(at);

CREATE TABLE self_service_blocks (
    subject   TEXT PRIMARY KEY,
    until     BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    at        BIGINT NOT NULL
);

CREATE TABLE spent_challenges (
    nonce       TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX spent_challenges_expiry ON spent_challenges(expires_at);

CREATE TABLE staff (
    id                   TEXT PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,
    display_name         TEXT NOT NULL,
    email                TEXT,
    role                 TEXT NOT NULL CHECK (role IN ('administrator', 'helpdesk', 'auditor')),
    scope_json           TEXT NOT NULL DEFAULT '{}',
    may_reset_protected  BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash        TEXT NOT NULL,
    totp_enc             BYTEA NOT NULL,
    totp_last_step       BIGINT NOT NULL DEFAULT 0,
    session_epoch        BIGINT NOT NULL DEFAULT 0,
    must_enrol           BOOLEAN NOT NULL DEFAULT TRUE,
    pending_totp_enc     BYTEA,
    enrolment_started    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    disabled_at          BIGINT
);

CREATE TABLE relay_frames (
    agent_id    TEXT NOT NULL,
    frame_id    TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (agent_id, frame_id)
);
CREATE INDEX relay_frames_expiry ON relay_frames(expires_at);

CREATE TABLE sync_holds (
    directory     TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    would_remove  BIGINT NOT NULL,
    total         BIGINT NOT NULL,
    held_at       BIGINT NOT NULL
);

CREATE TABLE question_draws (
    directory    TEXT NOT NULL,
    anchor       TEXT NOT NULL,
    questions    TEXT NOT NULL,
    drawn_at     BIGINT NOT NULL,
    answered_at  BIGINT,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE person_epochs (
    directory  TEXT NOT NULL,
    anchor     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    PRIMARY KEY (directory, anchor)
);

CREATE TABLE alerts_sent (
    kind  TEXT PRIMARY KEY,
    at    BIGINT NOT NULL
);

-- Sessions, as tower-sessions' PostgreSQL store keeps them: made here, with the rest of the
-- schema under the migrations' lock, so that instances starting together never race to make it.
CREATE SCHEMA tower_sessions;
CREATE TABLE tower_sessions.session (
    id           TEXT PRIMARY KEY NOT NULL,
    data         BYTEA NOT NULL,
    expiry_date  TIMESTAMPTZ NOT NULL
);
