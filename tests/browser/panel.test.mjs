// The admin panel in a real browser: Debian's chromium driven by
// playwright-core. Starts `keyward admin` on a fresh store, logs in with
// the URL it prints, and goes through the panel as an operator would;
// what the panel says is checked against the library through the
// `keyward` CLI (which attaches to the panel's store). Screenshots of each
// tab are written to target/panel-screenshots/.
//
// Run by scripts/test-all.sh: `npm ci && node --test panel.test.mjs`, with
// KEYWARD_BIN naming the CLI (default: target/debug/keyward).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import readline from "node:readline";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.env.KEYWARD_BIN || path.join(root, "target/debug/keyward");
const shots = path.join(root, "target/panel-screenshots");
const dir = mkdtempSync(path.join(tmpdir(), "keyward-panel-"));
const store = path.join(dir, "store");

let panel; // the `keyward admin` process
let loginUrl;
let base;
let browser;
let page;

/** Runs the CLI on the panel's store; returns its exit code and output. */
function cli(...args) {
  const r = spawnSync(bin, ["--db", store, ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Whether the library admits `key` from `ip` (exit 0 valid, 1 denied). */
function verify(key, ip, integration = "HubSpot") {
  const r = cli("verify", key, "--ip", ip, "--integration", integration);
  assert.ok(r.code === 0 || r.code === 1, `verify failed: ${r.stderr}`);
  return r.code === 0;
}

/** Polls `check` until it returns true; fails past the deadline. */
async function eventually(what, check, deadlineMs = 30_000) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) assert.fail(`not within ${deadlineMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  panel = spawn(bin, ["--db", store, "admin", "--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: panel.stdout });
  loginUrl = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("keyward admin printed no URL")), 60_000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
    panel.once("exit", (code) => reject(new Error(`keyward admin exited with ${code}`)));
  });
  base = new URL(loginUrl).origin;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  if (panel && panel.exitCode === null) {
    const exited = new Promise((r) => panel.once("exit", r));
    panel.kill("SIGTERM");
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Another local server (a page any local user could serve): records the
 * Cookie header of every request it gets. Stops with `close()`.
 */
async function eavesdropper() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push(req.headers.cookie || "");
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<p>another server</p>");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { port: server.address().port, seen, close: () => new Promise((r) => server.close(r)) };
}

let firstKey;
let keyUrl;

test("without a session every page answers 401", async () => {
  for (const p of ["/keys", "/events", "/plugins", "/keys/abcdefghijkl"]) {
    const r = await page.goto(base + p);
    assert.equal(r.status(), 401, p);
  }
});

test("the printed URL logs in, and the token leaves the address bar", async () => {
  // A host name of the panel's own under localhost (Chromium resolves it
  // to loopback), so its cookie goes to no other local server.
  assert.match(loginUrl, /^http:\/\/k-[a-z0-9]{20}\.localhost:\d+\/\?token=[0-9a-f]{64}$/);
  const r = await page.goto(loginUrl);
  assert.equal(r.status(), 200);
  assert.equal(new URL(page.url()).pathname, "/keys");
  assert.ok(!page.url().includes("token"));
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "keyward_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict");
});

test("no other local server is sent the session cookie", async () => {
  const other = await eavesdropper();
  try {
    // Another port of 127.0.0.1, and of localhost: what a page served by
    // another local user would see.
    for (const host of ["127.0.0.1", "localhost"]) {
      const r = await page.goto(`http://${host}:${other.port}/`);
      assert.equal(r.status(), 200, host);
    }
    // (The browser asks for a favicon too.)
    assert.ok(other.seen.length >= 2, `${other.seen.length} requests`);
    for (const cookie of other.seen) {
      assert.ok(!cookie.includes("keyward_session"), `sent: ${cookie}`);
    }
    // Nor is the panel's name shared with those addresses' cookies.
    const cookies = await page.context().cookies([`http://127.0.0.1:${other.port}/`, `http://localhost:${other.port}/`]);
    assert.equal(cookies.filter((c) => c.name === "keyward_session").length, 0);
  } finally {
    await other.close();
    // The panel still works (and the next test starts on its keys page).
    const r = await page.goto(base + "/keys");
    assert.equal(r.status(), 200);
  }
});

test("create a key: shown once, with a copy button, and it verifies", async () => {
  await page.fill("#create input[name=name]", "CRM sync");
  await page.fill("#create input[name=owner]", "acme");
  await page.click("#create button[type=submit]");
  await page.waitForSelector("#new-key");
  keyUrl = page.url();
  assert.match(new URL(keyUrl).pathname, /^\/keys\/[A-Za-z0-9]{12}$/);
  firstKey = (await page.textContent("#new-key")).trim();
  assert.match(firstKey, /^kw_[A-Za-z0-9]{12}_[A-Za-z0-9]+$/);
  assert.ok(!page.url().includes(firstKey), "never in a URL");
  assert.match(await page.textContent(".new-key"), /will not be shown again/);
  assert.equal(await page.locator("button[data-copy=new-key]").count(), 1);
  await shot("overview-new-key");
  assert.ok(verify(firstKey, "198.51.100.7"), "the new key is valid");

  await page.reload();
  assert.equal(await page.locator("#new-key").count(), 0, "a reload does not show it again");
  assert.ok(!(await page.content()).includes(firstKey));
  await page.goto(base + "/keys");
  assert.match(await page.textContent("table.keys"), /CRM sync/);
  await shot("keys");
});

