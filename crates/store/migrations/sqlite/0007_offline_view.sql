-- Offline storage (XEP-0160) becomes a view over the archive: for an archived message the
-- queue keeps only its server id, and a take reads the message from the archive. Only
-- messages the archive does not keep (server notices, payloads without a body) are still
-- copied. Exactly one of `server_id` and `xml` is set.
CREATE TABLE offline_queue (
    id        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    owner     TEXT    NOT NULL,
    server_id TEXT,
    xml       TEXT,
    stamp_ms  INTEGER NOT NULL,
    CHECK ((server_id IS NULL) <> (xml IS NULL))
) STRICT;

INSERT INTO offline_queue (id, owner, xml, stamp_ms)
    SELECT id, owner, xml, stamp_ms FROM offline_messages;
DROP TABLE offline_messages;
ALTER TABLE offline_queue RENAME TO offline_messages;

-- Serves the quota count, the take and the account delete without a table scan.
CREATE INDEX offline_messages_owner ON offline_messages (owner, id);

-- A message committed while its recipient had no resource to take it is flagged in the same
-- transaction: the flag is its offline entry, so no crash between commit and delivery can
-- lose it. Each account's cursor (the last flagged server id it was handed) marks what was
-- delivered; server ids are handed out in commit order, so a cursor never passes a message
-- committed later.
ALTER TABLE messages ADD COLUMN for_later INTEGER NOT NULL DEFAULT 0 CHECK (for_later IN (0, 1));
CREATE INDEX messages_for_later ON messages (recipient, server_id) WHERE for_later = 1;

CREATE TABLE offline_cursors (
    -- Username (localpart), like the queue's owner.
    owner     TEXT NOT NULL PRIMARY KEY,
    server_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;
