//! Runtime configuration: read from the environment (and `.env`) once at start, validated into
//! typed values. A bad value stops start-up with one line per problem naming the variable.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use crate::wechat::{PushConfig, PushMode, WechatConfig};
/// The type of [`HttpConfig::trusted_proxies`].
pub use ipnet::IpNet;

/// The whole validated configuration of one wxbind process, in sections.
#[derive(Clone, Debug)]
pub struct Config {
    /// The HTTP server and the URLs it is known by.
    pub http: HttpConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Access tokens and browser sessions.
    pub auth: AuthConfig,
    /// The official account (real, or the sandbox's); `None` means WeChat-dependent routes
    /// answer `wechat_not_configured`.
    pub wechat: Option<WechatConfig>,
    /// How queued messages are delivered.
    pub delivery: DeliveryConfig,
    /// How the official account's templates are kept in sync.
    pub templates: TemplatesConfig,
    /// Sandbox mode.
    pub sandbox: SandboxConfig,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
}

/// How webhook events are delivered.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Whether endpoints may be on private, loopback or link-local addresses
    /// (`WXBIND_WEBHOOK_ALLOW_PRIVATE=1`, for tests and local setups).
    pub allow_private: bool,
    /// The first retry's delay; each next one doubles, up to an hour
    /// (`WXBIND_WEBHOOK_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// How long an event is retried before it ends `failed` (`WXBIND_WEBHOOK_RETRY_HOURS`).
    pub retry_window: Duration,
    /// How long one delivery may take (`WXBIND_WEBHOOK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How often the worker looks for due deliveries (`WXBIND_WEBHOOK_POLL_MS`).
    pub poll_interval: Duration,
    /// Deliveries in flight at once per process.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_base: Duration::from_secs(10),
            retry_window: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            concurrency: 16,
        }
    }
}

/// The HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Address the server binds.
    pub listen: SocketAddr,
    /// Public base URL; the OAuth `redirect_uri` is this plus `/api/callback`.
    pub public_url: Url,
    /// Worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Origins allowed to call the API from a browser (exact `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    /// SPA page the OAuth callback redirects to; `None` renders a small HTML page instead.
    pub bind_result_url: Option<Url>,
    /// Hosts a non-admin's message may link to (lowercase).
    pub url_hosts: Vec<String>,
    /// Mini programs a non-admin's message may open (appids); none by default, since a mini
    /// program page is a link too and nothing about the service says which ones are the site's.
    pub miniprogram_appids: Vec<String>,
    /// Bearer token `/api/metrics` requires; `None` leaves it open (bind it to a private
    /// network then).
    pub metrics_token: Option<SecretString>,
    /// Proxies whose `X-Forwarded-For` entry names the client (`client_ip`); none by default,
    /// so the TCP peer is the client.
    pub trusted_proxies: Vec<IpNet>,
}

/// PostgreSQL.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// Connection URL (may carry a password, hence secret).
    pub url: SecretString,
    /// Maximum connections in the pool.
    pub pool_size: u32,
}

/// Access tokens and browser refresh sessions.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 key for access tokens (and, derived, the session cookie's key).
    pub jwt_secret: SecretString,
    /// True when no `JWT_SECRET` was given and a random per-process key is in use.
    pub jwt_secret_generated: bool,
    /// The key before the last rotation: tokens and session cookies it sealed stay valid.
    pub jwt_secret_previous: Option<SecretString>,
    /// Lifetime of an issued JWT.
    pub jwt_ttl: Duration,
    /// Lifetime of a browser refresh session without use.
    pub session_ttl: Duration,
    /// Longest a refresh session lasts however often it is used.
    pub session_max: Duration,
    /// SameSite of the session cookie.
    pub cookie_same_site: actix_web::cookie::SameSite,
    /// How many password checks run and wait at once.
    pub verifier: VerifierConfig,
}

/// Bounds of password verification (see `verifier`). Not read from the environment: the
/// defaults follow the machine, and tests set tiny ones.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Checks computed at once, each on a thread of its own (about 19 MiB each).
    pub threads: usize,
    /// Checks that may wait for a thread; a login beyond `threads + queue` is refused with 503.
    pub queue: usize,
    /// Longest a login waits for its check to start; past it, 503 without hashing.
    pub max_wait: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        // One check per core: more would only make each slower and use more memory.
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            threads,
            queue: 4 * threads,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Sandbox mode: no real credentials, WeChat simulated under `/sandbox`.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    /// Whether the simulator runs (never together with real credentials).
    pub enabled: bool,
    /// Password of the sandbox demo accounts; random per start when unset.
    pub demo_password: Option<SecretString>,
}

