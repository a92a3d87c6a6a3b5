"""XEP-0191 blocking command through slixmpp's xep_0191 plugin."""

from __future__ import annotations

import uuid

from xmpp_client import WAIT, Client, IqError, befriend, disconnect_all, scenario

BLOCKED_ERROR = "{urn:xmpp:blocking:errors}blocked"


def token(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def blocking_pair(server):
    alice = Client(server, "alice", resource="desk")
    bob = Client(server, "bob", resource="phone")
    await alice.login()
    await bob.login()
    await befriend(alice, bob)
    await bob.wait_presence(alice.full, "available")
    await alice.wait_presence(bob.full, "available")
    # XEP-0191 §3.2: retrieving the list first makes this session receive pushes.
    assert await alice["xep_0191"].get_blocked_jids(timeout=WAIT) == set()
    return alice, bob


async def block(alice: Client, jid: str) -> None:
    pushes = alice.iqs.mark()
    result = await alice["xep_0191"].block(jid, timeout=WAIT)
    assert result["type"] == "result"
    # §3.3: the server pushes the block to the resources that fetched the list.
    await alice.iqs.wait_for(
        lambda iq: iq["type"] == "set" and jid in {str(i["jid"]) for i in iq["block"]},
        f"block push for {jid}",
        start=pushes,
    )


@scenario
async def test_block_and_unblock(server):
    alice, bob = await blocking_pair(server)
    try:
        bob_presences = bob.presences.mark()
        await block(alice, bob.bare)
        blocked = await alice["xep_0191"].get_blocked_jids(timeout=WAIT)
        assert {str(j) for j in blocked} == {bob.bare}

        # §3.3: Bob, subscribed to Alice, is sent her unavailable presence.
        await bob.wait_presence(alice.full, "unavailable", start=bob_presences)

        # Bob's message to Alice does not arrive.
        mark = alice.messages.mark()
        unseen = token("blocked-inbound")
        bob.send_message(alice.bare, unseen)
        bob.send_message(alice.full, unseen + "-full")
        await alice.messages.expect_none(
            lambda m: m["body"] in (unseen, unseen + "-full"), "message from a blocked JID",
            start=mark,
        )

        # Bob's IQ to Alice's full JID gets service-unavailable (§3.3, a MUST).
        try:
            await bob["xep_0199"].send_ping(alice.full, timeout=WAIT)
        except IqError as err:
            assert err.iq["error"]["condition"] == "service-unavailable", err.iq
        else:
            raise AssertionError("a blocked contact's IQ reached the blocking user")

        # Alice's message to Bob is refused with not-acceptable + <blocked/> (§3.3).
        mark = alice.messages.mark()
        refused = token("blocked-outbound")
        bob_mark = bob.messages.mark()
        alice.send_message(bob.bare, refused)
        error = await alice.messages.wait_for(
            lambda m: m["type"] == "error", "error for a message to a blocked JID", start=mark
        )
        assert error["error"]["condition"] == "not-acceptable", error
        assert error.xml.find(f"{{jabber:client}}error/{BLOCKED_ERROR}") is not None, (
            f"no <blocked xmlns='urn:xmpp:blocking:errors'/> in {error}"
        )
        await bob.messages.expect_none(
            lambda m: m["body"] == refused, "message from the blocking user", start=bob_mark
        )

        # Unblock (§3.4): push, empty list, and delivery works both ways again.
        pushes = alice.iqs.mark()
        result = await alice["xep_0191"].unblock(bob.bare, timeout=WAIT)
        assert result["type"] == "result"
        await alice.iqs.wait_for(
            lambda iq: iq["type"] == "set"
            and bob.bare in {str(i["jid"]) for i in iq["unblock"]},
            "unblock push",
            start=pushes,
        )
        assert await alice["xep_0191"].get_blocked_jids(timeout=WAIT) == set()
        inbound, outbound = token("after-unblock-in"), token("after-unblock-out")
        bob.send_message(alice.bare, inbound)
        await alice.wait_message(inbound, sender=bob.full)
        alice.send_message(bob.bare, outbound)
        await bob.wait_message(outbound, sender=alice.full)
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_blocked_contacts_message_is_answered_with_service_unavailable(server):
    """XEP-0191 §3.3: "For message stanzas, the server SHOULD return an error, which SHOULD be
    <service-unavailable/>" — so the blocked contact sees the user as offline."""
    alice, bob = await blocking_pair(server)
    try:
        await block(alice, bob.bare)
        mark = bob.messages.mark()
        body = token("knock")
        bob.send_message(alice.bare, body)
        error = await bob.messages.wait_for(
            lambda m: m["type"] == "error", "error bounce for a message to a blocker", start=mark
        )
        assert error["error"]["condition"] == "service-unavailable", error
        assert error.xml.find(f".//{BLOCKED_ERROR}") is None, "the bounce reveals the block"
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_unblock_sends_current_presence_to_the_contact(server):
    """XEP-0191 §3.4: "When the user unblocks communications with the contact, the user's
    server MUST send the user's current presence information to the contact (but only if the
    contact is allowed to receive presence notifications from the user ...)"."""
    alice, bob = await blocking_pair(server)
    try:
        await block(alice, bob.bare)
        await bob.wait_presence(alice.full, "unavailable")
        mark = bob.presences.mark()
        await alice["xep_0191"].unblock(bob.bare, timeout=WAIT)
        await bob.wait_presence(alice.full, "available", start=mark)
    finally:
        await disconnect_all(alice, bob)
