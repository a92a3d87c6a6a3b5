// Headless Chromium loads @xmpp/client's browser bundle from a page on a loopback origin,
// logs in over WebSocket and chats with @xmpp/client running in Node.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { chromium } from "playwright-core";
import { startServer, DOMAIN, password } from "./server.mjs";

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

test("a page in headless Chromium chats over WebSocket with a Node client", { timeout: 90000 }, async (t) => {
  // Undone in reverse: clients before the server, so the server's shutdown does not wait
  // on them.
  const cleanup = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServer();
  cleanup.push(() => server.stop());
  const page = await servePage();
  cleanup.push(() => page.close());

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
