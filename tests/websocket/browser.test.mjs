// Headless Chromium loads @xmpp/client's browser bundle from a page on a loopback origin,
// logs in over WebSocket and chats with @xmpp/client running in Node, and with Confab's
// protobuf CLI (`confab-pb`) over the binary WebSocket endpoint.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync, existsSync } from "node:fs";
import { spawn } from "node:child_process";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { chromium } from "playwright-core";
import { startServer, DOMAIN, password, confabBin } from "./server.mjs";

globalThis.WebSocket ??= WebSocket;
const { client, xml } = await import("@xmpp/client");

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const bundle = path.join(path.dirname(require.resolve("@xmpp/client/package.json")), "dist", "xmpp.min.js");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Serves the test page and the bundle on 127.0.0.1 (a loopback origin the server allows). */
async function servePage() {
  const files = {
    "/": ["text/html; charset=utf-8", readFileSync(path.join(here, "page.html"))],
    "/xmpp.min.js": ["text/javascript; charset=utf-8", readFileSync(bundle)],
  };
  const http = createServer((request, response) => {
    const file = files[new URL(request.url, "http://x").pathname];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${http.address().port}/`, close: () => http.close() };
}

/** Headless Chromium with the test page loaded; `console` collects what the page logs. */
async function openPage(cleanup) {
  const page = await servePage();
  cleanup.push(() => page.close());
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  cleanup.push(() => browser.close());
  const tab = await browser.newPage();
  const console = [];
  tab.on("console", (message) => console.push(message.text()));
  tab.on("pageerror", (error) => console.push(`page error: ${error}`));
  await tab.goto(page.url);
  return { tab, console };
}

test("a page in headless Chromium chats over WebSocket with a Node client", { timeout: 90000 }, async (t) => {
  // Undone in reverse: clients before the server, so the server's shutdown does not wait
  // on them.
  const cleanup = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServer();
  cleanup.push(() => server.stop());

  // The Node side: alice answers whatever arrives.
  const node = client({
    service: server.wsUrl,
    domain: DOMAIN,
    resource: "node",
    username: "alice",
    password: password("alice"),
  });
  node.on("error", () => {});
  const received = [];
  node.on("stanza", async (stanza) => {
    const body = stanza.is("message") ? stanza.getChildText("body") : null;
    if (!body) return;
    received.push({ from: stanza.attrs.from, body });
    await node.send(xml("message", { to: stanza.attrs.from, type: "chat" }, xml("body", {}, `echo: ${body}`)));
  });
  await node.start();
  cleanup.push(() => node.stop());
  await node.send(xml("presence"));

  const { tab, console } = await openPage(cleanup);
  const result = await tab.evaluate(
    (args) => window.chat(args),
    {
      service: server.wsUrl,
      domain: DOMAIN,
      username: "carol",
      password: password("carol"),
      peer: `alice@${DOMAIN}/node`,
      body: "hello from chromium <3",
    },
  );
  assert.equal(result.jid, `carol@${DOMAIN}/browser`, JSON.stringify({ result, console }));
  assert.deepEqual(received, [{ from: `carol@${DOMAIN}/browser`, body: "hello from chromium <3" }]);
  assert.deepEqual(result.answer, { from: `alice@${DOMAIN}/node`, body: "echo: hello from chromium <3" });
  // The bundle has no SCRAM; the server offers PLAIN to a loopback peer.
  assert.ok(result.log.some((line) => line.includes("PLAIN")), JSON.stringify(result.log));
});

/** Runs `confab-pb` (built next to `confab`); resolves with its stdout lines and exit code. */
function confabPb(args, password) {
  const bin = path.join(path.dirname(confabBin()), "confab-pb");
  assert.ok(existsSync(bin), `${bin} is missing; cargo build --workspace builds it`);
  const child = spawn(bin, args, {
    env: { ...process.env, CONFAB_PB_PASSWORD: password },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve) =>
    child.on("exit", (code) => resolve({ code, lines: stdout.split("\n").filter(Boolean), stderr })),
  );
}

test("a page in headless Chromium chats with the protobuf CLI", { timeout: 90000 }, async (t) => {
  const cleanup = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServer();
  cleanup.push(() => server.stop());
  const pbUrl = `ws://${server.http.host}:${server.http.port}/pb-websocket`;
  const cli = ["--websocket", pbUrl, "--user", `alice@${DOMAIN}/cli`];

  // The CLI listens as alice/cli over protobuf; a message that arrives before it is online is
  // kept and handed over with its initial presence, so no readiness handshake is needed.
  const listening = confabPb(["listen", ...cli, "--count", "1", "--timeout", "60"], password("alice"));
  const { tab, console } = await openPage(cleanup);
  const chat = tab.evaluate((args) => window.chat(args), {
    service: server.wsUrl,
    domain: DOMAIN,
    username: "carol",
    password: password("carol"),
    peer: `alice@${DOMAIN}/cli`,
    body: "hello protobuf, from chromium <3",
  });

  const heard = await listening;
  assert.equal(heard.code, 0, heard.stderr);
  const received = JSON.parse(heard.lines[0]);
  assert.equal(received.from, `carol@${DOMAIN}/browser`);
  assert.equal(received.body, "hello protobuf, from chromium <3");
  assert.ok(received.stanza_id, `the archive's id reaches the protobuf client: ${heard.lines[0]}`);

  const sent = await confabPb(["send", ...cli, "--to", received.from, "echo & <reply>"], password("alice"));
  assert.equal(sent.code, 0, sent.stderr);
  const receipt = JSON.parse(sent.lines[0]);
  assert.ok(receipt.server_id && receipt.seq >= 1, `a Confab commit receipt: ${sent.lines[0]}`);

  const result = await chat;
  assert.equal(result.jid, `carol@${DOMAIN}/browser`, JSON.stringify({ result, console }));
  assert.deepEqual(result.answer, { from: `alice@${DOMAIN}/cli`, body: "echo & <reply>" });
});
