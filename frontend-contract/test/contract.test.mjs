// Contract tests: drive a real wxbind (sandbox mode) over HTTP the way a SPA and WeChat do,
// and check that every response is documented in ../openapi/openapi.json and matches its
// schema. At the end, every documented response must have been seen, except the few a
// healthy sandbox cannot produce (listed below, with the reason).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { DEMO_PASSWORD, startWxbind } from "./server.mjs";
import { assertDocumented, documentedResponses, seen } from "./spec.mjs";

const PUSH_TOKEN = "contracttoken";
const METRICS_TOKEN = "contract-metrics-token";
/** The one mini program non-admins may open in these tests (WXBIND_MINIPROGRAM_APPIDS). */
const MINIPROGRAM = "wx1234567890abcdef";

/** Documented responses a healthy sandbox cannot produce, and why. */
const UNREACHABLE = {
  "GET /api/bind-url 503": "sandbox mode always has (simulated) credentials",
  "GET /api/bind-qrcode 503": "sandbox mode always has (simulated) credentials",
  "GET /api/bind-qrcode 502": "the simulator does not fail",
  "GET /api/callback 302": "needs BIND_RESULT_URL (covered by the Rust integration tests)",
  "GET /api/callback 502": "the simulator does not fail",
  "GET /api/callback 503": "sandbox mode always has (simulated) credentials",
  "POST /api/messages 503": "sandbox mode always has (simulated) credentials",
  "POST /api/templates/sync 502": "the simulator does not fail",
  "POST /api/templates/sync 503": "sandbox mode always has (simulated) credentials",
  "GET /api/ready 503": "needs a database outage (covered by the Rust integration tests)",
  "POST /api/login 503":
    "`busy` needs more concurrent logins than the verification queue holds, `unavailable` a database outage (both covered by the Rust integration tests)",
  "GET /api/wechat/events 503": "sandbox mode always has a push token",
  "GET /api/quota 503": "sandbox mode always has (simulated) credentials and a database",
  "POST /api/quota/reset 502": "the simulator does not fail",
  "POST /api/quota/reset 503": "sandbox mode always has (simulated) credentials and a database",
  "POST /api/wechat/events 503": "sandbox mode always has a push token",
  "POST /api/broadcasts 503": "sandbox mode always has (simulated) credentials",
};

let server;
before(async () => {
  server = await startWxbind({
    WECHAT_TOKEN: PUSH_TOKEN,
    WXBIND_METRICS_TOKEN: METRICS_TOKEN,
    WXBIND_MINIPROGRAM_APPIDS: MINIPROGRAM,
    WXBIND_REVIEW_SECONDS: "1",
    // Webhook endpoints are receivers these tests start on 127.0.0.1.
    WXBIND_WEBHOOK_ALLOW_PRIVATE: "1",
    WXBIND_WEBHOOK_POLL_MS: "100",
  });
});
after(async () => {
  await server?.stop();
});

/** One documented call: fetch, read the body, validate against the spec. `base` is another
 * server's (default: the suite's). */
async function call(method, path, { token, json, body, headers = {}, cookie, base = server.base } = {}) {
  const url = path.startsWith("http") ? path : `${base}${path}`;
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (cookie) h.cookie = cookie;
  if (json !== undefined) h["content-type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers: h,
    body: json !== undefined ? JSON.stringify(json) : body,
    redirect: "manual",
  });
  const text = await response.text();
  const isJson = (response.headers.get("content-type") ?? "").includes("application/json");
  const parsed = isJson && text ? JSON.parse(text) : text;
  assertDocumented(method, url, response, parsed);
  return { status: response.status, body: parsed, headers: response.headers };
}

async function login(username, base = server.base) {
  const r = await call("POST", "/api/login", { json: { username, password: DEMO_PASSWORD }, base });
  assert.equal(r.status, 200);
  const cookie = r.headers.getSetCookie().find((c) => c.startsWith("wxbind_session="));
  return { token: r.body.access_token, user: r.body.user, cookie: cookie.split(";")[0] };
}

/** Binds `token`'s user to the sandbox WeChat user `wechatUser` through the real flow. */
async function bind(token, wechatUser, base = server.base) {
  const { body } = await call("GET", "/api/bind-url", { token, base });
  const authorize = `${body.url.split("#")[0]}&sandbox_user=${wechatUser}&sandbox_decision=allow`;
  const redirect = await fetch(authorize, { redirect: "manual" });
  return call("GET", redirect.headers.get("location"));
}

const sign = (...parts) => createHash("sha1").update(parts.sort().join("")).digest("hex");

/** A message for the sandbox's default template (an order shipped) that fits its keywords. */
const ORDER_DATA = {
  thing1: { value: "contract" },
  character_string2: { value: "202612020001" },
  time3: { value: "2026年12月2日 15:01" },
  amount4: { value: "¥199.00" },
  phrase5: { value: "已发货" },
};

test("auth: login, refresh, logout", async () => {
  assert.equal((await call("POST", "/api/login", { json: { username: "demo" } })).status, 400);
  assert.equal(
    (await call("POST", "/api/login", { json: { username: "demo", password: "wrong-password" } })).status,
    401,
  );
  const big = { username: "x", password: "y".repeat(70 * 1024) };
  assert.equal((await call("POST", "/api/login", { json: big })).status, 413);
  const notJson = await call("POST", "/api/login", {
    body: JSON.stringify({ username: "demo", password: DEMO_PASSWORD }),
    headers: { "content-type": "text/plain" },
  });
  assert.equal(notJson.status, 415);
  assert.equal(notJson.body.error.code, "unsupported_media_type");
  for (let i = 0; i < 10; i++) {
    await call("POST", "/api/login", { json: { username: "nobody", password: "wrong-password" } });
  }
  const blocked = await call("POST", "/api/login", { json: { username: "nobody", password: "x" } });
  assert.equal(blocked.status, 429);
  assert.equal(blocked.body.error.code, "too_many_attempts");

  const { cookie } = await login("demo");
  const refreshed = await call("POST", "/api/token/refresh", { cookie });
  assert.equal(refreshed.status, 200);
  assert.equal((await call("GET", "/api/me", { token: refreshed.body.access_token })).status, 200);
  assert.equal((await call("POST", "/api/logout", { cookie })).status, 204);
  const after = await call("POST", "/api/token/refresh", { cookie });
  assert.equal(after.status, 401);
  assert.equal(after.body.error.code, "session_expired");
});

