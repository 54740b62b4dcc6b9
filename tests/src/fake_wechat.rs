//! A fake WeChat server on loopback that speaks WeChat's JSON: `sns/oauth2/access_token`,
//! `cgi-bin/stable_token`, `cgi-bin/message/template/send` and
//! `cgi-bin/template/get_all_private_template`, with WeChat's rules (codes are single-use,
//! sends need a valid token, `client_msg_id` deduplicates), a template list a test can change
//! and a script of failures a test can inject.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::{DEFAULT_TEMPLATE, TEST_APP_ID, TEST_APP_SECRET};

/// How the fake answers one OAuth code.
#[derive(Debug, Clone)]
pub enum CodeReply {
    /// A normal user with this openid (no unionid: the account has no Open Platform link).
    OpenId(String),
    /// A normal user with this openid and unionid, as for an account linked to an Open
    /// Platform account with scope `snsapi_userinfo`.
    WithUnionId {
        /// The openid.
        openid: String,
        /// The unionid.
        unionid: String,
    },
    /// A virtual snapshot user (`is_snapshotuser: 1`).
    Snapshot(String),
    /// An errcode body.
    Errcode(i64),
    /// A bare HTTP status.
    Http(u16),
    /// No answer for this long.
    Delay(Duration),
}

/// A scripted answer to the next template send.
#[derive(Debug, Clone)]
pub enum SendReply {
    /// Revoke the current token and answer 40001, as WeChat does for a stale token.
    RevokeToken,
    /// Answer with this errcode.
    Errcode(i64),
    /// Answer with this HTTP status.
    Http(u16),
    /// Deliver normally but answer only after this long.
    Delay(Duration),
}

/// One template send the fake received.
#[derive(Debug, Clone)]
pub struct ReceivedSend {
    /// `touser`.
    pub touser: String,
    /// `template_id`.
    pub template_id: String,
    /// `client_msg_id`.
    pub client_msg_id: String,
    /// `data`.
    pub data: Value,
    /// `url`, if given.
    pub url: Option<String>,
    /// `miniprogram`, if given.
    pub miniprogram: Option<Value>,
    /// When the fake received it.
    pub received_at: std::time::Instant,
}

/// A category template of the fake's default list: an order shipped.
pub const ORDER_TEMPLATE: &str = "TEMPLATE_ORDER";
/// A category template of the fake's default list with one keyword of every type, numbered
/// in the order of [`KEYWORD_TYPES`] (`thing1` … `const13`).
pub const TYPES_TEMPLATE: &str = "TEMPLATE_TYPES";
/// The keyword types, in the order [`TYPES_TEMPLATE`] numbers them.
pub const KEYWORD_TYPES: [&str; 13] = [
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
    "const",
];
/// The templates of the existing suite, legacy ones taking every free key it sends.
const LEGACY_TEMPLATES: [&str; 3] = [DEFAULT_TEMPLATE, "TEMPLATE_X", "TEMPLATE_OTHER"];
/// Their content: free keys, `first` and `remark` included, as old industry templates had.
const LEGACY_CONTENT: &str =
    "{{first.DATA}}\n内容：{{k.DATA}}\n详情：{{keyword1.DATA}}\n{{remark.DATA}}";

/// A template in the shape `get_all_private_template` lists it.
pub fn template(template_id: &str, title: &str, content: &str) -> Value {
    json!({
        "template_id": template_id,
        "title": title,
        "primary_industry": "IT科技",
        "deputy_industry": "互联网|电子商务",
        "content": content,
        "example": "",
    })
}

/// The fake's list until a test sets another: the suite's legacy templates,
/// [`ORDER_TEMPLATE`] and [`TYPES_TEMPLATE`].
pub fn default_templates() -> Vec<Value> {
    let mut list: Vec<Value> = LEGACY_TEMPLATES
        .iter()
        .map(|id| template(id, "订单状态更新", LEGACY_CONTENT))
        .collect();
    list.push(template(
        ORDER_TEMPLATE,
        "订单发货通知",
        "商品名称：{{thing1.DATA}}\n订单编号：{{character_string2.DATA}}\n发货时间：{{time3.DATA}}\n\
         订单金额：{{amount4.DATA}}\n订单状态：{{phrase5.DATA}}",
    ));
    let typed: Vec<String> = KEYWORD_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t}：{{{{{t}{}.DATA}}}}", i + 1))
        .collect();
    list.push(template(TYPES_TEMPLATE, "类型大全", &typed.join("\n")));
    list
}

