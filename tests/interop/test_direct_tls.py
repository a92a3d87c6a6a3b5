"""XEP-0368 direct TLS with slixmpp: TLS from the first byte on its own port, next to STARTTLS."""

from __future__ import annotations

import dataclasses

from xmpp_client import Client, ConnectFailed, scenario


def direct_tls_client(server, user: str, resource: str, alpn: bool = True, **kwargs) -> Client:
    """A slixmpp client that connects to the direct TLS port and speaks TLS at once."""
    assert server.direct_tls_port, "the server did not announce a direct TLS listener"
    # The same server, reached at the direct TLS port (Client connects to server.port).
    target = dataclasses.replace(server, port=server.direct_tls_port)
    client = Client(target, user, resource=resource, **kwargs)
    # slixmpp tries direct TLS first when enabled; nothing else may be tried, or a fallback
    # to STARTTLS or plain TCP would hide a broken listener.
    client.xmpp.enable_direct_tls = True
    client.xmpp.enable_starttls = False
    client.xmpp.enable_plaintext = False
    if alpn:
        # XEP-0368 §4: clients offer ALPN "xmpp-client".
        client.xmpp.ssl_context.set_alpn_protocols(["xmpp-client"])
    return client


def ssl_object(client: Client):
    return client.xmpp.transport.get_extra_info("ssl_object")


@scenario
async def test_direct_tls_login_and_chat_with_a_starttls_client(server):
    alice = direct_tls_client(server, "alice", "direct", mech="PLAIN")
    bob = Client(server, "bob", resource="starttls")
    try:
        await alice.login()
        tls = ssl_object(alice)
        assert tls is not None, "not TLS"
        assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
        assert tls.selected_alpn_protocol() == "xmpp-client"
        # The stream was secure from the start: no STARTTLS was offered or negotiated, and
        # PLAIN was accepted over it.
        assert "starttls" not in alice.xmpp.features
        assert alice.mechanism == "PLAIN"
        assert all(f.xml.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
                   for f in alice.stream_features), "STARTTLS offered on a direct TLS stream"

        await bob.login()
        assert "starttls" in bob.xmpp.features, "bob used STARTTLS"

        alice.send_message(bob.full, "hello over direct TLS")
        await bob.wait_message("hello over direct TLS", sender=alice.full)
        bob.send_message(alice.full, "hello over STARTTLS")
        await alice.wait_message("hello over STARTTLS", sender=bob.full)
    finally:
        await alice.disconnect()
        await bob.disconnect()


@scenario
async def test_direct_tls_without_alpn_and_with_scram(server):
    carol = direct_tls_client(server, "carol", "no-alpn", alpn=False)
    try:
        await carol.login()
        assert ssl_object(carol).selected_alpn_protocol() is None
        assert carol.mechanism == "SCRAM-SHA-256"
    finally:
        await carol.disconnect()


@scenario
async def test_starttls_port_does_not_speak_direct_tls(server):
    # A direct TLS client pointed at the STARTTLS port fails its handshake rather than
    # getting a session: the ports are not interchangeable.
    wrong = dataclasses.replace(server, direct_tls_port=server.port)
    alice = direct_tls_client(wrong, "alice", "wrong-port")
    try:
        try:
            await alice.connect(timeout=5)
        except ConnectFailed:
            pass
        else:
            raise AssertionError("a TLS session on the STARTTLS port")
    finally:
        alice.xmpp.abort()