test("account and binding", async () => {
  const { token } = await login("demo");
  assert.equal((await call("GET", "/api/me")).status, 401);
  assert.equal((await call("GET", "/api/bind-url")).status, 401);
  assert.equal((await call("GET", "/api/bind-qrcode")).status, 401);
  assert.equal((await call("DELETE", "/api/binding")).status, 401);

  const bound = await bind(token, "carol");
  assert.equal(bound.status, 200);
  const me = (await call("GET", "/api/me", { token })).body;
  assert.equal(me.wechat_bound, true);
  // A bind link's scope is snsapi_userinfo, and the sandbox account counts as linked to an
  // Open Platform account: the binding carries a unionid.
  assert.equal(typeof me.unionid, "string");
  assert.equal((await call("GET", "/api/bind-qrcode", { token })).status, 200);

  const reused = await call("GET", "/api/callback?code=x&state=NoSuchState123");
  assert.equal(reused.status, 400);
  assert.equal(reused.body.error.code, "invalid_state");
  // carol is demo's: binding her to admin is refused.
  const admin = await login("admin");
  const conflict = await bind(admin.token, "carol");
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.error.code, "already_bound");

  // Admins look accounts up by unionid; nobody else does.
  const lookup = `/api/users?unionid=${encodeURIComponent(me.unionid)}`;
  const found = await call("GET", lookup, { token: admin.token });
  assert.equal(found.status, 200);
  assert.equal(found.body.id, me.id);
  assert.equal((await call("GET", lookup, { token })).status, 403);
  assert.equal((await call("GET", lookup)).status, 401);
  assert.equal((await call("GET", "/api/users", { token: admin.token })).status, 400);

  assert.equal((await call("DELETE", "/api/binding", { token })).status, 204);
  const unbound = (await call("GET", "/api/me", { token })).body;
  assert.equal(unbound.wechat_bound, false);
  assert.equal(unbound.unionid, null);
  const gone = await call("GET", lookup, { token: admin.token });
  assert.equal(gone.status, 404);
  assert.equal(gone.body.error.code, "user_not_found");
});

test("messages", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  const data = ORDER_DATA;
  assert.equal((await call("POST", "/api/messages", { json: { data } })).status, 401);
  const unbound = await call("POST", "/api/messages", { token: demo.token, json: { data } });
  assert.equal(unbound.status, 409);

  await bind(demo.token, "erin");
  await fetch(`${server.base}/sandbox/api/users/erin/follow`, { method: "POST" });
  const queued = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data, idempotency_key: "contract-1" },
  });
  assert.equal(queued.status, 202);
  const again = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data, idempotency_key: "contract-1" },
  });
  assert.equal(again.status, 200);
  assert.equal(again.body.id, queued.body.id);

  assert.equal((await call("POST", "/api/messages", { token: demo.token, json: { data: {} } })).status, 400);

  // A mini-program page: shown as sent; a listed one for a user, any for an admin.
  const miniprogram = { appid: MINIPROGRAM, pagepath: "pages/order/detail?id=42" };
  const jump = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data, miniprogram, url: `${server.base}/orders/42` },
  });
  assert.equal(jump.status, 202);
  assert.deepEqual(jump.body.miniprogram, miniprogram);
  const unlisted = { appid: "wxfedcba0987654321", pagepath: "pages/index" };
  const refused = await call("POST", "/api/messages", { token: demo.token, json: { data, miniprogram: unlisted } });
  assert.equal(refused.status, 403);
  assert.match(refused.body.error.message, /^miniprogram\.appid/);
  const badPage = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data, miniprogram: { appid: MINIPROGRAM, pagepath: "https://evil.example/x" } },
  });
  assert.equal(badPage.status, 400);
  assert.match(badPage.body.error.message, /miniprogram\.pagepath/);
  const forbidden = await call("POST", "/api/messages", {
    token: demo.token,
    json: { user_id: admin.user.id, data },
  });
  assert.equal(forbidden.status, 403);
  const unknown = await call("POST", "/api/messages", {
    token: admin.token,
    json: { user_id: 987654, data },
  });
  assert.equal(unknown.status, 404);
  const tooBig = { data: { k: { value: "x".repeat(70 * 1024) } } };
  assert.equal((await call("POST", "/api/messages", { token: demo.token, json: tooBig })).status, 413);
  const notJson = await call("POST", "/api/messages", {
    token: demo.token,
    body: JSON.stringify({ data }),
    headers: { "content-type": "text/plain" },
  });
  assert.equal(notJson.status, 415);

  let message;
  for (let i = 0; i < 100; i++) {
    message = await call("GET", `/api/messages/${queued.body.id}`, { token: demo.token });
    if (message.body.status === "sent") break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(message.body.status, "sent");
  assert.equal((await call("GET", `/api/messages/${queued.body.id}`)).status, 401);
  const missing = await call("GET", "/api/messages/00000000-0000-0000-0000-000000000000", {
    token: demo.token,
  });
  assert.equal(missing.status, 404);
});