/// Tuning of the delivery worker.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Sends in flight at once per process.
    pub concurrency: usize,
    /// Attempts before a message with transient failures ends `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt (with jitter).
    pub retry_base: Duration,
    /// Upper bound of one retry delay.
    pub retry_max: Duration,
    /// How long a claim is held before another worker may take the message again.
    pub lease: Duration,
    /// How often the worker looks for due messages when nobody woke it.
    pub poll_interval: Duration,
    /// How long a stopping worker lets sends in flight finish before handing their leases
    /// back (`WXBIND_SHUTDOWN_SECONDS`).
    pub shutdown: Duration,
    /// How many nice steps (0-19) the worker's thread runs below the rest of the process:
    /// under CPU contention the kernel favours the threads that answer requests; with CPU to
    /// spare it changes nothing.
    pub nice: u8,
    /// How often messages under review are reconciled with WeChat's blocked list
    /// (`WXBIND_REVIEW_SECONDS`).
    pub review_interval: Duration,
    /// How long after its send a message under review that WeChat has not listed as blocked
    /// counts as passed (`WXBIND_REVIEW_SETTLE_SECONDS`).
    pub review_settle: Duration,
    /// How often a worker asks WeChat, while sending is paused for the quota, whether the quota
    /// is available again (cleared elsewhere, or the day turned) (`WXBIND_QUOTA_CHECK_SECONDS`).
    pub quota_check: Duration,
    /// Messages a non-admin user may have accepted per clock minute
    /// (`WXBIND_USER_SENDS_PER_MINUTE`).
    pub user_sends_per_minute: u32,
    /// Messages one sender may have waiting for their first attempt
    /// (`WXBIND_MAX_QUEUED_PER_SENDER`).
    pub max_queued_per_sender: i64,
    /// How long sent and failed messages are kept (`WXBIND_MESSAGE_RETENTION_DAYS`).
    pub message_retention: chrono::TimeDelta,
    /// Quiet hours, the account's time zone and the daily cap per user.
    pub schedule: crate::schedule::Schedule,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            shutdown: Duration::from_secs(20),
            nice: 10,
            review_interval: Duration::from_secs(600),
            review_settle: Duration::from_secs(3600),
            quota_check: Duration::from_secs(60),
            user_sends_per_minute: 30,
            max_queued_per_sender: 100_000,
            message_retention: chrono::TimeDelta::days(90),
            schedule: crate::schedule::Schedule::default(),
        }
    }
}

/// The template registry: WeChat's template list, synced at start and then on a timer.
#[derive(Clone, Debug)]
pub struct TemplatesConfig {
    /// How long after one sync the next one runs (`WXBIND_TEMPLATE_SYNC_SECONDS`).
    pub sync_interval: Duration,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_secs(3600),
        }
    }
}

/// Every problem found in the environment, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// App id of the simulated official account.
pub const SANDBOX_APP_ID: &str = "wxsandbox0000000001";
/// Default template of sandbox mode.
pub const SANDBOX_TEMPLATE_ID: &str = "SANDBOX_TEMPLATE";

/// Default database: created on first start if it does not exist.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/wxbind";
const MIN_JWT_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the variables it fails to set.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|key| std::env::var(key).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Builds the configuration from any key lookup (the environment, or a map in tests).
    /// Every section is parsed even when an earlier one failed, so one start reports every
    /// problem.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut p = Parser {
            get: &get,
            errors: &mut errors,
        };
        let database = database_section(&mut p);
        let http = http_section(&mut p);
        let credentials = credentials(&mut p);
        let auth = auth_section(&mut p, &http, credentials.is_some());
        let sandbox = sandbox_section(&mut p, credentials.is_some());
        let wechat = wechat_section(&mut p, credentials, &http.public_url, sandbox.enabled);
        let delivery = delivery_section(&mut p);
        let webhooks = webhook_section(&mut p);
        let templates = TemplatesConfig {
            sync_interval: p
                .seconds("WXBIND_TEMPLATE_SYNC_SECONDS")
                .unwrap_or(TemplatesConfig::default().sync_interval),
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Self {
            http,
            database,
            auth,
            wechat,
            delivery,
            templates,
            sandbox,
            webhooks,
        })
    }

    /// Switches to sandbox mode with the sandbox's defaults: simulated credentials, a fresh
    /// push token, the sandbox template, and WeChat's bases on this service's own `/sandbox`
    /// (from `http.public_url`, so set that first). Whatever WeChat section there was is
    /// replaced. For tests and tools that build a `Config` by hand; the environment's
    /// `WXBIND_SANDBOX` goes through [`Config::from_lookup`], which keeps explicit settings.
    pub fn enable_sandbox(&mut self) {
        self.sandbox.enabled = true;
        self.wechat = Some(WechatConfig::sandbox(
            &self.http.public_url,
            Bases::default(),
            None,
            None,
        ));
    }

    /// `redirect_uri` of the OAuth flow.
    pub fn callback_url(&self) -> String {
        format!(
            "{}/api/callback",
            self.http.public_url.as_str().trim_end_matches('/')
        )
    }

    /// The database URL, for the pool and migrations only.
    pub fn database_url(&self) -> &str {
        self.database.url.expose_secret()
    }
}

/// Base URLs given explicitly; the rest come from the mode.
#[derive(Default)]
struct Bases {
    api: Option<Url>,
    oauth: Option<Url>,
    mp: Option<Url>,
}

impl WechatConfig {
    /// The sandbox's account: simulated credentials, a push token of its own (the simulator
    /// signs its pushes with it) and WeChat's bases on `public_url/sandbox` unless given.
    fn sandbox(
        public_url: &Url,
        bases: Bases,
        push: Option<PushConfig>,
        default_template_id: Option<String>,
    ) -> Self {
        let own = format!("{}/sandbox", public_url.as_str().trim_end_matches('/'));
        let own = Url::parse(&own).unwrap_or_else(|_| public_url.clone());
        Self {
            app_id: SANDBOX_APP_ID.into(),
            app_secret: SecretString::from(crate::domain::random_alphanumeric(32)),
            api_base: bases.api.unwrap_or_else(|| own.clone()),
            oauth_base: bases.oauth.unwrap_or_else(|| own.clone()),
            mp_base: bases.mp.unwrap_or(own),
            timeout: DEFAULT_WECHAT_TIMEOUT,
            default_template_id: default_template_id.or_else(|| Some(SANDBOX_TEMPLATE_ID.into())),
            push: push.or_else(|| {
                Some(PushConfig {
                    token: SecretString::from(crate::domain::random_alphanumeric(32)),
                    aes_key: None,
                    aes_key_previous: None,
                    compat: false,
                })
            }),
        }
    }
}

