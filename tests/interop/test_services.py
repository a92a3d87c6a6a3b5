"""Server-side features through slixmpp's own plugins: disco, ping, version, vCard, private
storage."""

from __future__ import annotations

import pytest
from slixmpp.xmlstream import ElementBase

from xmpp_client import WAIT, Client, IqError, disconnect_all, scenario


@scenario
async def test_disco_info_of_the_server(server):
    alice = Client(server, "alice")
    try:
        await alice.login()
        iq = await alice["xep_0030"].get_info(
            jid=server.domain, local=False, cached=False, timeout=WAIT
        )
        assert iq["type"] == "result"
        info = iq["disco_info"]
        features = set(info["features"])
        # What the server's modules advertise (`server_features` in crates/modules). Roster is
        # a stream feature in RFC 6121, not a disco feature, so it is not expected here.
        expected = {
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "jabber:iq:private",
            "vcard-temp",
            "urn:xmpp:blocking",
            "jabber:iq:register",
            "msgoffline",
        }
        missing = expected - features
        assert not missing, f"server does not advertise {sorted(missing)}; got {sorted(features)}"
        # XEP-0030 §3.1: a server identity (category 'server', type 'im').
        identities = {(cat, typ) for cat, typ, _lang, _name in info["identities"]}
        assert ("server", "im") in identities, info["identities"]

        # disco#items of the server: the services it hosts (XEP-0045's conference domain).
        items = await alice["xep_0030"].get_items(jid=server.domain, local=False, timeout=WAIT)
        assert items["type"] == "result"
        hosted = {item[0] for item in items["disco_items"]["items"]}
        assert f"conference.{server.domain}" in hosted, hosted

        # disco#info of an account's bare JID, answered by the server on its behalf.
        iq = await alice["xep_0030"].get_info(
            jid=server.jid("bob"), local=False, cached=False, timeout=WAIT
        )
        assert "http://jabber.org/protocol/disco#info" in set(iq["disco_info"]["features"])
    finally:
        await alice.disconnect()


@scenario
async def test_ping_and_version(server):
    alice = Client(server, "alice")
    bob = Client(server, "bob")
    try:
        await alice.login()
        await bob.login()
        # slixmpp's ping() treats an error from one's own server as success, so check the
        # IQ type ourselves (XEP-0199 §4.2: a server that supports ping answers 'result').
        pong = await alice["xep_0199"].send_ping(server.domain, timeout=WAIT)
        assert pong["type"] == "result"
        assert str(pong["from"]) == server.domain
        # An IQ to another client's full JID is routed to it and its answer back (RFC 6120
        # §8.2.3 / RFC 6121 §8.5.3.1); bob's slixmpp answers pings itself.
        pong = await alice["xep_0199"].send_ping(bob.full, timeout=WAIT)
        assert pong["type"] == "result"
        assert str(pong["from"]) == bob.full
        # XEP-0092: the server names itself.
        version = await alice["xep_0092"].get_version(server.domain, timeout=WAIT)
        assert version["type"] == "result"
        assert version["software_version"]["name"], version
    finally:
        await disconnect_all(alice, bob)


@scenario
async def test_vcard_set_by_owner_and_read_by_another_user(server):
    alice = Client(server, "alice")
    bob = Client(server, "bob")
    try:
        await alice.login()
        await bob.login()
        vcard = alice["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell \u2713"
        vcard["NICKNAME"] = "ally"
        vcard["DESC"] = "Down the rabbit hole <and> back & forth"
        await alice["xep_0054"].publish_vcard(vcard, timeout=WAIT)

        # Bob reads it from Alice's bare JID (XEP-0054 §3.2), straight from the server.
        iq = await bob["xep_0054"].get_vcard(server.jid("alice"), cached=False, timeout=WAIT)
        assert iq["type"] == "result"
        got = iq["vcard_temp"]
        assert got["FN"] == "Alice Liddell \u2713"
        assert got.xml.findtext("{vcard-temp}NICKNAME") == "ally"
        assert got.xml.findtext("{vcard-temp}DESC") == "Down the rabbit hole <and> back & forth"

        # The owner reads her own too (an IQ without 'to', answered by her server).
        own = alice.xmpp.make_iq_get()
        own.enable("vcard_temp")
        own = await own.send(timeout=WAIT)
        assert own["vcard_temp"]["FN"] == "Alice Liddell \u2713"

        # Only the owner may set it: Bob cannot write Alice's vCard (XEP-0054 §3.2).
        forged = bob["xep_0054"].make_vcard()
        forged["FN"] = "Mallory"
        with pytest.raises(IqError):
            await bob["xep_0054"].publish_vcard(forged, jid=server.jid("alice"), timeout=WAIT)
        iq = await bob["xep_0054"].get_vcard(server.jid("alice"), cached=False, timeout=WAIT)
        assert iq["vcard_temp"]["FN"] == "Alice Liddell \u2713"
    finally:
        await disconnect_all(alice, bob)


class InteropNote(ElementBase):
    """An application payload for private storage, in a namespace of our own."""

    name = "note"
    namespace = "urn:confab:interop:note"
    plugin_attrib = "interop_note"
    interfaces = {"text", "kind"}
    sub_interfaces = {"text"}


@scenario
async def test_private_storage_set_and_get(server):
    alice = Client(server, "alice")
    bob = Client(server, "bob")
    try:
        await alice.login()
        await bob.login()
        for c in (alice, bob):
            c["xep_0049"].register(InteropNote)

        note = InteropNote()
        note["text"] = "remember the milk \u00e9"
        note["kind"] = "todo"
        result = await alice["xep_0049"].store(note, timeout=WAIT)
        assert result["type"] == "result"

        got = await alice["xep_0049"].retrieve("interop_note", timeout=WAIT)
        assert got["type"] == "result"
        assert got["private"]["interop_note"]["text"] == "remember the milk \u00e9"
        assert got["private"]["interop_note"]["kind"] == "todo"

        # Persisted: a new session reads the same.
        again = Client(server, "alice", resource="second")
        try:
            await again.connect()
            again["xep_0049"].register(InteropNote)
            got = await again["xep_0049"].retrieve("interop_note", timeout=WAIT)
            assert got["private"]["interop_note"]["text"] == "remember the milk \u00e9"
        finally:
            await again.disconnect()

        # Per account: Bob's private storage under the same namespace is empty.
        got = await bob["xep_0049"].retrieve("interop_note", timeout=WAIT)
        assert got["type"] == "result"
        assert not got["private"]["interop_note"]["text"], got
    finally:
        await disconnect_all(alice, bob)
