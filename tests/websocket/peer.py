"""A slixmpp client over TCP that answers every chat message: the WebSocket tests' peer.

    peer.py HOST PORT JID PASSWORD

Prints `ready` once its session started, then for each chat message `got <from> <body>`
and answers it with `echo: <body>`. Exits when standard input closes, or after 60 s.
"""

from __future__ import annotations

import asyncio
import sys

import slixmpp


async def main(host: str, port: int, jid: str, password: str) -> None:
    # slixmpp refuses SASL on an unencrypted stream unless told the channel is trusted.
    mechanisms = {"unencrypted_scram": True, "unencrypted_plain": True}
    xmpp = slixmpp.ClientXMPP(jid, password, plugin_config={"feature_mechanisms": mechanisms})
    # Loopback: PLAIN without TLS is allowed there, and the test is about the other side.
    xmpp.enable_starttls = False
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = True
    xmpp.whitespace_keepalive = False
    started = asyncio.get_running_loop().create_future()

    def session_start(_event: object) -> None:
        xmpp.send_presence()
        if not started.done():
            started.set_result(True)

    def message(msg: slixmpp.Message) -> None:
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        print(f"got {msg['from']} {msg['body']}", flush=True)
        msg.reply(f"echo: {msg['body']}").send()

    xmpp.add_event_handler("session_start", session_start)
    xmpp.add_event_handler("message", message)
    xmpp.connect(host=host, port=port)
    await asyncio.wait_for(started, 20)
    print("ready", flush=True)
    # Runs until the test closes our standard input (or the deadline passes).
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.read(), 60)
    except asyncio.TimeoutError:
        pass
    xmpp.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
