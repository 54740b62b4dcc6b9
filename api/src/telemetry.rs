//! Logging: one `tracing` subscriber for the process, human-readable or JSON lines, and what
//! keeps secrets out of it. Request spans carry the route and the target with its query values
//! redacted ([`RequestSpan`]); types holding a secret print `[redacted]` in their `Debug`
//! ([`Redacted`], `redacted_debug!`); the crates that see the calls to WeChat in clear log at
//! most at `info`, whatever `RUST_LOG` asks.
use std::collections::BTreeMap;
use std::fmt;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, util::SubscriberInitExt};

/// What a log line shows in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// Query parameters whose values a request log shows; every other value is [`REDACTED`].
/// An allow list, because secrets arrive under many names (`code`, `state`, `signature`,
/// `msg_signature`, `nonce`, `echostr`, `openid`, and in the sandbox's WeChat endpoints
/// `secret`, `access_token`, `ticket`), and a parameter added later must stay out by default.
const LOGGED_QUERY_VALUES: &[&str] = &["timestamp", "encrypt_type"];

/// Crates that handle the requests to WeChat in clear, whose URLs carry the app secret, OAuth
/// codes and access tokens: awc traces whole request heads (its HTTP/2 client prints the URI),
/// and h2 and rustls sit under it. Their own debug output is not worth that risk.
const WIRE_CRATES: &[&str] = &["awc", "h2", "rustls"];

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`;
/// `WXBIND_LOG_FORMAT=json` switches to one JSON object per line. False when a subscriber was
/// installed already (tests spawning several apps), which is then kept.
pub fn init<W>(default_filter: &str, json: bool, sink: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    dispatch(filter, json, sink).try_init().is_ok()
}

/// [`init`] with exactly `filter`, whatever `RUST_LOG` says: for a test that must capture a
/// known level.
pub fn init_with_filter<W>(filter: &str, json: bool, sink: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    dispatch(EnvFilter::new(filter), json, sink)
        .try_init()
        .is_ok()
}

/// The subscriber, not yet installed.
fn dispatch<W>(filter: EnvFilter, json: bool, sink: W) -> tracing::Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let wire_cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(WIRE_CRATES.iter().map(|c| (*c, LevelFilter::INFO)));
    // Both must let an event through, so the cap holds even when RUST_LOG names these crates.
    let filter = filter.and(wire_cap);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(sink)
        .with_target(false);
    let registry = tracing_subscriber::registry();
    if json {
        let layer = layer.json().flatten_event(true).with_filter(filter);
        registry.with(layer).into()
    } else {
        registry.with(layer.with_filter(filter)).into()
    }
}

/// The root span of every request: tracing-actix-web's default fields, except that
/// `http.target` is [`redacted_target`]. Every line logged while serving a request carries
/// these fields, so the default's full target put each OAuth code and push signature in the log.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let method = request.method().as_str();
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let info = request.connection_info();
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = %flavor(request.version()),
            http.scheme = %info.scheme(),
            http.host = %info.host(),
            http.client_ip = %info.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %redacted_target(request.uri()),
            http.status_code = tracing::field::Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// HTTP version as tracing-actix-web's default span writes it.
fn flavor(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2.0",
        Version::HTTP_3 => "3.0",
        _ => "other",
    }
}

/// The path and the query with every value [`REDACTED`] but `timestamp` and `encrypt_type`:
/// which parameters came is worth logging, what they said mostly is not.
pub fn redacted_target(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if LOGGED_QUERY_VALUES.contains(&key) => pair.to_owned(),
            Some((key, _)) => format!("{key}={REDACTED}"),
            // A bare word could be anything, a secret included.
            None if pair.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// Prints a secret as [`REDACTED`] in `Debug` output. Options still show whether there was
/// one, which is what debugging a refusal needs (no `code` means the user declined).
pub struct Redacted<'a, T: ?Sized>(pub &'a T);

impl<T: Conceal + ?Sized> fmt::Debug for Redacted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.conceal(f)
    }
}

/// A value [`Redacted`] can hide.
pub trait Conceal {
    /// Writes what `Debug` shows instead of the value.
    fn conceal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Conceal for str {}
impl Conceal for String {}
impl<K, V> Conceal for BTreeMap<K, V> {}
impl Conceal for serde_json::Value {}

impl<T: Conceal + ?Sized> Conceal for std::sync::Arc<T> {
    fn conceal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).conceal(f)
    }
}

impl<T: Conceal + ?Sized> Conceal for &T {
    fn conceal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).conceal(f)
    }
}

impl<T: Conceal> Conceal for Option<T> {
    fn conceal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Some(v) => f.debug_tuple("Some").field(&Redacted(v)).finish(),
            None => f.write_str("None"),
        }
    }
}

/// Implements `Debug` for a struct, fields in the order given, those marked `redacted` shown
/// as [`REDACTED`]: `redacted_debug!(LoginRequest { username, password: redacted });`. Every
/// field must be listed (the impl destructures the struct), so a new field breaks the build
/// instead of silently joining the output.
macro_rules! redacted_debug {
    (@value $field:ident) => {
        $field
    };
    (@value $field:ident redacted) => {
        &$crate::telemetry::Redacted($field)
    };
    ($ty:ident $(<$lt:lifetime>)? { $($field:ident $(: $mode:ident)?),* $(,)? }) => {
        impl $(<$lt>)? ::std::fmt::Debug for $ty $(<$lt>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let Self { $($field),* } = self;
                f.debug_struct(stringify!($ty))
                    $(.field(
                        stringify!($field),
                        $crate::telemetry::redacted_debug!(@value $field $($mode)?),
                    ))*
                    .finish()
            }
        }
    };
}
pub(crate) use redacted_debug;

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn target(raw: &str) -> String {
        redacted_target(&raw.parse().expect("uri"))
    }

    #[test]
    fn request_targets_keep_the_path_and_only_harmless_values() {
        assert_eq!(target("/api/me"), "/api/me");
        assert_eq!(
            target("/api/callback?code=0a1b2c&state=Hq3V9xk2"),
            "/api/callback?code=[redacted]&state=[redacted]"
        );
        assert_eq!(
            target(
                "/api/wechat/events?signature=ab12&timestamp=1700000000&nonce=987&openid=oX\
                 &encrypt_type=aes&msg_signature=cd34&echostr=4963"
            ),
            "/api/wechat/events?signature=[redacted]&timestamp=1700000000&nonce=[redacted]\
             &openid=[redacted]&encrypt_type=aes&msg_signature=[redacted]&echostr=[redacted]"
        );
        // The sandbox's WeChat endpoints receive the app secret and access tokens.
        assert_eq!(
            target("/sandbox/sns/oauth2/access_token?appid=wx1&secret=S3CR3T&code=C0DE&x"),
            "/sandbox/sns/oauth2/access_token?appid=[redacted]&secret=[redacted]&code=[redacted]&[redacted]"
        );
        assert_eq!(target("/a?"), "/a?");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned()
        }
    }

    #[test]
    fn the_wire_crates_stay_at_info_even_when_the_filter_asks_for_trace() {
        for json in [false, true] {
            let buffer = Buffer::default();
            let sink = buffer.clone();
            let dispatch = dispatch(EnvFilter::new("trace,awc=trace"), json, move || {
                sink.clone()
            });
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::trace!(
                    target: "awc::client::h2proto",
                    "Sending client request: POST /cgi-bin/message/template/send?access_token=AT"
                );
                tracing::debug!(target: "rustls::client", "wire detail");
                tracing::info!(target: "awc::client", "awc info");
                tracing::trace!(target: "wxbind::worker", "our trace");
            });
            let text = buffer.text();
            assert!(!text.contains("access_token=AT"), "{text}");
            assert!(!text.contains("wire detail"), "{text}");
            assert!(text.contains("awc info"), "{text}");
            assert!(text.contains("our trace"), "{text}");
        }
    }

    /// Every type that holds a secret (but the two whose fields are private to their modules,
    /// `AccessToken` and the sandbox's `Ticket`, tested there), a recognisable value in each.
    #[test]
    fn types_holding_a_secret_hide_it_in_debug() {
        use crate::routes::auth::{LoginRequest, LoginResponse};
        use crate::routes::binding::{BindQrcodeResponse, BindUrlResponse, CallbackQuery};
        use crate::routes::wechat_events::{PushQuery, UrlCheck};
        use crate::wechat::types::{QrTicket, StableTokenRequest, TokenResponse};

        const S: &str = "SECRET-VALUE";
        let now = chrono::Utc::now();
        let fields: BTreeMap<String, String> = [
            ("ToUserName", "gh_x"),
            ("FromUserName", "oUser"),
            ("CreateTime", "1700000000"),
            ("MsgType", "event"),
            ("Event", "SCAN"),
            ("EventKey", "bind_SECRET-VALUE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let push = crate::wechat::events::Push::from_fields(fields).expect("push");
        let json_fields = serde_json::json!({"EventKey": "bind_SECRET-VALUE"});
        let user = crate::db::users::User {
            id: 1,
            username: "alice".into(),
            password_hash: S.into(),
            role: crate::domain::Role::User,
            openid: None,
            bound_at: None,
            created_at: now,
            unionid: None,
        };
        let printed: Vec<(&str, String)> = vec![
            (
                "LoginRequest",
                format!(
                    "{:?}",
                    LoginRequest {
                        username: "alice".into(),
                        password: S.into(),
                    }
                ),
            ),
            (
                "LoginResponse",
                format!(
                    "{:?}",
                    LoginResponse {
                        access_token: S.into(),
                        token_type: "Bearer",
                        expires_in: 900,
                        user: crate::routes::UserResponse::from((user.clone(), None)),
                    }
                ),
            ),
            (
                "CallbackQuery",
                format!(
                    "{:?}",
                    CallbackQuery {
                        code: Some(S.into()),
                        state: Some(S.into()),
                    }
                ),
            ),
            (
                "BindUrlResponse",
                format!(
                    "{:?}",
                    BindUrlResponse {
                        url: S.into(),
                        expires_at: now,
                    }
                ),
            ),
            (
                "BindQrcodeResponse",
                format!(
                    "{:?}",
                    BindQrcodeResponse {
                        ticket: S.into(),
                        qrcode_url: S.into(),
                        expires_at: now,
                    }
                ),
            ),
            (
                "BindLink",
                format!(
                    "{:?}",
                    crate::binding::BindLink {
                        url: S.into(),
                        expires_at: now,
                    }
                ),
            ),
            (
                "BindQrcode",
                format!(
                    "{:?}",
                    crate::binding::BindQrcode {
                        ticket: S.into(),
                        qrcode_url: S.into(),
                        expires_at: now,
                    }
                ),
            ),
            (
                "BindState",
                format!(
                    "{:?}",
                    crate::domain::BindState::parse("SECRETVALUE").expect("state")
                ),
            ),
            (
                "UrlCheck",
                format!(
                    "{:?}",
                    UrlCheck {
                        signature: S.into(),
                        timestamp: "1".into(),
                        nonce: S.into(),
                        echostr: S.into(),
                    }
                ),
            ),
            (
                "PushQuery",
                format!(
                    "{:?}",
                    PushQuery {
                        signature: Some(S.into()),
                        timestamp: "1".into(),
                        nonce: S.into(),
                        openid: Some(S.into()),
                        encrypt_type: Some("aes".into()),
                        msg_signature: Some(S.into()),
                    }
                ),
            ),
            (
                "PushParams",
                format!(
                    "{:?}",
                    crate::wechat::push::PushParams {
                        signature: Some(S),
                        timestamp: "1",
                        nonce: S,
                        encrypt_type: Some("aes"),
                        msg_signature: Some(S),
                    }
                ),
            ),
            ("Push", format!("{push:?}")),
            ("PushKind", format!("{:?}", push.kind())),
            (
                "NewEvent",
                format!(
                    "{:?}",
                    crate::db::events::NewEvent {
                        dedup_key: &push.dedup_key(),
                        from_user: "oUser",
                        msg_type: "event",
                        event: Some("SCAN"),
                        event_key: push.event_key.as_deref(),
                        create_time: 1_700_000_000,
                        fields: &json_fields,
                    }
                ),
            ),
            (
                "StableTokenRequest",
                format!(
                    "{:?}",
                    StableTokenRequest {
                        grant_type: "client_credential",
                        appid: "wx1",
                        secret: S,
                        force_refresh: false,
                    }
                ),
            ),
            (
                "TokenResponse",
                format!(
                    "{:?}",
                    TokenResponse {
                        access_token: S.into(),
                        expires_in: 7200,
                    }
                ),
            ),
            (
                "QrTicket",
                format!(
                    "{:?}",
                    QrTicket {
                        ticket: S.into(),
                        expire_seconds: Some(600),
                        url: Some(S.into()),
                    }
                ),
            ),
            (
                "StoredToken",
                format!(
                    "{:?}",
                    crate::db::tokens::StoredToken {
                        access_token: S.into(),
                        expires_at: now,
                    }
                ),
            ),
            ("User", format!("{user:?}")),
            (
                "NewUser",
                format!(
                    "{:?}",
                    crate::db::users::NewUser {
                        username: "alice",
                        password_hash: S,
                        role: crate::domain::Role::User,
                    }
                ),
            ),
        ];
        for (name, debug) in printed {
            assert!(!debug.contains("SECRET"), "{name} shows a secret: {debug}");
            assert!(debug.contains(REDACTED), "{name}: {debug}");
        }
    }

    struct Sample<'a> {
        name: &'a str,
        code: Option<String>,
        missing: Option<String>,
        secret: String,
    }
    redacted_debug!(Sample<'a> { name, code: redacted, missing: redacted, secret: redacted });

    #[test]
    fn redacted_fields_print_as_redacted_and_others_as_usual() {
        let s = Sample {
            name: "alice",
            code: Some("0a1b2c".into()),
            missing: None,
            secret: "hunter2".into(),
        };
        assert_eq!(
            format!("{s:?}"),
            r#"Sample { name: "alice", code: Some([redacted]), missing: None, secret: [redacted] }"#
        );
    }
}
