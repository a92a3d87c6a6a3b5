"""A thin, bounded-wait wrapper around slixmpp for the interop tests.

Everything here waits a few seconds at most, so a broken server fails a test quickly with a
message saying what was expected and what arrived, instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("interop")

# How long one expected event may take. Everything is on loopback, so this is generous.
WAIT = 5.0
# How long to watch for something that must NOT arrive.
QUIET = 1.0
# Upper bound for a whole scenario.
SCENARIO_TIMEOUT = 90.0

DEFAULT_PLUGINS = (
    "xep_0030",  # service discovery
    "xep_0049",  # private XML storage
    "xep_0054",  # vcard-temp
    "xep_0077",  # in-band registration
    "xep_0092",  # software version
    "xep_0191",  # blocking command
    "xep_0199",  # ping
    "xep_0203",  # delayed delivery
)

__all__ = [
    "AuthFailed",
    "Client",
    "ConnectFailed",
    "Inbox",
    "IqError",
    "IqTimeout",
    "QUIET",
    "WAIT",
    "scenario",
]


def scenario(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test body in a fresh event loop with an overall deadline.

    Plain `asyncio.run` rather than a pytest plugin: one loop per test, nothing shared.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(fn(*args, **kwargs), SCENARIO_TIMEOUT)

        asyncio.run(bounded())

    return wrapper


class ConnectFailed(AssertionError):
    """The stream ended or failed before a session started."""


class AuthFailed(ConnectFailed):
    """SASL failed; `failure` is slixmpp's <failure/> stanza."""

    def __init__(self, failure: Any):
        self.failure = failure
        self.condition = failure["condition"]
        super().__init__(f"SASL failure: {failure}")


