//! `/api/wechat/events`: WeChat's server push. The GET is the URL check; the POST carries
//! events (plaintext, compatible or safe mode). Each push is verified, recorded in Postgres
//! and applied in one transaction, so a retried push changes nothing twice.
use actix_web::{HttpResponse, get, post, web};
use diesel::Connection;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::db::{self, events::NewEvent};
use crate::domain::BindState;
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;
use crate::wechat::crypto::{self, MsgCrypt};
use crate::wechat::events::{self, MAX_PUSH_BYTES, Push, PushKind};

/// What verifying a push needs: the token and, in safe mode, the keys.
pub struct PushSecurity {
    token: secrecy::SecretString,
    crypt: Option<MsgCrypt>,
}

impl PushSecurity {
    /// From the configured token and keys for `app_id`.
    pub fn new(
        config: &crate::config::PushConfig,
        app_id: &str,
    ) -> Result<Self, crypto::CryptoError> {
        let crypt = match &config.aes_key {
            Some(key) => Some(MsgCrypt::new(
                key.expose_secret(),
                config.aes_key_previous.as_ref().map(|k| k.expose_secret()),
                app_id,
            )?),
            None => None,
        };
        Ok(Self {
            token: config.token.clone(),
            crypt,
        })
    }

    fn token(&self) -> &str {
        self.token.expose_secret()
    }
}

/// The URL check's parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UrlCheck {
    /// sha1 of the sorted token, timestamp and nonce.
    pub signature: String,
    /// Seconds since the epoch.
    pub timestamp: String,
    /// Random number.
    pub nonce: String,
    /// Echoed back on success.
    pub echostr: String,
}

/// WeChat's server-URL check: answers `echostr` when the signature is right.
#[utoipa::path(
    tag = "wechat",
    params(UrlCheck),
    responses(
        (status = 200, description = "`echostr`, verbatim", content_type = "text/plain", body = String),
        (status = 401, description = "`invalid_signature`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`: WECHAT_TOKEN is unset", body = ErrorBody),
    )
)]
#[get("/wechat/events")]
pub async fn verify_wechat_url(
    state: web::Data<AppState>,
    query: web::Query<UrlCheck>,
) -> Result<HttpResponse, ApiError> {
    let security = state.push.as_ref().ok_or(ApiError::WechatNotConfigured)?;
    if !crypto::signature_matches(
        &query.signature,
        &[security.token(), &query.timestamp, &query.nonce],
    ) {
        return Err(ApiError::InvalidSignature);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(query.into_inner().echostr))
}

/// The parameters WeChat adds to a push.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// sha1 of the sorted token, timestamp and nonce.
    pub signature: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: String,
    /// Random number.
    pub nonce: String,
    /// The sender's openid.
    pub openid: Option<String>,
    /// `aes` in safe and compatible mode.
    pub encrypt_type: Option<String>,
    /// Safe mode: sha1 of the sorted token, timestamp, nonce and `Encrypt`.
    pub msg_signature: Option<String>,
}

/// A server push from WeChat (follow, unfollow, scan, template delivery report, …).
///
/// Answers `success`, or a passive reply (XML, encrypted in safe mode) to a scan that binds.
/// The same push delivered again (WeChat retries 3 times) is recognised and not applied twice.
#[utoipa::path(
    tag = "wechat",
    params(PushQuery),
    request_body(content = String, content_type = "text/xml", description = "WeChat's XML envelope"),
    responses(
        (status = 200, description = "`success`, or a passive reply", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_request`: malformed XML, undecryptable or for another appid", body = ErrorBody),
        (status = 401, description = "`invalid_signature`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`: WECHAT_TOKEN is unset", body = ErrorBody),
    )
)]
#[post("/wechat/events")]
#[tracing::instrument(skip_all)]
pub async fn receive_wechat_event(
    state: web::Data<AppState>,
    query: web::Query<PushQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let security = state.push.as_ref().ok_or(ApiError::WechatNotConfigured)?;
    let body = read_limited(payload, MAX_PUSH_BYTES).await?;
    let body = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body is not UTF-8"))?;
    let encrypted = query.encrypt_type.as_deref() == Some("aes");

    let xml = if encrypted {
        let crypt = security.crypt.as_ref().ok_or_else(|| {
            ApiError::invalid("safe mode push, but WECHAT_ENCODING_AES_KEY is unset")
        })?;
        let envelope = events::parse_fields(body).map_err(|e| ApiError::invalid(e.to_string()))?;
        let sealed = envelope
            .get("Encrypt")
            .ok_or_else(|| ApiError::invalid("Encrypt element missing"))?;
        let sig = query.msg_signature.as_deref().unwrap_or_default();
        if !crypto::signature_matches(
            sig,
            &[security.token(), &query.timestamp, &query.nonce, sealed],
        ) {
            return Err(ApiError::InvalidSignature);
        }
        crypt
            .decrypt(sealed)
            .map_err(|e| ApiError::invalid(e.to_string()))?
    } else {
        let sig = query.signature.as_deref().unwrap_or_default();
        if !crypto::signature_matches(sig, &[security.token(), &query.timestamp, &query.nonce]) {
            return Err(ApiError::InvalidSignature);
        }
        body.to_owned()
    };
    let push = events::parse_fields(&xml)
        .and_then(Push::from_fields)
        .map_err(|e| ApiError::invalid(e.to_string()))?;

    let p = push.clone();
    let reply_text = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| record_and_apply(conn, &p))
    })
    .await?;
    tracing::info!(push.msg_type = %push.msg_type, push.event = ?push.event, "server push handled");

    let Some(text) = reply_text else {
        return Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body("success"));
    };
    let now = chrono::Utc::now().timestamp();
    let reply = events::text_reply(&push, &text, now);
    let body = match (&security.crypt, encrypted) {
        (Some(crypt), true) => seal_reply(crypt, security.token(), &reply, now),
        _ => reply,
    };
    Ok(HttpResponse::Ok()
        .content_type("application/xml; charset=utf-8")
        .body(body))
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The safe-mode reply envelope.
fn seal_reply(crypt: &MsgCrypt, token: &str, reply: &str, now: i64) -> String {
    let sealed = crypt.encrypt(reply);
    let nonce = crate::domain::random_alphanumeric(10);
    let ts = now.to_string();
    let sig = crypto::signature(&[token, &ts, &nonce, &sealed]);
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{ts}</TimeStamp><Nonce>{}</Nonce></xml>",
        events::cdata(&sealed),
        events::cdata(&sig),
        events::cdata(&nonce)
    )
}