const DEFAULT_WECHAT_TIMEOUT: Duration = Duration::from_secs(10);

fn database_section<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> DatabaseConfig {
    DatabaseConfig {
        url: p
            .string("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.into())
            .into(),
        pool_size: p.parsed_positive("WXBIND_DB_POOL_SIZE").unwrap_or(16),
    }
}

fn http_section<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> HttpConfig {
    let listen = p
        .parsed("WXBIND_LISTEN", "an address like 127.0.0.1:8080")
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let public_url = p
        .url("WXBIND_PUBLIC_URL")
        .unwrap_or_else(|| url_or_panic("http://127.0.0.1:8080"));
    let mut cors_origins = Vec::new();
    for origin in p.list("WXBIND_CORS_ORIGINS").unwrap_or_default() {
        let origin = origin.trim_end_matches('/');
        match Url::parse(origin) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none() =>
            {
                cors_origins.push(origin.to_owned());
            }
            _ => p.fail(
                "WXBIND_CORS_ORIGINS",
                &format!(
                    "must list exact origins like https://app.example.com (never *), got {origin:?}"
                ),
            ),
        }
    }
    let bind_result_url = p.url("BIND_RESULT_URL");
    let url_hosts = match p.list("WXBIND_URL_HOSTS") {
        Some(hosts) => {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            if let Some(bad) = hosts
                .iter()
                .find(|h| url::Host::parse(h).is_err() || h.contains('/'))
            {
                p.fail(
                    "WXBIND_URL_HOSTS",
                    &format!("must list host names like app.example.com, got {bad:?}"),
                );
            }
            hosts
        }
        None => [Some(&public_url), bind_result_url.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .fold(Vec::new(), |mut hosts, h| {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
                hosts
            }),
    };
    let miniprogram_appids = p.list("WXBIND_MINIPROGRAM_APPIDS").unwrap_or_default();
    if let Some(bad) = miniprogram_appids
        .iter()
        .find(|a| !crate::domain::is_wechat_appid(a))
    {
        p.fail(
            "WXBIND_MINIPROGRAM_APPIDS",
            &format!("must list mini program appids like wx1234567890abcdef, got {bad:?}"),
        );
    }
    let metrics_token = p.string("WXBIND_METRICS_TOKEN");
    if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
        p.fail("WXBIND_METRICS_TOKEN", "must be at least 16 characters");
    }
    HttpConfig {
        listen,
        public_url,
        workers: p.parsed_positive("WXBIND_HTTP_WORKERS"),
        cors_origins,
        bind_result_url,
        url_hosts,
        miniprogram_appids,
        metrics_token: metrics_token.map(SecretString::from),
        trusted_proxies: trusted_proxies(p),
    }
}

/// `WXBIND_TRUSTED_PROXIES`: comma-separated addresses and CIDR ranges.
fn trusted_proxies<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> Vec<IpNet> {
    const KEY: &str = "WXBIND_TRUSTED_PROXIES";
    let mut proxies = Vec::new();
    for entry in p.string(KEY).unwrap_or_default().split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        // A mapped IPv4 address is matched as the IPv4 address it is (as peers are).
        let parsed = entry.parse::<IpNet>().map(|n| n.trunc()).or_else(|_| {
            entry
                .parse::<IpAddr>()
                .map(|ip| IpNet::from(ip.to_canonical()))
        });
        match parsed {
            Ok(net) if net.prefix_len() == 0 => p.fail(
                KEY,
                &format!(
                    "must not trust every address ({entry}): any client could then choose the address its logins are counted under"
                ),
            ),
            Ok(net) => proxies.push(net),
            Err(_) => p.fail(
                KEY,
                &format!(
                    "must list IP addresses or CIDR ranges like 10.0.0.0/8, separated by commas, got {entry:?}"
                ),
            ),
        }
    }
    proxies
}

/// `WECHAT_APP_ID` and `WECHAT_APP_SECRET`: both or neither.
fn credentials<F: Fn(&str) -> Option<String>>(
    p: &mut Parser<'_, F>,
) -> Option<(String, SecretString)> {
    let credentials = match (p.string("WECHAT_APP_ID"), p.string("WECHAT_APP_SECRET")) {
        (Some(app_id), Some(secret)) => Some((app_id, SecretString::from(secret))),
        (Some(_), None) => {
            p.fail("WECHAT_APP_SECRET", "is required when WECHAT_APP_ID is set");
            None
        }
        (None, Some(_)) => {
            p.fail("WECHAT_APP_ID", "is required when WECHAT_APP_SECRET is set");
            None
        }
        (None, None) => None,
    };
    if credentials
        .as_ref()
        .is_some_and(|(app_id, _)| !app_id.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        p.fail(
            "WECHAT_APP_ID",
            "must be letters and digits (like wx1234567890abcdef)",
        );
    }
    credentials
}

