-- XEP-0313 Message Archive Management over each account's archive: the one-to-one messages
-- it sent or received, read by owner in server id (UUIDv7, arrival) order.

-- An owner's archive is the union of what it sent and what it received. Each index walks one
-- half in server id order, so a page is two index range scans of at most `limit + 1` entries
-- each, merged; the other party is in the index too, so `with` and preference filters are
-- checked without reading the row.
CREATE INDEX messages_sender ON messages (sender, server_id, recipient);
CREATE INDEX messages_recipient ON messages (recipient, server_id, sender);

-- XEP-0313 §6 preferences per owner (bare JID). Confab commits every message for delivery
-- regardless; these only govern what the owner's archive queries return.
CREATE TABLE mam_prefs (
    owner   TEXT NOT NULL PRIMARY KEY,
    -- 'always', 'never' or 'roster'.
    default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    -- JSON arrays of bare JIDs, sorted: always read and written whole.
    always  TEXT NOT NULL DEFAULT '[]',
    never   TEXT NOT NULL DEFAULT '[]'
) STRICT, WITHOUT ROWID;

-- `delete_account` knows usernames, the preferences know bare JIDs (`username@domain`): the
-- range `[username || '@', username || 'A')` is exactly the owners with that localpart ('A'
-- follows '@' in every collation SQLite uses here), found through the primary key.
CREATE TRIGGER mam_prefs_account_deleted AFTER DELETE ON accounts
BEGIN
    DELETE FROM mam_prefs
    WHERE owner >= old.username || '@' AND owner < old.username || 'A';
END;
