//! Logging in and staying logged in: `POST /api/login` (username + password → access token
//! and a refresh session cookie), `POST /api/token/refresh`, `POST /api/logout`.
use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, ResponseError, post, web};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::UserResponse;
use crate::auth::{self, JwtKeys};
use crate::client_ip;
use crate::db::{self, users::Profile};
use crate::error::{ApiError, ErrorBody, ErrorChain};
use crate::metrics;
use crate::state::AppState;
use crate::telemetry::redacted_debug;

/// Credentials.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The account name (not empty).
    #[schema(example = "alice", min_length = 1)]
    // Not echoed either: people type their password into the username field.
    #[serde(deserialize_with = "string_not_echoed")]
    pub username: String,
    /// The password (not empty).
    #[schema(example = "correct horse battery staple", min_length = 1)]
    #[serde(deserialize_with = "string_not_echoed")]
    pub password: String,
}
redacted_debug!(LoginRequest {
    username,
    password: redacted
});

/// A JSON string. Anything else is refused without quoting it: serde's own message
/// ("invalid type: integer `12345678`") would put a numeric password into the 400 answer's
/// error, and with it into the request log.
fn string_not_echoed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(serde::de::Error::custom(
            "username and password must be strings",
        )),
    }
}

/// An access token and who it is for.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    pub expires_in: u64,
    /// The logged-in user.
    pub user: UserResponse,
}
redacted_debug!(LoginResponse {
    access_token: redacted,
    token_type,
    expires_in,
    user
});

/// Log in with username and password.
///
/// Returns a short-lived access token (JWT, 15 minutes by default) and sets the HttpOnly
/// `wxbind_session` cookie: a refresh session (14 days) for `POST /api/token/refresh`.
/// Unknown usernames and wrong passwords get the same answer in about the same time.
/// Failures are counted per client address (the peer, or the `X-Forwarded-For` entry of a
/// proxy in `WXBIND_TRUSTED_PROXIES`): after 10 failures in a minute for one username, or 30
/// for any, further attempts from that address are refused with 429 `too_many_attempts`;
/// other addresses are unaffected. Passwords are checked a few at a time: when more logins
/// arrive than the server can check within about a second, the rest are refused at once with
/// 503 `busy` and `Retry-After`.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "`invalid_request`: missing, empty or malformed fields", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `application/json`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: 10 failures a minute for this username, \
            or 30 for any, from this client address", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until another attempt may succeed"))),
        (status = 503, description = "`busy`: too many logins being verified at once; \
            `unavailable`: the database is unreachable", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (`busy`)"))),
    )
)]
#[post("/login")]
#[tracing::instrument(skip_all)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    keys: web::Data<JwtKeys>,
    session: Session,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let result = attempt(&req, &state, &keys, session, body.into_inner()).await;
    let outcome = match &result {
        Ok(_) => Some(metrics::Login::Ok),
        Err(ApiError::InvalidCredentials) => Some(metrics::Login::Invalid),
        Err(ApiError::TooManyAttempts) => Some(metrics::Login::Throttled),
        Err(ApiError::Busy) => Some(metrics::Login::Busy),
        // Malformed requests and server trouble: not a login attempt.
        Err(_) => None,
    };
    if let Some(outcome) = outcome {
        metrics::login(outcome);
    }
    match result {
        // The refusals a flood produces by the thousand a second: answered as a plain response,
        // without the error attached, so the request logger does not write a line for each.
        // They are counted in the metrics instead.
        Err(refused @ (ApiError::Busy | ApiError::TooManyAttempts)) => Ok(refused.error_response()),
        other => other,
    }
}

