"""Roster, subscriptions, presence and message routing between real slixmpp clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from xmpp_client import WAIT, Client, befriend, disconnect_all, scenario


def token(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@scenario
async def test_mutual_subscription_presence_and_chat(server):
    alice = Client(server, "alice", resource="desk")
    bob = Client(server, "bob", resource="phone")
    try:
        await alice.login()
        await bob.login()
        assert alice.mechanism == bob.mechanism == "SCRAM-SHA-256"
        assert alice.tls_version and bob.tls_version, "a session is not encrypted"
        for c in (alice, bob):
            c.xmpp.auto_authorize = None  # approve by hand below
            c.xmpp.auto_subscribe = False
        a0, b0 = alice.presences.mark(), bob.presences.mark()

        # Alice adds Bob to her roster (RFC 6121 §2.4) and gets the roster push back.
        pushes = []
        alice.xmpp.add_event_handler("roster_update", pushes.append)
        result = await alice.xmpp.update_roster(
            bob.bare, name="Bob", groups=["Friends"], timeout=WAIT
        )
        assert result["type"] == "result"
        roster = await alice.fetch_roster()
        assert roster[bob.bare]["subscription"] == "none", roster
        assert roster[bob.bare]["name"] == "Bob"
        assert roster[bob.bare]["groups"] == ["Friends"]

        # Alice subscribes; Bob's client sees the request from her bare JID (§3.1.3).
        alice.xmpp.client_roster[bob.bare].subscribe()
        request = await bob.wait_presence(alice.bare, "subscribe", start=b0)
        assert str(request["from"]) == alice.bare
        roster = await alice.fetch_roster()
        assert roster[bob.bare]["subscription"] == "none"
        assert roster[bob.bare]["ask"] == "subscribe", roster[bob.bare]

        # Bob approves and subscribes back; Alice approves.
        bob.xmpp.client_roster[alice.bare].authorize()
        await alice.wait_presence(bob.bare, "subscribed", start=a0)
        bob.xmpp.client_roster[alice.bare].subscribe()
        await alice.wait_presence(bob.bare, "subscribe", start=a0)
        alice.xmpp.client_roster[bob.bare].authorize()
        await bob.wait_presence(alice.bare, "subscribed", start=b0)

        # Both rosters, as stored by the server, now say 'both' with nothing pending.
        alice_roster = await alice.fetch_roster()
        bob_roster = await bob.fetch_roster()
        assert alice_roster[bob.bare]["subscription"] == "both", alice_roster
        assert not alice_roster[bob.bare]["ask"], alice_roster
        assert alice_roster[bob.bare]["name"] == "Bob", "approval lost the item's name"
        assert alice_roster[bob.bare]["groups"] == ["Friends"]
        assert bob_roster[alice.bare]["subscription"] == "both", bob_roster
        assert not bob_roster[alice.bare]["ask"], bob_roster
        assert pushes, "no roster push for Alice's own roster set"
        # slixmpp's local view agrees (it was fed by roster pushes).
        assert alice.xmpp.client_roster[bob.bare]["subscription"] == "both"
        assert bob.xmpp.client_roster[alice.bare]["subscription"] == "both"

        # Each sees the other's available presence from the full JID (§3.1.5/§3.1.6).
        await alice.wait_presence(bob.full, "available", start=a0)
        await bob.wait_presence(alice.full, "available", start=b0)
        # slixmpp also sends directed presence when it approves a request, so check the
        # server's own routing too: a broadcast (no 'to') now reaches the other side (§4.4.2).
        for sender, receiver in ((alice, bob), (bob, alice)):
            mark = receiver.presences.mark()
            status = token("status")
            sender.xmpp.send_presence(pstatus=status)
            await receiver.wait_presence(
                sender.full, "available", extra=lambda p, s=status: p["status"] == s, start=mark
            )

        # Chat both ways; the server stamps the sender's full JID (RFC 6120 §8.1.2.1).
        hello, reply = token("hello"), token("reply")
        alice.send_message(bob.bare, hello)
        msg = await bob.wait_message(hello)
        assert str(msg["from"]) == alice.full
        assert msg["type"] == "chat"
        bob.send_message(str(msg["from"]), reply)
        msg = await alice.wait_message(reply)
        assert str(msg["from"]) == bob.full
        assert msg["to"] == alice.jid
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_presence_unavailable_and_priority_on_reconnect(server):
    alice = Client(server, "alice", resource="desk")
    bob = Client(server, "bob", resource="laptop")
    bob2 = Client(server, "bob", resource="phone")
    try:
        await alice.login()
        await bob.login()
        await befriend(alice, bob)
        await alice.wait_presence(bob.full, "available")

        # Bob leaves: Alice gets unavailable from exactly that resource (RFC 6121 §4.5).
        mark = alice.presences.mark()
        gone = bob.full
        await bob.disconnect()
        await alice.wait_presence(gone, "unavailable", start=mark)

        # Bob comes back on another resource with a priority; Alice sees it (§4.2.2), and
        # Bob's new session gets Alice's current presence by the server's probe (§4.2.2).
        mark = alice.presences.mark()
        await bob2.login(priority=5)
        pres = await alice.wait_presence(bob2.full, "available", start=mark)
        assert pres["priority"] == 5, pres
        await bob2.wait_presence(alice.full, "available")

        # A presence change (show + status) is broadcast too (§4.4).
        mark = alice.presences.mark()
        bob2.xmpp.send_presence(pshow="away", pstatus="lunch", ppriority=3)
        pres = await alice.wait_presence(
            bob2.full, "available", extra=lambda p: p["show"] == "away", start=mark
        )
        assert pres["status"] == "lunch"
        assert pres["priority"] == 3
    finally:
        await disconnect_all(alice, bob, bob2)


@scenario
async def test_bare_jid_message_reaches_all_equal_priority_resources(server):
    alice = Client(server, "alice")
    one = Client(server, "bob", resource="one")
    two = Client(server, "bob", resource="two")
    hidden = Client(server, "bob", resource="hidden")
    try:
        await alice.login()
        await one.login()
        await two.login()
        await hidden.login(priority=-1)

        # Same (default 0) priority: both get a chat and a normal message to the bare JID
        # (RFC 6121 §8.5.2.1.1); a negative-priority resource gets neither (§4.7.2.3).
        chat, normal = token("chat"), token("normal")
        alice.send_message(one.bare, chat, mtype="chat")
        alice.send_message(one.bare, normal, mtype="normal")
        for c in (one, two):
            for body in (chat, normal):
                msg = await c.wait_message(body, sender=alice.full)
                assert msg["to"].bare == one.bare
        await hidden.messages.expect_none(
            lambda m: m["body"] in (chat, normal), "bare-JID message at priority -1"
        )

        # A full-JID message goes to that resource only (§8.5.3.1).
        direct = token("direct")
        alice.send_message(two.full, direct)
        await two.wait_message(direct, sender=alice.full)
        await asyncio.gather(
            *(
                c.messages.expect_none(lambda m: m["body"] == direct, "someone else's message")
                for c in (one, hidden)
            )
        )

        # Raise one resource's priority: it alone is now the most available.
        one.xmpp.send_presence(ppriority=10)
        await one.xmpp.plugin["xep_0199"].send_ping(server.domain, timeout=WAIT)
        top = token("top")
        alice.send_message(one.bare, top)
        await one.wait_message(top, sender=alice.full)
        await two.messages.expect_none(lambda m: m["body"] == top, "message to lower priority")
    finally:
        await disconnect_all(alice, one, two, hidden)


@scenario
async def test_offline_message_is_delivered_with_delay_stamp(server):
    alice = Client(server, "alice", resource="desk")
    bob = Client(server, "bob", resource="phone")
    try:
        await alice.login()
        before = dt.datetime.now(dt.timezone.utc)
        body = token("while-you-were-out")
        alice.send_message(server.jid("bob"), body, mtype="chat")
        # An IQ round trip after the message: the message has been routed (and stored) when
        # the answer comes back, since a session's stanzas are handled in order.
        await alice["xep_0199"].send_ping(server.domain, timeout=WAIT)
        await alice.messages.expect_none(lambda m: m["type"] == "error", "error for offline message")

        await bob.login()
        msg = await bob.wait_message(body)
        assert str(msg["from"]) == alice.full
        assert msg["type"] == "chat"
        # XEP-0203 stamp: present, UTC, and when the server received it.
        assert msg.xml.find("{urn:xmpp:delay}delay") is not None, msg
        stamp = msg["delay"]["stamp"]
        assert isinstance(stamp, dt.datetime), stamp
        assert stamp.tzinfo is not None, f"delay stamp without a zone: {stamp}"
        after = dt.datetime.now(dt.timezone.utc)
        assert before - dt.timedelta(seconds=2) <= stamp <= after, (before, stamp, after)
        delay_from = msg["delay"]["from"]
        if delay_from:
            assert str(delay_from) == server.domain, delay_from

        # Delivered once: a new session does not get it again (XEP-0160 §3).
        await bob.disconnect()
        again = Client(server, "bob", resource="tablet")
        try:
            await again.login()
            await again.messages.expect_none(lambda m: m["body"] == body, "replayed message")
        finally:
            await again.disconnect()
    finally:
        await disconnect_all(alice, bob)
