//! `GET /api/me`: the caller's account and binding.
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::db::{self, users::User};
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Internal id; what `user_id` fields refer to.
    #[schema(example = 1)]
    pub id: i64,
    /// Login name.
    #[schema(example = "alice")]
    pub username: String,
    /// Public user id: md5 hex of the username. An identifier, never a secret.
    #[schema(example = "6384e2b2184bcbf58eccf10ca7a6563c")]
    pub uid: String,
    /// `user` or `admin`.
    pub role: Role,
    /// Whether a WeChat account is bound.
    pub wechat_bound: bool,
    /// When it was bound.
    pub bound_at: Option<DateTime<Utc>>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            uid: format!("{:x}", md5::compute(u.username.as_bytes())),
            username: u.username,
            role: Role::from_db(&u.role),
            wechat_bound: u.openid.is_some(),
            bound_at: u.bound_at,
        }
    }
}

/// The logged-in user and whether WeChat is bound.
///
/// The SPA polls this after showing the bind QR code until `wechat_bound` is true.
#[utoipa::path(
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
#[get("/me")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_me(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, ApiError> {
    let user = db::run(&state.pool, move |conn| Ok(db::users::find(conn, auth.id)?))
        .await?
        .ok_or(ApiError::Unauthorized(
            "the account of this token no longer exists",
        ))?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}