test("templates", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  assert.equal((await call("GET", "/api/templates")).status, 401);
  assert.equal((await call("POST", "/api/templates/sync")).status, 401);
  const forbidden = await call("POST", "/api/templates/sync", { token: demo.token });
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.code, "forbidden");
  assert.equal(forbidden.body.error.details, undefined, "no details but for template data");

  const synced = await call("POST", "/api/templates/sync", { token: admin.token });
  assert.equal(synced.status, 200);
  const listed = await call("GET", "/api/templates", { token: demo.token });
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body, synced.body);
  const order = listed.body.find((t) => t.default);
  assert.equal(order.kind, "category");
  assert.deepEqual(
    order.keywords.map((k) => k.key),
    Object.keys(ORDER_DATA),
  );
  assert.equal((await call("GET", "/api/health")).body.templates_synced, true);

  // Checked before anything is queued: every problem listed, with its key.
  const misfit = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data: { ...ORDER_DATA, phrase5: { value: "shipped" }, first: { value: "Hi" } } },
  });
  assert.equal(misfit.status, 400);
  assert.equal(misfit.body.error.code, "invalid_template_data");
  assert.deepEqual(
    misfit.body.error.details.map((d) => d.key),
    ["phrase5", "first"],
  );
  const unknown = await call("POST", "/api/messages", {
    token: admin.token,
    json: { template_id: "NO_SUCH_TEMPLATE", data: ORDER_DATA },
  });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.error.code, "unknown_template");
});

/** Polls a message until `done` holds for it. */
async function waitFor(token, id, done) {
  let m;
  for (let i = 0; i < 200; i++) {
    m = (await call("GET", `/api/messages/${id}`, { token })).body;
    if (done(m)) return m;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`message ${id} never got there: ${JSON.stringify(m)}`);
}

