//! Binding a WeChat account: the bind URL (OAuth2 authorize link with a single-use state),
//! the callback WeChat redirects the phone to, and unbinding.
use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Wechat;
use crate::auth::AuthUser;
use crate::db;
use crate::domain::BindState;
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;
use crate::wechat::{self, WechatError};
use diesel::Connection;

/// How long a bind link can be used.
const STATE_TTL: TimeDelta = TimeDelta::minutes(10);

/// A bind link.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindUrlResponse {
    /// WeChat OAuth2 authorize URL; render it as a QR code for the user to scan in WeChat.
    #[schema(
        example = "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387&redirect_uri=https%3A%2F%2Fexample.com%2Fapi%2Fcallback&response_type=code&scope=snsapi_userinfo&state=Hq3V9xk2mPq7Lr0aZb5Nc8Ws1Ty4Ud6E&connect_redirect=1#wechat_redirect"
    )]
    pub url: String,
    /// After this the link no longer works; ask for a new one.
    pub expires_at: DateTime<Utc>,
}

/// A bind link for the caller: an OAuth2 authorize URL of WeChat to show as a QR code.
///
/// Its `state` is random, valid for 10 minutes and usable once.
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
    let app_id = wechat.client()?.app_id().to_owned();
    let nonce = BindState::generate();
    let expires_at = Utc::now() + STATE_TTL;
    state
        .bind_states
        .submit((nonce.hash(), auth.id, expires_at))
        .await?;
    let url = wechat::authorize_url(
        &state.config.wechat_oauth_base,
        &app_id,
        &state.config.callback_url(),
        nonce.as_ref(),
    );
    Ok(HttpResponse::Ok().json(BindUrlResponse { url, expires_at }))
}

/// What WeChat appends to the redirect URI.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// OAuth code; absent when the user refused.
    pub code: Option<String>,
    /// The state from the bind link.
    pub state: Option<String>,
}

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
        (status = 400, description = "`invalid_state`, `authorization_denied`, `invalid_code` or `snapshot_user`", body = ErrorBody),
        (status = 409, description = "`already_bound`: the WeChat account is bound to another user", body = ErrorBody),
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
    let outcome = bind(&state, &wechat, query.into_inner()).await;
    let Some(result_url) = &state.config.bind_result_url else {
        return outcome.map(|()| bound_page());
    };
    let mut target = result_url.clone();
    match &outcome {
        Ok(()) => {
            target.query_pairs_mut().append_pair("status", "ok");
        }
        Err(e) => {
            if let ApiError::WechatUnavailable(cause) = e {
                tracing::warn!(error.cause = %cause, "binding failed upstream");
            }
            target
                .query_pairs_mut()
                .append_pair("status", "error")
                .append_pair("reason", e.code());
        }
    }
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, target.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

async fn bind(state: &AppState, wechat: &Wechat, query: CallbackQuery) -> Result<(), ApiError> {
    let client = wechat.client()?;
    let nonce = query
        .state
        .as_deref()
        .and_then(|s| BindState::parse(s).ok())
        .ok_or(ApiError::InvalidState)?;
    // A refusal leaves the link usable: the user may scan again and allow.
    let code = query
        .code
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or(ApiError::AuthorizationDenied)?;

    let hash = nonce.hash();
    let h = hash.clone();
    // Consumed atomically: of two callbacks with one state (WeChat sometimes opens it twice),
    // exactly one goes on, and the other cannot undo its work.
    let user_id = db::run(&state.pool, move |conn| {
        Ok(db::bind_states::consume(conn, &h)?)
    })
    .await?
    .ok_or(ApiError::InvalidState)?;
    tracing::Span::current().record("user.id", user_id);

    let result = exchange_and_store(state, client, user_id, &code).await;
    if result.is_err() {
        // Nothing changed: give the state back so the same link can be retried.
        db::run(&state.pool, move |conn| {
            Ok(db::bind_states::release(conn, &hash)?)
        })
        .await?;
    }
    result
}

