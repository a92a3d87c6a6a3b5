-- Persistent member groups (docs/protocol/confab-groups.md): a group is a stored MUC room
-- whose members get its messages on every device. `muc_groups` holds what a group list shows
-- (written by the MUC service beside the room's opaque configuration); `group_changes` records,
-- per member (bare JID), the change position of the last change of a group as that member
-- sees it (added, renamed, removed...), so the sync feed (core::client_view) can report
-- groups the way it reports roster items: read past a position, kept after a removal.
--
-- Positions come from `change_seq` like every other feed change (migration 0006). Group
-- members also get a `conversation_members` row for the conversation `group:<room>`, so group
-- conversations are listed and reported by activity like one-to-one ones.

CREATE TABLE muc_groups (
    room         TEXT NOT NULL PRIMARY KEY REFERENCES muc_rooms (room) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    avatar       TEXT NOT NULL,
    announcement TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE group_changes (
    owner    TEXT    NOT NULL,
    room     TEXT    NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 1),
    PRIMARY KEY (owner, room)
) STRICT, WITHOUT ROWID;

-- Serves "the owner's group changes after P" as one range scan.
CREATE INDEX group_changes_position ON group_changes (owner, position);

-- A new group: every member sees it appear and gets the group conversation.
CREATE TRIGGER group_created AFTER INSERT ON muc_groups
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO group_changes (owner, room, position)
    SELECT jid, room, (SELECT last FROM change_seq) FROM muc_affiliations
    WHERE room = new.room
    ON CONFLICT (owner, room) DO UPDATE SET position = excluded.position;
    INSERT OR IGNORE INTO conversation_members (owner, conversation, peer)
    SELECT jid, 'group:' || room, room FROM muc_affiliations
    WHERE room = new.room AND affiliation IN ('member', 'admin', 'owner');
END;

-- Name, avatar or announcement changed: a change for every member. Rewriting the same
-- values (every save of the room) is no change.
CREATE TRIGGER group_changed AFTER UPDATE ON muc_groups
WHEN new.name IS NOT old.name OR new.avatar IS NOT old.avatar
     OR new.announcement IS NOT old.announcement
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO group_changes (owner, room, position)
    SELECT jid, room, (SELECT last FROM change_seq) FROM muc_affiliations
    WHERE room = new.room
    ON CONFLICT (owner, room) DO UPDATE SET position = excluded.position;
END;

-- A group that is no group any more (or is deleted): everyone who ever had a change record
-- for it sees it removed.
CREATE TRIGGER group_dropped AFTER DELETE ON muc_groups
BEGIN
    UPDATE change_seq SET last = last + 1;
    UPDATE group_changes SET position = (SELECT last FROM change_seq) WHERE room = old.room;
    DELETE FROM conversation_members
    WHERE conversation = 'group:' || old.room AND peer = old.room;
END;

CREATE TRIGGER group_affiliation_put AFTER INSERT ON muc_affiliations
WHEN EXISTS (SELECT 1 FROM muc_groups WHERE room = new.room)
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO group_changes (owner, room, position)
    VALUES (new.jid, new.room, (SELECT last FROM change_seq))
    ON CONFLICT (owner, room) DO UPDATE SET position = excluded.position;
    INSERT OR IGNORE INTO conversation_members (owner, conversation, peer)
    SELECT new.jid, 'group:' || new.room, new.room
    WHERE new.affiliation IN ('member', 'admin', 'owner');
END;

CREATE TRIGGER group_affiliation_update AFTER UPDATE ON muc_affiliations
WHEN new.affiliation <> old.affiliation
     AND EXISTS (SELECT 1 FROM muc_groups WHERE room = new.room)
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO group_changes (owner, room, position)
    VALUES (new.jid, new.room, (SELECT last FROM change_seq))
    ON CONFLICT (owner, room) DO UPDATE SET position = excluded.position;
    INSERT OR IGNORE INTO conversation_members (owner, conversation, peer)
    SELECT new.jid, 'group:' || new.room, new.room
    WHERE new.affiliation IN ('member', 'admin', 'owner');
    DELETE FROM conversation_members
    WHERE owner = new.jid AND conversation = 'group:' || new.room
      AND new.affiliation NOT IN ('member', 'admin', 'owner');
END;

CREATE TRIGGER group_affiliation_remove AFTER DELETE ON muc_affiliations
WHEN EXISTS (SELECT 1 FROM muc_groups WHERE room = old.room)
BEGIN
    UPDATE change_seq SET last = last + 1;
    INSERT INTO group_changes (owner, room, position)
    VALUES (old.jid, old.room, (SELECT last FROM change_seq))
    ON CONFLICT (owner, room) DO UPDATE SET position = excluded.position;
    DELETE FROM conversation_members
    WHERE owner = old.jid AND conversation = 'group:' || old.room;
END;
