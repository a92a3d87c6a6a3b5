-- Client read models (core::client_view): each account's conversation list and the sync
-- feed of everything a device mirrors (roster, conversations, read positions, private XML).
--
-- Both are kept current by the writes they derive from, never by scanning an archive:
--   * a conversation gets one membership row per party when it is created (a trigger on the
--     rare INSERT into `conversations`; the per-batch upsert takes the UPDATE path);
--   * the per-batch sequence-allocation upsert also stamps each conversation with the
--     batch's change position (`activity`);
--   * roster, read-position and private-storage writes record (owner, kind, key, position)
--     in `sync_changes` through triggers, so no write path needs to know about the feed.
--
-- Positions come from the single counter `change_seq`, advanced inside each write
-- transaction. SQLite has one writer at a time, so positions are handed out in commit order
-- and a reader that sees the counter at P in its snapshot sees every change up to P and none
-- after it: the sync token is that P (see core::client_view, "Change positions").

-- This database's identity, carried in sync tokens so a token made by another database is
-- refused instead of being read as a position here.
CREATE TABLE store_identity (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    store TEXT    NOT NULL CHECK (length(store) = 32)
) STRICT;
INSERT INTO store_identity (id, store) VALUES (1, lower(hex(randomblob(16))));

-- The store-wide change counter. One row, like `roster_version_seq`: a single writer makes
-- the shared row free of contention.
CREATE TABLE change_seq (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL CHECK (last >= 0)
) STRICT;

-- The change position of the conversation's last committed batch: newest first is
-- "activity descending". Purges leave it alone, like `last_seq`.
ALTER TABLE conversations ADD COLUMN activity INTEGER NOT NULL DEFAULT 0 CHECK (activity >= 0);

-- Existing conversations are numbered 1..N in the order of their last stored message, so the
-- lists start in a sensible order; the counter continues after them.
UPDATE conversations SET activity = ranked.n
FROM (
    SELECT c.conversation AS conversation,
           row_number() OVER (ORDER BY coalesce(m.stamp_ms, 0), c.conversation) AS n
    FROM conversations AS c
    LEFT JOIN messages AS m ON m.conversation = c.conversation AND m.seq = c.last_seq
) AS ranked
WHERE conversations.conversation = ranked.conversation;
INSERT INTO change_seq (id, last) VALUES (1, (SELECT count(*) FROM conversations) + 1);

-- Who takes part in which conversation, by bare JID; `peer` is the other party (the owner
-- itself for a conversation with itself, which therefore has one row). Lists read an owner's
-- rows through the primary key.
CREATE TABLE conversation_members (
    owner        TEXT NOT NULL,
    conversation TEXT NOT NULL,
    peer         TEXT NOT NULL,
    PRIMARY KEY (owner, conversation)
) STRICT, WITHOUT ROWID;

-- Serves giving a re-created account back its side of the conversations its peers kept.
CREATE INDEX conversation_members_peer ON conversation_members (peer);

-- A direct conversation's key is "low high" (two bare JIDs, which cannot contain a space);
-- keys without a space (group conversations, later) have no pair to split.
CREATE TRIGGER conversation_members_on_create AFTER INSERT ON conversations
WHEN instr(new.conversation, ' ') > 0
BEGIN
    INSERT OR IGNORE INTO conversation_members (owner, conversation, peer) VALUES
        (substr(new.conversation, 1, instr(new.conversation, ' ') - 1), new.conversation,
         substr(new.conversation, instr(new.conversation, ' ') + 1)),
        (substr(new.conversation, instr(new.conversation, ' ') + 1), new.conversation,
         substr(new.conversation, 1, instr(new.conversation, ' ') - 1));
END;

INSERT OR IGNORE INTO conversation_members (owner, conversation, peer)
SELECT substr(conversation, 1, instr(conversation, ' ') - 1), conversation,
       substr(conversation, instr(conversation, ' ') + 1)