fn auth_section<F: Fn(&str) -> Option<String>>(
    p: &mut Parser<'_, F>,
    http: &HttpConfig,
    real_credentials: bool,
) -> AuthConfig {
    let (jwt_secret, jwt_secret_generated) = match p.string("JWT_SECRET") {
        Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
            p.fail(
                "JWT_SECRET",
                &format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            );
            (SecretString::from(String::new()), false)
        }
        Some(s) => (SecretString::from(s), false),
        None if real_credentials => {
            p.fail(
                "JWT_SECRET",
                "is required when WECHAT_APP_ID is set (at least 32 random bytes)",
            );
            (SecretString::from(String::new()), false)
        }
        None => (SecretString::from(random_secret()), true),
    };
    let jwt_secret_previous = p.string("JWT_SECRET_PREVIOUS");
    if jwt_secret_previous
        .as_ref()
        .is_some_and(|s| s.len() < MIN_JWT_SECRET_BYTES)
    {
        p.fail(
            "JWT_SECRET_PREVIOUS",
            &format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
        );
    }
    let cookie_same_site = match p.string("WXBIND_COOKIE_SAMESITE") {
        None => actix_web::cookie::SameSite::Lax,
        Some(raw) => parse_same_site(&raw).unwrap_or_else(|| {
            p.fail("WXBIND_COOKIE_SAMESITE", "must be lax, strict or none");
            actix_web::cookie::SameSite::Lax
        }),
    };
    if cookie_same_site == actix_web::cookie::SameSite::None && http.public_url.scheme() != "https"
    {
        p.fail(
            "WXBIND_COOKIE_SAMESITE",
            "none needs an https WXBIND_PUBLIC_URL (browsers require Secure cookies)",
        );
    }
    AuthConfig {
        jwt_secret,
        jwt_secret_generated,
        jwt_secret_previous: jwt_secret_previous.map(SecretString::from),
        jwt_ttl: p
            .seconds("JWT_TTL_SECONDS")
            .unwrap_or(Duration::from_secs(15 * 60)),
        session_ttl: p
            .seconds("WXBIND_SESSION_TTL_SECONDS")
            .unwrap_or(Duration::from_secs(14 * 24 * 3600)),
        session_max: p
            .seconds("WXBIND_SESSION_MAX_SECONDS")
            .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
        cookie_same_site,
        verifier: VerifierConfig::default(),
    }
}

/// Parses `WXBIND_COOKIE_SAMESITE`.
fn parse_same_site(raw: &str) -> Option<actix_web::cookie::SameSite> {
    use actix_web::cookie::SameSite;
    match raw.to_ascii_lowercase().as_str() {
        "lax" => Some(SameSite::Lax),
        "strict" => Some(SameSite::Strict),
        "none" => Some(SameSite::None),
        _ => None,
    }
}

fn sandbox_section<F: Fn(&str) -> Option<String>>(
    p: &mut Parser<'_, F>,
    real_credentials: bool,
) -> SandboxConfig {
    let enabled = match p.string("WXBIND_SANDBOX").as_deref() {
        // A secret without an app id is a mistake reported elsewhere, not a wish for the sandbox.
        None | Some("auto") => !real_credentials && !p.has("WECHAT_APP_SECRET"),
        Some("off" | "0" | "false") => false,
        Some("on" | "1" | "true") => {
            if real_credentials {
                p.fail(
                    "WXBIND_SANDBOX",
                    "cannot be on while WECHAT_APP_ID is set: the sandbox never runs with real credentials",
                );
            }
            true
        }
        Some(other) => {
            p.fail(
                "WXBIND_SANDBOX",
                &format!("must be auto, on or off, got {other:?}"),
            );
            false
        }
    };
    let demo_password = p.string("WXBIND_DEMO_PASSWORD");
    if demo_password
        .as_ref()
        .is_some_and(|pw| pw.chars().count() < 8)
    {
        p.fail("WXBIND_DEMO_PASSWORD", "must be at least 8 characters");
    }
    SandboxConfig {
        enabled,
        demo_password: demo_password.map(SecretString::from),
    }
}

fn wechat_section<F: Fn(&str) -> Option<String>>(
    p: &mut Parser<'_, F>,
    credentials: Option<(String, SecretString)>,
    public_url: &Url,
    sandbox: bool,
) -> Option<WechatConfig> {
    let bases = Bases {
        api: p.url("WECHAT_API_BASE"),
        oauth: p.url("WECHAT_OAUTH_BASE"),
        mp: p.url("WECHAT_MP_BASE"),
    };
    let timeout = p.millis("WECHAT_TIMEOUT_MS");
    let default_template_id = p.string("WECHAT_TEMPLATE_ID");
    if default_template_id
        .as_deref()
        .is_some_and(|t| crate::domain::TemplateId::parse(t).is_err())
    {
        p.fail("WECHAT_TEMPLATE_ID", "is not a valid template id");
    }
    let push = push_settings(p);
    if sandbox {
        let mut config = WechatConfig::sandbox(public_url, bases, push, default_template_id);
        config.timeout = timeout.unwrap_or(DEFAULT_WECHAT_TIMEOUT);
        return Some(config);
    }
    let Some((app_id, app_secret)) = credentials else {
        if push.is_some() && !p.has("WECHAT_APP_ID") && !p.has("WECHAT_APP_SECRET") {
            p.fail(
                "WECHAT_TOKEN",
                "is set but no official account is: set WECHAT_APP_ID and WECHAT_APP_SECRET, or leave WXBIND_SANDBOX at auto",
            );
        }
        return None;
    };
    Some(WechatConfig {
        app_id,
        app_secret,
        api_base: bases
            .api
            .unwrap_or_else(|| url_or_panic("https://api.weixin.qq.com")),
        oauth_base: bases
            .oauth
            .unwrap_or_else(|| url_or_panic("https://open.weixin.qq.com")),
        mp_base: bases
            .mp
            .unwrap_or_else(|| url_or_panic("https://mp.weixin.qq.com")),
        timeout: timeout.unwrap_or(DEFAULT_WECHAT_TIMEOUT),
        default_template_id,
        push,
    })
}

