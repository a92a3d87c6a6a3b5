-- Group mentions (docs/protocol/confab-groups.md, "Mentions and read state"): per member, the
-- last group message that mentioned them. A mention is unread while its `seq` is above the
-- member's read position in `read_state` (which group read positions share with one-to-one
-- ones, keyed `group:<room>`), so reading past it clears the flag without a write here.
--
-- One row per (member, group), overwritten by each newer mention: the conversation list and
-- the sync feed need only "is there an unread mention, and which message is the latest".
-- Retention purging the mentioning message leaves the row: the flag stays until the member
-- reads past its position, and its server id then names no stored message.

CREATE TABLE group_mentions (
    owner        TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    server_id    TEXT    NOT NULL,
    PRIMARY KEY (owner, conversation)
) STRICT, WITHOUT ROWID;

-- A mention is written after its message's commit (the MUC service finds the mentioned members
-- under the room's lock); the sync feed reports the conversation again through a 'read' change
-- record, which the feed already reads as "this conversation's summary changed".
CREATE TRIGGER group_mention_put AFTER INSERT ON group_mentions
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'read', new.conversation, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;

CREATE TRIGGER group_mention_update AFTER UPDATE OF seq ON group_mentions
WHEN new.seq <> old.seq
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO sync_changes (owner, kind, key, position)
    VALUES (new.owner, 'read', new.conversation, (SELECT last FROM change_seq))
    ON CONFLICT (owner, kind, key) DO UPDATE SET position = excluded.position;
END;
