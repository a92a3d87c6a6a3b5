-- Receipts and chat markers are archived (every device must see them) but are not news:
-- only messages with content count toward unread counts. Existing rows count, as before.
ALTER TABLE messages ADD COLUMN counts_unread INTEGER NOT NULL DEFAULT 1 CHECK (counts_unread IN (0, 1));
