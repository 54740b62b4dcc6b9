//! `GET /api/users?unionid=`: admins find the account a WeChat user is bound to by the unionid
//! the company's other apps know that person by (an openid differs from app to app).
use actix_web::{HttpResponse, get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::UserResponse;
use crate::auth::AuthUser;
use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Longest unionid looked up; WeChat's are 28 characters.
const MAX_UNIONID_CHARS: usize = 128;

/// What to look an account up by.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserLookup {
    // Required, but an `Option` so that a missing one is this API's 400 after the admin
    // check rather than the extractor's before it.
    /// The WeChat user's unionid, as the company's other apps know it.
    #[param(
        required = true,
        min_length = 1,
        max_length = 128,
        example = "o6_bmasdasdsad6_2sgVt7hMZOPfL"
    )]
    pub unionid: Option<String>,
}

/// The account bound to a WeChat unionid (admins only).
///
/// Only bindings made through a bind link carry a unionid, and only when the official account
/// is linked to an Open Platform account: an account bound by scanning a QR code is not found
/// until it completes a bind link once.
#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    params(UserLookup),
    responses(
        (status = 200, description = "The account", body = UserResponse),
        (status = 400, description = "`invalid_request`: `unionid` missing, empty or longer than 128 characters", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins look users up", body = ErrorBody),
        (status = 404, description = "`user_not_found`: no account is bound to this unionid", body = ErrorBody),
    )
)]
#[get("/users")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn find_user(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<UserLookup>,
) -> Result<HttpResponse, ApiError> {
    // First, so a non-admin learns nothing from the answer, not even what a valid lookup is.
    auth.require_admin("only admins may look users up")?;
    let unionid = query
        .into_inner()
        .unionid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::invalid("unionid is required"))?;
    if unionid.chars().count() > MAX_UNIONID_CHARS {
        return Err(ApiError::invalid(format!(
            "unionid must be at most {MAX_UNIONID_CHARS} characters"
        )));
    }
    // PostgreSQL text cannot hold U+0000, so no binding has it: asking would only fail.
    if unionid.contains('\0') {
        return Err(ApiError::UserNotFound);
    }
    let profile = db::run(&state.pool, move |conn| {
        db::users::find_profile_by_unionid(conn, &unionid)
    })
    .await?
    .ok_or(ApiError::UserNotFound)?;
    Ok(HttpResponse::Ok().json(UserResponse::from(profile)))
}
