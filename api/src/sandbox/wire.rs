//! The simulated WeChat endpoints, with WeChat's parameters, JSON shapes and errcodes.
use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{SendResult, SimError, TOKEN_TTL_SECONDS, Verdict};
use super::templates::SandboxTemplate;
use super::{Simulator, pages, valid_name};

/// WeChat's error body: `errcode` and an `errmsg` ending in a request id.
pub(super) fn wx_error(e: &SimError) -> HttpResponse {
    let rid = crate::domain::random_alphanumeric(24).to_lowercase();
    HttpResponse::Ok().json(json!({
        "errcode": e.errcode,
        "errmsg": format!("{} rid: {}-{}-{}", e.errmsg, &rid[..8], &rid[8..16], &rid[16..]),
    }))
}

const fn sim(errcode: i64, errmsg: &'static str) -> SimError {
    SimError {
        errcode,
        errmsg: std::borrow::Cow::Borrowed(errmsg),
    }
}

fn query_map(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// Checks appid and secret as WeChat does, missing before wrong.
fn check_app(s: &Simulator, appid: Option<&str>, secret: Option<&str>) -> Result<(), SimError> {
    match appid {
        None | Some("") => return Err(sim(41002, "appid missing")),
        Some(a) if a != s.app_id => return Err(sim(40013, "invalid appid")),
        Some(_) => {}
    }
    match secret {
        None | Some("") => Err(sim(41004, "appsecret missing")),
        Some(sec) if !s.secret_matches(sec) => Err(sim(40125, "invalid appsecret")),
        Some(_) => Ok(()),
    }
}

/// The order WeChat requires of the authorize parameters.
const AUTHORIZE_ORDER: [&str; 5] = ["appid", "redirect_uri", "response_type", "scope", "state"];

/// `GET /connect/oauth2/authorize`: checks the request like WeChat, then shows the consent
/// page, or (with `sandbox_user` and `sandbox_decision`) redirects like WeChat does.
pub(super) async fn authorize(sim_: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());

    let wechat_order = names
        .iter()
        .filter(|n| !n.starts_with("sandbox_"))
        .copied()
        .collect::<Vec<_>>();
    let expected_order = AUTHORIZE_ORDER
        .iter()
        .copied()
        .chain(
            wechat_order
                .get(5)
                .filter(|n| **n == "connect_redirect")
                .copied(),
        )
        .collect::<Vec<_>>();
    if wechat_order != expected_order {
        return pages::wechat_error_page(
            "参数错误 (invalid parameters)",
            "WeChat requires appid, redirect_uri, response_type, scope, state (then connect_redirect), in this order.",
        );
    }
    if get("appid") != Some(sim_.app_id.as_str()) {
        return pages::wechat_error_page(
            "appid 无效 (invalid appid)",
            "The appid is not the sandbox account's.",
        );
    }
    let redirect = match get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) {
        Some(u)
            if u.host_str() == sim_.public_url.host_str()
                && u.port_or_known_default() == sim_.public_url.port_or_known_default() =>
        {
            u
        }
        _ => {
            return pages::wechat_error_page(
                "redirect_uri 域名与后台配置不一致 (redirect_uri not allowed)",
                "redirect_uri must be on this service's own host (WXBIND_PUBLIC_URL).",
            );
        }
    };
    if get("response_type") != Some("code") {
        return pages::wechat_error_page("response_type 错误", "response_type must be code.");
    }
    let scope = get("scope").unwrap_or_default();
    if !matches!(scope, "snsapi_base" | "snsapi_userinfo") {
        return pages::wechat_error_page(
            "Scope 参数错误或没有 Scope 权限 (invalid scope)",
            "scope must be snsapi_base or snsapi_userinfo.",
        );
    }
    let state = get("state").unwrap_or_default();
    if state.len() > 128 || !state.chars().all(|c| c.is_ascii_alphanumeric()) {
        return pages::wechat_error_page(
            "state 参数错误 (invalid state)",
            "state may only hold letters and digits, at most 128 bytes.",
        );
    }

    let decision = get("sandbox_decision");
    let user = get("sandbox_user").map(str::trim).unwrap_or_default();
    match decision {
        None => pages::consent(&sim_, &pairs, scope),
        Some("deny") => {
            let mut target = redirect;
            target.query_pairs_mut().append_pair("state", state);
            found(&target)
        }
        Some("allow") if valid_name(user) => {
            let u = sim_.state.user(user);
            let code = sim_.state.issue_code(&u.openid, scope);
            let mut target = redirect;
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", state);
            found(&target)
        }
        Some("allow") => pages::wechat_error_page(
            "sandbox_user 无效",
            "Name the test WeChat user: 1-32 letters, digits, '_' or '-'.",
        ),
        Some(_) => pages::wechat_error_page("sandbox_decision 无效", "Use allow or deny."),
    }
}

