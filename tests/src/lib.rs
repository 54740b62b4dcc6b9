//! Black-box test harness: a throwaway Postgres database per test, a fake WeChat speaking
//! WeChat's wire format on loopback, and the app on a random port. Tests talk HTTP only
//! (plus the database, to assert what was or was not written).
mod db;
mod fake_wechat;
mod receiver;

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use diesel::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use url::Url;
use wxbind::config::{
    AuthConfig, Config, DatabaseConfig, DeliveryConfig, HttpConfig, PushConfig, SandboxConfig,
    TemplatesConfig, VerifierConfig, WebhookConfig, WechatConfig,
};
use wxbind::startup::{Application, ProcessRole, StopHandle};

pub use db::TestDb;
pub use fake_wechat::{
    CLEAR_QUOTA, CodeReply, FakeWechat, KEYWORD_TYPES, OAUTH_ACCESS_TOKEN, OAUTH_REFRESH_TOKEN,
    ORDER_TEMPLATE, QUERY_BLOCKED, QUOTA_GET, SendReply, TYPES_TEMPLATE, default_templates,
    template,
};
pub use receiver::{Received, Receiver};

/// The password every test user gets.
pub const TEST_PASSWORD: &str = "test-password-123";
/// The app id the fake WeChat expects.
pub const TEST_APP_ID: &str = "wxtestappid";
/// The app secret the fake WeChat expects.
pub const TEST_APP_SECRET: &str = "test-app-secret";
/// The JWT key of every test app.
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0123";
/// The one browser origin test apps allow.
pub const TEST_SPA_ORIGIN: &str = "http://spa.test:5173";

/// The server-push token of every test app.
pub const TEST_PUSH_TOKEN: &str = "testpushtoken";
/// A test EncodingAESKey (WeChat's documentation example).
pub const TEST_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// The server's default template id.
pub const DEFAULT_TEMPLATE: &str = "TEMPLATE_DEFAULT";

/// A running app with its database and fake WeChat.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The database (dropped with the app).
    pub db: TestDb,
    /// The fake WeChat the app is pointed at.
    pub wechat: FakeWechat,
    /// HTTP client that does not follow redirects.
    pub http: reqwest::Client,
    /// The configuration the app runs with.
    pub config: Config,
    /// Stops the app as SIGTERM would.
    pub stop: StopHandle,
}

/// Another process on a test app's database and fake WeChat.
pub struct Peer {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// Stops it as SIGTERM would.
    pub stop: StopHandle,
}

/// A config pointing at `db` and `wechat`, tuned for fast tests.
pub fn test_config(db: &TestDb, wechat: &FakeWechat) -> Config {
    Config {
        http: HttpConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            public_url: Url::parse("http://127.0.0.1:1").expect("url"),
            workers: Some(2),
            cors_origins: vec![TEST_SPA_ORIGIN.to_owned()],
            bind_result_url: None,
            // The links the suite's messages use; what a real deployment derives from its URLs.
            url_hosts: vec!["example.com".to_owned()],
            miniprogram_appids: Vec::new(),
            metrics_token: None,
            trusted_proxies: Vec::new(),
        },
        database: DatabaseConfig {
            url: SecretString::from(db.url.clone()),
            pool_size: 8,
        },
        auth: AuthConfig {
            jwt_secret: SecretString::from(TEST_JWT_SECRET.to_owned()),
            jwt_secret_generated: false,
            jwt_secret_previous: None,
            jwt_ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(14 * 24 * 3600),
            session_max: Duration::from_secs(30 * 24 * 3600),
            cookie_same_site: actix_web::cookie::SameSite::Lax,
            verifier: VerifierConfig::default(),
        },
        wechat: Some(WechatConfig {
            app_id: TEST_APP_ID.into(),
            app_secret: SecretString::from(TEST_APP_SECRET.to_owned()),
            api_base: Url::parse(&wechat.uri()).expect("url"),
            oauth_base: Url::parse("https://open.weixin.qq.com").expect("url"),
            mp_base: Url::parse(&wechat.uri()).expect("url"),
            timeout: Duration::from_millis(1500),
            default_template_id: Some(DEFAULT_TEMPLATE.into()),
            push: Some(PushConfig {
                token: SecretString::from(TEST_PUSH_TOKEN.to_owned()),
                aes_key: None,
                aes_key_previous: None,
                compat: false,
            }),
        }),
        delivery: DeliveryConfig {
            concurrency: 16,
            max_attempts: 4,
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            shutdown: Duration::from_secs(5),
            // Tests share the machine with each other: a deprioritised worker would only make
            // them slower and their timing less predictable.
            nice: 0,
            // Tests queue dozens of messages as one user in a second; the limit has its own.
            user_sends_per_minute: 1_000_000,
            ..DeliveryConfig::default()
        },
        templates: TemplatesConfig::default(),
        sandbox: SandboxConfig::default(),
        // The suite's receivers listen on loopback, and retries must come within a test.
        webhooks: WebhookConfig {
            allow_private: true,
            retry_base: Duration::from_millis(50),
            poll_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        },
    }
}

