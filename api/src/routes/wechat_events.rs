//! `/api/wechat/events`: WeChat's server push. The GET is the URL check; the POST carries
//! events (plaintext, compatible or safe mode). Each push is opened by `wechat::push` (mode,
//! signature, timestamp window), then its signed `(timestamp, nonce)` is claimed and the push
//! recorded and applied by `pushes` in one transaction, so a retried push changes nothing twice
//! and a signed URL cannot carry a second, forged body.
use actix_web::{HttpResponse, get, post, web};
use diesel::Connection;
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::{self, PushRejection, PushType};
use crate::pushes;
use crate::state::AppState;
use crate::telemetry::redacted_debug;
use crate::wechat::events::{MAX_PUSH_BYTES, PushKind};
use crate::wechat::push::{PushError, PushParams, PushSecurity};
use crate::wechat::{NotConfigured, Wechat};

/// This server's push security, or `wechat_not_configured` (no credentials or no token).
fn push_security(wechat: &Wechat) -> Result<&PushSecurity, NotConfigured> {
    wechat.get()?.account().push().ok_or(NotConfigured)
}

/// The URL check's parameters.
#[derive(Deserialize, IntoParams)]
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
redacted_debug!(UrlCheck {
    signature: redacted,
    timestamp,
    nonce: redacted,
    echostr: redacted
});

/// WeChat's server-URL check: answers `echostr` when the signature is right.
///
/// The timestamp must be within 300 seconds of this server's clock (WeChat sends its current
/// time). The check's signature is the same as a plaintext push's, so its timestamp and nonce
/// are claimed like a push's: the check's URL cannot be reused to post a push.
#[utoipa::path(
    tag = "wechat",
    params(UrlCheck),
    responses(
        (status = 200, description = "`echostr`, verbatim", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_request`: a parameter is missing", body = ErrorBody),
        (status = 401, description = "`invalid_signature`: the signature does not verify, the timestamp is more than 300 s from this server's clock, or the timestamp and nonce were used by a push", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`: WECHAT_TOKEN is unset", body = ErrorBody),
    )
)]
#[get("/wechat/events")]
#[tracing::instrument(skip_all)]
pub async fn verify_wechat_url(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    query: web::Query<UrlCheck>,
) -> Result<HttpResponse, ApiError> {
    let security = push_security(&wechat)?;
    let now = chrono::Utc::now().timestamp();
    let timestamp = security
        .verify_url(&query.signature, &query.timestamp, &query.nonce, now)
        .inspect_err(log_refused)?;
    let signed = pushes::Signed::url_check(timestamp, &query.nonce, &query.echostr);
    db::run_with(&state.pool, move |conn| pushes::claim(conn, &signed))
        .await
        .inspect_err(log_replayed)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(query.into_inner().echostr))
}

/// The parameters WeChat adds to a push.
#[derive(Deserialize, IntoParams)]
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
redacted_debug!(PushQuery {
    signature: redacted,
    timestamp,
    nonce: redacted,
    openid: redacted,
    encrypt_type,
    msg_signature: redacted
});

/// A server push from WeChat (follow, unfollow, scan, template delivery report, …).
///
/// Answers `success`, or a passive reply (XML, encrypted in safe mode) to a scan that binds.
/// The same push delivered again (WeChat retries 3 times) is recognised and not applied twice.
/// With `WECHAT_ENCODING_AES_KEY` set only safe-mode pushes are accepted (plaintext too with
/// `WECHAT_PUSH_MODE=compat`); a push more than 300 seconds from this server's clock, or whose
/// timestamp and nonce came before with another body, is refused with nothing recorded.
#[utoipa::path(
    tag = "wechat",
    params(PushQuery),
    request_body(content = String, content_type = "text/xml", description = "WeChat's XML envelope"),
    responses(
        (status = 200, description = "`success`, or a passive reply", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_request`: malformed XML, undecryptable or for another appid", body = ErrorBody),
        (status = 401, description = "`invalid_signature`: the signature (or `msg_signature`) does not verify, a plaintext push where safe mode is required, a timestamp more than 300 s from this server's clock, or a timestamp and nonce used before with another body", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`: WECHAT_TOKEN is unset", body = ErrorBody),
    )
)]
#[post("/wechat/events")]
#[tracing::instrument(skip_all)]
pub async fn receive_wechat_event(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    query: web::Query<PushQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let security = push_security(&wechat)?;
    let body = read_limited(payload, MAX_PUSH_BYTES)
        .await
        .inspect_err(|e| {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                metrics::push_rejected(PushRejection::TooLarge);
            }
        })?;
    let body = std::str::from_utf8(&body).map_err(|_| {
        metrics::push_rejected(PushRejection::Malformed);
        ApiError::invalid("body is not UTF-8")
    })?;
    let params = PushParams {
        signature: query.signature.as_deref(),
        timestamp: &query.timestamp,
        nonce: &query.nonce,
        encrypt_type: query.encrypt_type.as_deref(),
        msg_signature: query.msg_signature.as_deref(),
    };
    let now = chrono::Utc::now().timestamp();
    let opened = security.open(&params, body, now).inspect_err(|e| {
        log_refused(e);
        metrics::push_rejected(match e {
            PushError::BadSignature => PushRejection::BadSignature,
            PushError::PlaintextRefused => PushRejection::PlaintextRefused,
            PushError::OutsideWindow(_) => PushRejection::OutsideWindow,
            PushError::Malformed(_) => PushRejection::Malformed,
        });
    })?;

    let signed = pushes::Signed::push(opened.timestamp, &query.nonce, body.as_bytes());
    let push = opened.push.clone();
    let reply_text = db::run_with(&state.pool, move |conn| {
        conn.transaction(|conn| pushes::accept(conn, &signed, &push))
    })
    .await
    .inspect_err(|e| {
        log_replayed(e);
        if matches!(e, pushes::AcceptError::Replayed) {
            metrics::push_rejected(PushRejection::Replayed);
        }
    })?;
    metrics::push(match opened.push.kind() {
        PushKind::Subscribe { .. } => PushType::Subscribe,
        PushKind::Unsubscribe => PushType::Unsubscribe,
        PushKind::Scan { .. } => PushType::Scan,
        PushKind::TemplateReport { .. } => PushType::TemplateReport,
        PushKind::Other => PushType::Other,
    });
    tracing::info!(push.msg_type = %opened.push.msg_type, push.event = ?opened.push.event, "server push handled");

    let Some(text) = reply_text else {
        return Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body("success"));
    };
    let reply = security.reply(&opened, &text, chrono::Utc::now().timestamp());
    Ok(HttpResponse::Ok()
        .content_type("application/xml; charset=utf-8")
        .body(reply))
}

/// Logs why a push or URL check was refused: the 401 says only `invalid_signature`, and the
/// operator needs to tell a forgery from a clock that drifted.
fn log_refused(e: &PushError) {
    match e {
        PushError::Malformed(_) => {}
        PushError::OutsideWindow(_) => {
            tracing::warn!(error = %e, "server push or URL check refused: if WeChat's own are, check this server's clock");
        }
        PushError::BadSignature | PushError::PlaintextRefused => {
            tracing::warn!(error = %e, "server push or URL check refused");
        }
    }
}

/// Logs a replayed signature (a forged body under a signed URL seen before).
fn log_replayed(e: &pushes::AcceptError) {
    if matches!(e, pushes::AcceptError::Replayed) {
        tracing::warn!(error = %e, "server push or URL check refused");
    }
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