/// The login itself: limits, lookup, password check, session.
async fn attempt(
    req: &HttpRequest,
    state: &AppState,
    keys: &JwtKeys,
    session: Session,
    LoginRequest { username, password }: LoginRequest,
) -> Result<HttpResponse, ApiError> {
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::invalid("username and password are required"));
    }
    if username.len() > 256 || password.len() > 1024 {
        return Err(ApiError::InvalidCredentials);
    }
    // First, before any other work: a flood beyond what can be checked is refused here,
    // before it reaches the database.
    let slot = state.verifier.admit()?;
    let client = client_ip::client_ip(req, &state.config.http.trusted_proxies);
    let key = auth::FailureKey::new(client, &username);

    // The failure counts and the account in one unit of work; the account is only read when
    // the counts allow an attempt.
    let lookup_key = key.clone();
    let (recent, profile) = db::run(&state.pool, move |conn| {
        let recent = db::login_failures::recent(
            conn,
            &lookup_key.address,
            &lookup_key.username_hash,
            auth::FAILURE_WINDOW,
        )?;
        if auth::check_failures(recent.for_username, recent.for_address).is_err() {
            return Ok((recent, None));
        }
        // PostgreSQL text cannot hold U+0000, so no account has it in its name: asking would
        // only fail the query.
        if username.contains('\0') {
            return Ok((recent, None));
        }
        // An API key's principal (`key:<name>`) cannot log in, and must not answer faster than
        // an unknown name (its stored hash is not a hash): it is looked up as no one.
        if username.starts_with("key:") {
            return Ok((recent, None));
        }
        let profile = db::users::find_profile_by_username(conn, &username)?;
        Ok((recent, profile))
    })
    .await?;
    auth::check_failures(recent.for_username, recent.for_address).inspect_err(|_| {
        tracing::debug!(client.address = %key.address, "login refused: too many failures");
    })?;

    // Checked on the verifier's threads, without a DB connection held.
    let stored_hash = profile.as_ref().map(|p| p.0.password_hash.clone());
    let ok = slot.verify(password, stored_hash).await?;

    let Some(profile) = profile.filter(|_| ok) else {
        tracing::info!(client.address = %key.address, "login failed");
        // Recorded before answering: an attempt the database could not count fails (503 when
        // it is unreachable) rather than being answered as if it had been counted.
        db::run(&state.pool, move |conn| {
            db::login_failures::record(conn, &key.address, &key.username_hash)
        })
        .await?;
        return Err(ApiError::InvalidCredentials);
    };
    if recent.for_username > 0 {
        // The client proved the password: its earlier typos from this address are forgiven.
        // Only a convenience, so a failure here does not fail the login.
        let forgotten = db::run(&state.pool, move |conn| {
            db::login_failures::forget(conn, &key.address, &key.username_hash)
        })
        .await;
        if let Err(e) = forgotten {
            tracing::warn!(error = %ErrorChain(&e), "could not forget earlier login failures");
        }
    }
    // A new session id at every login: a session fixed before login is worthless after it.
    session.renew();
    let stored = session
        .insert(crate::session::USER_ID, profile.0.id)
        .and_then(|()| session.insert(crate::session::CREATED_AT, chrono::Utc::now().timestamp()));
    stored.map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("storing the session")))?;
    tracing::info!(user.id = profile.0.id, "logged in");
    issue(keys, profile)
}

/// The login answer: a fresh access token and the user it is for.
fn issue(keys: &JwtKeys, profile: Profile) -> Result<HttpResponse, ApiError> {
    let issued = keys.issue(profile.0.id, profile.0.role)?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(LoginResponse {
            access_token: issued.token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            user: UserResponse::from(profile),
        }))
}

/// A new access token from the refresh session cookie.
///
/// The SPA calls this (with `credentials: "include"`) when its access token is about to
/// expire or after a reload. Fails with 401 `session_expired` once the session has expired
/// or was ended by `POST /api/logout`.
#[utoipa::path(
    tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "A fresh access token", body = LoginResponse),
        (status = 401, description = "`session_expired`: no valid refresh session", body = ErrorBody),
    )
)]
#[post("/token/refresh")]
#[tracing::instrument(skip_all)]
pub async fn refresh_token(
    state: web::Data<AppState>,
    keys: web::Data<JwtKeys>,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let user_id = session
        .get::<i64>(crate::session::USER_ID)
        .ok()
        .flatten()
        .ok_or(ApiError::SessionExpired)?;
    let created_at = session
        .get::<i64>(crate::session::CREATED_AT)
        .ok()
        .flatten()
        .unwrap_or(0);
    let max_age = i64::try_from(state.config.auth.session_max.as_secs()).unwrap_or(i64::MAX);
    if chrono::Utc::now().timestamp().saturating_sub(created_at) > max_age {
        // Past its absolute lifetime (or from before lifetimes were recorded): log in again.
        session.purge();
        return Err(ApiError::SessionExpired);
    }
    let profile = db::run(&state.pool, move |conn| {
        db::users::find_profile(conn, user_id)
    })
    .await?;
    let Some(profile) = profile else {
        session.purge();
        return Err(ApiError::SessionExpired);
    };
    // Touching the state slides the session's expiry forward and moves it to a new key.
    session
        .insert("refreshed_at", chrono::Utc::now().timestamp())
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("storing the session")))?;
    issue(&keys, profile)
}

/// End the refresh session: later refreshes fail; the cookie is cleared.
///
/// Access tokens already issued stay valid until they expire (at most `JWT_TTL_SECONDS`).
/// The cookie is optional: without one (or with one that no longer works) this answers 204
/// all the same, since there is no session left to end.
#[utoipa::path(
    tag = "auth",
    security((), ("session_cookie" = [])),
    responses((status = 204, description = "Logged out (also when there was no session)"))
)]
#[post("/logout")]
pub async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::NoContent().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_that_is_not_a_string_is_refused_without_quoting_it() {
        let err =
            serde_json::from_str::<LoginRequest>(r#"{"username":"alice","password":24681357}"#)
                .expect_err("not a string");
        assert!(!err.to_string().contains("24681357"), "{err}");
        let ok: LoginRequest =
            serde_json::from_str(r#"{"username":"alice","password":"24681357"}"#).expect("string");
        assert_eq!(ok.password, "24681357");
    }
}
