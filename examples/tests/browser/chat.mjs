// Drives two headless Chromium pages, one per chat_relay, through one room, and a third page from another
// origin (a tiny HTTP server on another port, started here) that tries to open relay A's chat WebSocket:
//   node chat.mjs <urlA> <urlB> <screenshot-path>
// Exits 0 when every check passes; non-zero, with the reason on stderr, otherwise. Run by
// examples/tests/chat_browser.rs, which starts the relays.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [urlA, urlB, screenshot] = process.argv.slice(2);
if (!urlA || !urlB || !screenshot) {
  console.error("usage: node chat.mjs <urlA> <urlB> <screenshot-path>");
  process.exit(2);
}

const STEP = 15_000;
const OVERALL = 90_000;
const room = "browser-test";
const xss = "<script>window.__pwned = true</script><img src=x onerror=\"window.__pwned = true\">";

const deadline = setTimeout(() => {
  console.error(`chat.mjs: not done within ${OVERALL} ms`);
  process.exit(3);
}, OVERALL);

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const userDataDir = await mkdtemp(join(tmpdir(), "nucleon-chat-"));
let context;
let failed = false;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1100, height: 680 },
    timeout: STEP,
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
  context.setDefaultTimeout(STEP);

  const problems = [];
  async function open(url, label) {
    const page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`${label}: page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && /Content Security Policy/i.test(m.text())) {
        problems.push(`${label}: ${m.text()}`);
      }
    });
    await page.goto(url);
    await page.waitForSelector('#status[data-state="connected"]');
    // Record every <script> element added to the document from now on.
    await page.evaluate(() => {
      window.__scriptsAdded = 0;
      new MutationObserver((mutations) => {
        for (const m of mutations) {
          for (const n of m.addedNodes) {
            if (n.nodeType === 1 && (n.tagName === "SCRIPT" || n.querySelector("script"))) {
              window.__scriptsAdded += 1;
            }
          }
        }
      }).observe(document, { childList: true, subtree: true });
    });
    return page;
  }

  async function join(page, name) {
    await page.fill("#name", name);
    await page.fill("#room", room);
    await page.click("#join-button");
    await page.waitForSelector("#chat-view:not([hidden])");
    const shown = await page.textContent("#room-name");
    check(shown === room, `${name} sees the room name in the header`);
  }

  async function say(page, text) {
    await page.fill("#text", text);
    await page.press("#text", "Enter");
  }

  async function sees(page, name, text, who) {
    await page.waitForFunction(
      ([name, text]) =>
        [...document.querySelectorAll("#messages .message")].some(
          (li) => li.querySelector(".name")?.textContent === name && li.querySelector(".text")?.textContent === text,
        ),
      [name, text],
    );
    console.log(`ok: ${who} sees ${JSON.stringify(text)} from ${name}`);
  }

  async function members(page, names, who) {
    await page.waitForFunction(
      (want) => [...document.querySelectorAll("#members .member-name")].map((e) => e.textContent).join("\n") === want,
      names.join("\n"),
    );
    console.log(`ok: ${who}'s member list shows ${names.join(", ")}`);
  }

  const a = await open(urlA, "page A");
  const b = await open(urlB, "page B");
  await join(a, "Ada");
  await join(b, "Grace");
  await members(a, ["Ada", "Grace"], "A");
  await members(b, ["Ada", "Grace"], "B");
  const count = await a.textContent("#member-count");
  check(count === "2", "the member count is 2");

  await say(a, "Hello from relay A!");
  await sees(b, "Ada", "Hello from relay A!", "B");
  await sees(a, "Ada", "Hello from relay A!", "A");
  await say(b, "Hi Ada, this came through the broker.");
  await sees(a, "Grace", "Hi Ada, this came through the broker.", "A");

  const scriptsBefore = await b.evaluate(() => document.scripts.length);
  await say(a, xss);
  await sees(b, "Ada", xss, "B");
  await sees(a, "Ada", xss, "A");
  for (const [page, label] of [
    [a, "A"],
    [b, "B"],
  ]) {
    const result = await page.evaluate(() => ({
      scripts: document.scripts.length,
      added: window.__scriptsAdded,
      pwned: window.__pwned === true,
      inMessages: document.querySelectorAll("#messages script, #messages img").length,
      html: [...document.querySelectorAll("#messages .text")].pop().innerHTML,
    }));
    check(result.added === 0, `${label}: no script element was added`);
    check(result.inMessages === 0, `${label}: the message list holds no script or img element`);
    check(!result.pwned, `${label}: the script did not run`);
    check(result.html.startsWith("&lt;script&gt;"), `${label}: the markup is shown as text`);
    if (page === b) check(result.scripts === scriptsBefore, "B: the document's script count is unchanged");
  }

  // A page of another origin (same host, another port) tries relay A's WebSocket and, were it let in, joins
  // the room as Mallory. The relay answers 403 to the upgrade: the socket never opens.
  const wsA = `${urlA.replace(/^http/, "ws")}/ws`;
  const evilPage = `<!doctype html><meta charset="utf-8"><title>another site</title><script>
window.__ws = "pending";
const ws = new WebSocket(${JSON.stringify(wsA)});
ws.onopen = () => {
  window.__ws = "open";
  ws.send(JSON.stringify({ type: "join", name: "Mallory", room: ${JSON.stringify(room)} }));
  ws.send(JSON.stringify({ type: "send", text: "from another site" }));
};
ws.onclose = (e) => {
  window.__closeCode = e.code;
  if (window.__ws === "pending") window.__ws = "refused";
};
</script>`;
  const evil = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(evilPage);
  });
  await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
  try {
    const evilUrl = `http://127.0.0.1:${evil.address().port}/`;
    check(new URL(evilUrl).origin !== new URL(urlA).origin, "the third page has another origin");
    const e = await context.newPage();
    await e.goto(evilUrl);
    await e.waitForFunction(() => window.__ws !== "pending");
    const outcome = await e.evaluate(() => ({ state: window.__ws, code: window.__closeCode }));
    check(outcome.state === "refused", `a page of another origin could not open the chat WebSocket (${JSON.stringify(outcome)})`);
    await e.close();
  } finally {
    evil.close();
  }
  // Everything sent to the room before this message has reached A by the time it shows there.
  await say(b, "Nobody else got in.");
  await sees(a, "Grace", "Nobody else got in.", "A");
  await members(a, ["Ada", "Grace"], "A still");
  const leaked = await a.evaluate(() => document.body.textContent.includes("Mallory"));
  check(!leaked, "A shows no Mallory: no join happened");

  await say(b, "Both relays share one room over AMQP topics.");
  await sees(a, "Grace", "Both relays share one room over AMQP topics.", "A");
  await a.fill("#text", "Looks good!");
  check(problems.length === 0, `no page errors or CSP violations (${problems.join("; ")})`);
  await a.screenshot({ path: screenshot });
  console.log(`ok: screenshot saved to ${screenshot}`);
} catch (e) {
  failed = true;
  console.error(`chat.mjs: ${e.stack || e}`);
} finally {
  if (context) await context.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true });
  clearTimeout(deadline);
}
process.exit(failed ? 1 : 0);