test("regenerate: cancel keeps the key, confirm replaces it", async () => {
  await page.goto(keyUrl);
  await page.selectOption("select[name=grace]", "0");
  await page.click("text=Regenerate…");
  await page.waitForSelector("#regenerate-confirm");
  const confirm = await page.textContent("#regenerate-confirm");
  assert.match(confirm, /stops working immediately/);
  assert.match(confirm, /198\.51\.100\.7 \(HubSpot\)/, "names the clients of the last 7 days");
  await page.click("#regenerate-confirm >> text=Cancel");
  assert.equal(page.url(), keyUrl);
  assert.ok(verify(firstKey, "198.51.100.7"), "cancel kept the old key valid");

  await page.click("text=Regenerate…");
  await page.click("#regenerate-confirm button[type=submit]");
  await page.waitForSelector("#new-key");
  const second = (await page.textContent("#new-key")).trim();
  assert.notEqual(second, firstKey);
  assert.ok(!verify(firstKey, "198.51.100.7"), "the old key is refused at once");
  assert.ok(verify(second, "198.51.100.7"), "the new key works");
  firstKey = second;
  await page.reload();
  assert.equal(await page.locator("#new-key").count(), 0);
  assert.match(await page.textContent("dl.details"), /Generation\s*2/);
  await shot("overview");
});

test("whitelist: warning, field errors, then another address is refused and counted", async () => {
  await page.goto(keyUrl + "/whitelist");
  await page.click("#whitelist-toggle");
  await page.waitForSelector("#whitelist-confirm");
  assert.match(await page.textContent("#whitelist-confirm"), /Every request with this key will be refused/);
  await page.click("#whitelist-confirm >> text=Cancel");
  assert.equal(await page.getAttribute("#whitelist-toggle", "aria-checked"), "false");

  await page.fill("#add-entry input[name=name]", "office");
  await page.fill("#add-entry input[name=network]", "10.0.0.1/8");
  await page.click("#add-entry button[type=submit]");
  await page.waitForSelector("#entry-network-error");
  assert.match(await page.textContent("#entry-network-error"), /host bits set/);
  assert.equal(await page.inputValue("#add-entry input[name=network]"), "10.0.0.1/8");

  await page.fill("#add-entry input[name=name]", "office");
  await page.fill("#add-entry input[name=network]", "203.0.113.0/24");
  await page.click("#add-entry button[type=submit]");
  await page.waitForSelector("#entries");
  assert.match(await page.textContent("#entries"), /office\s*203\.0\.113\.0\/24/);
  await page.click("#whitelist-toggle");
  await page.waitForSelector("#whitelist-toggle[aria-checked=true]");
  await shot("whitelist");

  assert.ok(!verify(firstKey, "198.51.100.7"), "another address is refused");
  assert.ok(verify(firstKey, "203.0.113.9"), "a whitelisted address is admitted");

  await page.goto(keyUrl + "/usage");
  await eventually("the refusal on the Usage tab", async () => {
    await page.reload();
    const n = await page.textContent("td[data-reason=ip_not_allowed]");
    return Number(n) >= 1;
  });
  assert.match(await page.textContent("#ips"), /198\.51\.100\.7/);
  assert.match(await page.textContent("#ips"), /203\.0\.113\.9/);
});

test("the usage chart renders", async () => {
  await page.goto(keyUrl + "/usage");
  const chart = page.locator("#usage-chart");
  await chart.waitFor();
  const box = await chart.boundingBox();
  assert.ok(box && box.width > 300 && box.height > 50, "drawn at a visible size");
  assert.ok((await page.locator("#usage-chart rect.allowed").count()) >= 1);
  assert.ok((await page.locator("#usage-chart rect.denied").count()) >= 1);
  await shot("usage");
});

test("events name the panel as their actor; the plugins page lists none", async () => {
  await page.goto(base + "/events");
  const text = await page.textContent("#events");
  assert.match(text, /key\.created/);
  assert.match(text, /key\.regenerated/);
  assert.match(text, /whitelist\.updated/);
  assert.match(text, /admin panel/);
  assert.ok(!text.includes(firstKey));
  await shot("events");
  // Filtered by kind and actor through the form; the filters stay in the form.
  await page.selectOption("#event-filters select[name=kind]", "whitelist.updated");
  await page.fill("#event-filters input[name=actor]", "admin panel");
  await page.click("#event-filters button[type=submit]");
  await page.waitForLoadState();
  const kinds = await page.locator("#events tbody tr td:nth-child(3)").allTextContents();
  assert.ok(kinds.length >= 1);
  assert.ok(kinds.every((k) => k === "whitelist.updated"), kinds.join(","));
  assert.equal(await page.inputValue("#event-filters input[name=actor]"), "admin panel");
  await page.fill("#event-filters input[name=actor]", "someone else");
  await page.click("#event-filters button[type=submit]");
  await page.waitForLoadState();
  assert.match(await page.textContent("main"), /No events\./);
  const r = await page.goto(base + "/plugins");
  assert.equal(r.status(), 200);
  assert.match(await page.textContent("main"), /No plugins installed/);
});

test("log out ends the session", async () => {
  await page.goto(base + "/keys");
  await page.click("text=Log out");
  await page.waitForLoadState();
  const r = await page.goto(base + "/keys");
  assert.equal(r.status(), 401);
  const again = await page.goto(loginUrl);
  assert.equal(again.status(), 401, "the login token works once");
});