const faults = (body) =>
  fetch(`${server.base}/sandbox/api/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

test("message log and retry", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  assert.equal((await call("GET", "/api/messages")).status, 401);
  assert.equal((await call("GET", "/api/messages", { token: demo.token })).status, 403);
  assert.equal((await call("GET", "/api/messages?limit=0", { token: admin.token })).status, 400);
  const page = await call("GET", "/api/messages?limit=1", { token: admin.token });
  assert.equal(page.status, 200);
  assert.equal(page.body.messages.length, 1);
  assert.equal(typeof page.body.next_cursor, "string");
  const next = await call("GET", `/api/messages?limit=1&cursor=${page.body.next_cursor}`, { token: admin.token });
  assert.equal(next.status, 200);
  assert.notEqual(next.body.messages[0].id, page.body.messages[0].id);

  // A message WeChat refuses for good fails; an admin queues it again with the same id.
  await faults({ send_errcodes: [40003] });
  const me = (await call("GET", "/api/me", { token: demo.token })).body;
  const m = await call("POST", "/api/messages", { token: admin.token, json: { user_id: me.id, data: ORDER_DATA } });
  await waitFor(admin.token, m.body.id, (x) => x.status === "failed");
  const retry = `/api/messages/${m.body.id}/retry`;
  assert.equal((await call("POST", retry)).status, 401);
  assert.equal((await call("POST", retry, { token: demo.token })).status, 403);
  const again = await call("POST", retry, { token: admin.token });
  assert.equal(again.status, 202);
  assert.equal(again.body.id, m.body.id);
  await waitFor(admin.token, m.body.id, (x) => x.status === "sent");
  assert.equal((await call("POST", retry, { token: admin.token })).status, 409);
  assert.equal(
    (await call("POST", "/api/messages/00000000-0000-0000-0000-000000000000/retry", { token: admin.token })).status,
    404,
  );
});

const NO_SUCH_ID = "00000000-0000-0000-0000-000000000000";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A message's history without WeChat's delivery report (which arrives when it likes). */
const steps = (history) =>
  history.events.map((e) => e.event).filter((e) => !["delivered", "blocked", "delivery_failed"].includes(e));

// Before "review and quota": these need messages actually sent.
test("message history", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  // A past send_at means now; urgent and far-ahead sends are refused.
  const sent = await call("POST", "/api/messages", {
    token: demo.token,
    json: { data: ORDER_DATA, send_at: new Date(Date.now() - 60_000).toISOString() },
  });
  assert.equal(sent.status, 202);
  assert.equal(sent.body.urgent, false);
  assert.equal(sent.body.broadcast_id, null);
  assert.equal(sent.body.reason, null);
  const urgent = await call("POST", "/api/messages", { token: demo.token, json: { data: ORDER_DATA, urgent: true } });
  assert.equal(urgent.status, 403);
  assert.match(urgent.body.error.message, /^urgent/);
  const farAhead = new Date(Date.now() + 31 * 86_400_000).toISOString();
  const tooFar = await call("POST", "/api/messages", { token: demo.token, json: { data: ORDER_DATA, send_at: farAhead } });
  assert.equal(tooFar.status, 400);
  assert.match(tooFar.body.error.message, /send_at/);

  await waitFor(demo.token, sent.body.id, (m) => m.status === "sent");
  const history = `/api/messages/${sent.body.id}/history`;
  const h = await call("GET", history, { token: demo.token });
  assert.equal(h.status, 200);
  assert.equal(h.body.message.id, sent.body.id);
  assert.equal(h.body.message.status, "sent");
  assert.deepEqual(steps(h.body), ["queued", "sent"]);
  assert.deepEqual([h.body.events[0].attempt, h.body.events[1].attempt], [0, 1]);
  assert.equal((await call("GET", history, { token: admin.token })).status, 200);
  assert.equal((await call("GET", history)).status, 401);
  const missing = await call("GET", `/api/messages/${NO_SUCH_ID}/history`, { token: demo.token });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "message_not_found");

  // Refused for good, retried by an admin, sent: every step, with WeChat's errcode.
  await faults({ send_errcodes: [40003] });
  const m = await call("POST", "/api/messages", { token: admin.token, json: { user_id: demo.user.id, data: ORDER_DATA } });
  await waitFor(admin.token, m.body.id, (x) => x.status === "failed");
  assert.equal((await call("POST", `/api/messages/${m.body.id}/retry`, { token: admin.token })).status, 202);
  await waitFor(admin.token, m.body.id, (x) => x.status === "sent");
  const retried = (await call("GET", `/api/messages/${m.body.id}/history`, { token: demo.token })).body;
  assert.deepEqual(steps(retried), ["queued", "failed", "queued", "sent"]);
  const failed = retried.events.find((e) => e.event === "failed");
  assert.equal(failed.errcode, 40003);
  assert.equal(typeof failed.errmsg, "string");
});

test("broadcasts", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  const me = (await call("GET", "/api/me", { token: demo.token })).body;
  assert.ok(me.wechat_bound && me.subscribed, "demo is bound (to erin) and following since \"messages\"");
  const adminMe = (await call("GET", "/api/me", { token: admin.token })).body;
  assert.equal(adminMe.wechat_bound, false);

  const users = { user_ids: [demo.user.id] };
  assert.equal((await call("POST", "/api/broadcasts", { json: { data: ORDER_DATA, recipients: users } })).status, 401);
  const forbidden = await call("POST", "/api/broadcasts", { token: demo.token, json: { data: ORDER_DATA, recipients: users } });
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.code, "forbidden");
  for (const [method, path] of [
    ["GET", `/api/broadcasts/${NO_SUCH_ID}`],
    ["GET", `/api/broadcasts/${NO_SUCH_ID}/messages`],
    ["POST", `/api/broadcasts/${NO_SUCH_ID}/cancel`],
  ]) {
    assert.equal((await call(method, path)).status, 401, path);
    assert.equal((await call(method, path, { token: demo.token })).status, 403, path);
    const missing = await call(method, path, { token: admin.token });
    assert.equal(missing.status, 404, path);
    assert.equal(missing.body.error.code, "broadcast_not_found");
  }
  const none = await call("POST", "/api/broadcasts", {
    token: admin.token,
    json: { data: ORDER_DATA, recipients: { user_ids: [] } },
  });
  assert.equal(none.status, 400);
  assert.match(none.body.error.message, /recipients/);
  const misfit = await call("POST", "/api/broadcasts", {
    token: admin.token,
    json: { data: ORDER_DATA, data_by_user: { [demo.user.id]: { phrase5: { value: "shipped" } } }, recipients: users },
  });
  assert.equal(misfit.status, 400);
  assert.equal(misfit.body.error.code, "invalid_template_data");
  const notJson = await call("POST", "/api/broadcasts", {
    token: admin.token,
    body: JSON.stringify({ data: ORDER_DATA, recipients: users }),
    headers: { "content-type": "text/plain" },
  });
  assert.equal(notJson.status, 415);
  const huge = { data: { k: { value: "x".repeat(33 * 1024 * 1024) } }, recipients: users };
  const tooBig = await call("POST", "/api/broadcasts", { token: admin.token, json: huge });
  assert.equal(tooBig.status, 413);
  assert.equal(tooBig.body.error.code, "payload_too_large");

  // Duplicates count once; unknown and unbound recipients are skipped, not failed.
  const request = {
    data: ORDER_DATA,
    data_by_user: { [demo.user.id]: { thing1: { value: "broadcast for demo" } } },
    recipients: { user_ids: [demo.user.id, admin.user.id, 987654, demo.user.id] },
    idempotency_key: "contract-broadcast-1",
  };
  const made = await call("POST", "/api/broadcasts", { token: admin.token, json: request });
  assert.equal(made.status, 202);
  assert.equal(made.body.total, 3);
  assert.deepEqual(made.body.skipped_reasons, { user_not_found: 1, not_bound: 1, not_following: 0 });
  assert.equal(made.body.counts.skipped, 2);
  assert.equal(made.body.urgent, false);
  const again = await call("POST", "/api/broadcasts", { token: admin.token, json: request });
  assert.equal(again.status, 200);
  assert.equal(again.body.id, made.body.id);

  const id = made.body.id;
  let b;
  for (let i = 0; i < 200; i++) {
    b = await call("GET", `/api/broadcasts/${id}`, { token: admin.token });
    if (b.body.status === "done") break;
    await sleep(50);
  }
  assert.equal(b.status, 200);
  assert.equal(b.body.status, "done");
  assert.equal(b.body.counts.sent, 1);
  const listed = await call("GET", `/api/broadcasts/${id}/messages`, { token: admin.token });
  assert.equal(listed.status, 200);
  assert.equal(listed.body.messages.length, 1);
  const [message] = listed.body.messages;
  assert.deepEqual([message.user_id, message.broadcast_id, message.status], [demo.user.id, id, "sent"]);
  const byFilter = await call("GET", `/api/messages?broadcast_id=${id}`, { token: admin.token });
  assert.equal(byFilter.status, 200);
  assert.deepEqual(byFilter.body.messages.map((m) => m.id), [message.id]);
  assert.equal((await call("GET", `/api/broadcasts/${id}/messages?status=failed`, { token: admin.token })).body.messages.length, 0);
  assert.equal((await call("GET", `/api/broadcasts/${id}/messages?limit=0`, { token: admin.token })).status, 400);
  assert.equal((await call("GET", `/api/broadcasts/${id}/messages?status=lost`, { token: admin.token })).status, 400);
  // The recipient sees it (and its history) like any message sent to them.
  assert.equal((await call("GET", `/api/messages/${message.id}/history`, { token: demo.token })).status, 200);
  const erin = (await (await fetch(`${server.base}/sandbox/api/users`)).json()).find((u) => u.name === "erin");
  const inbox = await (await fetch(`${server.base}/sandbox/api/inbox?openid=${erin.openid}`)).json();
  assert.equal(inbox.at(-1).data.thing1.value, "broadcast for demo", "data_by_user over data");

  // A key broadcasts and sees (and cancels) what it sent; another key does not see it.
  const sender = await call("POST", "/api/keys", { token: admin.token, json: { name: "contract-broadcaster" } });
  const other = await call("POST", "/api/keys", { token: admin.token, json: { name: "contract-bystander" } });
  const later = new Date(Date.now() + 3_600_000).toISOString();
  const scheduled = await call("POST", "/api/broadcasts", {
    token: sender.body.key,
    json: { data: ORDER_DATA, recipients: { all_bound: true }, send_at: later, urgent: true },
  });
  assert.equal(scheduled.status, 202);
  assert.equal(scheduled.body.status, "scheduled");
  assert.equal(scheduled.body.urgent, true);
  assert.equal(Date.parse(scheduled.body.send_at), Date.parse(later));
  const sid = scheduled.body.id;
  assert.ok(scheduled.body.counts.queued >= 1, JSON.stringify(scheduled.body.counts));
  assert.equal((await call("GET", `/api/broadcasts/${sid}`, { token: sender.body.key })).status, 200);
  assert.equal((await call("GET", `/api/broadcasts/${sid}`, { token: admin.token })).status, 200);
  assert.equal((await call("GET", `/api/broadcasts/${sid}`, { token: other.body.key })).status, 404);
  const waiting = (await call("GET", `/api/broadcasts/${sid}/messages`, { token: sender.body.key })).body.messages;
  assert.ok(waiting.every((m) => m.status === "queued" && m.urgent && m.send_at), JSON.stringify(waiting));

  const cancelled = await call("POST", `/api/broadcasts/${sid}/cancel`, { token: sender.body.key });
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.body.status, "cancelled");
  assert.equal(typeof cancelled.body.cancelled_at, "string");
  assert.equal(cancelled.body.counts.queued, 0);
  assert.equal(cancelled.body.counts.failed, waiting.length);
  const ended = (await call("GET", `/api/broadcasts/${sid}/messages?status=failed`, { token: admin.token })).body.messages;
  assert.equal(ended.length, waiting.length);
  assert.ok(ended.every((m) => m.reason === "cancelled"), JSON.stringify(ended));
  const endedHistory = (await call("GET", `/api/messages/${ended[0].id}/history`, { token: admin.token })).body;
  assert.deepEqual(steps(endedHistory), ["queued", "failed"]);
  assert.equal((await call("POST", `/api/broadcasts/${sid}/cancel`, { token: admin.token })).body.status, "cancelled");
  for (const name of ["contract-broadcaster", "contract-bystander"]) {
    assert.equal((await call("DELETE", `/api/keys/${name}`, { token: admin.token })).status, 204);
  }
});

/** A webhook endpoint on 127.0.0.1: records each request and answers `status`. */
async function receiver() {
  const got = [];
  const hook = { got, status: 200 };
  const srv = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      got.push({ headers: req.headers, raw: Buffer.concat(chunks) });
      res.writeHead(hook.status).end();
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  hook.url = `http://127.0.0.1:${srv.address().port}/hooks`;
  hook.close = () => {
    srv.closeAllConnections();
    return new Promise((r) => srv.close(r));
  };
  return hook;
}

