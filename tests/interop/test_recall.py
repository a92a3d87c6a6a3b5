"""Message recall against slixmpp's own plugins: XEP-0308 corrections and XEP-0424
retractions in one-to-one chat, XEP-0425 moderation in a room, and the tombstones and
latest versions the archive (XEP-0313, plugin xep_0313) then serves."""

from __future__ import annotations

from slixmpp import JID
from slixmpp.exceptions import IqError

from xmpp_client import DEFAULT_PLUGINS, WAIT, Client, disconnect_all, scenario

NS_RETRACT = "urn:xmpp:message-retract:1"
NS_MODERATE = "urn:xmpp:message-moderate:1"
NS_SID = "urn:xmpp:sid:0"
ROOM = "recall@conference.localhost"
PLUGINS = DEFAULT_PLUGINS + (
    "xep_0004",
    "xep_0045",
    "xep_0059",
    "xep_0297",
    "xep_0308",
    "xep_0313",
    "xep_0359",
    "xep_0424",
    "xep_0425",
)


def recall_client(server, user: str) -> Client:
    return Client(server, user, resource="recall", plugins=PLUGINS)


def archived(result) -> list:
    """The forwarded messages of a MAM answer, oldest first."""
    return [item["mam_result"]["forwarded"]["stanza"] for item in result["mam"]["results"]]


def tombstone(message):
    """The `<retracted/>` of an archived message, or None."""
    return message.xml.find(f"{{{NS_RETRACT}}}retracted")


@scenario
async def test_correct_then_retract_one_to_one(server):
    alice = recall_client(server, "alice")
    bob = recall_client(server, "bob")
    try:
        await alice.login()
        await bob.login()

        mark = bob.messages.mark()
        original = alice.xmpp.make_message(mto=bob.bare, mbody="helo", mtype="chat")
        original["origin_id"]["id"] = original["id"]
        original.send()
        await bob.wait_message("helo", start=mark)

        correction = alice["xep_0308"].build_correction(
            original["id"], bob.bare, mbody="hello"
        )
        correction.send()
        got = await bob.wait_message("hello", start=mark)
        assert got["replace"]["id"] == original["id"], got

        alice["xep_0424"].send_retraction(bob.bare, original["id"])
        got = await bob.messages.wait_for(
            lambda m: m["retract"]["id"] == original["id"], "the retraction", start=mark
        )
        assert got["type"] == "chat", got

        result = await alice["xep_0313"].retrieve(with_jid=bob.bare, timeout=WAIT)
        messages = archived(result)
        # The original (now a tombstone), the correction, the retraction.
        assert len(messages) == 3, messages
        first = messages[0]
        assert tombstone(first) is not None, first
        assert first["body"] == "", first
        assert first["id"] == original["id"], first
        assert messages[1]["body"] == "hello", messages[1]
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_moderator_retracts_a_participants_message(server):
    alice = recall_client(server, "alice")
    bob = recall_client(server, "bob")
    try:
        await alice.login()
        await bob.login()
        muc_a, muc_b = alice["xep_0045"], bob["xep_0045"]
        await muc_a.join_muc_wait(ROOM, "Alice", timeout=WAIT)
        form = alice["xep_0004"].make_form(ftype="submit")
        await muc_a.set_room_config(ROOM, form, timeout=WAIT)
        await muc_b.join_muc_wait(ROOM, "Bob", timeout=WAIT)

        mark = alice.messages.mark()
        bob.send_message(ROOM, "buy now", mtype="groupchat")
        spam = await alice.wait_message("buy now", sender=f"{ROOM}/Bob", start=mark)
        stanza_id = spam["stanza_id"]["id"]
        assert spam["stanza_id"]["by"] == ROOM, spam

        # A participant may not moderate.
        try:
            await bob["xep_0425"].moderate(JID(ROOM), stanza_id, "no", timeout=WAIT)
        except IqError as error:
            assert error.iq["error"]["condition"] == "forbidden", error.iq
        else:
            raise AssertionError("a participant moderated a message")

        mark = bob.messages.mark()
        await alice["xep_0425"].moderate(JID(ROOM), stanza_id, "spam", timeout=WAIT)
        notice = await bob.messages.wait_for(
            lambda m: m["retract"]["id"] == stanza_id, "the moderation notice", start=mark
        )
        moderated = notice.xml.find(f"{{{NS_RETRACT}}}retract/{{{NS_MODERATE}}}moderated")
        assert moderated is not None and moderated.get("by") == f"{ROOM}/Alice", notice

        result = await bob["xep_0313"].retrieve(jid=ROOM, timeout=WAIT)
        stones = [m for m in archived(result) if tombstone(m) is not None]
        assert len(stones) == 1 and stones[0]["body"] == "", archived(result)
    finally:
        await disconnect_all(alice, bob)
