//! WeChat's daily send quota (admins): `GET /api/quota` shows it with the pause, `POST
//! /api/quota/reset` resets it at WeChat and resumes sending. The rules live in `quota`.
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::quota;
use crate::state::AppState;
use crate::wechat::Wechat;

/// The account's template-send quota today.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaResponse {
    /// Sends WeChat allows today (`openapi/quota/get`; 100,000 by default, more with more
    /// followers); null when WeChat did not answer (see `wechat_error`).
    #[schema(example = 100000)]
    pub daily_limit: Option<i64>,
    /// Sends WeChat counted today; null when WeChat did not answer.
    #[schema(example = 1200)]
    pub used: Option<i64>,
    /// Sends WeChat still allows today; null when WeChat did not answer.
    #[schema(example = 98800)]
    pub remain: Option<i64>,
    /// Why WeChat's figures are missing; null when WeChat answered.
    pub wechat_error: Option<String>,
    /// While WeChat refuses sends for the day's quota (45009), no message is sent until this
    /// time (midnight Beijing time) or a reset; queued messages wait without spending their
    /// attempts. Null while sending.
    pub paused_until: Option<DateTime<Utc>>,
    /// Messages WeChat took today (since midnight Beijing time), by this service's own count:
    /// sent, under review, or blocked by review.
    #[schema(example = 1180)]
    pub sent_today: i64,
}

/// The result of a quota reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaResetResponse {
    /// Whether sending had been paused for the quota; it resumes now, in every process.
    pub was_paused: bool,
    /// Resets made through this service this month (Beijing time), this one included.
    #[schema(example = 1)]
    pub resets_this_month: i64,
    /// At most this many resets are left this month: WeChat allows 10 and does not say how
    /// many were used elsewhere (its console, another tool); when none is left the reset is
    /// refused with `quota_reset_limit`.
    #[schema(example = 9)]
    pub resets_left_at_most: i64,
}

/// The account's template-send quota (admins).
///
/// WeChat's figures for today with this service's own count and whether sending is paused
/// because the quota is used up.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Today's quota (WeChat's figures null, with `wechat_error`, when WeChat did not answer)", body = QuotaResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may see the quota", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` or `unavailable`", body = ErrorBody),
    )
)]
#[get("/quota")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_quota(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    auth.require_admin("only admins may see or reset the quota")?;
    let status = quota::status(&state.pool, wechat.get()?).await?;
    let (figures, wechat_error) = match status.wechat {
        Ok(q) => (Some(q), None),
        Err(e) => (None, Some(e)),
    };
    Ok(HttpResponse::Ok().json(QuotaResponse {
        daily_limit: figures.map(|q| q.daily_limit),
        used: figures.map(|q| q.used),
        remain: figures.map(|q| q.remain),
        wechat_error,
        paused_until: status.paused_until,
        sent_today: status.sent_today,
    }))
}

/// Reset the daily quota at WeChat and resume sending (admins).
///
/// Calls WeChat's `clear_quota` (10 a month per account) and lifts the pause in every
/// process. Use it when messages must go out before midnight Beijing time. A second reset
/// within ten seconds, with no pause since, answers as the first did without calling WeChat.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Reset; sending resumes", body = QuotaResetResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may reset the quota", body = ErrorBody),
        (status = 429, description = "`quota_reset_limit`: no reset is left this month", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`: WeChat did not reset", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` or `unavailable`", body = ErrorBody),
    )
)]
#[post("/quota/reset")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn reset_quota(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    auth.require_admin("only admins may see or reset the quota")?;
    let reset = quota::reset(&state.pool, wechat.get()?, auth.id).await?;
    Ok(HttpResponse::Ok().json(QuotaResetResponse {
        was_paused: reset.was_paused,
        resets_this_month: reset.resets_this_month,
        resets_left_at_most: (quota::RESETS_PER_MONTH - reset.resets_this_month).max(0),
    }))
}