/// The user access token the fake's code exchange answers with (wxbind must drop it).
pub const OAUTH_ACCESS_TOKEN: &str = "OAUTH_ACCESS_TOKEN";
/// The refresh token the fake's code exchange answers with (wxbind must drop it).
pub const OAUTH_REFRESH_TOKEN: &str = "OAUTH_REFRESH_TOKEN";

#[derive(Default)]
struct State {
    /// The app secret calls must carry; `None` means [`TEST_APP_SECRET`].
    app_secret: Option<String>,
    issued_tokens: Vec<String>,
    codes: HashMap<String, CodeReply>,
    used_codes: Vec<String>,
    current_token: Option<String>,
    token_requests: Vec<Value>,
    script: VecDeque<SendReply>,
    sends: Vec<ReceivedSend>,
    delivered: HashMap<(String, String), i64>,
    qr_scenes: Vec<String>,
    oauth_requests: usize,
    /// `get_all_private_template`'s list; `None` means [`default_templates`].
    templates: Option<Vec<Value>>,
    /// An HTTP status `get_all_private_template` answers with instead of the list.
    template_list_failure: Option<u16>,
    template_list_requests: usize,
    /// Records `queryblocktmplmsg` lists, each `{id, tmpl_msg_id, openid, send_timestamp}`.
    blocked: Vec<Value>,
    /// Bodies of every `queryblocktmplmsg` request.
    blocked_queries: Vec<Value>,
    /// `(daily_limit, used)` of `openapi/quota/get`.
    quota: (i64, i64),
    /// Bodies of every `clear_quota` request.
    quota_resets: Vec<Value>,
    /// An errcode `clear_quota` answers with instead of success.
    clear_quota_errcode: Option<i64>,
    /// Paths of the endpoints that answer -1 (system busy) from now on.
    failing: std::collections::HashSet<&'static str>,
}

impl State {
    fn app_secret(&self) -> &str {
        self.app_secret.as_deref().unwrap_or(TEST_APP_SECRET)
    }
}

/// The fake server and what it has seen.
pub struct FakeWechat {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

fn errcode(code: i64, msg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "errcode": code,
        "errmsg": format!("{msg} rid: 6560f1b2-4a7e3c1d-0badc0de"),
    }))
}

