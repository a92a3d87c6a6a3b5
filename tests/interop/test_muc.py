"""XEP-0045 multi-user chat against slixmpp's own MUC client (plugin xep_0045)."""

from __future__ import annotations

from slixmpp.exceptions import PresenceError

from xmpp_client import DEFAULT_PLUGINS, WAIT, Client, disconnect_all, scenario

SERVICE = "conference.localhost"
ROOM = f"coven@{SERVICE}"
PLUGINS = DEFAULT_PLUGINS + ("xep_0004", "xep_0045")


def muc_client(server, user: str) -> Client:
    return Client(server, user, resource="muc", plugins=PLUGINS)


def config_form(client: Client, **fields: str):
    """A submitted muc#roomconfig form with `fields` (names without the prefix)."""
    form = client["xep_0004"].make_form(ftype="submit")
    form.add_field(
        var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig"
    )
    for name, value in fields.items():
        form.add_field(var=f"muc#roomconfig_{name}", value=value)
    return form


def status_codes(presence) -> set[int]:
    return set(presence["muc"]["status_codes"])


@scenario
async def test_two_clients_chat_change_subject_and_kick(server):
    alice = muc_client(server, "alice")
    bob = muc_client(server, "bob")
    try:
        await alice.login()
        await bob.login()
        muc_a, muc_b = alice["xep_0045"], bob["xep_0045"]

        # Alice creates the room (status 201), reads the form and configures it.
        own, _subject, _occupants, _history = await muc_a.join_muc_wait(
            ROOM, "Alice", timeout=WAIT
        )
        assert 201 in status_codes(own) and 110 in status_codes(own), own
        assert own["muc"]["affiliation"] == "owner"
        form = await muc_a.get_room_config(ROOM, timeout=WAIT)
        fields = {field["var"] for field in form["fields"]}
        assert "muc#roomconfig_changesubject" in fields, fields
        await muc_a.set_room_config(
            ROOM, config_form(alice, roomname="Interop", changesubject="1"), timeout=WAIT
        )

        # Alice speaks before Bob arrives; Bob gets it as history, stamped by the room.
        alice.send_message(ROOM, "before you came", mtype="groupchat")
        await alice.wait_message("before you came", sender=f"{ROOM}/Alice")
        own, _subject, occupants, history = await muc_b.join_muc_wait(
            ROOM, "Bob", maxstanzas=5, timeout=WAIT
        )
        assert 110 in status_codes(own), own
        assert own["muc"]["role"] == "participant"
        # slixmpp counts its own presence among the occupants; Alice's came first.
        assert [str(p["from"]) for p in occupants] == [f"{ROOM}/Alice", f"{ROOM}/Bob"]
        assert [m["body"] for m in history] == ["before you came"], history
        assert muc_b.get_roster(ROOM) and "Alice" in muc_b.get_roster(ROOM)
        await alice.wait_presence(f"{ROOM}/Bob")

        # Chat both ways.
        mark_a, mark_b = alice.messages.mark(), bob.messages.mark()
        bob.send_message(ROOM, "hello alice", mtype="groupchat")
        got = await alice.wait_message("hello alice", sender=f"{ROOM}/Bob", start=mark_a)
        assert got["type"] == "groupchat"
        await bob.wait_message("hello alice", sender=f"{ROOM}/Bob", start=mark_b)
        alice.send_message(ROOM, "hello bob", mtype="groupchat")
        await bob.wait_message("hello bob", sender=f"{ROOM}/Alice", start=mark_b)

        # Bob changes the subject (the room allows participants to).
        mark_a = alice.messages.mark()
        muc_b.set_subject(ROOM, "Interop testing")
        subject = await alice.messages.wait_for(
            lambda m: m["subject"] == "Interop testing", "the new subject", start=mark_a
        )
        assert str(subject["from"]) == f"{ROOM}/Bob"

        # Alice kicks Bob: he sees his own removal with 307 and 110.
        mark_b = bob.presences.mark()
        await muc_a.set_role(ROOM, "Bob", "none", reason="enough", timeout=WAIT)
        gone = await bob.wait_presence(f"{ROOM}/Bob", "unavailable", start=mark_b)
        assert {307, 110} <= status_codes(gone), gone
        assert gone["muc"]["role"] == "none"
        await alice.wait_presence(f"{ROOM}/Bob", "unavailable")
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_non_member_gets_registration_required(server):
    alice = muc_client(server, "alice")
    carol = muc_client(server, "carol")
    try:
        await alice.login()
        await carol.login()
        room = f"members@{SERVICE}"
        await alice["xep_0045"].join_muc_wait(room, "Alice", timeout=WAIT)
        await alice["xep_0045"].set_room_config(
            room, config_form(alice, membersonly="1"), timeout=WAIT
        )
        try:
            await carol["xep_0045"].join_muc_wait(room, "Carol", timeout=WAIT)
        except PresenceError as error:
            assert error.condition == "registration-required", error
        else:
            raise AssertionError("a non-member entered a members-only room")

        # Once a member, she gets in.
        await alice["xep_0045"].set_affiliation(
            room, "member", jid=carol.bare, timeout=WAIT
        )
        own, *_ = await carol["xep_0045"].join_muc_wait(room, "Carol", timeout=WAIT)
        assert own["muc"]["affiliation"] == "member"
    finally:
        await disconnect_all(alice, carol)
