//! `GET /api/me`: the caller's account and binding.
use actix_web::{HttpResponse, get, web};

use super::UserResponse;
use crate::auth::AuthUser;
use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

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
        db::users::find_profile(conn, auth.id)
    })
    .await?
    .ok_or(ApiError::Unauthorized(
        "the account of this token no longer exists",
    ))?;
    let profile = UserResponse::from(profile);
    Ok(HttpResponse::Ok().json(profile))
}