/** Verifies a delivery as the README tells receivers to, and returns its parsed body. */
function verified(secret, { headers, raw }) {
  const ts = headers["wxbind-webhook-timestamp"];
  const want = `v1=${createHmac("sha256", secret).update(`${ts}.`).update(raw).digest("hex")}`;
  const got = headers["wxbind-webhook-signature"] ?? "";
  assert.ok(Math.abs(Date.now() / 1000 - Number(ts)) < 300, `fresh timestamp ${ts}`);
  assert.ok(got.length === want.length && timingSafeEqual(Buffer.from(got), Buffer.from(want)), "signature verifies");
  const body = JSON.parse(raw.toString("utf8"));
  assert.equal(headers["wxbind-webhook-id"], body.id);
  return body;
}

test("webhooks", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  const hook = await receiver();
  const gone = await receiver();
  gone.status = 410;
  try {
    const routes = [
      ["POST", "/api/webhooks", { url: hook.url, events: ["message.sent"] }],
      ["GET", "/api/webhooks"],
      ["GET", `/api/webhooks/${NO_SUCH_ID}`],
      ["DELETE", `/api/webhooks/${NO_SUCH_ID}`],
      ["POST", `/api/webhooks/${NO_SUCH_ID}/test`],
      ["GET", `/api/webhooks/${NO_SUCH_ID}/deliveries`],
    ];
    for (const [method, path, json] of routes) {
      assert.equal((await call(method, path, { json })).status, 401, `${method} ${path}`);
      const forbidden = await call(method, path, { token: demo.token, json });
      assert.equal(forbidden.status, 403, `${method} ${path}`);
      assert.equal(forbidden.body.error.code, "forbidden");
      if (path.includes(NO_SUCH_ID)) {
        const missing = await call(method, path, { token: admin.token });
        assert.equal(missing.status, 404, `${method} ${path}`);
        assert.equal(missing.body.error.code, "webhook_not_found");
      }
    }
    for (const [name, json] of [
      ["no events", { url: hook.url, events: [] }],
      ["unknown event", { url: hook.url, events: ["message.lost"] }],
      ["not http", { url: "ftp://127.0.0.1/hooks", events: ["message.sent"] }],
      ["short secret", { url: hook.url, events: ["message.sent"], secret: "short" }],
    ]) {
      const bad = await call("POST", "/api/webhooks", { token: admin.token, json });
      assert.equal(bad.status, 400, name);
      assert.equal(bad.body.error.code, "invalid_request", name);
    }
    const big = { url: hook.url, events: ["message.sent"], secret: "x".repeat(70 * 1024) };
    assert.equal((await call("POST", "/api/webhooks", { token: admin.token, json: big })).status, 413);
    const notJson = await call("POST", "/api/webhooks", {
      token: admin.token,
      body: JSON.stringify({ url: hook.url, events: ["message.sent"] }),
      headers: { "content-type": "text/plain" },
    });
    assert.equal(notJson.status, 415);

    const secret = "contract-webhook-secret-0001";
    const made = await call("POST", "/api/webhooks", {
      token: admin.token,
      json: { url: hook.url, events: ["message.sent", "message.sent"], secret },
    });
    assert.equal(made.status, 201);
    assert.deepEqual([made.body.secret, made.body.events, made.body.disabled_at], [secret, ["message.sent"], null]);
    const generated = await call("POST", "/api/webhooks", { token: admin.token, json: { url: gone.url, events: ["binding.created"] } });
    assert.equal(generated.status, 201);
    assert.match(generated.body.secret, /^whsec_/);
    const id = made.body.id;
    const listed = await call("GET", "/api/webhooks", { token: admin.token });
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.items.map((w) => w.id), [generated.body.id, id], "newest first");
    assert.ok(!JSON.stringify(listed.body).includes(secret), "never the secret");
    const one = await call("GET", `/api/webhooks/${id}`, { token: admin.token });
    assert.equal(one.status, 200);
    assert.equal(one.body.url, hook.url);
    assert.equal(one.body.secret, undefined);

    // A ping: signed, answered at once, listed among the deliveries.
    const ping = await call("POST", `/api/webhooks/${id}/test`, { token: admin.token });
    assert.equal(ping.status, 200);
    assert.deepEqual([ping.body.delivered, ping.body.status_code, ping.body.error], [true, 200, null]);
    const pinged = verified(secret, hook.got.at(-1));
    assert.deepEqual([pinged.id, pinged.type, pinged.data.webhook_id], [ping.body.event_id, "webhook.test", id]);

    // A message sent: its event arrives signed, and shows as delivered.
    const m = await call("POST", "/api/messages", { token: demo.token, json: { data: ORDER_DATA } });
    await waitFor(demo.token, m.body.id, (x) => x.status === "sent");
    let event;
    for (let i = 0; i < 200 && !event; i++) {
      event = hook.got.map((r) => verified(secret, r)).find((e) => e.type === "message.sent" && e.data.message_id === m.body.id);
      if (!event) await sleep(50);
    }
    assert.ok(event, "message.sent delivered");
    // `data` is the message as it is after the change; its id is `message_id` here.
    assert.deepEqual([event.data.status, event.data.user_id], ["sent", demo.user.id]);
    let deliveries;
    for (let i = 0; i < 100; i++) {
      deliveries = await call("GET", `/api/webhooks/${id}/deliveries`, { token: admin.token });
      if (deliveries.body.items.find((d) => d.event_id === event.id)?.state === "delivered") break;
      await sleep(50);
    }
    assert.equal(deliveries.status, 200);
    const delivery = deliveries.body.items.find((d) => d.event_id === event.id);
    assert.deepEqual([delivery.event_type, delivery.state, delivery.last_status_code], ["message.sent", "delivered", 200]);
    assert.equal(delivery.next_attempt_at, null);
    assert.ok(deliveries.body.items.some((d) => d.event_id === ping.body.event_id && d.event_type === "webhook.test"));
    const first = await call("GET", `/api/webhooks/${id}/deliveries?limit=1`, { token: admin.token });
    assert.equal(first.body.items.length, 1);
    assert.equal(typeof first.body.next_cursor, "string");
    const rest = await call("GET", `/api/webhooks/${id}/deliveries?limit=200&cursor=${first.body.next_cursor}`, { token: admin.token });
    assert.deepEqual(
      [...first.body.items, ...rest.body.items].map((d) => d.event_id),
      deliveries.body.items.map((d) => d.event_id),
    );
    for (const q of ["limit=0", "limit=201", "cursor=0"]) {
      assert.equal((await call("GET", `/api/webhooks/${id}/deliveries?${q}`, { token: admin.token })).status, 400, q);
    }

    // 410 Gone disables an endpoint.
    const refused = await call("POST", `/api/webhooks/${generated.body.id}/test`, { token: admin.token });
    assert.deepEqual([refused.body.delivered, refused.body.status_code], [false, 410]);
    assert.equal(typeof refused.body.error, "string");
    const disabled = (await call("GET", `/api/webhooks/${generated.body.id}`, { token: admin.token })).body;
    assert.equal(typeof disabled.disabled_at, "string");
    assert.match(disabled.disabled_reason, /410/);

    for (const w of [id, generated.body.id]) {
      assert.equal((await call("DELETE", `/api/webhooks/${w}`, { token: admin.token })).status, 204);
      assert.equal((await call("GET", `/api/webhooks/${w}`, { token: admin.token })).status, 404);
    }
    assert.equal((await call("GET", `/api/webhooks/${id}/deliveries`, { token: admin.token })).status, 404);
  } finally {
    await hook.close();
    await gone.close();
  }
});