impl FakeWechat {
    /// Starts the server with WeChat's endpoints mounted.
    pub async fn start() -> Self {
        // The fake keeps its own record of what it saw; wiremock's copy of every request
        // would only cost the benchmark time and memory.
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(method("GET"))
            .and(path("/sns/oauth2/access_token"))
            .respond_with(OAuth(Arc::clone(&state)))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/stable_token"))
            .respond_with(StableToken(Arc::clone(&state)))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/message/template/send"))
            .respond_with(TemplateSend {
                state: Arc::clone(&state),
                next_msgid: AtomicI64::new(1_000_000),
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/cgi-bin/template/get_all_private_template"))
            .respond_with(TemplateList(Arc::clone(&state)))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/wxa/sec/queryblocktmplmsg"))
            .respond_with(Authed(Arc::clone(&state), QUERY_BLOCKED, blocked_page))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/openapi/quota/get"))
            .respond_with(Authed(Arc::clone(&state), QUOTA_GET, quota_get))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/clear_quota"))
            .respond_with(Authed(Arc::clone(&state), CLEAR_QUOTA, clear_quota))
            .mount(&server)
            .await;
        state.lock().expect("fake state").quota = (100_000, 0);
        Mock::given(method("POST"))
            .and(path("/cgi-bin/qrcode/create"))
            .respond_with(QrCreate(Arc::clone(&state)))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// Scenes of the QR codes created so far.
    pub fn qr_scenes(&self) -> Vec<String> {
        self.state().qr_scenes.clone()
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state")
    }

    /// Expects `secret` instead of [`TEST_APP_SECRET`] from now on.
    pub fn set_app_secret(&self, secret: &str) {
        self.state().app_secret = Some(secret.to_owned());
    }

    /// Every access token handed out so far, oldest first.
    pub fn access_tokens(&self) -> Vec<String> {
        self.state().issued_tokens.clone()
    }

    /// Makes `code` answer with `reply` (once; a reused code gets 40163).
    pub fn register_code(&self, code: &str, reply: CodeReply) {
        self.state().codes.insert(code.into(), reply);
    }

    /// Answers the next template sends with these replies, in order.
    pub fn script_sends(&self, replies: impl IntoIterator<Item = SendReply>) {
        self.state().script.extend(replies);
    }

    /// Access tokens handed out so far.
    pub fn tokens_issued(&self) -> u64 {
        u64::try_from(self.state().issued_tokens.len()).expect("count")
    }

    /// Bodies of every stable_token request.
    pub fn token_requests(&self) -> Vec<Value> {
        self.state().token_requests.clone()
    }

    /// Every template send request, including refused and duplicate ones.
    pub fn sends(&self) -> Vec<ReceivedSend> {
        self.state().sends.clone()
    }

    /// Messages that reached a phone (after deduplication).
    pub fn delivered_count(&self) -> usize {
        self.state().delivered.len()
    }

    /// Lists `templates` from now on (each from [`template`]).
    pub fn set_templates(&self, templates: Vec<Value>) {
        self.state().templates = Some(templates);
    }

    /// Answers `get_all_private_template` with this HTTP status from now on (`None`: the list
    /// again).
    pub fn fail_template_list(&self, status: Option<u16>) {
        self.state().template_list_failure = status;
    }

    /// Requests received on `get_all_private_template`.
    pub fn template_list_requests(&self) -> usize {
        self.state().template_list_requests
    }

    /// Makes `queryblocktmplmsg` list a message review blocked: sent to `openid` at
    /// `send_timestamp`, asked about as `tmpl_msg_id` (the template id, for WeChat's answers
    /// that carry no id of their own).
    pub fn block(&self, openid: &str, tmpl_msg_id: &str, send_timestamp: i64) {
        let mut s = self.state();
        let id = s.blocked.len() + 1;
        s.blocked.push(json!({
            "id": id, "tmpl_msg_id": tmpl_msg_id, "title": "订单发货通知",
            "content": "商品名称：…", "send_timestamp": send_timestamp, "openid": openid,
        }));
    }

    /// Makes the endpoint at `path` ([`QUERY_BLOCKED`], [`QUOTA_GET`], [`CLEAR_QUOTA`]) answer
    /// -1 (system busy) from now on, or normally again.
    pub fn fail(&self, path: &'static str, failing: bool) {
        let mut s = self.state();
        if failing {
            s.failing.insert(path);
        } else {
            s.failing.remove(path);
        }
    }

    /// Bodies of every `queryblocktmplmsg` request so far.
    pub fn blocked_queries(&self) -> Vec<Value> {
        self.state().blocked_queries.clone()
    }

    /// What `openapi/quota/get` reports for template sends.
    pub fn set_quota(&self, daily_limit: i64, used: i64) {
        self.state().quota = (daily_limit, used);
    }

    /// Bodies of every `clear_quota` request so far.
    pub fn quota_resets(&self) -> Vec<Value> {
        self.state().quota_resets.clone()
    }

    /// Answers `clear_quota` with this errcode from now on (48006: no reset left this month).
    pub fn refuse_quota_reset(&self, errcode: i64) {
        self.state().clear_quota_errcode = Some(errcode);
    }

    /// Requests received on `sns/oauth2/access_token` (the code exchange).
    pub fn oauth_requests(&self) -> usize {
        self.state().oauth_requests
    }
}

/// The `access_token` query parameter of a request.
fn access_token_of(req: &Request) -> String {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

struct OAuth(Arc<Mutex<State>>);

impl Respond for OAuth {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let secret = {
            let mut s = self.0.lock().expect("fake state");
            s.oauth_requests += 1;
            s.app_secret().to_owned()
        };
        let q: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        if get("appid") != TEST_APP_ID {
            return errcode(40013, "invalid appid");
        }
        if get("secret") != secret {
            return errcode(40125, "invalid appsecret");
        }
        if get("grant_type") != "authorization_code" {
            return errcode(40002, "invalid grant_type");
        }
        let code = get("code").to_owned();
        let mut s = self.0.lock().expect("fake state");
        if s.used_codes.contains(&code) {
            return errcode(40163, "code been used");
        }
        let Some(reply) = s.codes.get(&code).cloned() else {
            return errcode(40029, "invalid code");
        };
        s.used_codes.push(code);
        let token_body = |openid: &str, snapshot: bool, unionid: Option<&str>| {
            let mut body = json!({
                "access_token": OAUTH_ACCESS_TOKEN,
                "expires_in": 7200,
                "refresh_token": OAUTH_REFRESH_TOKEN,
                "openid": openid,
                "scope": "snsapi_userinfo",
            });
            if snapshot {
                body["is_snapshotuser"] = json!(1);
            }
            if let Some(unionid) = unionid {
                body["unionid"] = json!(unionid);
            }
            ResponseTemplate::new(200).set_body_json(body)
        };
        match reply {
            CodeReply::OpenId(o) => token_body(&o, false, None),
            CodeReply::WithUnionId { openid, unionid } => {
                token_body(&openid, false, Some(&unionid))
            }
            CodeReply::Snapshot(o) => token_body(&o, true, None),
            CodeReply::Errcode(c) => errcode(c, "scripted error"),
            CodeReply::Http(status) => ResponseTemplate::new(status),
            CodeReply::Delay(d) => token_body("late-openid", false, None).set_delay(d),
        }
    }
}

struct StableToken(Arc<Mutex<State>>);

impl Respond for StableToken {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut s = self.0.lock().expect("fake state");
        s.token_requests.push(body.clone());
        if body["grant_type"] != "client_credential" || body["appid"] != TEST_APP_ID {
            return errcode(40013, "invalid appid");
        }
        if body["secret"] != s.app_secret() {
            return errcode(40125, "invalid appsecret");
        }
        // Like WeChat's stable_token: the current token is returned while it is valid,
        // unless force_refresh asks for a new one.
        let force = body["force_refresh"].as_bool().unwrap_or(false);
        let token = match (&s.current_token, force) {
            (Some(t), false) => t.clone(),
            _ => {
                let t = format!("TEST_ACCESS_TOKEN_{}", s.issued_tokens.len() + 1);
                s.current_token = Some(t.clone());
                s.issued_tokens.push(t.clone());
                t
            }
        };
        ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "expires_in": 7200}))
    }
}