fn found(target: &url::Url) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, target.as_str()))
        .finish()
}

/// `GET /sns/oauth2/access_token`: exchanges a code for the user's openid (and, with
/// `snsapi_userinfo`, unionid).
pub(super) async fn oauth_access_token(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
) -> HttpResponse {
    let q = query_map(&req);
    let get = |k: &str| q.get(k).map(String::as_str);
    if let Err(e) = check_app(&sim_, get("appid"), get("secret")) {
        return wx_error(&e);
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return wx_error(&sim(41008, "missing code"));
    };
    if get("grant_type") != Some("authorization_code") {
        return wx_error(&sim(40002, "invalid grant_type"));
    }
    match sim_.state.exchange_code(code) {
        Ok((token, openid, scope, unionid)) => {
            let mut body = json!({
                "access_token": token,
                "expires_in": TOKEN_TTL_SECONDS,
                "refresh_token": crate::domain::random_alphanumeric(40),
                "openid": openid,
                "scope": scope,
            });
            // WeChat leaves the field out, rather than null, when there is none.
            if let Some(unionid) = unionid {
                body["unionid"] = json!(unionid);
            }
            HttpResponse::Ok().json(body)
        }
        Err(e) => wx_error(&e),
    }
}

/// `GET /sns/userinfo`: the profile behind an OAuth access token.
pub(super) async fn userinfo(sim_: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query_map(&req);
    let Some(token) = q.get("access_token") else {
        return wx_error(&sim(41001, "access_token missing"));
    };
    let Some(owner) = sim_.state.oauth_token_owner(token) else {
        return wx_error(&sim(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
    };
    if q.get("openid") != Some(&owner) {
        return wx_error(&sim(40003, "invalid openid"));
    }
    let name = sim_
        .state
        .user_by_openid(&owner)
        .map(|u| u.name)
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "openid": owner, "nickname": name, "sex": 0, "province": "", "city": "",
        "country": "", "headimgurl": "", "privilege": [],
    }))
}

#[derive(Deserialize)]
pub(super) struct StableTokenBody {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

/// `POST /cgi-bin/stable_token`.
pub(super) async fn stable_token(sim_: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let Ok(b) = serde_json::from_slice::<StableTokenBody>(&body) else {
        return wx_error(&sim(47001, "data format error"));
    };
    if b.grant_type.as_deref() != Some("client_credential") {
        return wx_error(&sim(40002, "invalid grant_type"));
    }
    if let Err(e) = check_app(&sim_, b.appid.as_deref(), b.secret.as_deref()) {
        return wx_error(&e);
    }
    let (token, expires_in) = sim_.state.stable_token(b.force_refresh);
    HttpResponse::Ok().json(json!({"access_token": token, "expires_in": expires_in}))
}

/// `GET /cgi-bin/token`: the classic fetch, which replaces the current token.
pub(super) async fn classic_token(sim_: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let q = query_map(&req);
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wx_error(&sim(40002, "invalid grant_type"));
    }
    if let Err(e) = check_app(
        &sim_,
        q.get("appid").map(String::as_str),
        q.get("secret").map(String::as_str),
    ) {
        return wx_error(&e);
    }
    let (token, expires_in) = sim_.state.classic_token();
    HttpResponse::Ok().json(json!({"access_token": token, "expires_in": expires_in}))
}