/// `WECHAT_TOKEN`, the EncodingAESKeys of safe mode and `WECHAT_PUSH_MODE`.
fn push_settings<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> Option<PushConfig> {
    let token = p.string("WECHAT_TOKEN");
    if token.as_ref().is_some_and(|t| {
        t.len() < 3 || t.len() > 32 || !t.chars().all(|c| c.is_ascii_alphanumeric())
    }) {
        p.fail(
            "WECHAT_TOKEN",
            "must be 3-32 letters and digits (as WeChat requires)",
        );
    }
    let aes_key = p.string("WECHAT_ENCODING_AES_KEY");
    let aes_key_previous = p.string("WECHAT_ENCODING_AES_KEY_PREVIOUS");
    for (key, value) in [
        ("WECHAT_ENCODING_AES_KEY", &aes_key),
        ("WECHAT_ENCODING_AES_KEY_PREVIOUS", &aes_key_previous),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| crate::wechat::crypto::decode_key(v).is_err())
        {
            p.fail(
                key,
                "must be 43 characters of base64 (the EncodingAESKey WeChat shows)",
            );
        }
    }
    if aes_key_previous.is_some() && aes_key.is_none() {
        p.fail(
            "WECHAT_ENCODING_AES_KEY_PREVIOUS",
            "needs WECHAT_ENCODING_AES_KEY as well",
        );
    }
    if token.is_none() && aes_key.is_some() {
        p.fail(
            "WECHAT_TOKEN",
            "is required when WECHAT_ENCODING_AES_KEY is set",
        );
    }
    let compat = push_mode(p, aes_key.is_some());
    token.map(|token| PushConfig {
        token: token.into(),
        aes_key: aes_key.map(SecretString::from),
        aes_key_previous: aes_key_previous.map(SecretString::from),
        compat,
    })
}

/// `WECHAT_PUSH_MODE`: whether plaintext pushes are still accepted next to safe-mode ones.
/// A mode that contradicts the key is refused rather than guessed at: `safe` or `compat`
/// without a key would silently run in plaintext, and `plaintext` with a key would be a
/// downgrade nobody asked for in so many words.
fn push_mode<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>, has_key: bool) -> bool {
    let Some(raw) = p.string("WECHAT_PUSH_MODE") else {
        return false;
    };
    match (raw.to_ascii_lowercase().as_str(), has_key) {
        ("safe", true) => false,
        ("compat", true) => true,
        ("plaintext", false) => false,
        ("safe" | "compat", false) => {
            p.fail(
                "WECHAT_PUSH_MODE",
                &format!(
                    "is {raw} but WECHAT_ENCODING_AES_KEY is unset: safe and compat mode need the EncodingAESKey WeChat shows (without one, pushes are plaintext)"
                ),
            );
            false
        }
        ("plaintext", true) => {
            p.fail(
                "WECHAT_PUSH_MODE",
                "is plaintext but WECHAT_ENCODING_AES_KEY is set: with a key use safe (the default) or, while switching, compat; unset the key for plaintext mode",
            );
            false
        }
        _ => {
            p.fail(
                "WECHAT_PUSH_MODE",
                &format!("must be safe or compat (or plaintext without a key), got {raw:?}"),
            );
            false
        }
    }
}

fn delivery_section<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> DeliveryConfig {
    let defaults = DeliveryConfig::default();
    DeliveryConfig {
        concurrency: p
            .parsed_positive("WXBIND_DELIVERY_CONCURRENCY")
            .unwrap_or(defaults.concurrency),
        max_attempts: p
            .parsed_positive("WXBIND_MAX_ATTEMPTS")
            .unwrap_or(defaults.max_attempts),
        retry_base: p
            .millis("WXBIND_RETRY_BASE_MS")
            .unwrap_or(defaults.retry_base),
        retry_max: p
            .millis("WXBIND_RETRY_MAX_MS")
            .unwrap_or(defaults.retry_max),
        lease: p.seconds("WXBIND_LEASE_SECONDS").unwrap_or(defaults.lease),
        poll_interval: p
            .millis("WXBIND_POLL_INTERVAL_MS")
            .unwrap_or(defaults.poll_interval),
        shutdown: p
            .seconds("WXBIND_SHUTDOWN_SECONDS")
            .unwrap_or(defaults.shutdown),
        nice: match p.parsed::<u8>("WXBIND_DELIVERY_NICE", "a whole number from 0 to 19") {
            Some(n) if n > 19 => {
                p.fail(
                    "WXBIND_DELIVERY_NICE",
                    "must be a whole number from 0 to 19",
                );
                defaults.nice
            }
            Some(n) => n,
            None => defaults.nice,
        },
        review_interval: p
            .seconds("WXBIND_REVIEW_SECONDS")
            .unwrap_or(defaults.review_interval),
        review_settle: p
            .seconds("WXBIND_REVIEW_SETTLE_SECONDS")
            .unwrap_or(defaults.review_settle),
        quota_check: p
            .seconds("WXBIND_QUOTA_CHECK_SECONDS")
            .unwrap_or(defaults.quota_check),
        user_sends_per_minute: p
            .parsed_positive("WXBIND_USER_SENDS_PER_MINUTE")
            .unwrap_or(defaults.user_sends_per_minute),
        max_queued_per_sender: p
            .parsed_positive("WXBIND_MAX_QUEUED_PER_SENDER")
            .unwrap_or(defaults.max_queued_per_sender),
        message_retention: p
            .parsed_positive::<i64>("WXBIND_MESSAGE_RETENTION_DAYS")
            .map_or(defaults.message_retention, chrono::TimeDelta::days),
        schedule: schedule_section(p),
    }
}

