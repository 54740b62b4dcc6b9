//! The simulator's pages (consent, phone view, QR code) and their JSON twins for scripts.
use std::fmt::Write;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::Verdict;
use super::templates::SandboxTemplate;
use super::{Simulator, valid_name};

/// Escapes text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'PingFang SC',sans-serif;margin:0;background:#ededed;color:#111}\
header{background:#2e2e2e;color:#fff;padding:12px 16px;font-size:17px;text-align:center}\
main{max-width:420px;margin:0 auto;padding:12px}\
.card{background:#fff;border-radius:8px;padding:14px 16px;margin:10px 0}\
.muted{color:#888;font-size:13px}.btn{display:inline-block;border:0;border-radius:6px;padding:10px 18px;font-size:16px;cursor:pointer}\
.ok{background:#07c160;color:#fff}.no{background:#f2f2f2;color:#111}\
.row{display:flex;justify-content:space-between;align-items:center;gap:8px}\
.field{display:flex;gap:8px;font-size:14px;margin:4px 0}.field b{color:#888;font-weight:normal;min-width:80px}\
input[type=text]{font-size:16px;padding:8px;width:100%;box-sizing:border-box;border:1px solid #ddd;border-radius:6px}\
.banner{background:#fff3cd;color:#7a5b00;font-size:13px;padding:8px 12px;text-align:center}";

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{}</title><style>{STYLE}</style></head><body>\
             <div class=\"banner\">wxbind sandbox · simulated WeChat, nothing leaves this machine</div>\
             {body}</body></html>",
            esc(title)
        ))
}

/// The page WeChat shows for a bad authorize request (status 400 here, for scripts).
pub(super) fn wechat_error_page(title: &str, detail: &str) -> HttpResponse {
    let mut resp = page(
        title,
        &format!(
            "<header>微信</header><main><div class=\"card\"><h2>{}</h2><p class=\"muted\">{}</p></div></main>",
            esc(title),
            esc(detail)
        ),
    );
    *resp.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    resp
}

/// The consent page: pick or name a test WeChat user, then Allow or Deny. The form repeats
/// the authorize parameters in WeChat's order and appends the sandbox's own two.
pub(super) fn consent(sim: &Simulator, pairs: &[(String, String)], scope: &str) -> HttpResponse {
    let mut hidden = String::new();
    for (k, v) in pairs.iter().filter(|(k, _)| !k.starts_with("sandbox_")) {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    let mut options = String::new();
    for u in sim.state.users() {
        let _ = write!(options, "<option value=\"{}\">", esc(&u.name));
    }
    let what = if scope == "snsapi_userinfo" {
        "your public profile (nickname, avatar)"
    } else {
        "your openid"
    };
    page(
        "微信授权 · Authorize",
        &format!(
            "<header>微信授权</header><main><div class=\"card\">\
             <p><b>{app}</b> requests {what}.</p>\
             <form method=\"get\" action=\"/sandbox/connect/oauth2/authorize\">{hidden}\
             <label class=\"muted\" for=\"u\">Test WeChat user (pick or type a new name)</label>\
             <input type=\"text\" id=\"u\" name=\"sandbox_user\" list=\"users\" value=\"alice\" \
              pattern=\"[A-Za-z0-9_-]{{1,32}}\" required><datalist id=\"users\">{options}</datalist>\
             <p class=\"row\"><button class=\"btn no\" name=\"sandbox_decision\" value=\"deny\" formnovalidate>Deny 拒绝</button>\
             <button class=\"btn ok\" name=\"sandbox_decision\" value=\"allow\">Allow 允许</button></p>\
             </form></div></main>",
            app = esc(&sim.app_id),
        ),
    )
}

/// `/sandbox` → `/sandbox/`.
pub(super) async fn redirect_to_phone() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/sandbox/"))
        .finish()
}

/// The phone view: every test user, whether they follow the account, and their inbox.
pub(super) async fn phone(sim: web::Data<Simulator>) -> HttpResponse {
    let users = sim.state.users();
    let mut body = String::from("<header>wxbind sandbox · 公众号</header><main>");
    if users.is_empty() {
        body.push_str(
            "<div class=\"card\"><p>No test WeChat users yet.</p><p class=\"muted\">Open a bind link \
             from <code>GET /api/bind-url</code> and allow it: the user you name appears here.</p></div>",
        );
    }
    for u in &users {
        let (action, label, class) = if u.following {
            ("unfollow", "Unfollow 取消关注", "no")
        } else {
            ("follow", "Follow 关注", "ok")
        };
        let _ = write!(
            body,
            "<div class=\"card\" id=\"user-{name}\"><div class=\"row\"><div><b>{name}</b>\
             <div class=\"muted\">{openid}</div><div class=\"muted\">{state}</div></div>\
             <form method=\"post\" action=\"/sandbox/api/users/{name}/{action}\">\
             <button class=\"btn {class}\">{label}</button></form></div>",
            name = esc(&u.name),
            openid = esc(&u.openid),
            state = if u.following {
                "following the account"
            } else {
                "not following: template messages fail with 43004"
            },
        );
        let inbox = sim.state.inbox(&u.openid);
        if inbox.is_empty() {
            body.push_str("<p class=\"muted\">Inbox empty.</p>");
        }
        for m in inbox.iter().rev() {
            // Rendered as WeChat renders a template card: the title, then each keyword's
            // label and value in the template's order.
            let template = SandboxTemplate::find(&m.template_id);
            let _ = write!(
                body,
                "<div class=\"card\" style=\"background:#f7f7f7\" data-msgid=\"{}\"><b>{}</b><div class=\"muted\">{} · {}</div>",
                m.msgid,
                esc(template.map_or("", |t| t.title)),
                esc(&m.template_id),
                m.received_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
            let keywords = template.map(|t| t.shape().keywords).unwrap_or_default();
            for k in &keywords {
                let Some(value) = m.data[&k.key]["value"].as_str() else {
                    continue;
                };
                let _ = write!(
                    body,
                    "<div class=\"field\"><b>{}</b><span>{}</span></div>",
                    esc(k.label.as_deref().unwrap_or(&k.key)),
                    esc(value)
                );
            }
            // WeChat opens the mini program when there is one, the url otherwise.
            if let Some(page) = &m.miniprogram {
                let _ = write!(
                    body,
                    "<div class=\"muted\" data-miniprogram=\"{0}\">小程序 {0} · {1}</div>",
                    esc(page["appid"].as_str().unwrap_or_default()),
                    esc(page["pagepath"].as_str().unwrap_or_default())
                );
            }
            if let Some(url) = &m.url {
                let _ = write!(
                    body,
                    "<div class=\"muted\"><a href=\"{0}\">详情 {0}</a></div>",
                    esc(url)
                );
            }
            body.push_str("</div>");
        }
        // What WeChat holds for review never reaches the phone (unless approved); shown here
        // so a developer sees why a message is `under_review` or ended blocked.
        for h in sim.state.held_for(&u.openid).iter().rev() {
            let (class, label) = match h.verdict {
                Verdict::Block => ("blocked", "已拦截 blocked by review"),
                Verdict::Pending | Verdict::Approve => ("under-review", "审核中 under review"),
            };
            let _ = write!(
                body,
                "<div class=\"card {class}\" style=\"background:#fff8e6\" data-held=\"{}\"><b>{}</b>\
                 <div class=\"muted\">{} · {} · {label}</div></div>",
                h.id,
                esc(SandboxTemplate::find(&h.template_id).map_or("", |t| t.title)),
                esc(&h.template_id),
                h.sent_at.format("%Y-%m-%d %H:%M:%S UTC"),
            );
        }
        body.push_str("</div>");
    }
    body.push_str(
        "<p class=\"muted\">JSON: <a href=\"/sandbox/api/users\">/sandbox/api/users</a> · \
         <code>/sandbox/api/inbox?openid=…</code> · <a href=\"/sandbox/api/faults\">/sandbox/api/faults</a></p></main>\
         <script>setTimeout(()=>location.reload(),4000)</script>",
    );
    page("wxbind sandbox phone", &body)
}

/// `GET /sandbox/api/users`: `[{name, openid, unionid, following}]`.
pub(super) async fn users_json(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.state.users())
}

/// `POST /sandbox/api/users/{name}/follow`.
pub(super) async fn follow(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    set_following(&sim, &req, &name, true).await
}

/// `POST /sandbox/api/users/{name}/unfollow`.
pub(super) async fn unfollow(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    set_following(&sim, &req, &name, false).await
}

fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

async fn set_following(
    sim: &Simulator,
    req: &HttpRequest,
    name: &str,
    following: bool,
) -> HttpResponse {
    if !valid_name(name) {
        return sandbox_error(
            400,
            "invalid_request",
            "user names are 1-32 letters, digits, '_' or '-'",
        );
    }
    // Following creates the user, as scanning the account's QR code would.
    let before = sim.state.user(name);
    let Some(user) = sim.state.set_following(name, following) else {
        return sandbox_error(404, "not_found", "no such test user");
    };
    if before.following != following {
        let event = if following {
            "subscribe"
        } else {
            "unsubscribe"
        };
        if let Err(e) = sim.push(&user.openid, event, "").await {
            return sandbox_error(502, "push_failed", &e);
        }
    }
    if wants_html(req) {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/sandbox/"))
            .finish();
    }
    HttpResponse::Ok().json(user)
}

#[derive(Deserialize)]
pub(super) struct InboxQuery {
    openid: String,
}

#[derive(Serialize)]
struct InboxEntry<'a> {
    template_id: &'a str,
    url: Option<&'a str>,
    miniprogram: Option<&'a serde_json::Value>,
    data: &'a serde_json::Value,
    msgid: i64,
    received_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /sandbox/api/inbox?openid=…`: `[{template_id, url, miniprogram, data, msgid,
/// received_at}]`.
pub(super) async fn inbox_json(
    sim: web::Data<Simulator>,
    q: web::Query<InboxQuery>,
) -> HttpResponse {
    let items = sim.state.inbox(&q.openid);
    let entries: Vec<InboxEntry<'_>> = items
        .iter()
        .map(|m| InboxEntry {
            template_id: &m.template_id,
            url: m.url.as_deref(),
            miniprogram: m.miniprogram.as_ref(),
            data: &m.data,
            msgid: m.msgid,
            received_at: m.received_at,
        })
        .collect();
    HttpResponse::Ok().json(entries)
}

/// `GET /sandbox/api/faults`: `{send_errcodes, review, held, quota}`.
pub(super) async fn faults_json(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.state.faults())
}

/// The body of `POST /sandbox/api/faults`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetFaults {
    /// Errcodes the next sends answer with, in order (appended to those still queued):
    /// 40252 holds the message for review, 45009 uses up the day's quota.
    #[serde(default)]
    send_errcodes: Vec<i64>,
    /// What review does with the next message it holds: `block` or `approve`.
    #[serde(default)]
    review: Option<Verdict>,
    /// Drop the queued errcodes and the review decision first.
    #[serde(default)]
    clear: bool,
}

/// `POST /sandbox/api/faults {"send_errcodes": [40252, 45009, -1], "review": "block",
/// "clear": false}`.
pub(super) async fn set_faults(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let faults: SetFaults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return sandbox_error(
                400,
                "invalid_request",
                &format!(
                    "expected {{\"send_errcodes\": [errcode, …], \"review\": \"block\"|\"approve\"}}: {e}"
                ),
            );
        }
    };
    if faults.send_errcodes.contains(&0) {
        return sandbox_error(
            400,
            "invalid_request",
            "send_errcodes are non-zero errcodes",
        );
    }
    if faults.review == Some(Verdict::Pending) {
        return sandbox_error(400, "invalid_request", "review is block or approve");
    }
    if !sim
        .state
        .set_faults(faults.clear, faults.send_errcodes, faults.review)
    {
        return sandbox_error(
            400,
            "invalid_request",
            "at most 1000 errcodes may be queued; clear them with \"clear\": true",
        );
    }
    HttpResponse::Ok().json(sim.state.faults())
}

/// `GET /sandbox/api/templates`: the whole library, each with whether the account has it.
pub(super) async fn templates_json(sim: web::Data<Simulator>) -> HttpResponse {
    let listed = sim.state.templates();
    let library: Vec<serde_json::Value> = super::templates::LIBRARY
        .iter()
        .map(|t| {
            let has = listed.iter().any(|l| l.template_id == t.template_id);
            json!({"template_id": t.template_id, "title": t.title, "listed": has})
        })
        .collect();
    HttpResponse::Ok().json(library)
}

/// `POST /sandbox/api/templates/{id}/remove`: the account loses the template, as a category
/// change does overnight: `get_all_private_template` stops listing it and sends get 40037.
pub(super) async fn remove_template(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> HttpResponse {
    set_template_listed(&sim, &id, false)
}

/// `POST /sandbox/api/templates/{id}/restore`: the account has the template again.
pub(super) async fn restore_template(
    sim: web::Data<Simulator>,
    id: web::Path<String>,
) -> HttpResponse {
    set_template_listed(&sim, &id, true)
}

fn set_template_listed(sim: &Simulator, id: &str, listed: bool) -> HttpResponse {
    if !sim.state.set_template_listed(id, listed) {
        return sandbox_error(404, "not_found", "no such template in the sandbox library");
    }
    HttpResponse::Ok().json(json!({"template_id": id, "listed": listed}))
}

#[derive(Deserialize)]
pub(super) struct TicketQuery {
    ticket: String,
}

/// `GET /cgi-bin/showqrcode?ticket=…`: the QR code's page.
pub(super) async fn showqrcode(
    sim: web::Data<Simulator>,
    q: web::Query<TicketQuery>,
) -> HttpResponse {
    let Some(t) = sim.state.ticket(&q.ticket) else {
        return sandbox_error(404, "not_found", "unknown ticket");
    };
    let expired = t.expires_at <= chrono::Utc::now();
    page(
        "QR code",
        &format!(
            "<header>公众号二维码</header><main><div class=\"card\"><p>Temporary QR code</p>\
             <p class=\"muted\">scene: <code>{}</code></p><p class=\"muted\">{} {}</p>\
             <form method=\"post\" action=\"\" onsubmit=\"this.action='/sandbox/api/users/'+\
             encodeURIComponent(this.u.value)+'/scan?ticket={}'\">\
             <input type=\"text\" name=\"u\" value=\"alice\" pattern=\"[A-Za-z0-9_-]{{1,32}}\" required>\
             <p><button class=\"btn ok\">Scan as this WeChat user 扫一扫</button></p></form></div></main>",
            esc(&t.scene),
            if expired { "expired at" } else { "valid until" },
            t.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
            esc(&url::form_urlencoded::byte_serialize(q.ticket.as_bytes()).collect::<String>()),
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct ScanForm {
    ticket: String,
}

/// `POST /sandbox/api/users/{name}/scan?ticket=…`: the user scans a parametric QR code. A
/// follower's scan pushes `SCAN`; anyone else follows by scanning (`subscribe` with
/// `qrscene_`). Answers `{reply}`: the text WeChat would show them.
pub(super) async fn scan(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    name: web::Path<String>,
    form: web::Query<ScanForm>,
) -> HttpResponse {
    if !valid_name(&name) {
        return sandbox_error(
            400,
            "invalid_request",
            "user names are 1-32 letters, digits, '_' or '-'",
        );
    }
    let Some(ticket) = sim.state.ticket(&form.ticket) else {
        return sandbox_error(404, "not_found", "unknown ticket");
    };
    if ticket.expires_at <= chrono::Utc::now() {
        // WeChat shows "二维码已过期" and sends nothing.
        return sandbox_error(410, "qrcode_expired", "this QR code has expired");
    }
    let user = sim.state.user(&name);
    let ticket_xml = format!(
        "<Ticket>{}</Ticket>",
        crate::wechat::events::cdata(&form.ticket)
    );
    let pushed = if user.following {
        let key = crate::wechat::events::cdata(&ticket.scene);
        sim.push(
            &user.openid,
            "SCAN",
            &format!("<EventKey>{key}</EventKey>{ticket_xml}"),
        )
        .await
    } else {
        sim.state.set_following(&name, true);
        let key = crate::wechat::events::cdata(&format!("qrscene_{}", ticket.scene));
        sim.push(
            &user.openid,
            "subscribe",
            &format!("<EventKey>{key}</EventKey>{ticket_xml}"),
        )
        .await
    };
    let reply = match pushed {
        Ok(r) => r,
        Err(e) => return sandbox_error(502, "push_failed", &e),
    };
    if wants_html(&req) {
        return page(
            "Scanned",
            &format!(
                "<header>公众号</header><main><div class=\"card\"><b>{}</b> scanned the QR code.</div>\
                 <div class=\"card\">{}</div><p><a href=\"/sandbox/\">Phone view</a></p></main>",
                esc(&name),
                esc(reply.as_deref().unwrap_or("(no reply)")).replace('\n', "<br>")
            ),
        );
    }
    HttpResponse::Ok().json(json!({"user": user.name, "openid": user.openid, "reply": reply}))
}

fn sandbox_error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({"error": {"code": code, "message": message}}))
}