fn require_token(sim_: &Simulator, req: &HttpRequest) -> Result<(), SimError> {
    let q = query_map(req);
    let token = q
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(sim(41001, "access_token missing"))?;
    sim_.state.check_token(token)
}

/// The preamble of the token-authenticated JSON endpoints: a valid access token, a JSON body.
fn authed_json(sim_: &Simulator, req: &HttpRequest, body: &[u8]) -> Result<Value, HttpResponse> {
    require_token(sim_, req).map_err(|e| wx_error(&e))?;
    serde_json::from_slice::<Value>(body).map_err(|_| wx_error(&sim(47001, "data format error")))
}

/// `POST /cgi-bin/message/template/send`.
pub(super) async fn template_send(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let b = match authed_json(&sim_, &req, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(touser) = b["touser"].as_str().filter(|t| !t.is_empty()) else {
        return wx_error(&sim(40003, "invalid openid"));
    };
    let Some(template_id) = b["template_id"].as_str().filter(|t| !t.is_empty()) else {
        return wx_error(&sim(40037, "invalid template_id"));
    };
    // data: {name: {value: string, color?: string}}
    let data_ok = b["data"].as_object().is_some_and(|fields| {
        !fields.is_empty()
            && fields.values().all(|f| {
                f.as_object().is_some_and(|o| {
                    o.get("value").is_some_and(Value::is_string)
                        && o.keys().all(|k| k == "value" || k == "color")
                })
            })
    });
    if !data_ok {
        return wx_error(&sim(47003, "argument invalid! data.value invalid"));
    }
    // miniprogram: {appid: string, pagepath: string}, when given at all.
    let miniprogram = match &b["miniprogram"] {
        Value::Null => None,
        m if ["appid", "pagepath"]
            .iter()
            .all(|k| m[k].as_str().is_some_and(|v| !v.is_empty())) =>
        {
            Some(json!({"appid": m["appid"], "pagepath": m["pagepath"]}))
        }
        _ => return wx_error(&sim(47001, "data format error")),
    };
    let url = b["url"].as_str().map(str::to_owned);
    match sim_.state.send_template(
        touser,
        template_id,
        url,
        miniprogram,
        b["data"].clone(),
        b["client_msg_id"].as_str(),
    ) {
        Ok(SendResult::Delivered { msgid, new }) => {
            if new {
                // WeChat reports delivery a moment after the send returns.
                let (sim_, touser) = (sim_.clone(), touser.to_owned());
                actix_web::rt::spawn(async move {
                    tokio::time::sleep(REPORT_DELAY).await;
                    report_delivery(&sim_, &touser, msgid).await;
                });
            }
            HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
        }
        Ok(SendResult::Held { id, verdict }) => {
            if verdict == Verdict::Approve {
                // Review approves after a while; WeChat then delivers it itself and reports.
                let sim_ = sim_.clone();
                actix_web::rt::spawn(async move {
                    tokio::time::sleep(REVIEW_DELAY).await;
                    if let Some((openid, msgid)) = sim_.state.approve_held(id) {
                        tokio::time::sleep(REPORT_DELAY).await;
                        report_delivery(&sim_, &openid, msgid).await;
                    }
                });
            }
            // WeChat gives a held message no msgid.
            wx_error(&sim(40252, "the template message is under review"))
        }
        Err(e) => wx_error(&e),
    }
}

/// Pushes the TEMPLATESENDJOBFINISH report of a delivered message.
async fn report_delivery(sim_: &Simulator, openid: &str, msgid: i64) {
    let extra = format!("<MsgID>{msgid}</MsgID><Status><![CDATA[success]]></Status>");
    let _ = sim_.push(openid, "TEMPLATESENDJOBFINISH", &extra).await;
}

/// How long review takes to approve a message in the sandbox (WeChat: about 30 minutes).
const REVIEW_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /cgi-bin/openapi/quota/get`: the daily quota of one API (`cgi_path`).
pub(super) async fn quota_get(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let b = match authed_json(&sim_, &req, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match b["cgi_path"].as_str() {
        Some("/cgi-bin/message/template/send") => {}
        Some(_) => return wx_error(&sim(76021, "cgi_path not found")),
        None => return wx_error(&sim(40097, "invalid args")),
    }
    let q = sim_.state.quota();
    HttpResponse::Ok().json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "quota": {"daily_limit": q.daily_limit, "used": q.used, "remain": (q.daily_limit - q.used).max(0)},
    }))
}

/// `POST /cgi-bin/clear_quota`: resets the day's quotas, 10 times a month.
pub(super) async fn clear_quota(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let b = match authed_json(&sim_, &req, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match b["appid"].as_str() {
        None | Some("") => return wx_error(&sim(41002, "appid missing")),
        Some(a) if a != sim_.app_id => return wx_error(&sim(40013, "invalid appid")),
        Some(_) => {}
    }
    match sim_.state.clear_quota() {
        Ok(()) => HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok"})),
        Err(e) => wx_error(&e),
    }
}

/// `POST /wxa/sec/queryblocktmplmsg`: messages review blocked, by `tmpl_msg_id` (the
/// sandbox's 40252 answer carries no id of its own, so this is the template id), in pages of
/// at most 100 after `largest_id`.
pub(super) async fn query_blocked(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let b = match authed_json(&sim_, &req, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(tmpl_msg_id) = b["tmpl_msg_id"].as_str().filter(|t| !t.is_empty()) else {
        return wx_error(&sim(40097, "invalid args: tmpl_msg_id"));
    };
    let largest_id = b["largest_id"].as_i64().unwrap_or(0);
    let limit = match b["limit"].as_u64() {
        None => 100,
        Some(n @ 1..=100) => n,
        Some(_) => return wx_error(&sim(40097, "invalid args: limit is 1 to 100")),
    };
    let records: Vec<Value> = sim_
        .state
        .blocked(
            tmpl_msg_id,
            largest_id,
            usize::try_from(limit).unwrap_or(100),
        )
        .into_iter()
        .map(|h| {
            let title = SandboxTemplate::find(&h.template_id).map_or("", |t| t.title);
            json!({
                "id": h.id,
                "tmpl_msg_id": h.template_id,
                "title": title,
                "content": h.data.to_string(),
                "send_timestamp": h.sent_at.timestamp(),
                "openid": h.openid,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "msginfo": records}))
}

/// `GET /cgi-bin/template/get_all_private_template`: the account's templates.
pub(super) async fn get_all_private_template(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
) -> HttpResponse {
    if let Err(e) = require_token(&sim_, &req) {
        return wx_error(&e);
    }
    HttpResponse::Ok().json(json!({"template_list": sim_.state.templates()}))
}

/// How long after a delivery the simulator reports it.
const REPORT_DELAY: std::time::Duration = std::time::Duration::from_millis(800);

/// `POST /cgi-bin/qrcode/create`: a temporary parametric QR code.
pub(super) async fn qrcode_create(
    sim_: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let b = match authed_json(&sim_, &req, &body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let scene = match b["action_name"].as_str() {
        Some("QR_STR_SCENE") => b["action_info"]["scene"]["scene_str"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(str::to_owned),
        Some("QR_SCENE") => b["action_info"]["scene"]["scene_id"]
            .as_u64()
            .map(|n| n.to_string()),
        _ => None,
    };
    let Some(scene) = scene else {
        return wx_error(&sim(40053, "invalid action info"));
    };
    let expire = b["expire_seconds"]
        .as_i64()
        .unwrap_or(60)
        .clamp(60, 2_592_000);
    let (ticket, _) = sim_.state.create_ticket(&scene, expire);
    HttpResponse::Ok().json(json!({
        "ticket": ticket,
        "expire_seconds": expire,
        "url": format!("http://weixin.qq.com/q/{}", &ticket[2..24]),
    }))
}