struct TemplateSend {
    state: Arc<Mutex<State>>,
    next_msgid: AtomicI64,
}

impl Respond for TemplateSend {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let token = access_token_of(req);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut s = self.state.lock().expect("fake state");
        let received = ReceivedSend {
            touser: body["touser"].as_str().unwrap_or_default().into(),
            template_id: body["template_id"].as_str().unwrap_or_default().into(),
            client_msg_id: body["client_msg_id"].as_str().unwrap_or_default().into(),
            data: body["data"].clone(),
            url: body["url"].as_str().map(Into::into),
            miniprogram: Some(body["miniprogram"].clone()).filter(|m| !m.is_null()),
            received_at: std::time::Instant::now(),
        };
        s.sends.push(received.clone());
        if s.current_token.as_deref() != Some(token.as_str()) {
            return errcode(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        let mut delay = None;
        match s.script.pop_front() {
            Some(SendReply::RevokeToken) => {
                s.current_token = None;
                return errcode(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            Some(SendReply::Errcode(c)) => {
                if c == 45009 {
                    // WeChat reports the quota used up once it refuses for it.
                    s.quota.1 = s.quota.0;
                }
                return errcode(c, "scripted error");
            }
            Some(SendReply::Http(status)) => return ResponseTemplate::new(status),
            Some(SendReply::Delay(d)) => delay = Some(d),
            None => {}
        }
        if received.touser.is_empty() || !body["data"].is_object() {
            return errcode(47003, "argument invalid! data.keyword1.value invalid");
        }
        // WeChat sends one message per (touser, client_msg_id) and answers repeats with its msgid.
        let key = (received.touser.clone(), received.client_msg_id.clone());
        let next = &self.next_msgid;
        let msgid = *s
            .delivered
            .entry(key)
            .or_insert_with(|| next.fetch_add(1, Ordering::Relaxed));
        let reply = ResponseTemplate::new(200)
            .set_body_json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}));
        match delay {
            Some(d) => reply.set_delay(d),
            None => reply,
        }
    }
}

struct TemplateList(Arc<Mutex<State>>);

