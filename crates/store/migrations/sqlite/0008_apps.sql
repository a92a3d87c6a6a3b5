-- Registered third-party apps (confidential OAuth clients, RFC 6749 §2) created by the
-- operator with `confab app add`. Only SHA-256 of the 256-bit secret is stored: a copy of
-- the database authenticates no app.
CREATE TABLE apps (
    client_id   TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created_ms  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
