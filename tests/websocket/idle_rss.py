#!/usr/bin/env python3
"""Server memory per idle session: XMPP over WebSocket (RFC 7395) against plain TCP.

    tests/websocket/idle_rss.py CONFAB_BIN [--count 2000] [--runs 1]

For each transport, a fresh `confab serve` on loopback; 10 sessions warm it up, then VmRSS is
sampled, COUNT sessions log in (PLAIN on loopback, one account, one resource each) and stay
idle and bound, and VmRSS is sampled again after a short settle. Prints KiB per session.
Standard library only; every wait is bounded and the tool stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import tempfile
import time

USER, PASSWORD, DOMAIN = "alice", "alice-secret", "localhost"
STEP = 20.0
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Tcp:
    """A raw RFC 6120 client over TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer, self.buf = reader, writer, b""

    @classmethod
    async def connect(cls, host: str, port: int) -> "Tcp":
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, xml: str) -> None:
        self.writer.write(xml.encode())
        await self.writer.drain()

    async def until(self, marker: bytes) -> None:
        while marker not in self.buf:
            data = await asyncio.wait_for(self.reader.read(65536), STEP)
            if not data:
                raise RuntimeError(f"closed before {marker!r}: {self.buf[-300:]!r}")
            self.buf += data
        self.buf = self.buf.split(marker, 1)[1]

    async def open(self) -> None:
        await self.send(
            f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            f"to='{DOMAIN}' version='1.0'>"
        )
        await self.until(b"</stream:features>")

    def close(self) -> None:
        self.writer.close()


class Ws(Tcp):
    """A raw RFC 7395 client: RFC 6455 framing by hand (masked text frames out)."""

    @classmethod
    async def connect(cls, host: str, port: int) -> "Ws":
        client = cls(*await asyncio.open_connection(host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        client.writer.write(
            (
                f"GET /xmpp-websocket HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
            ).encode()
        )
        await client.writer.drain()
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), STEP)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {head!r}")
        return client

    async def send(self, xml: str) -> None:
        payload = xml.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def until(self, marker: bytes) -> None:
        while True:
            first = await asyncio.wait_for(self.reader.readexactly(2), STEP)
            length = first[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            payload = await asyncio.wait_for(self.reader.readexactly(length), STEP)
            if first[0] & 0x0F == 0x8:
                raise RuntimeError(f"closed before {marker!r}")
            if marker in payload:
                return

    async def open(self) -> None:
        await self.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        await self.until(b"<stream:features")


async def login(kind: type[Tcp], host: str, port: int, resource: str) -> Tcp:
    client = await kind.connect(host, port)
    await client.open()
    auth = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    await client.send(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
    )
    await client.until(b"<success")
    await client.open()
    await client.send(
        f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    )
    await client.until(b"</iq>")
    return client


async def open_many(kind: type[Tcp], host: str, port: int, prefix: str, count: int) -> list[Tcp]:
    limit = asyncio.Semaphore(50)

    async def one(i: int) -> Tcp:
        async with limit:
            return await login(kind, host, port, f"{prefix}{i}")

    return await asyncio.gather(*(one(i) for i in range(count)))


def start_server(binary: str, data: str) -> tuple[subprocess.Popen, str, int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFAB__")}
    env["RUST_LOG"] = "warn"
    env["CONFAB__C2S__DIRECT_TLS"] = "false"
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--c2s", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    c2s = http = None
    deadline = time.monotonic() + STEP
    assert proc.stdout is not None
    while (c2s is None or http is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if m := re.match(r"confab: c2s listening on (.+):(\d+)", line):
            c2s = int(m.group(2))
        if m := re.match(r"confab: http listening on (.+):(\d+)", line):
            http = int(m.group(2))
    if c2s is None or http is None:
        proc.kill()
        raise RuntimeError("the server did not start")
    return proc, "127.0.0.1", c2s, http


async def measure(binary: str, kind: type[Tcp], count: int) -> float:
    with tempfile.TemporaryDirectory() as data:
        subprocess.run(
            [binary, "user", "add", USER, PASSWORD, "--data-dir", data],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        proc, host, c2s, http = start_server(binary, data)
        port = http if kind is Ws else c2s
        try:
            warm = await open_many(kind, host, port, "warm", 10)
            await asyncio.sleep(1)
            before = rss_kib(proc.pid)
            clients = await open_many(kind, host, port, "idle", count)
            await asyncio.sleep(2)
            after = rss_kib(proc.pid)
            for client in clients + warm:
                client.close()
            return (after - before) / count
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for run in range(args.runs):
        tcp = await measure(args.binary, Tcp, args.count)
        ws = await measure(args.binary, Ws, args.count)
        print(
            f"run {run + 1}: {args.count} idle bound sessions: TCP {tcp:.1f} KiB/session, "
            f"WebSocket {ws:.1f} KiB/session (x{ws / tcp:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
