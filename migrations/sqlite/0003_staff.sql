-- Staff: helpdesk, administrators and auditors. Portal accounts of their own, with a password
-- (argon2id) and an authenticator (TOTP seed encrypted under the data key), never a directory
-- person's account. What they may act on is their role and scope, read on every request.
CREATE TABLE staff (
    id                   TEXT PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,      -- lower-cased
    display_name         TEXT NOT NULL,
    email                TEXT,
    role                 TEXT NOT NULL CHECK (role IN ('administrator', 'helpdesk', 'auditor')),
    scope_json           TEXT NOT NULL DEFAULT '{}', -- directories, base DNs, groups (empty: all)
    may_reset_protected  INTEGER NOT NULL DEFAULT 0,
    password_hash        TEXT NOT NULL,
    totp_enc             BLOB NOT NULL,
    totp_last_step       INTEGER NOT NULL DEFAULT 0, -- the newest time step used: never accepted again
    session_epoch        INTEGER NOT NULL DEFAULT 0, -- raised to end every session of this account
    -- The password and authenticator above were made by an administrator (shown to them once):
    -- at the next sign-in the owner must choose their own and enrol a new authenticator.
    must_enrol           INTEGER NOT NULL DEFAULT 1,
    pending_totp_enc     BLOB,                       -- the new authenticator while it is enrolled
    enrolment_started    INTEGER NOT NULL DEFAULT 0, -- the made credentials were used: never again
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    disabled_at          INTEGER
);

-- The groups a synced person belongs to (JSON array of lower-cased DNs), for helpdesk scopes.
ALTER TABLE directory_users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';

CREATE INDEX audit_actor ON audit(actor, at);
CREATE INDEX audit_target ON audit(target, at);

-- A cloud-only account whose password the helpdesk set: its owner must choose a new one at the
-- next sign-in.
ALTER TABLE cloud_users ADD COLUMN must_change INTEGER NOT NULL DEFAULT 0;
