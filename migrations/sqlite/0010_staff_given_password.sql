-- The hash of the administrator-made password an account was set up with, kept once the owner
-- chose their own: a sign-in with it is told that it was replaced, and what to do, rather than
-- "wrong". Cleared when an administrator makes new credentials.
ALTER TABLE staff ADD COLUMN given_password_hash TEXT;