class Inbox:
    """Every stanza of one kind a client received, with bounded waits over them."""

    def __init__(self, name: str):
        self.name = name
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def push(self, stanza: Any) -> None:
        self.items.append(stanza)
        self._changed.set()

    def matching(self, pred: Callable[[Any], bool]) -> list[Any]:
        return [item for item in self.items if pred(item)]

    def mark(self) -> int:
        """A position: waits given `start=mark()` only consider stanzas received after it."""
        return len(self.items)

    async def wait_for(
        self, pred: Callable[[Any], bool], what: str, timeout: float = WAIT, start: int = 0
    ) -> Any:
        """The first stanza (received since `start`, or within `timeout`) matching `pred`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = start
        while True:
            for item in self.items[seen:]:
                if pred(item):
                    return item
            seen = len(self.items)
            remaining = deadline - loop.time()
            if remaining <= 0:
                got = "\n  ".join(str(i) for i in self.items[start:]) or "(nothing)"
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout}s; received:\n  {got}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def expect_none(
        self, pred: Callable[[Any], bool], what: str, within: float = QUIET, start: int = 0
    ) -> None:
        """Fails if a stanza matching `pred` arrived since `start` or arrives within `within`s."""
        await asyncio.sleep(within)
        bad = [item for item in self.items[start:] if pred(item)]
        assert not bad, f"{self.name}: unexpected {what}: " + "; ".join(map(str, bad))


class Client:
    """One slixmpp client connected to the test server."""

    def __init__(
        self,
        server: Any,
        user: str,
        password: str | None = None,
        *,
        resource: str | None = None,
        mech: str | None = None,
        starttls: bool = True,
        plugins: tuple[str, ...] = DEFAULT_PLUGINS,
        plugin_config: dict[str, dict[str, Any]] | None = None,
    ):
        self.server = server
        jid = server.jid(user) + (f"/{resource}" if resource else "")
        if password is None:
            password = server.password(user)
        config = {k: dict(v) for k, v in (plugin_config or {}).items()}
        if mech is not None:
            config.setdefault("feature_mechanisms", {})["use_mech"] = mech
        self.xmpp = slixmpp.ClientXMPP(jid, password, plugin_config=config)
        self.xmpp.enable_starttls = starttls
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        self.xmpp.whitespace_keepalive = False
        # Trust exactly the certificate the server generated; hostname checking stays on
        # (the certificate names localhost, which is the domain we connect as).
        self.xmpp.ssl_context = ssl.create_default_context(cafile=str(server.cert))
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)

        self.messages = Inbox(f"{jid} messages")
        self.presences = Inbox(f"{jid} presences")
        self.iqs = Inbox(f"{jid} iq pushes")
        self.stream_features: list[Any] = []
        self.auth_failures: list[Any] = []
        self.disconnects: list[Any] = []
        self.xmpp.register_handler(
            Callback("interop messages", MatchXPath("{jabber:client}message"), self.messages.push)
        )
        self.xmpp.register_handler(
            Callback(
                "interop presences", MatchXPath("{jabber:client}presence"), self.presences.push
            )
        )
        self.xmpp.register_handler(
            Callback(
                "interop features",
                MatchXPath("{http://etherx.jabber.org/streams}features"),
                self.stream_features.append,
            )
        )
        self.xmpp.add_event_handler("failed_auth", self.auth_failures.append)
        self.xmpp.add_event_handler("disconnected", self.disconnects.append)
        # XEP-0191 pushes (slixmpp answers them itself; we only record them).
        self.xmpp.add_event_handler("blocked", self.iqs.push)
        self.xmpp.add_event_handler("unblocked", self.iqs.push)

    def __getitem__(self, plugin: str) -> Any:
        """A slixmpp plugin, e.g. `client["xep_0030"]`."""
        return self.xmpp.plugin[plugin]

    # ---- identity -----------------------------------------------------------------------

    @property
    def jid(self) -> slixmpp.JID:
        """The bound full JID (valid after `connect`)."""
        return self.xmpp.boundjid

    @property
    def bare(self) -> str:
        return self.xmpp.boundjid.bare

    @property
    def full(self) -> str:
        return self.xmpp.boundjid.full

    @property
    def mechanism(self) -> str | None:
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        return None if mech is None else mech.name

    @property
    def tls_version(self) -> str | None:
        transport = self.xmpp.transport
        if transport is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.version()

    # ---- connection ---------------------------------------------------------------------

    async def connect(self, timeout: float = WAIT * 2) -> Client:
        """Connects, negotiates and binds; raises AuthFailed or ConnectFailed otherwise."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future = loop.create_future()

        def settle(result: Any = None, error: BaseException | None = None) -> None:
            if not outcome.done():
                if error is not None:
                    outcome.set_exception(error)
                else:
                    outcome.set_result(result)

        handlers = {
            "session_start": lambda _e: settle(True),
            "failed_auth": lambda failure: settle(error=AuthFailed(failure)),
            "failed_all_auth": lambda _e: settle(error=ConnectFailed("no SASL mechanism worked")),
            "no_auth": lambda _e: settle(error=ConnectFailed("no usable SASL mechanism offered")),
            "connection_failed": lambda e: settle(error=ConnectFailed(f"connection failed: {e}")),
            "ssl_invalid_chain": lambda e: settle(error=ConnectFailed(f"TLS chain invalid: {e}")),
            "stream_error": lambda e: settle(error=ConnectFailed(f"stream error: {e}")),
            "disconnected": lambda e: settle(error=ConnectFailed(f"disconnected: {e}")),
        }
        for event, handler in handlers.items():
            self.xmpp.add_event_handler(event, handler)
        try:
            self.xmpp.connect(host=self.server.host, port=self.server.port)
            try:
                await asyncio.wait_for(outcome, timeout)
            except asyncio.TimeoutError:
                raise ConnectFailed(
                    f"{self.xmpp.boundjid}: no session within {timeout}s "
                    f"(features negotiated: {sorted(self.xmpp.features)})"
                ) from None
        finally:
            for event, handler in handlers.items():
                self.xmpp.del_event_handler(event, handler)
        return self

    async def online(self, priority: int | None = None, roster: bool = True) -> Client:
        """Fetches the roster (RFC 6121 §2.2) and sends initial presence (§4.2)."""
        if roster:
            await self.get_roster()
        if priority is None:
            self.xmpp.send_presence()
        else:
            self.xmpp.send_presence(ppriority=priority)
        return self

    async def login(self, priority: int | None = None, roster: bool = True) -> Client:
        await self.connect()
        return await self.online(priority=priority, roster=roster)

    async def disconnect(self) -> None:
        if self.xmpp.transport is None:
            return
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=2.0), WAIT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.xmpp.abort()

    # ---- stanzas ------------------------------------------------------------------------

    async def get_roster(self) -> Any:
        """Fetches the roster through slixmpp (which then tracks pushes) and returns the IQ."""
        return await self.xmpp.get_roster(timeout=WAIT)

    async def fetch_roster(self) -> dict[str, dict[str, Any]]:
        """The whole roster as the server stores it: a get without `ver` (RFC 6121 §2.1.3),
        as JID → item values, independent of slixmpp's local roster cache."""
        iq = self.xmpp.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        result = await iq.send(timeout=WAIT)
        assert result["type"] == "result", f"roster get failed: {result}"
        return {str(jid): dict(item) for jid, item in result["roster"]["items"].items()}

    def send_message(self, to: str, body: str, mtype: str = "chat") -> None:
        self.xmpp.send_message(mto=to, mbody=body, mtype=mtype)

    async def wait_message(
        self, body: str, sender: str | None = None, timeout: float = WAIT, start: int = 0
    ):
        """The non-error message carrying `body` (from `sender` if given: full or bare)."""

        def match(msg: Any) -> bool:
            if msg["type"] == "error" or msg["body"] != body:
                return False
            if sender is None:
                return True
            return str(msg["from"]) == sender or msg["from"].bare == sender

        return await self.messages.wait_for(match, f"message {body!r}", timeout, start)

    async def wait_presence(
        self,
        sender: str,
        ptype: str = "available",
        extra: Callable[[Any], bool] | None = None,
        timeout: float = WAIT,
        start: int = 0,
    ):
        """A presence of `ptype` from `sender` (full JID, or bare for any resource)."""

        def match(pres: Any) -> bool:
            if str(pres["from"]) != sender and pres["from"].bare != sender:
                return False
            if pres["type"] != ptype and not (
                ptype == "available"
                and pres["type"] in ("available", "chat", "away", "xa", "dnd")
            ):
                return False
            return extra is None or extra(pres)

        return await self.presences.wait_for(
            match, f"{ptype} presence from {sender}", timeout, start
        )

    async def iq(self, iq: Any, timeout: float = WAIT) -> Any:
        return await iq.send(timeout=timeout)


