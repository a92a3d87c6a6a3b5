"""Stream negotiation with slixmpp: STARTTLS, SASL mechanisms, binding, failures."""

from __future__ import annotations

import pytest

from xmpp_client import AuthFailed, Client, scenario

SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"


def offered_mechanisms(client: Client) -> list[list[str]]:
    """The SASL mechanisms of each <stream:features/> the client saw, in order."""
    offered = []
    for features in client.stream_features:
        mechanisms = features.xml.find(f"{SASL}mechanisms")
        if mechanisms is not None:
            offered.append([m.text for m in mechanisms.findall(f"{SASL}mechanism")])
    return offered


@scenario
async def test_starttls_then_scram_sha_256(server):
    alice = Client(server, "alice", resource="laptop")
    try:
        await alice.connect()
        # slixmpp prefers SCRAM-SHA-256 when offered and verified the server signature in
        # <success/> (it raises otherwise); falling back to another mechanism would show here.
        assert alice.mechanism == "SCRAM-SHA-256"
        assert "starttls" in alice.xmpp.features, "STARTTLS was not negotiated"
        assert alice.tls_version in ("TLSv1.2", "TLSv1.3"), alice.tls_version
        # The certificate the server generated verified against itself as CA, for 'localhost'.
        assert alice.xmpp.transport.get_extra_info("peercert") is not None
        # RFC 6120 §7: the requested resource is bound (or replaced; ours is not taken).
        assert alice.full == f"{server.jid('alice')}/laptop"
        mechs = offered_mechanisms(alice)
        assert mechs, "no <mechanisms/> offered"
        assert {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} <= set(mechs[-1]), mechs
        # The server answers a stanza on the new session.
        ping = await alice["xep_0199"].send_ping(server.domain, timeout=5)
        assert ping["type"] == "result"
    finally:
        await alice.disconnect()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "PLAIN"])
@scenario
async def test_other_mechanisms_over_tls(server, mech):
    bob = Client(server, "bob", mech=mech)
    try:
        await bob.connect()
        assert bob.mechanism == mech
        assert bob.tls_version is not None
        assert bob.bare == server.jid("bob")
    finally:
        await bob.disconnect()


@scenario
async def test_plain_without_tls_is_allowed_on_loopback(server):
    carol = Client(
        server,
        "carol",
        mech="PLAIN",
        starttls=False,
        plugin_config={"feature_mechanisms": {"unencrypted_plain": True}},
    )
    try:
        await carol.connect()
        assert carol.mechanism == "PLAIN"
        assert carol.tls_version is None
        assert carol.bare == server.jid("carol")
    finally:
        await carol.disconnect()


@scenario
async def test_server_generated_resource(server):
    # No resource requested: RFC 6120 §7.6 has the server generate one.
    alice = Client(server, "alice")
    try:
        await alice.connect()
        assert alice.bare == server.jid("alice")
        assert alice.jid.resource, f"no resource bound: {alice.full}"
    finally:
        await alice.disconnect()


@scenario
async def test_wrong_password_fails_auth(server):
    alice = Client(server, "alice", password="not-the-password", mech="SCRAM-SHA-256")
    try:
        with pytest.raises(AuthFailed) as failed:
            await alice.connect()
        # RFC 6120 §6.5.10: bad credentials are <not-authorized/>.
        assert failed.value.condition == "not-authorized", failed.value.failure
        assert len(alice.auth_failures) == 1
        assert not alice.xmpp.sessionstarted
        assert not alice.xmpp.authenticated
    finally:
        await alice.disconnect()

    # Unknown account: the same answer, so accounts cannot be enumerated.
    ghost = Client(server, "ghost", password="whatever", mech="SCRAM-SHA-256")
    try:
        with pytest.raises(AuthFailed) as failed:
            await ghost.connect()
        assert failed.value.condition == "not-authorized", failed.value.failure
    finally:
        await ghost.disconnect()

    # Wrong PLAIN password too, then the right one still works (under the throttle's budget).
    plain = Client(server, "alice", password="nope", mech="PLAIN")
    try:
        with pytest.raises(AuthFailed):
            await plain.connect()
    finally:
        await plain.disconnect()
    alice = Client(server, "alice")
    try:
        await alice.connect()
        assert alice.bare == server.jid("alice")
    finally:
        await alice.disconnect()
