-- Reminders by mail: before a password expires, once it has, and to people who have not
-- registered enough ways to prove who they are. The directory's own expiry comes with the sync;
-- the language a person last used the portal in is kept so their mail reads the same way.
ALTER TABLE directory_users ADD COLUMN password_expires_at INTEGER;
ALTER TABLE directory_users ADD COLUMN lang TEXT;
CREATE INDEX directory_users_expiry ON directory_users (password_expires_at);

-- One row per mail sent, claimed before it is sent, so that each goes once whatever the number
-- of instances. `kind` is the reminder (`expiry:7` for seven days ahead, `expired`, `campaign`);
-- `about` is the expiry it was about (a new password has a new one), or 0 for the campaign.
CREATE TABLE reminders_sent (
    directory  TEXT NOT NULL,
    anchor     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    about      INTEGER NOT NULL,
    sent_at    INTEGER NOT NULL,
    PRIMARY KEY (directory, anchor, kind, about)
);
-- Old expiry reminders go by this (the housekeeping task).
CREATE INDEX reminders_sent_about ON reminders_sent (about);

-- How long the directory took to answer a writeback, in milliseconds (the reports' figures).
ALTER TABLE writebacks ADD COLUMN took_ms INTEGER;
CREATE INDEX writebacks_created ON writebacks (created_at);
