// Browser test: the reference page, served from its own origin, against wxbind in sandbox
// mode, driven in Debian's Chromium by playwright-core. Log in → QR code → open the encoded
// bind URL and allow → "bound" → follow in the sandbox → the form built from the template's
// keywords → a refused value marked → send → "sent", its history (queued, sent) and in the
// inbox → one held for review and approved → "under_review", then "sent".
// Screenshots of each step go to e2e/screenshots/ (ignored by git).
import { createServer } from "node:http";
import { mkdirSync, readFileSync, existsSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { DEMO_PASSWORD, freePort, startWxbind } from "../test/server.mjs";

const dist = fileURLToPath(new URL("../reference/dist/", import.meta.url));
const shots = fileURLToPath(new URL("./screenshots/", import.meta.url));
mkdirSync(shots, { recursive: true });
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Serves the built reference page on its own origin. */
async function serveReference() {
  const port = await freePort();
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const file = join(dist, path === "/" ? "index.html" : path);
    if (!file.startsWith(dist) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { origin: `http://127.0.0.1:${port}`, close: () => server.close() };
}

const reference = await serveReference();
const wxbind = await startWxbind({ WXBIND_CORS_ORIGINS: reference.origin });
const browser = await chromium.launch({
  executablePath: chromiumPath,
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
let step = 0;
const shot = (page, name) => page.screenshot({ path: join(shots, `${++step}-${name}.png`) });

try {
  const context = await browser.newContext({ viewport: { width: 480, height: 800 } });
  const spa = await context.newPage();
  spa.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  await spa.goto(`${reference.origin}/?api=${encodeURIComponent(wxbind.base)}`);
  await shot(spa, "login");

  await spa.fill("input[name=username]", "demo");
  await spa.fill("input[name=password]", DEMO_PASSWORD);
  await spa.click("button[type=submit]");
  const qr = spa.locator("canvas#qr[data-url]");
  await qr.waitFor({ timeout: 10_000 });
  await shot(spa, "qr-code");
  const bindUrl = await qr.getAttribute("data-url");
  assert.ok(bindUrl.startsWith(`${wxbind.base}/sandbox/connect/oauth2/authorize?`), bindUrl);

  // The "phone": open the bind URL, as WeChat would after the scan, and allow.
  const phone = await context.newPage();
  await phone.goto(bindUrl);
  await shot(phone, "consent");
  await phone.fill("input[name=sandbox_user]", "alice");
  await Promise.all([phone.waitForURL(/\/api\/callback/), phone.click("button[value=allow]")]);
  await shot(phone, "callback");

  await spa.locator("#status", { hasText: "bound" }).waitFor({ timeout: 10_000 });
  await shot(spa, "bound");

  // Follow the account in the sandbox's phone view, as a real user must before messages.
  await phone.goto(`${wxbind.base}/sandbox/`);
  await Promise.all([phone.waitForURL(`${wxbind.base}/sandbox/`), phone.click("#user-alice button")]);
  await phone.locator("#user-alice", { hasText: "following the account" }).waitFor();
  await shot(phone, "followed");

  // The form is built from the default template's keywords, pre-filled from its example.
  const option = spa.locator("#template option:checked");
  assert.match(await option.textContent(), /订单发货通知/);
  assert.equal(await spa.inputValue("#data-form input[name=thing1]"), "无线耳机");
  assert.equal(await spa.locator("#data-form input").count(), 5);

  // A value its type refuses: the API names it, and the page marks the field.
  await spa.fill("#data-form input[name=phrase5]", "shipped");
  await spa.click("#send-button");
  await spa.locator("#problems li[data-key=phrase5]").waitFor({ timeout: 10_000 });
  assert.match(await spa.textContent("#error"), /^invalid_template_data: /);
  assert.equal(await spa.getAttribute("#data-form input[name=phrase5]", "aria-invalid"), "true");
  await shot(spa, "invalid-data");

  await spa.fill("#data-form input[name=phrase5]", "已发货");
  await spa.fill("#data-form input[name=thing1]", "Hello from the page");
  await spa.click("#send-button");
  await spa.locator("#message-status", { hasText: "sent" }).waitFor({ timeout: 15_000 });
  assert.equal(await spa.locator("#problems li").count(), 0);
  // Its history from GET /api/messages/{id}/history: queued, then sent on the first attempt.
  await spa.locator("#message-history li[data-event=sent]").waitFor({ timeout: 10_000 });
  const history = await spa.locator("#message-history li").evaluateAll((lis) => lis.map((li) => li.dataset.event));
  assert.deepEqual(history.slice(0, 2), ["queued", "sent"], history.join(", "));
  assert.match(await spa.textContent("#message-history li[data-event=sent]"), /attempt 1/);
  assert.ok(await spa.getAttribute("#message-history li[data-event=queued] time", "datetime"));
  await spa.locator("#message-history").scrollIntoViewIfNeeded();
  await shot(spa, "sent");

  // WeChat holds the next one for review and then approves it: the page says it is under
  // review (and not to resend), then sent once WeChat's late delivery report arrives.
  await fetch(`${wxbind.base}/sandbox/api/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ send_errcodes: [40252], review: "approve" }),
  });
  await spa.fill("#data-form input[name=thing1]", "Reviewed first");
  await spa.click("#send-button");
  await spa.locator("#message-status", { hasText: "under_review" }).waitFor({ timeout: 15_000 });
  assert.match(await spa.textContent("#message-note"), /reviewing/);
  await shot(spa, "under-review");
  await spa.locator("#message-status", { hasText: /^sent$/ }).waitFor({ timeout: 15_000 });
  assert.match(await spa.textContent("#message-note"), /delivered/);
  await spa.locator("#message-history li[data-event=under_review]").waitFor({ timeout: 10_000 });
  await spa.locator("#message-history").scrollIntoViewIfNeeded();
  await shot(spa, "approved");

  const users = await (await fetch(`${wxbind.base}/sandbox/api/users`)).json();
  const alice = users.find((u) => u.name === "alice");
  const inbox = await (await fetch(`${wxbind.base}/sandbox/api/inbox?openid=${alice.openid}`)).json();
  assert.equal(inbox.length, 2, "the approved one arrived too");
  assert.equal(inbox[0].data.thing1.value, "Hello from the page");
  assert.equal(inbox[1].data.thing1.value, "Reviewed first");
  assert.equal(inbox[0].data.phrase5.value, "已发货");
  await phone.goto(`${wxbind.base}/sandbox/`);
  await shot(phone, "inbox");
  console.log(`e2e: 1 passed, 0 failed (screenshots in ${shots})`);
} catch (e) {
  console.error("e2e: 0 passed, 1 failed");
  throw e;
} finally {
  await browser.close();
  reference.close();
  await wxbind.stop();
}