async fn exchange_and_store(
    state: &AppState,
    client: &wechat::WechatClient,
    user_id: i64,
    code: &str,
) -> Result<(), ApiError> {
    let token = client
        .exchange_code(code)
        .await
        .map_err(|e| match e.errcode() {
            // invalid code, code already used, code expired
            Some(40029 | 40163 | 42003) => ApiError::InvalidCode,
            _ => ApiError::WechatUnavailable(e),
        })?;
    if token.is_snapshotuser == Some(1) {
        return Err(ApiError::SnapshotUser);
    }
    if token.openid.is_empty() || token.openid.len() > 128 {
        return Err(ApiError::WechatUnavailable(WechatError::Decode(
            "openid missing or too long".into(),
        )));
    }
    let openid = token.openid;
    db::run(&state.pool, move |conn| {
        conn.transaction(|conn| bind_openid(conn, user_id, &openid))
    })
    .await?;
    state.metrics.bind();
    tracing::info!(user.id = user_id, "WeChat account bound");
    Ok(())
}

/// Binds `openid` to the user and returns the username. An openid bound to someone else is
/// refused (`already_bound`), never moved. Shared by the OAuth callback and scan binding.
pub fn bind_openid(
    conn: &mut diesel::PgConnection,
    user_id: i64,
    openid: &str,
) -> Result<String, ApiError> {
    if db::users::find_by_openid(conn, openid)?.is_some_and(|owner| owner != user_id) {
        return Err(ApiError::AlreadyBound);
    }
    match db::users::bind_openid(conn, user_id, openid) {
        Ok(_) => {}
        // Lost a race with another binding of the same openid.
        Err(e) if db::is_unique_violation(&e) => return Err(ApiError::AlreadyBound),
        Err(e) => return Err(e.into()),
    }
    let user = db::users::find(conn, user_id)?.ok_or(ApiError::UserNotFound)?;
    Ok(user.username)
}

/// A scan-to-follow-and-bind QR code.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindQrcodeResponse {
    /// WeChat's ticket for the QR code.
    pub ticket: String,
    /// The QR code image (WeChat's showqrcode URL); scanning it follows the account and binds.
    pub qrcode_url: String,
    /// After this the QR code no longer binds; ask for a new one.
    pub expires_at: DateTime<Utc>,
}

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
    let client = wechat.client()?;
    let tokens = state.tokens.as_ref().ok_or(ApiError::WechatNotConfigured)?;
    let nonce = BindState::generate();
    let scene = format!(
        "{}{}",
        super::wechat_events::BIND_SCENE_PREFIX,
        nonce.as_ref()
    );
    let lifetime = u32::try_from(STATE_TTL.num_seconds()).unwrap_or(600);
    let token = tokens.get(client, &state.pool).await.map_err(token_error)?;
    let mut created = client.create_qrcode(token.secret(), &scene, lifetime).await;
    if matches!(&created, Err(e) if e.class() == wechat::ErrorClass::TokenInvalid) {
        let fresh = tokens
            .replace_rejected(client, &state.pool, &token)
            .await
            .map_err(token_error)?;
        created = client.create_qrcode(fresh.secret(), &scene, lifetime).await;
    }
    let qr = created.map_err(ApiError::WechatUnavailable)?;
    // Stored only once WeChat made the code: a failure above leaves nothing behind.
    let expires_at = Utc::now() + STATE_TTL;
    state
        .bind_states
        .submit((nonce.hash(), auth.id, expires_at))
        .await?;
    let qrcode_url = wechat::showqrcode_url(&state.config.wechat_mp_base, &qr.ticket);
    Ok(HttpResponse::Ok().json(BindQrcodeResponse {
        ticket: qr.ticket,
        qrcode_url,
        expires_at,
    }))
}

fn token_error(e: wechat::TokenError) -> ApiError {
    match e {
        wechat::TokenError::Wechat(w) => ApiError::WechatUnavailable(w),
        wechat::TokenError::Store(s) => ApiError::Unavailable(anyhow::anyhow!(s)),
    }
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
    db::run(&state.pool, move |conn| {
        Ok(db::users::unbind(conn, auth.id)?)
    })
    .await?;
    tracing::info!("WeChat binding removed");
    Ok(HttpResponse::NoContent().finish())
}
