-- The message archive (core::archive): every chat message, committed before it is
-- acknowledged or delivered.

-- One row per conversation: the last sequence number it assigned. Kept when messages are
-- purged, so sequence numbers are never reused and a client's cursor never points at a
-- different message later.
CREATE TABLE conversations (
    conversation TEXT    NOT NULL PRIMARY KEY,
    last_seq     INTEGER NOT NULL CHECK (last_seq >= 0)
) STRICT, WITHOUT ROWID;

-- A rowid table rather than WITHOUT ROWID: rows carry whole stanzas, which can be large, and
-- the rowid keeps insertion order for the bulk deletes of retention purges.
CREATE TABLE messages (
    -- UUIDv7 text: unique and time-ordered (XEP-0359 stanza-id).
    server_id    TEXT    NOT NULL PRIMARY KEY,
    conversation TEXT    NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    -- Bare JIDs.
    sender       TEXT    NOT NULL,
    recipient    TEXT    NOT NULL,
    -- XEP-0359 origin-id, or else the stanza id; NULL when the client gave neither.
    client_id    TEXT,
    -- Server time at receipt, milliseconds since the Unix epoch.
    stamp_ms     INTEGER NOT NULL,
    xml          TEXT    NOT NULL,
    -- Serves history reads by sequence range as well as keeping sequences unique.
    UNIQUE (conversation, seq)
) STRICT;

-- Idempotency: a sender's client id is committed once per conversation. Partial, because
-- messages without a client id cannot be recognised as resends and need no entry.
CREATE UNIQUE INDEX messages_client_id ON messages (conversation, sender, client_id)
    WHERE client_id IS NOT NULL;

-- Retention purges delete by age.
CREATE INDEX messages_stamp ON messages (stamp_ms);
