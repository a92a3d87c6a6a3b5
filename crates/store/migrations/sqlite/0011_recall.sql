-- Message recall (XEP-0424 retraction, XEP-0425 moderation, XEP-0308 correction). The
-- `xml` column of `messages` stays the copy every reader serves (MAM, offline delivery,
-- HTTP history), so readers need no change: an amendment swaps in a tombstone or the
-- corrected message and moves the copy it replaces here, for audit only.

-- A retracted message is final: neither corrected nor retracted again.
ALTER TABLE messages ADD COLUMN retracted INTEGER NOT NULL DEFAULT 0 CHECK (retracted IN (0, 1));

CREATE TABLE message_versions (
    server_id   TEXT    NOT NULL,
    -- 0 for the message as first committed, then one more for each copy replaced.
    version     INTEGER NOT NULL CHECK (version >= 0),
    -- The amendment that replaced this copy: 'retract' or 'correct'.
    replaced_by TEXT    NOT NULL CHECK (replaced_by IN ('retract', 'correct')),
    -- Bare JID of the sender or moderator who made it.
    by_jid      TEXT    NOT NULL,
    -- When it was made, milliseconds since the Unix epoch.
    stamp_ms    INTEGER NOT NULL,
    xml         TEXT    NOT NULL,
    PRIMARY KEY (server_id, version)
) STRICT, WITHOUT ROWID;

-- Retention covers the audit trail too: a purged message takes its old copies with it. A
-- trigger rather than a foreign key, because the purge deletes by rowid in chunks and most
-- messages have no versions; the lookup is one primary key probe per deleted row.
CREATE TRIGGER messages_purge_versions AFTER DELETE ON messages
BEGIN
    DELETE FROM message_versions WHERE server_id = OLD.server_id;
END;
