-- Recovery codes: ten single-use codes a person prints or saves, each a way to prove who they
-- are. Only a keyed hash of each is kept (the codes carry 80 random bits: a fast keyed hash is
-- enough, and one typed code is looked up directly). Making new ones replaces the whole set.
CREATE TABLE recovery_codes (
    directory   TEXT NOT NULL,
    anchor      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    PRIMARY KEY (directory, anchor, code_hash)
);