FROM conversations WHERE instr(conversation, ' ') > 0
UNION ALL
SELECT substr(conversation, instr(conversation, ' ') + 1), conversation,
       substr(conversation, 1, instr(conversation, ' ') - 1)
FROM conversations WHERE instr(conversation, ' ') > 0;

-- The latest change of each item a device mirrors. `owner` is the username for 'roster' and
-- 'document' rows (those tables are keyed by username) and the bare JID for 'read' rows (as
-- `read_state` is); a username has no '@', so the two never meet. A row outlives its item:
-- a deleted roster item or document is reported as removed through it.
CREATE TABLE sync_changes (
    owner    TEXT    NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('roster', 'read', 'document')),
    key      TEXT    NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 1),
    PRIMARY KEY (owner, kind, key)
) STRICT, WITHOUT ROWID;

-- Serves "the owner's changes after P" as one range scan.
CREATE INDEX sync_changes_position ON sync_changes (owner, position);

-- Existing items count as changed at the current position, so a snapshot includes them.
INSERT INTO sync_changes (owner, kind, key, position)
SELECT owner, 'roster', contact, (SELECT last FROM change_seq) FROM roster_items;
INSERT INTO sync_changes (owner, kind, key, position)
SELECT owner, 'read', conversation, (SELECT last FROM change_seq) FROM read_state;
INSERT INTO sync_changes (owner, kind, key, position)
SELECT owner, 'document', key, (SELECT last FROM change_seq) FROM documents
WHERE instr(key, '|') > 0;

CREATE TRIGGER sync_roster_put AFTER INSERT ON roster_items
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'roster', new.contact, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER sync_roster_update AFTER UPDATE ON roster_items
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'roster', new.contact, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER sync_roster_remove AFTER DELETE ON roster_items
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (old.owner, 'roster', old.contact, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER sync_read_put AFTER INSERT ON read_state
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'read', new.conversation, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

-- `mark_read` is an upsert that keeps the larger position, so most repeated markers update
-- the row to the value it had: those are not changes.
CREATE TRIGGER sync_read_update AFTER UPDATE OF seq ON read_state
WHEN new.seq <> old.seq
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'read', new.conversation, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

-- Only XEP-0049 private storage (keys `name|namespace`) is mirrored; the vCard and other
-- documents are not a device's own state.
CREATE TRIGGER sync_document_put AFTER INSERT ON documents
WHEN instr(new.key, '|') > 0
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'document', new.key, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER sync_document_update AFTER UPDATE ON documents
WHEN instr(new.key, '|') > 0
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'document', new.key, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER sync_document_remove AFTER DELETE ON documents
WHEN instr(old.key, '|') > 0
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (old.owner, 'document', old.key, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

-- The change position at which the account was created. A token below it was issued to an
-- earlier account of the same name, whose removed items the feed can no longer report (its
-- rows went with it), so it is refused and the client starts over with a snapshot. Accounts
-- older than this migration keep 0.
ALTER TABLE accounts ADD COLUMN sync_floor INTEGER NOT NULL DEFAULT 0;

-- A new account also gets back its side of conversations its peers still have (an account
-- deleted and re-created under the same name), so new messages in them show in its list:
-- the per-batch upsert never creates membership rows for an existing conversation.
-- `[username || '@', username || 'A')` is exactly the bare JIDs with that localpart ('A'
-- follows '@'), as in `mam_prefs_account_deleted`.
CREATE TRIGGER sync_account_created AFTER INSERT ON accounts
BEGIN
    UPDATE change_seq SET last = last + 1;
    UPDATE accounts SET sync_floor = (SELECT last FROM change_seq)
    WHERE username = new.username;
    INSERT OR IGNORE INTO conversation_members (owner, conversation, peer)
    SELECT peer, conversation, owner FROM conversation_members
    WHERE peer >= new.username || '@' AND peer < new.username || 'A';
END;
