// The reference SPA: log in, show the bind link as a QR code, wait until bound, send a
// test message and show its status. The API base comes from `?api=` (default: this origin).
import QRCode from "qrcode";
import { createWxbind, WxbindError } from "../src/client";

const api = createWxbind(new URLSearchParams(location.search).get("api") ?? location.origin);
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function showError(e: unknown) {
  $("error").textContent =
    e instanceof WxbindError ? `${e.code}: ${e.message}` : `unexpected error: ${String(e)}`;
}

async function showBinding(username: string) {
  $("login").hidden = true;
  $("bind").hidden = false;
  $("who").textContent = username;
  const { url } = await api.bindUrl();
  const canvas = $<HTMLCanvasElement>("qr");
  await QRCode.toCanvas(canvas, url, { width: 240 });
  canvas.dataset.url = url;
  // The phone binds out of band; poll until the API says so.
  while (!(await api.me()).wechat_bound) await sleep(1000);
  $("status").textContent = "bound";
  $("send").hidden = false;
}

async function sendTestMessage() {
  $("message-status").textContent = "queued";
  const queued = await api.sendMessage({ data: { first: { value: "Hello from the reference page" } } });
  for (;;) {
    const m = await api.getMessage(queued.id);
    $("message-status").textContent = m.status;
    if (m.status === "sent" || m.status === "failed") return;
    await sleep(500);
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target as HTMLFormElement);
  $("error").textContent = "";
  api
    .login(String(form.get("username")), String(form.get("password")))
    .then((login) => showBinding(login.user.username))
    .catch(showError);
});
$("send-button").addEventListener("click", () => sendTestMessage().catch(showError));

// After a reload the access token is gone, but the refresh session cookie may still be valid.
api
  .refresh()
  .then((login) => showBinding(login.user.username))
  .catch(() => undefined);
