//! `POST /api/login`: username + password → access token.
use actix_web::{HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::me::UserResponse;
use crate::auth::{self, JwtKeys, Role};
use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The account name.
    #[schema(example = "alice")]
    pub username: String,
    /// The password.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// An access token and who it is for.
#[derive(Debug, Serialize, ToSchema)]
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

/// Log in with username and password.
///
/// Unknown usernames and wrong passwords get the same answer in about the same time.
/// More than 10 failures in a minute for one username are refused with 429.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "`invalid_request`: missing or malformed fields", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`", body = ErrorBody),
    )
)]
#[post("/login")]
#[tracing::instrument(skip_all)]
pub async fn login(
    state: web::Data<AppState>,
    keys: web::Data<JwtKeys>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { username, password } = body.into_inner();
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::invalid("username and password are required"));
    }
    if username.len() > 256 || password.len() > 1024 {
        return Err(ApiError::InvalidCredentials);
    }
    state.throttle.check(&username)?;

    let name = username.clone();
    let user = db::run(&state.pool, move |conn| {
        Ok(db::users::find_by_username(conn, &name)?)
    })
    .await?;
    // Hashing is CPU-heavy: keep it off the async workers, and without a DB connection held.
    let (user, ok) = actix_web::web::block(move || match user {
        Some(u) => {
            let ok = auth::verify_password(&password, &u.password_hash);
            (Some(u), ok)
        }
        None => {
            auth::verify_dummy(&password);
            (None, false)
        }
    })
    .await?;

    let Some(user) = user.filter(|_| ok) else {
        state.throttle.record_failure(&username);
        state.metrics.login_failed();
        tracing::info!("login failed");
        return Err(ApiError::InvalidCredentials);
    };
    state.throttle.record_success(&username);
    let issued = keys.issue(user.id, Role::from_db(&user.role))?;
    tracing::info!(user.id = user.id, "logged in");
    let profile = db::run(&state.pool, move |conn| UserResponse::load(conn, user)).await?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        user: profile,
    }))
}