/// Records the push and, the first time only, applies it. Returns the passive reply text.
fn record_and_apply(
    conn: &mut diesel::PgConnection,
    push: &Push,
) -> Result<Option<String>, ApiError> {
    let key = push.dedup_key();
    let fields = serde_json::to_value(&push.fields).unwrap_or_default();
    let new = NewEvent {
        dedup_key: &key,
        from_user: &push.from,
        msg_type: &push.msg_type,
        event: push.event.as_deref(),
        event_key: push.event_key.as_deref(),
        create_time: push.create_time,
        fields: &fields,
    };
    if !db::events::insert_new(conn, &new)? {
        // A retry: the same answer as the first time, and no second effect.
        return Ok(db::events::reply_of(conn, &key)?);
    }
    let reply = match push.kind() {
        PushKind::Subscribe { scene } => {
            db::followers::set(conn, &push.from, true, push.create_time)?;
            match scene {
                Some(scene) => scan_bind(conn, &push.from, &scene)?,
                None => None,
            }
        }
        PushKind::Unsubscribe => {
            db::followers::set(conn, &push.from, false, push.create_time)?;
            None
        }
        PushKind::Scan { scene } => scan_bind(conn, &push.from, &scene)?,
        PushKind::TemplateReport { msgid, delivery } => {
            if let Some(msgid) = msgid {
                db::messages::set_delivery(conn, msgid, delivery.as_str())?;
            }
            None
        }
        PushKind::Other => None,
    };
    if let Some(text) = &reply {
        db::events::set_reply(conn, &key, text)?;
    }
    Ok(reply)
}

/// The scene prefix of wxbind's bind QR codes; other scenes belong to someone else.
pub const BIND_SCENE_PREFIX: &str = "bind_";

/// Binds the scanner to the account a bind QR code names, with the OAuth callback's rules.
/// Returns the text to reply with; `None` for QR codes that are not wxbind's.
fn scan_bind(
    conn: &mut diesel::PgConnection,
    openid: &str,
    scene: &str,
) -> Result<Option<String>, ApiError> {
    let Some(raw) = scene.strip_prefix(BIND_SCENE_PREFIX) else {
        return Ok(None);
    };
    let Ok(nonce) = BindState::parse(raw) else {
        return Ok(Some(EXPIRED_REPLY.into()));
    };
    let hash = nonce.hash();
    let Some(user_id) = db::bind_states::consume(conn, &hash)? else {
        return Ok(Some(EXPIRED_REPLY.into()));
    };
    match super::binding::bind_openid(conn, user_id, openid) {
        Ok(username) => {
            tracing::info!(user.id = user_id, "WeChat account bound by QR scan");
            Ok(Some(format!(
                "绑定成功：此微信已绑定账号 {username}。\nBound to account {username}."
            )))
        }
        Err(ApiError::AlreadyBound) => {
            db::bind_states::release(conn, &hash)?;
            Ok(Some(
                "未绑定：此微信已绑定其他账号。\nNot bound: this WeChat account is bound to another user."
                    .into(),
            ))
        }
        Err(e) => Err(e),
    }
}

const EXPIRED_REPLY: &str = "未绑定：二维码已失效或已使用，请在网站上刷新后重新扫码。\nNot bound: this QR code has expired or was used; get a new one on the website.";