impl Respond for TemplateList {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let token = access_token_of(req);
        let mut s = self.0.lock().expect("fake state");
        s.template_list_requests += 1;
        if let Some(status) = s.template_list_failure {
            return ResponseTemplate::new(status);
        }
        if s.current_token.as_deref() != Some(token.as_str()) {
            return errcode(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        let list = s.templates.clone().unwrap_or_else(default_templates);
        ResponseTemplate::new(200).set_body_json(json!({"template_list": list}))
    }
}

/// `wxa/sec/queryblocktmplmsg`.
pub const QUERY_BLOCKED: &str = "/wxa/sec/queryblocktmplmsg";
/// `cgi-bin/openapi/quota/get`.
pub const QUOTA_GET: &str = "/cgi-bin/openapi/quota/get";
/// `cgi-bin/clear_quota`.
pub const CLEAR_QUOTA: &str = "/cgi-bin/clear_quota";

/// An endpoint (`.1`) that takes an access token and a JSON body, answered by `.2`.
struct Authed(
    Arc<Mutex<State>>,
    &'static str,
    fn(&mut State, &Value) -> ResponseTemplate,
);

impl Respond for Authed {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let token = access_token_of(req);
        let mut s = self.0.lock().expect("fake state");
        if s.failing.contains(self.1) {
            return errcode(-1, "system error");
        }
        if s.current_token.as_deref() != Some(token.as_str()) {
            return errcode(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return errcode(47001, "data format error");
        };
        (self.2)(&mut s, &body)
    }
}

/// `queryblocktmplmsg`: the blocked records for `tmpl_msg_id` after `largest_id`, a page of
/// at most `limit` (100).
fn blocked_page(s: &mut State, body: &Value) -> ResponseTemplate {
    s.blocked_queries.push(body.clone());
    let (Some(key), Some(largest), Some(limit)) = (
        body["tmpl_msg_id"].as_str(),
        body["largest_id"].as_i64(),
        body["limit"].as_u64().filter(|l| (1..=100).contains(l)),
    ) else {
        return errcode(40097, "invalid args");
    };
    let page: Vec<Value> = s
        .blocked
        .iter()
        .filter(|r| r["tmpl_msg_id"] == key && r["id"].as_i64().unwrap_or(0) > largest)
        .take(usize::try_from(limit).unwrap_or(100))
        .cloned()
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({"errcode": 0, "errmsg": "ok", "msginfo": page}))
}

/// `openapi/quota/get` for `/cgi-bin/message/template/send`.
fn quota_get(s: &mut State, body: &Value) -> ResponseTemplate {
    if body["cgi_path"] != "/cgi-bin/message/template/send" {
        return errcode(76021, "cgi_path not found");
    }
    let (daily_limit, used) = s.quota;
    ResponseTemplate::new(200).set_body_json(json!({
        "errcode": 0, "errmsg": "ok",
        "quota": {"daily_limit": daily_limit, "used": used, "remain": daily_limit - used},
    }))
}

/// `clear_quota` for the test app.
fn clear_quota(s: &mut State, body: &Value) -> ResponseTemplate {
    s.quota_resets.push(body.clone());
    if body["appid"] != TEST_APP_ID {
        return errcode(40013, "invalid appid");
    }
    if let Some(code) = s.clear_quota_errcode {
        return errcode(code, "forbid to clear quota because of reaching the limit");
    }
    s.quota.1 = 0;
    ResponseTemplate::new(200).set_body_json(json!({"errcode": 0, "errmsg": "ok"}))
}

struct QrCreate(Arc<Mutex<State>>);

impl Respond for QrCreate {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let token = access_token_of(req);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut s = self.0.lock().expect("fake state");
        if s.current_token.as_deref() != Some(token.as_str()) {
            return errcode(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        let Some(scene) = body["action_info"]["scene"]["scene_str"].as_str() else {
            return errcode(40053, "invalid action info");
        };
        if body["action_name"] != "QR_STR_SCENE" || scene.len() > 64 {
            return errcode(40053, "invalid action info");
        }
        s.qr_scenes.push(scene.to_owned());
        let n = s.qr_scenes.len();
        ResponseTemplate::new(200).set_body_json(json!({
            "ticket": format!("gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw{n}=="),
            "expire_seconds": body["expire_seconds"],
            "url": format!("http://weixin.qq.com/q/kZgfwMTm72WWPkovabbI{n}"),
        }))
    }
}