fn schedule_section<F: Fn(&str) -> Option<String>>(
    p: &mut Parser<'_, F>,
) -> crate::schedule::Schedule {
    use crate::schedule::{QuietHours, Schedule};
    let defaults = Schedule::default();
    let quiet_hours = p
        .string("WXBIND_QUIET_HOURS")
        .filter(|raw| !raw.is_empty())
        .and_then(|raw| match QuietHours::parse(&raw) {
            Ok(q) => Some(q),
            Err(e) => {
                p.fail("WXBIND_QUIET_HOURS", &e);
                None
            }
        });
    let timezone = match p.string("WXBIND_TIMEZONE") {
        None => defaults.timezone,
        Some(raw) => raw.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            p.fail(
                "WXBIND_TIMEZONE",
                &format!("must be an IANA time zone such as Asia/Shanghai, got {raw:?}"),
            );
            defaults.timezone
        }),
    };
    Schedule {
        quiet_hours,
        timezone,
        max_per_user_per_day: p.parsed_positive("WXBIND_MAX_MESSAGES_PER_USER_PER_DAY"),
    }
}

fn webhook_section<F: Fn(&str) -> Option<String>>(p: &mut Parser<'_, F>) -> WebhookConfig {
    let defaults = WebhookConfig::default();
    let allow_private = match p.string("WXBIND_WEBHOOK_ALLOW_PRIVATE").as_deref() {
        None | Some("" | "0" | "false" | "off") => false,
        Some("1" | "true" | "on") => true,
        Some(other) => {
            p.fail(
                "WXBIND_WEBHOOK_ALLOW_PRIVATE",
                &format!("must be 1 or 0, got {other:?}"),
            );
            false
        }
    };
    WebhookConfig {
        allow_private,
        retry_base: p
            .millis("WXBIND_WEBHOOK_RETRY_BASE_MS")
            .unwrap_or(defaults.retry_base),
        retry_window: p
            .parsed_positive::<u64>("WXBIND_WEBHOOK_RETRY_HOURS")
            .map_or(defaults.retry_window, |h| Duration::from_secs(h * 3600)),
        timeout: p
            .millis("WXBIND_WEBHOOK_TIMEOUT_MS")
            .unwrap_or(defaults.timeout),
        poll_interval: p
            .millis("WXBIND_WEBHOOK_POLL_MS")
            .unwrap_or(defaults.poll_interval),
        concurrency: defaults.concurrency,
    }
}

/// A 48-character alphanumeric secret for a process that was given none.
fn random_secret() -> String {
    crate::domain::random_alphanumeric(48)
}

/// Parses one of this module's literal defaults.
fn url_or_panic(s: &str) -> Url {
    #[expect(clippy::unwrap_used, reason = "literal, checked by the config tests")]
    Url::parse(s).unwrap()
}

