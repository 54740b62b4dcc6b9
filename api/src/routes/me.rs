//! `GET /api/me`: the caller's account and binding.
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::db::{self, users::Profile};
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
    /// Whether the bound WeChat user follows the official account; null while unbound or
    /// before WeChat has said (follow events, or a send refused with 43004).
    pub subscribed: Option<bool>,
    /// When they last followed.
    pub subscribed_at: Option<DateTime<Utc>>,
}

impl From<Profile> for UserResponse {
    fn from((user, follower): Profile) -> Self {
        Self {
            id: user.id,
            uid: crate::domain::public_uid(&user.username),
            username: user.username,
            role: Role::from_db(&user.role),
            wechat_bound: user.openid.is_some(),
            bound_at: user.bound_at,
            // A follow state is only the user's while the openid is bound to them.
            subscribed: follower.as_ref().map(|f| f.subscribed),
            subscribed_at: follower.and_then(|f| f.subscribed_at),
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
    let profile = db::run(&state.pool, move |conn| {
        Ok(db::users::find_profile(conn, auth.id)?)
    })
    .await?
    .ok_or(ApiError::Unauthorized(
        "the account of this token no longer exists",
    ))?;
    let profile = UserResponse::from(profile);
    Ok(HttpResponse::Ok().json(profile))
}
