-- Persistent XEP-0045 rooms: configuration (serialized by the MUC service, opaque here) and
-- affiliation lists. Occupants and the in-memory history are not stored: they do not survive
-- a restart by design (XEP-0045 §10.1.3 persists the room, not who was in it).
CREATE TABLE muc_rooms (
    room   TEXT NOT NULL PRIMARY KEY,
    config TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE muc_affiliations (
    room        TEXT NOT NULL REFERENCES muc_rooms (room) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (room, jid)
) STRICT, WITHOUT ROWID;