test("review and quota", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  await bind(demo.token, "frank");
  await fetch(`${server.base}/sandbox/api/users/frank/follow`, { method: "POST" });

  // Held for review and blocked: under_review, then failed with delivery blocked.
  await faults({ send_errcodes: [40252], review: "block" });
  const held = await call("POST", "/api/messages", { token: demo.token, json: { data: ORDER_DATA } });
  // A reconciliation round may settle it before the first poll sees it under review.
  const review = await waitFor(demo.token, held.body.id, (m) => m.status !== "queued" && m.status !== "sending");
  assert.ok(["under_review", "failed"].includes(review.status), review.status);
  assert.equal(review.errcode, 40252);
  const blocked = await waitFor(demo.token, held.body.id, (m) => m.status === "failed");
  assert.equal(blocked.delivery, "blocked");

  // The quota: admins only; a 45009 pauses sending until an admin resets it.
  assert.equal((await call("GET", "/api/quota")).status, 401);
  assert.equal((await call("GET", "/api/quota", { token: demo.token })).status, 403);
  assert.equal((await call("POST", "/api/quota/reset")).status, 401);
  assert.equal((await call("POST", "/api/quota/reset", { token: demo.token })).status, 403);
  await faults({ send_errcodes: [45009] });
  const waiting = await call("POST", "/api/messages", { token: demo.token, json: { data: ORDER_DATA } });
  await waitFor(demo.token, waiting.body.id, (m) => m.errcode === 45009);
  const quota = await call("GET", "/api/quota", { token: admin.token });
  assert.equal(quota.status, 200);
  assert.equal(typeof quota.body.paused_until, "string");
  const reset = await call("POST", "/api/quota/reset", { token: admin.token });
  assert.equal(reset.status, 200);
  assert.equal(reset.body.was_paused, true);
  const sent = await waitFor(demo.token, waiting.body.id, (m) => m.status === "sent");
  assert.equal(sent.attempts, 1);
  // WeChat allows 10 resets a month. (A reset right after another, with no pause between,
  // spends none: each one here follows a pause.)
  let refused;
  for (let i = 0; i < 10 && !refused; i++) {
    await faults({ send_errcodes: [45009] });
    const m = await call("POST", "/api/messages", {
      token: admin.token,
      json: { user_id: demo.user.id, data: ORDER_DATA },
    });
    await waitFor(admin.token, m.body.id, (x) => x.errcode === 45009);
    const r = await call("POST", "/api/quota/reset", { token: admin.token });
    if (r.status === 429) refused = r;
    else await waitFor(admin.token, m.body.id, (x) => x.status === "sent");
  }
  assert.equal(refused?.body.error.code, "quota_reset_limit");
});

