//! Binding a WeChat account over HTTP: the bind URL (OAuth2 authorize link with a single-use
//! state), the callback WeChat redirects the phone to, the scan-to-bind QR code and unbinding.
//! The rules live in `crate::binding`; these handlers extract, call and respond.
use actix_web::ResponseError;
use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::binding;
use crate::error::{ApiError, ErrorBody, ErrorChain};
use crate::state::AppState;
use crate::telemetry::redacted_debug;
use crate::wechat::Wechat;

/// A bind link.
#[derive(Serialize, ToSchema)]
pub struct BindUrlResponse {
    /// WeChat OAuth2 authorize URL; render it as a QR code for the user to scan in WeChat.
    #[schema(
        example = "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387&redirect_uri=https%3A%2F%2Fexample.com%2Fapi%2Fcallback&response_type=code&scope=snsapi_userinfo&state=Hq3V9xk2mPq7Lr0aZb5Nc8Ws1Ty4Ud6E&connect_redirect=1#wechat_redirect"
    )]
    pub url: String,
    /// After this the link no longer works; ask for a new one.
    pub expires_at: DateTime<Utc>,
}
// The URL carries the state, which binds whoever opens it to the caller.
redacted_debug!(BindUrlResponse {
    url: redacted,
    expires_at
});

/// A bind link for the caller: an OAuth2 authorize URL of WeChat to show as a QR code.
///
/// Its `state` is random, valid for 10 minutes and usable once. A user has at most 5 live bind
/// links and QR codes: a new one revokes the oldest, and a successful binding revokes the rest.
#[utoipa::path(
    tag = "binding",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh bind link", body = BindUrlResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[get("/bind-url")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_bind_url(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let link = binding::create_link(&state, wechat.get()?, auth.id).await?;
    Ok(HttpResponse::Ok().json(BindUrlResponse {
        url: link.url,
        expires_at: link.expires_at,
    }))
}

/// What WeChat appends to the redirect URI.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// OAuth code; absent when the user refused.
    pub code: Option<String>,
    // Required, but an `Option` so that a missing one is this API's `invalid_state` rather
    // than the extractor's `invalid_request`.
    /// The state from the bind link: 1-128 letters and digits (WeChat passes it on as given).
    #[param(required = true, pattern = "^[A-Za-z0-9]{1,128}$")]
    pub state: Option<String>,
}
redacted_debug!(CallbackQuery {
    code: redacted,
    state: redacted
});

/// WeChat's OAuth2 redirect target (opened by the user's phone, not by the SPA).
///
/// Consumes the state, exchanges the code for the user's openid and binds it. With
/// `BIND_RESULT_URL` set, answers with a redirect to it carrying `status=ok`, or
/// `status=error&reason=<code>`; otherwise a small HTML page on success, JSON errors on failure.
#[utoipa::path(
    tag = "binding",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Bound (HTML page, when BIND_RESULT_URL is unset)", content_type = "text/html", body = String),
        (status = 302, description = "Redirect to BIND_RESULT_URL with the outcome"),
        (status = 400, description = "`invalid_state` (missing, malformed, unknown, expired or used), `authorization_denied`, `invalid_code` or `snapshot_user`", body = ErrorBody),
        (status = 409, description = "`already_bound`: the WeChat account is bound to another user, or the user's account to another WeChat account (unbind first)", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[get("/callback")]
#[tracing::instrument(skip_all)]
pub async fn wechat_callback(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, ApiError> {
    let CallbackQuery { code, state: raw } = query.into_inner();
    let outcome = match wechat.get() {
        Ok(connected) => binding::complete_oauth(&state, connected, raw.as_deref(), code)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e.into()),
    };
    let Some(result_url) = &state.config.http.bind_result_url else {
        return outcome.map(|()| bound_page());
    };
    let mut target = result_url.clone();
    match &outcome {
        Ok(()) => {
            target.query_pairs_mut().append_pair("status", "ok");
        }
        Err(e) => {
            // No error response is rendered here, so log the cause where it would have been.
            if e.status_code().is_server_error() {
                tracing::error!(error.code = e.code().as_str(), error.cause = %ErrorChain(e), "binding failed");
            }
            target
                .query_pairs_mut()
                .append_pair("status", "error")
                .append_pair("reason", e.code().as_str());
        }
    }
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, target.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// A scan-to-follow-and-bind QR code.
#[derive(Serialize, ToSchema)]
pub struct BindQrcodeResponse {
    /// WeChat's ticket for the QR code.
    pub ticket: String,
    /// The QR code image (WeChat's showqrcode URL); scanning it follows the account and binds.
    pub qrcode_url: String,
    /// After this the QR code no longer binds; ask for a new one.
    pub expires_at: DateTime<Utc>,
}
// Whoever has the ticket can show the QR code, and whoever scans it is bound to the caller.
redacted_debug!(BindQrcodeResponse {
    ticket: redacted,
    qrcode_url: redacted,
    expires_at
});

/// A QR code that follows the official account and binds the scanner to the caller in one step.
///
/// A temporary parametric QR code (10 minutes) carrying a fresh single-use bind state. The
/// scanner gets a reply in WeChat saying which account was bound, or why not.
#[utoipa::path(
    tag = "binding",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh QR code", body = BindQrcodeResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[get("/bind-qrcode")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_bind_qrcode(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let qr = binding::create_qrcode(&state, wechat.get()?, auth.id).await?;
    Ok(HttpResponse::Ok().json(BindQrcodeResponse {
        ticket: qr.ticket,
        qrcode_url: qr.qrcode_url,
        expires_at: qr.expires_at,
    }))
}

fn bound_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(BOUND_PAGE)
}

const BOUND_PAGE: &str = r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>绑定成功 · Bound</title>
<style>body{font-family:system-ui,sans-serif;text-align:center;padding:3em 1em;color:#111}
h1{color:#07c160;font-size:1.6em}</style></head>
<body><h1>✓ 绑定成功</h1><p>Your WeChat account is now bound. You can close this page.</p></body></html>
"#;

/// Remove the caller's WeChat binding.
#[utoipa::path(
    tag = "binding",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unbound (also when nothing was bound)"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
#[delete("/binding")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn delete_binding(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    binding::unbind(&state, auth.id).await?;
    Ok(HttpResponse::NoContent().finish())
}
