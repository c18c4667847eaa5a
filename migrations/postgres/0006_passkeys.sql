-- Passkeys (WebAuthn credentials): any number per person, or per staff account (`kind`). What an
-- authenticator needs checked is sealed (AES-GCM, bound to the row: the credential id and its
-- public key), so neither appears in the database in the clear; `lookup` is a keyed hash of the
-- credential id, to find the row an authenticator names. `dynamic` is the authenticator's
-- signature counter and flags (7 bytes), replaced only if unchanged since it was read, so a
-- copied authenticator racing the real one is caught.
CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('person', 'staff')),
    directory     TEXT NOT NULL,
    anchor        TEXT NOT NULL,
    lookup        TEXT NOT NULL UNIQUE,
    sealed        BYTEA NOT NULL,
    dynamic       BYTEA NOT NULL,
    name          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX passkeys_owner ON passkeys (kind, directory, anchor);
