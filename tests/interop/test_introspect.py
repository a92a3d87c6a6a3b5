"""Token introspection (RFC 7662) through an independent OAuth 2.0 client: Authlib's
requests-based `OAuth2Session` checks an IM token that slixmpp obtained over XMPP, as a
registered app's backend would."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from authlib.integrations.requests_client import OAuth2Session

from xmpp_client import WAIT, Client, scenario

TOKEN_NS = "urn:confab:token:0"


async def im_token(client: Client) -> str:
    """Asks the server for an IM token over the client's XMPP session."""
    iq = client.xmpp.make_iq_get()
    iq.append(ET.Element(f"{{{TOKEN_NS}}}token"))
    reply = await iq.send(timeout=WAIT)
    token = reply.xml.findtext(f"{{{TOKEN_NS}}}token")
    assert token, f"no token in {reply}"
    return token


def register_app(server, name: str) -> tuple[str, str]:
    """`confab app add` on the running server's data directory."""
    out = server.cli("app", "add", name).stdout
    fields = dict(line.split("=", 1) for line in out.splitlines())
    return fields["client_id"], fields["client_secret"]


def introspect(server, client_id: str, secret: str, token: str, method: str):
    """One introspection call with Authlib, client authentication by `method`."""
    url = f"http://127.0.0.1:{server.http_port}/api/v1/token/introspect"
    with OAuth2Session(client_id, secret, token_endpoint_auth_method=method) as session:
        return session.introspect_token(url, token=token, token_type_hint="access_token")


@scenario
async def test_authlib_introspects_an_im_token(server):
    alice = Client(server, "alice")
    try:
        await alice.login()
        token = await im_token(alice)
        client_id, secret = register_app(server, "authlib backend")
        full_jid = alice.full

        for method in ("client_secret_basic", "client_secret_post"):
            resp = await asyncio.to_thread(introspect, server, client_id, secret, token, method)
            assert resp.status_code == 200, (method, resp.text)
            assert resp.headers["Cache-Control"] == "no-store"
            info = resp.json()
            assert info["active"] is True, info
            assert info["sub"] == server.jid("alice")
            assert info["username"] == "alice"
            assert info["token_type"] == "Bearer"
            assert info["exp"] > info["iat"]
            assert info["confab_full_jid"] == full_jid

        resp = await asyncio.to_thread(
            introspect, server, client_id, "not-the-secret", token, "client_secret_basic"
        )
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"] == "invalid_client"
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="confab"'
    finally:
        await alice.disconnect()

    # The token dies with the session that fetched it.
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        resp = await asyncio.to_thread(
            introspect, server, client_id, secret, token, "client_secret_basic"
        )
        if resp.json() == {"active": False}:
            break
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"token still active after the session ended: {resp.text}")
        await asyncio.sleep(0.05)
