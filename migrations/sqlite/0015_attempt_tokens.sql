-- A change form's attempt is taken in the same transaction as the claim of the form's key, and
-- the claim is made only if the attempt was: the claim finds it by a number drawn for the
-- request, which also gives it back later.
ALTER TABLE change_attempts ADD COLUMN token BIGINT;
