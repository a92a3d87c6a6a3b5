-- Read positions (XEP-0333 displayed markers kept server-side) and IM tokens.

-- How far each account has read each conversation, as an archive sequence number. Owners are
-- bare JIDs, like the archive's senders, so unread counts compare them directly.
CREATE TABLE read_state (
    owner        TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (owner, conversation)
) STRICT, WITHOUT ROWID;

-- IM tokens (urn:confab:token:0). Only SHA-256 of the token is stored: a copy of the
-- database does not let anyone authenticate. Rows live as long as the session they were
-- issued to; the server deletes them all at start-up.
CREATE TABLE im_tokens (
    hash       BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    -- Bare JID of the account.
    owner      TEXT    NOT NULL,
    full_jid   TEXT    NOT NULL,
    -- The session id, bit-for-bit as a signed 64-bit integer.
    session    INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Serves the revocation at session end.
CREATE INDEX im_tokens_session ON im_tokens (full_jid, session);