struct Parser<'a, F: Fn(&str) -> Option<String>> {
    get: &'a F,
    errors: &'a mut Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Parser<'_, F> {
    fn fail(&mut self, key: &str, what: &str) {
        self.errors.push(format!("{key} {what}"));
    }

    fn has(&self, key: &str) -> bool {
        (self.get)(key).is_some()
    }

    /// A comma-separated list, items trimmed, empty items dropped; `None` when unset.
    fn list(&mut self, key: &str) -> Option<Vec<String>> {
        self.string(key).map(|raw| {
            raw.split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        })
    }

    fn string(&mut self, key: &str) -> Option<String> {
        (self.get)(key).map(|v| v.trim().to_owned())
    }

    fn parsed<T: std::str::FromStr>(&mut self, key: &str, expected: &str) -> Option<T> {
        let raw = self.string(key)?;
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail(key, &format!("must be {expected}, got {raw:?}"));
                None
            }
        }
    }

    fn parsed_positive<T: std::str::FromStr + PartialOrd + Default>(
        &mut self,
        key: &str,
    ) -> Option<T> {
        let v: T = self.parsed(key, "a positive whole number")?;
        if v <= T::default() {
            self.fail(key, "must be a positive whole number");
            return None;
        }
        Some(v)
    }

    fn seconds(&mut self, key: &str) -> Option<Duration> {
        self.parsed_positive::<u64>(key).map(Duration::from_secs)
    }

    fn millis(&mut self, key: &str) -> Option<Duration> {
        self.parsed_positive::<u64>(key).map(Duration::from_millis)
    }

    fn url(&mut self, key: &str) -> Option<Url> {
        let raw = self.string(key)?;
        match Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.fail(key, &format!("must be an http(s) URL, got {raw:?}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).expect("empty environment is valid");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.callback_url(), "http://127.0.0.1:8080/api/callback");
        assert!(c.sandbox.enabled, "no credentials means sandbox mode");
        let w = c.wechat.as_ref().expect("the sandbox's account");
        assert_eq!(w.api_base.as_str(), "http://127.0.0.1:8080/sandbox");
        assert_eq!(w.oauth_base.as_str(), "http://127.0.0.1:8080/sandbox");
        assert!(c.auth.jwt_secret_generated);
        assert!(c.auth.jwt_secret.expose_secret().len() >= 32);
        assert_eq!(c.auth.jwt_ttl, Duration::from_secs(900));
        assert_eq!(c.auth.session_ttl, Duration::from_secs(14 * 24 * 3600));
        assert!(c.http.cors_origins.is_empty());
        assert_eq!(c.templates.sync_interval, Duration::from_secs(3600));
        assert!(c.http.trusted_proxies.is_empty());
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = config(&[(
            "WXBIND_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::ffff:198.51.100.1,203.0.113.9/24",
        )])
        .expect("valid");
        let shown: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "10.0.0.0/8",
                "192.0.2.7/32",
                "2001:db8::/32",
                "198.51.100.1/32",
                "203.0.113.0/24"
            ]
        );
        let err = config(&[(
            "WXBIND_TRUSTED_PROXIES",
            "10.0.0.0/8, proxy.example.com, 10.0.0.0/33",
        )])
        .expect_err("not addresses");
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(
            err.0[0].starts_with("WXBIND_TRUSTED_PROXIES must list IP addresses"),
            "{err}"
        );
        for everyone in ["0.0.0.0/0", "::/0"] {
            let err = config(&[("WXBIND_TRUSTED_PROXIES", everyone)]).expect_err(everyone);
            assert!(
                err.to_string().contains("must not trust every address"),
                "{err}"
            );
        }
    }

    #[test]
    fn real_credentials_use_wechats_hosts_and_never_the_sandbox() {
        let c = config(&[
            ("WECHAT_APP_ID", "wx123"),
            ("WECHAT_APP_SECRET", "s"),
            ("JWT_SECRET", "jwt-secret-value-that-is-long-enough-32"),
        ])
        .expect("valid");
        assert!(!c.sandbox.enabled);
        let w = c.wechat.as_ref().expect("configured");
        assert_eq!(w.api_base.as_str(), "https://api.weixin.qq.com/");
        assert_eq!(w.oauth_base.as_str(), "https://open.weixin.qq.com/");
        let err = config(&[
            ("WECHAT_APP_ID", "wx123"),
            ("WECHAT_APP_SECRET", "s"),
            ("JWT_SECRET", "jwt-secret-value-that-is-long-enough-32"),
            ("WXBIND_SANDBOX", "on"),
        ])
        .expect_err("sandbox with real credentials");
        assert!(err.to_string().contains("WXBIND_SANDBOX"), "{err}");
    }

    #[test]
    fn push_settings_are_validated() {
        let err = config(&[
            ("WECHAT_TOKEN", "x"),
            ("WECHAT_ENCODING_AES_KEY", "short"),
            (
                "WECHAT_ENCODING_AES_KEY_PREVIOUS",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            ),
        ])
        .expect_err("invalid");
        assert!(err.0.iter().any(|l| l.starts_with("WECHAT_TOKEN")), "{err}");
        assert!(
            err.0
                .iter()
                .any(|l| l.starts_with("WECHAT_ENCODING_AES_KEY ")),
            "{err}"
        );
        let ok = config(&[
            ("WECHAT_TOKEN", "pamtest"),
            (
                "WECHAT_ENCODING_AES_KEY",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            ),
        ])
        .expect("valid");
        assert!(
            ok.wechat
                .and_then(|w| w.push)
                .is_some_and(|p| p.aes_key.is_some())
        );
    }

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn push_mode_of(vars: &[(&str, &str)]) -> Result<PushMode, ConfigError> {
        let mut all = vec![("WECHAT_TOKEN", "pamtest")];
        all.extend_from_slice(vars);
        let c = config(&all)?;
        Ok(c.wechat
            .and_then(|w| w.push)
            .map(|p| p.mode())
            .expect("push settings"))
    }

    #[test]
    fn push_mode_is_safe_when_a_key_is_set_and_compat_only_when_asked() {
        let key = ("WECHAT_ENCODING_AES_KEY", KEY);
        assert_eq!(push_mode_of(&[]).expect("valid"), PushMode::Plaintext);
        assert_eq!(push_mode_of(&[key]).expect("valid"), PushMode::Safe);
        let safe = ("WECHAT_PUSH_MODE", "safe");
        assert_eq!(push_mode_of(&[key, safe]).expect("valid"), PushMode::Safe);
        let compat = ("WECHAT_PUSH_MODE", "compat");
        assert_eq!(
            push_mode_of(&[key, compat]).expect("valid"),
            PushMode::Compat
        );
        let plaintext = ("WECHAT_PUSH_MODE", "plaintext");
        assert_eq!(
            push_mode_of(&[plaintext]).expect("valid"),
            PushMode::Plaintext
        );
    }

    #[test]
    fn push_mode_is_refused_when_it_contradicts_the_key() {
        for (mode, key) in [
            ("safe", None),
            ("compat", None),
            ("plaintext", Some(KEY)),
            ("aes", Some(KEY)),
        ] {
            let mut vars = vec![("WECHAT_PUSH_MODE", mode)];
            vars.extend(key.map(|k| ("WECHAT_ENCODING_AES_KEY", k)));
            let err = push_mode_of(&vars).expect_err(mode);
            assert_eq!(err.0.len(), 1, "{err}");
            assert!(err.0[0].starts_with("WECHAT_PUSH_MODE "), "{err}");
        }
        let err = push_mode_of(&[("WECHAT_PUSH_MODE", "compat")]).expect_err("no key");
        assert!(
            err.0[0].contains("WECHAT_ENCODING_AES_KEY is unset"),
            "{err}"
        );
    }

    #[test]
    fn samesite_none_needs_https_and_is_reported_with_the_rest() {
        let err = config(&[
            ("WXBIND_COOKIE_SAMESITE", "none"),
            ("WXBIND_LISTEN", "nowhere"),
        ])
        .expect_err("plain http");
        assert!(
            err.0
                .iter()
                .any(|l| l.starts_with("WXBIND_COOKIE_SAMESITE")),
            "{err}"
        );
        assert!(
            err.0.iter().any(|l| l.starts_with("WXBIND_LISTEN")),
            "{err}"
        );
        let ok = config(&[
            ("WXBIND_COOKIE_SAMESITE", "none"),
            ("WXBIND_PUBLIC_URL", "https://api.example.com"),
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn cors_origins_are_exact_and_never_a_wildcard() {
        let c = config(&[(
            "WXBIND_CORS_ORIGINS",
            "https://app.example.com, http://localhost:5173/",
        )])
        .expect("valid");
        assert_eq!(
            c.http.cors_origins,
            ["https://app.example.com", "http://localhost:5173"]
        );
        for bad in ["*", "https://app.example.com/path", "app.example.com"] {
            assert!(config(&[("WXBIND_CORS_ORIGINS", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_link_hosts_default_to_the_service_and_the_result_page() {
        let c = config(&[
            ("WXBIND_PUBLIC_URL", "https://api.example.com"),
            ("BIND_RESULT_URL", "https://App.example.com/bound"),
        ])
        .expect("valid");
        assert_eq!(c.http.url_hosts, ["api.example.com", "app.example.com"]);
        let c =
            config(&[("WXBIND_URL_HOSTS", "shop.example.com, Help.example.com")]).expect("valid");
        assert_eq!(c.http.url_hosts, ["shop.example.com", "help.example.com"]);
        let err = config(&[("WXBIND_URL_HOSTS", "https://x.example.com/")]).expect_err("a URL");
        assert!(err.0[0].starts_with("WXBIND_URL_HOSTS"), "{err}");
    }

    #[test]
    fn miniprogram_appids_default_to_none_and_must_look_like_appids() {
        assert!(
            config(&[])
                .expect("valid")
                .http
                .miniprogram_appids
                .is_empty()
        );
        let c = config(&[(
            "WXBIND_MINIPROGRAM_APPIDS",
            "wx1234567890abcdef, wxfedcba0987654321,",
        )])
        .expect("valid");
        assert_eq!(
            c.http.miniprogram_appids,
            ["wx1234567890abcdef", "wxfedcba0987654321"]
        );
        let err = config(&[("WXBIND_MINIPROGRAM_APPIDS", "wx1234567890abcdef,gh_abc")])
            .expect_err("not an appid");
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with("WXBIND_MINIPROGRAM_APPIDS"), "{err}");
    }

    #[test]
    fn sandbox_can_be_turned_off() {
        let c = config(&[("WXBIND_SANDBOX", "off")]).expect("valid");
        assert!(!c.sandbox.enabled);
        assert!(c.wechat.is_none());
    }

    #[test]
    fn jwt_secret_is_required_with_wechat_credentials() {
        let err = config(&[("WECHAT_APP_ID", "wx123"), ("WECHAT_APP_SECRET", "s")])
            .expect_err("must refuse");
        assert!(err.to_string().contains("JWT_SECRET is required"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_once_with_its_variable() {
        let err = config(&[
            ("JWT_SECRET", "short"),
            ("WXBIND_LISTEN", "nowhere"),
            ("WECHAT_API_BASE", "ftp://x"),
            ("WECHAT_APP_ID", "wx1"),
            ("WXBIND_MAX_ATTEMPTS", "0"),
            ("WXBIND_DELIVERY_NICE", "20"),
            ("WXBIND_TEMPLATE_SYNC_SECONDS", "0"),
        ])
        .expect_err("must refuse");
        let lines = &err.0;
        for key in [
            "JWT_SECRET",
            "WXBIND_LISTEN",
            "WECHAT_API_BASE",
            "WECHAT_APP_SECRET",
            "WXBIND_MAX_ATTEMPTS",
            "WXBIND_DELIVERY_NICE",
            "WXBIND_TEMPLATE_SYNC_SECONDS",
        ] {
            assert_eq!(
                lines.iter().filter(|l| l.starts_with(key)).count(),
                1,
                "{key} in {lines:?}"
            );
        }
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = config(&[
            ("WECHAT_APP_ID", "wx123"),
            ("WECHAT_APP_SECRET", "app-secret-value"),
            ("JWT_SECRET", "jwt-secret-value-that-is-long-enough-32"),
        ])
        .expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("app-secret-value"));
        assert!(!debug.contains("jwt-secret-value"));
    }
}