test("api keys", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  assert.equal((await call("GET", "/api/keys")).status, 401);
  assert.equal((await call("GET", "/api/keys", { token: demo.token })).status, 403);
  assert.equal((await call("POST", "/api/keys", { json: { name: "x" } })).status, 401);
  assert.equal((await call("POST", "/api/keys", { token: demo.token, json: { name: "x" } })).status, 403);
  assert.equal((await call("POST", "/api/keys", { token: admin.token, json: { name: "a b" } })).status, 400);
  const big = { name: "x".repeat(70 * 1024) };
  assert.equal((await call("POST", "/api/keys", { token: admin.token, json: big })).status, 413);
  const notJson = await call("POST", "/api/keys", {
    token: admin.token,
    body: JSON.stringify({ name: "x" }),
    headers: { "content-type": "text/plain" },
  });
  assert.equal(notJson.status, 415);

  const made = await call("POST", "/api/keys", { token: admin.token, json: { name: "contract", scope: "send" } });
  assert.equal(made.status, 201);
  assert.match(made.body.key, /^wxk_/);
  assert.equal((await call("POST", "/api/keys", { token: admin.token, json: { name: "contract" } })).status, 409);
  // The key sends as a backend would: to a bound user, then reads what it sent.
  const me = (await call("GET", "/api/me", { token: demo.token })).body;
  if (me.wechat_bound) {
    const sent = await call("POST", "/api/messages", {
      token: made.body.key,
      json: { user_id: me.id, data: ORDER_DATA },
    });
    assert.equal(sent.status, 202);
    assert.equal((await call("GET", `/api/messages/${sent.body.id}`, { token: made.body.key })).status, 200);
  }
  const listed = await call("GET", "/api/keys", { token: admin.token });
  assert.equal(listed.status, 200);
  assert.ok(listed.body.some((k) => k.name === "contract" && !("key" in k)));

  assert.equal((await call("DELETE", "/api/keys/contract")).status, 401);
  assert.equal((await call("DELETE", "/api/keys/contract", { token: demo.token })).status, 403);
  assert.equal((await call("DELETE", "/api/keys/contract", { token: admin.token })).status, 204);
  assert.equal((await call("DELETE", "/api/keys/contract", { token: admin.token })).status, 404);
  assert.equal((await call("GET", "/api/templates", { token: made.body.key })).status, 401);
});