/// The test app's push settings (there are always some unless a test removed WeChat).
pub fn push_config(config: &mut Config) -> Option<&mut PushConfig> {
    config.wechat.as_mut().and_then(|w| w.push.as_mut())
}

/// Spawns the app with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The password of the sandbox demo accounts in tests.
pub const DEMO_PASSWORD: &str = "demo-password-for-tests";

/// Spawns the app in sandbox mode, with the demo accounts created as `wxbind serve` does.
pub async fn spawn_sandbox_app() -> TestApp {
    let app = spawn_app_with(|c| c.enable_sandbox()).await;
    seed_sandbox(&app);
    app
}

/// What `wxbind serve` does in sandbox mode before it serves: claims the database for the
/// sandbox (or checks it serves the sandbox), then creates the demo accounts with
/// [`DEMO_PASSWORD`].
pub fn seed_sandbox(app: &TestApp) -> Vec<(&'static str, wxbind::sandbox::DemoAccount)> {
    let mut conn = app.db.conn();
    wxbind::deployment::enforce(&mut conn, &app.config).expect("a sandbox database");
    wxbind::sandbox::ensure_demo_accounts(&mut conn, DEMO_PASSWORD).expect("demo accounts")
}

/// Spawns the app after `customise` adjusts the configuration.
pub async fn spawn_app_with(customise: impl FnOnce(&mut Config)) -> TestApp {
    spawn_role_prepared(ProcessRole::Serve, |_| {}, customise).await
}

/// Spawns the app in `role` after `customise` adjusts the configuration.
pub async fn spawn_role_with(role: ProcessRole, customise: impl FnOnce(&mut Config)) -> TestApp {
    spawn_role_prepared(role, |_| {}, customise).await
}

/// Spawns the app after `prepare` has set up the fake WeChat (before the app's first call to
/// it, such as the template sync at start) and `customise` has adjusted the configuration.
pub async fn spawn_app_prepared(
    prepare: impl FnOnce(&FakeWechat),
    customise: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_role_prepared(ProcessRole::Serve, prepare, customise).await
}

/// [`spawn_app_prepared`] in `role`.
pub async fn spawn_role_prepared(
    role: ProcessRole,
    prepare: impl FnOnce(&FakeWechat),
    customise: impl FnOnce(&mut Config),
) -> TestApp {
    init_logging();
    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    prepare(&wechat);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = test_config(&db, &wechat);
    config.http.public_url = Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    customise(&mut config);
    let app = Application::build_for(config.clone(), listener, role).expect("app builds");
    let stop = app.stop_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        db,
        wechat,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        config,
        stop,
    }
}

fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            wxbind::telemetry::init("info", false, std::io::stdout);
        }
    });
}

/// A created test user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Database id.
    pub id: i64,
    /// Username.
    pub username: String,
    /// A valid access token.
    pub token: String,
}

