// A real `confab serve` on ephemeral ports for the WebSocket client tests, with accounts
// alice, bob and carol (password "<user>-secret", as in the Rust and slixmpp suites).

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";

export const DOMAIN = "localhost";
export const USERS = ["alice", "bob", "carol"];
export const password = (user) => `${user}-secret`;

/** The server binary: $CONFAB_BIN (run.sh sets it). */
export function confabBin() {
  const bin = process.env.CONFAB_BIN;
  if (!bin) throw new Error("CONFAB_BIN is not set; run tests/websocket/run.sh");
  return bin;
}

function cleanEnv(extra = {}) {
  const env = { ...process.env, NO_COLOR: "1", RUST_LOG: "info,confab_net=debug" };
  for (const key of Object.keys(env)) {
    if (key.startsWith("CONFAB__")) delete env[key];
  }
  // Direct TLS would bind the fixed 5223, which another suite may hold.
  return { ...env, CONFAB__C2S__DIRECT_TLS: "false", ...extra };
}

/**
 * Starts `confab serve` and resolves once both listeners are reported:
 * { c2s: {host, port}, http: {host, port}, wsUrl, stop() }.
 */
export async function startServer({ env = {} } = {}) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "confab-ws-"));
  for (const user of USERS) {
    execFileSync(confabBin(), ["user", "add", user, password(user), "--data-dir", dataDir], {
      env: cleanEnv({ ...env, RUST_LOG: "warn" }),
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  const child = spawn(
    confabBin(),
    ["serve", "--data-dir", dataDir, "--c2s", "127.0.0.1:0", "--http", "127.0.0.1:0"],
    { env: cleanEnv(env), stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const parse = (line, what) => {
    const match = line.match(new RegExp(`^confab: ${what} listening on (.+):(\\d+)$`));
    return match ? { host: match[1], port: Number(match[2]) } : null;
  };
  const lines = readline.createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    let c2s = null;
    let http = null;
    const timer = setTimeout(() => reject(new Error(`confab did not start:\n${stderr}`)), 20000);
    child.on("exit", (code) => reject(new Error(`confab exited (${code}):\n${stderr}`)));
    lines.on("line", (line) => {
      c2s ??= parse(line, "c2s");
      http ??= parse(line, "http");
      if (c2s && http) {
        clearTimeout(timer);
        resolve({ c2s, http });
      }
    });
  });
  const { c2s, http } = await listening;
  return {
    c2s,
    http,
    wsUrl: `ws://${http.host}:${http.port}/xmpp-websocket`,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        // unref: a pending timer must not keep the test process alive after the exit.
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