// After "review and quota" and "api keys": it reads the resets, retries and key changes they
// made (and sends nothing, so the pause the quota test leaves does not matter).
test("audit log", async () => {
  const demo = await login("demo");
  const admin = await login("admin");
  assert.equal((await call("GET", "/api/audit")).status, 401);
  assert.equal((await call("GET", "/api/audit", { token: demo.token })).status, 403);
  const key = await call("POST", "/api/keys", { token: admin.token, json: { name: "contract-audit" } });
  assert.equal(key.status, 201);
  assert.equal((await call("GET", "/api/audit", { token: key.body.key })).status, 403);
  assert.equal((await call("GET", "/api/audit?limit=0", { token: admin.token })).status, 400);
  assert.equal((await call("GET", "/api/audit?cursor=bm90LWEtY3Vyc29y", { token: admin.token })).status, 400);
  assert.equal((await call("GET", "/api/audit?action=nonsense", { token: admin.token })).status, 400);

  const made = await call("GET", "/api/audit?action=key.created&actor=admin", { token: admin.token });
  assert.equal(made.status, 200);
  const entry = made.body.items.find((e) => e.target === "contract-audit");
  assert.deepEqual([entry?.actor, entry?.details], ["admin", { scope: "send" }]);
  assert.ok(!JSON.stringify(made.body).includes(key.body.key), "never the key");

  // Pages: newest first, no row twice, none left out.
  const all = (await call("GET", "/api/audit?limit=200", { token: admin.token })).body.items;
  assert.ok(["quota.reset", "message.retried", "key.revoked"].every((a) => all.some((e) => e.action === a)));
  const paged = [];
  let cursor;
  do {
    const page = await call("GET", `/api/audit?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { token: admin.token });
    assert.equal(page.status, 200);
    paged.push(...page.body.items.map((e) => e.id));
    cursor = page.body.next_cursor;
  } while (cursor);
  assert.deepEqual(paged, all.map((e) => e.id));
});

/** `HH:MM` of `d` in UTC. */
const hhmm = (d) => d.toISOString().slice(11, 16);

// A server of its own: quiet hours now, a daily cap of one message per user, one waiting
// message per sender, and webhook targets on private addresses refused.
test("quiet hours, daily cap and send limits", async () => {
  const now = Date.now();
  const own = await startWxbind({
    WXBIND_QUIET_HOURS: `${hhmm(new Date(now - 7_200_000))}-${hhmm(new Date(now + 7_200_000))}`,
    WXBIND_TIMEZONE: "UTC",
    WXBIND_MAX_MESSAGES_PER_USER_PER_DAY: "1",
    WXBIND_MAX_QUEUED_PER_SENDER: "1",
  });
  try {
    const base = own.base;
    const demo = await login("demo", base);
    const admin = await login("admin", base);
    assert.equal((await bind(demo.token, "hana", base)).status, 200);
    await fetch(`${base}/sandbox/api/users/hana/follow`, { method: "POST" });
    const send = (json) => call("POST", "/api/messages", { token: admin.token, json: { user_id: demo.user.id, data: ORDER_DATA, ...json }, base });
    const settled = async (id, done) => {
      for (let i = 0; i < 200; i++) {
        const m = (await call("GET", `/api/messages/${id}`, { token: admin.token, base })).body;
        if (done(m)) return m;
        await sleep(50);
      }
      assert.fail(`message ${id} never got there`);
    };

    const private_ = await call("POST", "/api/webhooks", {
      token: admin.token,
      json: { url: "http://127.0.0.1:9/hooks", events: ["message.sent"] },
      base,
    });
    assert.equal(private_.status, 400);
    assert.equal(private_.body.error.code, "invalid_request");

    // Quiet hours hold all but urgent messages; the cap fails the second of the day.
    const first = await send({ urgent: true });
    assert.equal(first.status, 202);
    assert.equal(first.body.urgent, true);
    await settled(first.body.id, (m) => m.status === "sent");
    await sleep(1100); // the queue count is read at most once a second
    const second = await send({ urgent: true });
    const capped = await settled(second.body.id, (m) => m.status === "failed");
    assert.deepEqual([capped.reason, capped.errcode], ["frequency_cap", null]);
    await sleep(1100);
    const quiet = await send({});
    assert.equal(quiet.status, 202);
    await sleep(1500);
    const held = await call("GET", `/api/messages/${quiet.body.id}/history`, { token: admin.token, base });
    assert.equal(held.body.message.status, "queued");
    assert.deepEqual(steps(held.body), ["queued"]);

    // One message waiting is the sender's limit: more are refused until it drains.
    const full = await send({ urgent: true });
    assert.equal(full.status, 429);
    assert.equal(full.body.error.code, "too_many_requests");
    assert.ok(Number(full.headers.get("retry-after")) > 0);
    const broadcast = await call("POST", "/api/broadcasts", {
      token: admin.token,
      // One recipient (existing or not): one more than the one waiting allows.
      json: { data: ORDER_DATA, recipients: { user_ids: [1] } },
      base,
    });
    assert.equal(broadcast.status, 429);
    assert.equal(broadcast.body.error.code, "too_many_requests");
  } finally {
    await own.stop();
  }
});

test("ops", async () => {
  assert.equal((await call("GET", "/api/health")).body.sandbox, true);
  assert.equal((await call("GET", "/api/ready")).status, 200);
  assert.equal((await call("GET", "/api/metrics")).status, 401);
  assert.equal((await call("GET", "/api/metrics", { token: METRICS_TOKEN })).status, 200);
});

test("wechat server push", async () => {
  // Signed with the current time: the server refuses timestamps more than 300 s off, and each
  // (timestamp, nonce) pair may carry one body only, so every call gets a nonce of its own.
  const ts = String(Math.floor(Date.now() / 1000));
  let n = 0;
  const signed = () => {
    const nonce = `${process.pid}${++n}`;
    return `signature=${sign(PUSH_TOKEN, ts, nonce)}&timestamp=${ts}&nonce=${nonce}`;
  };
  const check = await call("GET", `/api/wechat/events?${signed()}&echostr=hello`);
  assert.equal(check.body, "hello");
  const bad = await call("GET", `/api/wechat/events?signature=00&timestamp=${ts}&nonce=1&echostr=hello`);
  assert.equal(bad.status, 401);
  const noEcho = await call("GET", `/api/wechat/events?${signed()}`);
  assert.equal(noEcho.status, 400);
  assert.equal(noEcho.body.error.code, "invalid_request");

  const xml =
    "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[o_contract]]></FromUserName>" +
    `<CreateTime>${ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`;
  const pushed = await call("POST", `/api/wechat/events?${signed()}`, { body: xml });
  assert.equal(pushed.body, "success");
  assert.equal((await call("POST", `/api/wechat/events?${signed()}`, { body: "<xml><oops>" })).status, 400);
  assert.equal(
    (await call("POST", `/api/wechat/events?signature=00&timestamp=${ts}&nonce=2`, { body: xml })).status,
    401,
  );
  const huge = `<xml><Content>${"x".repeat(100 * 1024)}</Content></xml>`;
  assert.equal((await call("POST", `/api/wechat/events?${signed()}`, { body: huge })).status, 413);
});

test("every documented response was exercised (or is listed as unreachable)", { concurrency: false }, () => {
  // node:test runs top-level tests in order, so this one runs last.
  const missing = documentedResponses().filter((r) => !seen.has(r) && !(r in UNREACHABLE));
  assert.deepEqual(missing, [], "documented responses no test produced");
  const stale = Object.keys(UNREACHABLE).filter((r) => !documentedResponses().includes(r));
  assert.deepEqual(stale, [], "UNREACHABLE lists responses the spec no longer documents");
});
