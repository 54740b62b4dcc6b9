// The reference SPA: log in, show the bind link as a QR code, wait until bound, then send a
// message built from the template's keywords and show its status and, once it is settled,
// its history. The API base comes from `?api=` (default: this origin).
import QRCode from "qrcode";
import {
  createWxbind,
  type HistoryEvent,
  type KeyProblem,
  type Login,
  type Message,
  type Template,
  WxbindError,
} from "../src/client";

const api = createWxbind(new URLSearchParams(location.search).get("api") ?? location.origin);
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The templates this user may send: admins any live one, others the default only. */
let templates: Template[] = [];

/** Each problem of the message's data next to the form, its field marked. */
function showProblems(problems: KeyProblem[]) {
  $("problems").replaceChildren(
    ...problems.map((p) => {
      const li = document.createElement("li");
      li.dataset.key = p.key;
      li.textContent = `${p.key}: ${p.problem}`;
      return li;
    }),
  );
  for (const input of $("data-form").querySelectorAll("input")) {
    input.setAttribute("aria-invalid", String(problems.some((p) => p.key === input.name)));
  }
}

function showError(e: unknown) {
  $("error").textContent =
    e instanceof WxbindError ? `${e.code}: ${e.message}` : `unexpected error: ${String(e)}`;
  showProblems(e instanceof WxbindError ? e.details : []);
}

function clearError() {
  $("error").textContent = "";
  showProblems([]);
}

async function showBinding(login: Login) {
  $("login").hidden = true;
  $("bind").hidden = false;
  $("who").textContent = login.user.username;
  const { url } = await api.bindUrl();
  const canvas = $<HTMLCanvasElement>("qr");
  await QRCode.toCanvas(canvas, url, { width: 240 });
  canvas.dataset.url = url;
  // The phone binds out of band; poll until the API says so.
  while (!(await api.me()).wechat_bound) await sleep(1000);
  $("status").textContent = "bound";
  await showTemplates(login.user.role === "admin");
  $("send").hidden = false;
}

async function showTemplates(admin: boolean) {
  templates = (await api.templates()).filter((t) => !t.gone_at && (admin || t.default));
  const select = $<HTMLSelectElement>("template");
  select.replaceChildren(
    ...templates.map((t) => new Option(`${t.title} (${t.template_id})`, t.template_id, t.default, t.default)),
  );
  select.disabled = !admin;
  buildForm();
}

/** WeChat's example of a template, as label → value (`商品名称：无线耳机`). */
function exampleValues(t: Template): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of t.example.split("\n")) {
    const match = /^(.+?)[：:](.*)$/.exec(line.trim());
    if (match) values.set(match[1].trim(), match[2].trim());
  }
  return values;
}

/** One input per keyword the sender sets (`const` ones are the template's), pre-filled from the example. */
function buildForm() {
  const t = templates.find((t) => t.template_id === $<HTMLSelectElement>("template").value);
  const examples = t ? exampleValues(t) : new Map<string, string>();
  const fields = (t?.keywords ?? [])
    .filter((k) => k.type !== "const")
    .map((k) => {
      const label = document.createElement("label");
      label.textContent = `${k.label ?? k.key} (${k.type}) `;
      const input = document.createElement("input");
      input.name = k.key;
      input.value = (k.label && examples.get(k.label)) || "";
      label.append(input);
      return label;
    });
  $("data-form").replaceChildren(...fields);
}

async function sendMessage() {
  clearError();
  const form = new FormData($<HTMLFormElement>("data-form"));
  const data = Object.fromEntries(
    [...form.entries()].filter(([, v]) => v !== "").map(([key, value]) => [key, { value: String(value) }]),
  );
  const template_id = $<HTMLSelectElement>("template").value || undefined;
  $("message-status").textContent = "queued";
  $("message-history").replaceChildren();
  const queued = await api.sendMessage({ template_id, data }).catch((e: unknown) => {
    $("message-status").textContent = "not sent";
    throw e;
  });
  for (;;) {
    const m = await api.getMessage(queued.id);
    $("message-status").textContent = m.status;
    $("message-note").textContent = explain(m);
    if (m.status === "sent" || m.status === "failed") break;
    await sleep(500);
  }
  showHistory((await api.messageHistory(queued.id)).events);
}

/** The message's history, oldest first: one line per event with its time, attempt and why. */
function showHistory(events: HistoryEvent[]) {
  $("message-history").replaceChildren(
    ...events.map((e) => {
      const li = document.createElement("li");
      li.dataset.event = e.event;
      const at = document.createElement("time");
      at.dateTime = e.at;
      at.textContent = new Date(e.at).toLocaleTimeString();
      li.append(at, ` ${e.event}`, e.attempt > 0 ? ` (attempt ${e.attempt})` : "");
      if (e.errmsg) {
        const why = document.createElement("span");
        why.className = "errmsg";
        why.textContent = `: ${e.errmsg}`;
        li.append(why);
      }
      return li;
    }),
  );
}

/** What a status means for the person who sent the message. */
function explain(m: Message): string {
  switch (m.status) {
    case "under_review":
      return "WeChat is reviewing this message. If it passes, WeChat delivers it itself; do not send it again.";
    case "failed":
      return m.delivery === "blocked" && m.errcode === 40252
        ? "WeChat's review blocked this message."
        : `Not delivered: ${m.errmsg ?? "unknown reason"}`;
    case "sent":
      return m.delivery === "unknown" ? "WeChat accepted it." : `WeChat reports: ${m.delivery}.`;
    default:
      return "";
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target as HTMLFormElement);
  clearError();
  api
    .login(String(form.get("username")), String(form.get("password")))
    .then(showBinding)
    .catch(showError);
});
$("template").addEventListener("change", buildForm);
$("send-button").addEventListener("click", () => sendMessage().catch(showError));

// After a reload the access token is gone, but the refresh session cookie may still be valid.
api
  .refresh()
  .then(showBinding)
  .catch(() => undefined);