async def disconnect_all(*clients: Client) -> None:
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


async def befriend(a: Client, b: Client) -> None:
    """Makes `a` and `b` mutually subscribed ('both'), with both sides acting explicitly:
    `a` adds `b` and subscribes, `b` approves and subscribes back, `a` approves.

    Both clients must be online. Waits until both rosters say 'both'.
    """
    for c in (a, b):
        c.xmpp.auto_authorize = None  # we answer subscription requests ourselves
        c.xmpp.auto_subscribe = False
    a_mark, b_mark = a.presences.mark(), b.presences.mark()

    await a.xmpp.update_roster(b.bare, name=b.xmpp.boundjid.user, timeout=WAIT)
    a.xmpp.client_roster[b.bare].subscribe()
    await b.wait_presence(a.bare, "subscribe", start=b_mark)
    b.xmpp.client_roster[a.bare].authorize()
    b.xmpp.client_roster[a.bare].subscribe()
    await a.wait_presence(b.bare, "subscribed", start=a_mark)
    await a.wait_presence(b.bare, "subscribe", start=a_mark)
    a.xmpp.client_roster[b.bare].authorize()
    await b.wait_presence(a.bare, "subscribed", start=b_mark)

    for me, other in ((a, b), (b, a)):
        roster = await me.fetch_roster()
        item = roster.get(other.bare)
        assert item is not None, f"{me.bare}'s roster lacks {other.bare}: {roster}"
        assert item["subscription"] == "both", f"{me.bare}'s item for {other.bare}: {item}"
