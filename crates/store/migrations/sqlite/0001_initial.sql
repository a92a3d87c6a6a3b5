-- Confab's initial SQLite schema.
--
-- Per-user tables carry the owner's username but deliberately have no foreign key to
-- `accounts`: the store ports accept any username, and `delete_account` removes a user's rows
-- from every table explicitly, in one transaction. Tables are STRICT so a type mix-up in the
-- adapter fails loudly instead of being silently coerced.

-- SCRAM material only (RFC 5802 §3); never a password.
CREATE TABLE accounts (
    username          TEXT    NOT NULL PRIMARY KEY,
    salt              BLOB    NOT NULL,
    iterations        INTEGER NOT NULL CHECK (iterations BETWEEN 1 AND 4294967295),
    stored_key_sha1   BLOB    NOT NULL,
    server_key_sha1   BLOB    NOT NULL,
    stored_key_sha256 BLOB    NOT NULL,
    server_key_sha256 BLOB    NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_at        INTEGER NOT NULL
) STRICT;

-- One row per (owner, contact), including hidden bookkeeping rows (in_roster = 0) that only
-- remember a pending-in request or a pre-approval (RFC 6121 §3.1.3, §3.4).
CREATE TABLE roster_items (
    owner        TEXT    NOT NULL,
    contact      TEXT    NOT NULL,
    name         TEXT,
    subscription TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      INTEGER NOT NULL CHECK (ask_out IN (0, 1)),
    -- The serialized subscription request, kept for redelivery at each login.
    pending_in   TEXT,
    approved     INTEGER NOT NULL CHECK (approved IN (0, 1)),
    -- JSON array of group names: groups are always read and written with their item.
    groups       TEXT    NOT NULL DEFAULT '[]',
    in_roster    INTEGER NOT NULL CHECK (in_roster IN (0, 1)),
    PRIMARY KEY (owner, contact)
) STRICT, WITHOUT ROWID;

-- XEP-0237 roster version per owner, set in the same transaction as every roster change.
-- A missing row means version 0 (the user never had a roster change).
CREATE TABLE roster_versions (
    owner   TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version >= 0)
) STRICT, WITHOUT ROWID;

-- Store-wide source of roster versions: a new version is the next value of this single
-- counter. Per-owner counters would restart at 1 when an account is deleted and re-created,
-- and a client still caching the old roster under a reused version would then be told its
-- stale copy is current. SQLite has one writer at a time anyway, so the shared row adds no
-- contention (PostgreSQL would use a SEQUENCE).
CREATE TABLE roster_version_seq (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;
INSERT INTO roster_version_seq (id, last) VALUES (1, 0);

-- XEP-0160 offline messages; AUTOINCREMENT so ids never go back and "oldest first" is "id order".
CREATE TABLE offline_messages (
    id       INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    owner    TEXT    NOT NULL,
    xml      TEXT    NOT NULL,
    stamp_ms INTEGER NOT NULL
) STRICT;

-- Serves the quota count, the take and the account delete without a table scan.
CREATE INDEX offline_messages_owner ON offline_messages (owner, id);

-- Private XML storage (XEP-0049), vCards (XEP-0054) and similar opaque documents.
CREATE TABLE documents (
    owner TEXT NOT NULL,
    key   TEXT NOT NULL,
    xml   TEXT NOT NULL,
    PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;

-- XEP-0191 blocklists.
CREATE TABLE blocklist (
    owner TEXT NOT NULL,
    jid   TEXT NOT NULL,
    PRIMARY KEY (owner, jid)
) STRICT, WITHOUT ROWID;
