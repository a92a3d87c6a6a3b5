// @xmpp/client (Node) over ws:// against the real server: SCRAM login, resource binding,
// stream management, and a chat with a slixmpp client on the TCP listener.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import readline from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { startServer, DOMAIN, password } from "./server.mjs";

// @xmpp/websocket uses the platform's WebSocket; Node 20 has none without a flag.
globalThis.WebSocket ??= WebSocket;
const { client, xml } = await import("@xmpp/client");

const here = path.dirname(fileURLToPath(import.meta.url));
const WAIT = 10000;

/** Resolves with the first value `check` returns for an event, or rejects after WAIT. */
function waitFor(emitter, event, check, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT);
    const listener = (...args) => {
      const value = check(...args);
      if (value !== undefined) {
        clearTimeout(timer);
        emitter.off(event, listener);
        resolve(value);
      }
    };
    emitter.on(event, listener);
  });
}

/** The slixmpp peer logged in as `user` on the TCP listener. */
async function startPeer(server, user) {
  const python = process.env.CONFAB_PYTHON ?? "python3";
  const child = spawn(
    python,
    [path.join(here, "peer.py"), server.c2s.host, String(server.c2s.port), `${user}@${DOMAIN}/tcp`, password(user)],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const lines = readline.createInterface({ input: child.stdout });
  await waitFor(lines, "line", (line) => (line === "ready" ? true : undefined), "the slixmpp peer");
  return { child, lines };
}

test("@xmpp/client logs in over WebSocket and chats with slixmpp over TCP", { timeout: 60000 }, async (t) => {
  // Undone in reverse: clients before the server, so the server's shutdown does not wait
  // on them.
  const cleanup = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServer();
  cleanup.push(() => server.stop());
  const peer = await startPeer(server, "bob");
  cleanup.push(() => peer.child.stdin.end());

  const xmpp = client({
    service: server.wsUrl,
    domain: DOMAIN,
    resource: "node",
    username: "alice",
    password: password("alice"),
  });
  xmpp.on("error", () => {});
  const mechanisms = [];
  xmpp.on("element", (element) => {
    if (element.is("features")) {
      const offered = element.getChild("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl");
      if (offered) mechanisms.push(...offered.getChildren("mechanism").map((m) => m.text()));
    }
  });
  let chosen = null;
  xmpp.on("send", (element) => {
    if (element.is("auth")) chosen = element.attrs.mechanism;
  });
  const online = waitFor(xmpp, "online", (address) => address, "online");
  await xmpp.start();
  const address = await online;
  cleanup.push(() => xmpp.stop());
  assert.equal(address.toString(), `alice@${DOMAIN}/node`);
  assert.ok(mechanisms.includes("SCRAM-SHA-1"), `offered: ${mechanisms}`);
  // Node's @xmpp/client prefers SCRAM over PLAIN: the SCRAM exchange ran over WebSocket.
  assert.equal(chosen, "SCRAM-SHA-1");
  await xmpp.send(xml("presence"));

  const echoed = waitFor(
    xmpp,
    "stanza",
    (stanza) => (stanza.is("message") && stanza.getChildText("body")?.startsWith("echo:") ? stanza : undefined),
    "the echo",
  );
  const seen = waitFor(peer.lines, "line", (line) => (line.startsWith("got ") ? line : undefined), "the peer's receipt");
  await xmpp.send(xml("message", { to: `bob@${DOMAIN}/tcp`, type: "chat" }, xml("body", {}, "hi from node & ws")));
  assert.equal(await seen, `got alice@${DOMAIN}/node hi from node & ws`);
  const reply = await echoed;
  assert.equal(reply.getChildText("body"), "echo: hi from node & ws");
  assert.equal(reply.attrs.from, `bob@${DOMAIN}/tcp`);
});