impl TestApp {
    /// Starts another process in `role` on this app's database and fake WeChat, with this
    /// app's configuration after `customise`.
    pub fn spawn_peer(&self, role: ProcessRole, customise: impl FnOnce(&mut Config)) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut config = self.config.clone();
        customise(&mut config);
        let app = Application::build_for(config, listener, role).expect("peer builds");
        let stop = app.stop_handle();
        actix_web::rt::spawn(app.run_until_stopped());
        Peer {
            address: format!("http://127.0.0.1:{port}"),
            stop,
        }
    }

    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Inserts a user with [`TEST_PASSWORD`] directly into the database.
    pub fn insert_user(&self, username: &str, admin: bool) -> i64 {
        static HASH: OnceLock<String> = OnceLock::new();
        let hash = HASH.get_or_init(|| wxbind::auth::hash_password(TEST_PASSWORD).expect("hash"));
        let mut conn = self.db.conn();
        wxbind::db::users::insert(
            &mut conn,
            &wxbind::db::users::NewUser {
                username,
                password_hash: hash,
                role: if admin {
                    wxbind::domain::Role::Admin
                } else {
                    wxbind::domain::Role::User
                },
            },
        )
        .expect("insert user")
        .id
    }

    /// Creates a user and logs it in over HTTP.
    pub async fn user(&self, username: &str) -> TestUser {
        self.user_with_role(username, false).await
    }

    /// Creates an admin and logs it in over HTTP.
    pub async fn admin(&self, username: &str) -> TestUser {
        self.user_with_role(username, true).await
    }

    async fn user_with_role(&self, username: &str, admin: bool) -> TestUser {
        let id = self.insert_user(username, admin);
        let resp = self.post_login(username, TEST_PASSWORD).await;
        assert_eq!(resp.status(), 200, "login of {username}");
        let body: Value = resp.json().await.expect("json");
        TestUser {
            id,
            username: username.into(),
            token: body["access_token"].as_str().expect("token").into(),
        }
    }

    /// `POST /api/login`.
    pub async fn post_login(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("request")
    }

    /// `GET path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `GET /api/me` as JSON.
    pub async fn me(&self, token: &str) -> Value {
        self.get_as(token, "/api/me")
            .await
            .json()
            .await
            .expect("json")
    }

    /// `POST path` without credentials or body.
    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// `GET path` without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// `GET /api/bind-url` and the `state` it carries.
    pub async fn bind_url(&self, user: &TestUser) -> (String, String) {
        let resp = self.get_as(&user.token, "/api/bind-url").await;
        assert_eq!(resp.status(), 200, "bind-url");
        let body: Value = resp.json().await.expect("json");
        let url = body["url"].as_str().expect("url").to_owned();
        let state = state_of(&url);
        (url, state)
    }

    /// `GET /api/callback` with the given query parameters.
    pub async fn callback(&self, code: Option<&str>, state: Option<&str>) -> reqwest::Response {
        let mut url = Url::parse(&self.url("/api/callback")).expect("url");
        {
            let mut q = url.query_pairs_mut();
            if let Some(c) = code {
                q.append_pair("code", c);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
        }
        self.http.get(url).send().await.expect("request")
    }

    /// Binds `openid` to `user` through the real flow: bind-url, WeChat's code, callback.
    pub async fn bind(&self, user: &TestUser, openid: &str) {
        self.bind_as(user, CodeReply::OpenId(openid.into())).await;
    }

    /// Binds `user` through the real flow, WeChat answering the code with `reply` (say
    /// [`CodeReply::WithUnionId`]).
    pub async fn bind_as(&self, user: &TestUser, reply: CodeReply) {
        let (_, state) = self.bind_url(user).await;
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        self.wechat.register_code(&code, reply.clone());
        let resp = self.callback(Some(&code), Some(&state)).await;
        assert_eq!(resp.status(), 200, "binding with {reply:?}");
    }

    /// `POST /api/messages` with `body`.
    pub async fn post_message(&self, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/messages"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST path` with a bearer token and a JSON body.
    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Makes an API key as `admin_token` and returns it.
    pub async fn api_key(&self, admin_token: &str, name: &str, scope: &str) -> String {
        let resp = self
            .post_json(
                admin_token,
                "/api/keys",
                &json!({"name": name, "scope": scope}),
            )
            .await;
        assert_eq!(resp.status(), 201, "making key {name}");
        let body: Value = resp.json().await.expect("json");
        body["key"].as_str().expect("key").to_owned()
    }

    /// `DELETE /api/binding`.
    pub async fn delete_binding(&self, token: &str) -> reqwest::Response {
        self.http
            .delete(self.url("/api/binding"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Queues `n` distinct messages to the caller concurrently and returns their ids.
    pub async fn queue_many(&self, user: &TestUser, n: usize) -> Vec<String> {
        let posts = (0..n).map(|i| async move {
            let body = json!({"data": {"k": {"value": format!("m{i}")}}});
            let resp = self.post_message(&user.token, &body).await;
            assert_eq!(resp.status(), 202, "queue message {i}");
            let body: Value = resp.json().await.expect("json");
            body["id"].as_str().expect("id").to_owned()
        });
        futures_util::future::join_all(posts).await
    }

    /// Queues a simple message to the caller and returns its id.
    pub async fn send_simple(&self, user: &TestUser) -> String {
        let resp = self.post_message(&user.token, &simple_message()).await;
        assert_eq!(resp.status(), 202, "queue message");
        let body: Value = resp.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Polls `GET /api/messages/{id}` until it is `sent` or `failed` (10 s at most).
    pub async fn wait_for_final(&self, token: &str, id: &str) -> Value {
        self.wait_until(token, id, "finished", |m| {
            matches!(m["status"].as_str(), Some("sent" | "failed"))
        })
        .await
    }

    /// Polls `GET /api/messages/{id}` until its status is `status` (10 s at most).
    pub async fn wait_for_status(&self, token: &str, id: &str, status: &str) -> Value {
        self.wait_until(token, id, status, |m| m["status"] == status)
            .await
    }

    /// Polls `GET /api/messages/{id}` until `done` holds for it (10 s at most; `what` names
    /// the awaited state in the failure).
    pub async fn wait_until(
        &self,
        token: &str,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let body: Value = self
                .get_as(token, &format!("/api/messages/{id}"))
                .await
                .json()
                .await
                .expect("json");
            if done(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "message {id} never became {what}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// POSTs a plaintext server push, signed with the test token now and a fresh nonce, as
    /// WeChat sends each new push, and returns the response.
    pub async fn push_plain(&self, xml: &str) -> reqwest::Response {
        self.post_push(&plain_push_query(now(), &fresh_nonce()), xml)
            .await
    }

    /// POSTs `body` to `/api/wechat/events?{query}` (a query from [`plain_push_query`], to
    /// replay or age one).
    pub async fn post_push(&self, query: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/wechat/events?{query}")))
            .header("content-type", "text/xml")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// POSTs a safe-mode push: `xml` encrypted with `crypt`, signed with the test token.
    pub async fn push_encrypted(
        &self,
        crypt: &wxbind::wechat::crypto::MsgCrypt,
        xml: &str,
    ) -> reqwest::Response {
        let (timestamp, nonce) = (now().to_string(), fresh_nonce());
        let (timestamp, nonce) = (timestamp.as_str(), nonce.as_str());
        let sealed = crypt.encrypt(xml);
        let msg_signature =
            wxbind::wechat::crypto::signature(&[TEST_PUSH_TOKEN, timestamp, nonce, &sealed]);
        let signature = wxbind::wechat::crypto::signature(&[TEST_PUSH_TOKEN, timestamp, nonce]);
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>"
        );
        self.http
            .post(self.url(&format!(
                "/api/wechat/events?signature={signature}&timestamp={timestamp}&nonce={nonce}\
                 &openid=x&encrypt_type=aes&msg_signature={msg_signature}"
            )))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// Waits until `/api/health` says the template list is synced (10 s at most): the app
    /// syncs right after it starts, and checks messages against the list from then on.
    pub async fn wait_templates_synced(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let health: Value = self.get("/api/health").await.json().await.expect("json");
            if health["templates_synced"] == true {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the template list was never synced: {health}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `POST /api/templates/sync` with a bearer token.
    pub async fn sync_templates(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/templates/sync"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `GET /api/templates` as JSON.
    pub async fn templates(&self, token: &str) -> Vec<Value> {
        let resp = self.get_as(token, "/api/templates").await;
        assert_eq!(resp.status(), 200, "GET /api/templates");
        resp.json().await.expect("json")
    }

    /// Runs a query against the app's database.
    pub fn query<T>(&self, f: impl FnOnce(&mut PgConnection) -> QueryResult<T>) -> T {
        f(&mut self.db.conn()).expect("query")
    }
}

/// This machine's clock, in seconds since the epoch (what the app checks push timestamps
/// against).
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A nonce no other push in the test has, like WeChat's (digits).
pub fn fresh_nonce() -> String {
    (uuid::Uuid::new_v4().as_u128() % 10_000_000_000).to_string()
}

/// The query WeChat adds to a plaintext push signed with the test token at `timestamp`.
pub fn plain_push_query(timestamp: i64, nonce: &str) -> String {
    let timestamp = timestamp.to_string();
    let signature = wxbind::wechat::crypto::signature(&[TEST_PUSH_TOKEN, &timestamp, nonce]);
    format!("signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=x")
}

/// A push in WeChat's documented shape. `extra` is appended inside `<xml>`.
pub fn push_xml(from: &str, create_time: i64, event: &str, extra: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[{event}]]></Event>{extra}</xml>"
    )
}

/// A valid message body for the caller with the default template.
pub fn simple_message() -> Value {
    json!({"data": {"keyword1": {"value": "hello"}}})
}

/// The `state` parameter of an authorize URL.
pub fn state_of(url: &str) -> String {
    Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state")
}

/// Asserts status and error code of an API error response.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "status (body {text})");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body, got {text}"));
    assert_eq!(body["error"]["code"], code, "code (body {text})");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message in {text}"
    );
}

/// One sample line of a Prometheus exposition: name, labels in order, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Parses the sample lines of an exposition (comments skipped). Label values here never hold
/// `,`, `"` or `}`, which keeps this simple.
pub fn metric_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// The value of the series `name` with exactly `labels`, if it is there.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

impl TestApp {
    /// `GET /api/metrics`: the text and its samples. The recorder is process-wide, shared by
    /// every test app in the process: compare a counter with an earlier scrape, not with 0.
    pub async fn scrape_metrics(&self) -> (String, Vec<Sample>) {
        let resp = self.get("/api/metrics").await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain; version=0.0.4")
        );
        let text = resp.text().await.expect("body");
        let parsed = metric_samples(&text);
        (text, parsed)
    }
}
