"""XEP-0077 in-band registration and password change with slixmpp's xep_0077 plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from xmpp_client import WAIT, AuthFailed, Client, ConnectFailed, IqError, scenario

REGISTER_FEATURE = "{http://jabber.org/features/iq-register}register"
REGISTER = "{jabber:iq:register}"


@dataclass
class Registration:
    client: Client
    form: Any = None
    result: Any = None
    error: Any = None
    connect_error: BaseException | None = None
    features: list[Any] = field(default_factory=list)


async def register(server, user: str, password: str) -> Registration:
    """Registers in band before authenticating (XEP-0077 §3.1), then lets slixmpp log in with
    the same credentials on the same stream. The client is left connected if that worked."""
    client = Client(server, user, password)
    outcome = Registration(client)

    async def on_register(form_iq: Any) -> None:
        outcome.form = form_iq
        iq = client.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        try:
            outcome.result = await iq.send(timeout=WAIT)
        except IqError as err:
            outcome.error = err.iq

    client.xmpp.add_event_handler("register", on_register)
    try:
        await client.connect()
    except ConnectFailed as err:
        outcome.connect_error = err
    return outcome


def advertises_registration(client: Client) -> bool:
    return any(f.xml.find(REGISTER_FEATURE) is not None for f in client.stream_features)


@scenario
async def test_register_log_in_and_change_password(open_server):
    server = open_server
    reg = await register(server, "dave", "dave-first-pass")
    try:
        assert advertises_registration(reg.client), "open server did not advertise iq-register"
        assert reg.form is not None, "slixmpp never got the registration form"
        # §3.1: the form asks for a username and a password.
        query = reg.form.xml.find(f"{REGISTER}query")
        assert query is not None, reg.form
        assert query.find(f"{REGISTER}username") is not None, reg.form
        assert query.find(f"{REGISTER}password") is not None, reg.form
        assert reg.error is None, f"registration refused: {reg.error}"
        assert reg.result is not None and reg.result["type"] == "result"
        # The same stream then authenticated as the new account.
        assert reg.connect_error is None, reg.connect_error
        assert reg.client.bare == server.jid("dave")
        assert reg.client.tls_version is not None, "registration ran without TLS"
    finally:
        await reg.client.disconnect()

    # It is a real account: the CLI lists it, and a fresh connection logs in with SCRAM.
    assert server.jid("dave") in server.cli("user", "list").stdout.split()
    dave = Client(server, "dave", "dave-first-pass", resource="fresh")
    try:
        await dave.login()
        assert dave.mechanism == "SCRAM-SHA-256"
        # §3.3: change the password while logged in.
        result = await dave["xep_0077"].change_password("dave-second-pass", timeout=WAIT)
        assert result["type"] == "result"
    finally:
        await dave.disconnect()

    old = Client(server, "dave", "dave-first-pass")
    try:
        with pytest.raises(AuthFailed):
            await old.connect()
    finally:
        await old.disconnect()
    new = Client(server, "dave", "dave-second-pass")
    try:
        await new.connect()
        assert new.bare == server.jid("dave")
    finally:
        await new.disconnect()


@scenario
async def test_registering_a_taken_username_conflicts(open_server):
    reg = await register(open_server, "alice", "hijack-attempt")
    try:
        assert reg.form is not None
        assert reg.result is None, "server accepted registering an existing account"
        assert reg.error is not None
        # XEP-0077 §3.1: an existing username is a <conflict/>.
        assert reg.error["error"]["condition"] == "conflict", reg.error
        # And the old password still holds: SASL with the attempted one failed.
        assert isinstance(reg.connect_error, AuthFailed), reg.connect_error
    finally:
        await reg.client.disconnect()
    alice = Client(open_server, "alice")
    try:
        await alice.connect()
    finally:
        await alice.disconnect()
    # The error must not carry the submitted password back: Confab's registration module
    # promises never to echo a request holding a password (XEP-0077 §3.3 asks this for
    # password changes; the same secret is in a registration request).
    assert "hijack-attempt" not in str(reg.error), f"password echoed in error: {reg.error}"


@scenario
async def test_closed_server_does_not_offer_registration(server):
    alice = Client(server, "alice")
    try:
        await alice.connect()
        assert alice.stream_features, "no stream features recorded"
        assert not advertises_registration(alice), "closed server advertises iq-register"
        # Changing one's own password is still allowed on a closed server.
        result = await alice["xep_0077"].change_password("alice-rotated", timeout=WAIT)
        assert result["type"] == "result"
    finally:
        await alice.disconnect()
    rotated = Client(server, "alice", "alice-rotated")
    try:
        await rotated.connect()
    finally:
        await rotated.disconnect()


@scenario
async def test_password_change_edge_cases(server):
    alice = Client(server, "alice")
    try:
        await alice.connect()
        # XEP-0077 §3.3: an empty <password/> MUST NOT become the password.
        iq = alice.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = "alice"
        iq.xml.find(f"{REGISTER}query").append(
            iq.xml.makeelement(f"{REGISTER}password", {})
        )
        try:
            await iq.send(timeout=WAIT)
        except IqError:
            pass  # refusing is fine; changing it is not (checked below)

        # Changing someone else's password is refused, and the error does not echo the
        # request (§3.3: "SHOULD NOT return the original XML").
        iq = alice.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = "bob"
        iq["register"]["password"] = "stolen-by-alice"
        with pytest.raises(IqError) as refused:
            await iq.send(timeout=WAIT)
        assert "stolen-by-alice" not in str(refused.value.iq), refused.value.iq
    finally:
        await alice.disconnect()

    for user in ("alice", "bob"):
        c = Client(server, user)
        try:
            await c.connect()  # the original passwords still work
        finally:
            await c.disconnect()
