//! Broadcasts (admins and API keys): `POST /api/broadcasts` queues one message per recipient
//! in one transaction; `GET /api/broadcasts/{id}` counts them by status, `GET
//! /api/broadcasts/{id}/messages` lists them, `POST /api/broadcasts/{id}/cancel` cancels what
//! has not been sent.
use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::Connection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::message_log::MessagePage;
use super::messages::MiniprogramPage;
use crate::auth::AuthUser;
use crate::db::{
    self,
    broadcasts::{Broadcast, Created, NewBroadcast, Recipients},
    messages::LogFilter,
};
use crate::domain::{MessageStatus, Miniprogram, TemplateData, TemplateValue};
use crate::error::{ApiError, ErrorBody};
use crate::sending::{self, Content};
use crate::state::AppState;
use crate::wechat::Wechat;

/// Largest accepted `POST /api/broadcasts` body (100,000 recipients with values of their own
/// fit).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Most recipients one broadcast names (`all_bound` has no limit).
pub const MAX_USER_IDS: usize = 100_000;

/// Who a broadcast goes to: `{"user_ids": [...]}` or `{"all_bound": true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RecipientsRequest {
    /// These users, 1-100,000 ids (duplicates count once).
    UserIds {
        /// The recipients.
        #[schema(min_items = 1, max_items = 100000)]
        user_ids: Vec<i64>,
    },
    /// Every bound user.
    AllBound {
        /// Must be true.
        all_bound: bool,
    },
}

/// A broadcast to queue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBroadcastRequest {
    /// Template to use; omitted means the server's `WECHAT_TEMPLATE_ID`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub template_id: Option<String>,
    /// Every recipient's template fields (as `POST /api/messages` takes them).
    #[schema(value_type = Object)]
    pub data: BTreeMap<String, TemplateValue>,
    /// Per-recipient fields over `data`: user id → fields that replace (or add to) the
    /// common ones for that recipient.
    #[schema(value_type = Option<Object>)]
    pub data_by_user: Option<BTreeMap<String, BTreeMap<String, TemplateValue>>>,
    /// Page every message opens (as for `POST /api/messages`).
    #[schema(max_length = 1024)]
    pub url: Option<String>,
    /// Mini-program page every message opens.
    pub miniprogram: Option<MiniprogramPage>,
    /// The recipients.
    pub recipients: RecipientsRequest,
    /// Makes retries safe: the same key from the same sender returns the first broadcast.
    #[schema(pattern = "^[!-~]{1,128}$")]
    pub idempotency_key: Option<String>,
    /// Not sent before this time (RFC 3339, at most 30 days ahead).
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours too.
    #[serde(default)]
    pub urgent: bool,
}

/// Messages of a broadcast by status; `skipped` recipients got none.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub under_review: i64,
    pub failed: i64,
    pub skipped: i64,
}

/// Messages of a broadcast by WeChat's delivery report.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DeliveryCounts {
    pub unknown: i64,
    pub delivered: i64,
    pub blocked: i64,
    pub failed: i64,
}

/// Recipients left out, by reason.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct SkippedReasons {
    /// No such user.
    #[serde(default)]
    pub user_not_found: i64,
    /// The user has no WeChat binding.
    #[serde(default)]
    pub not_bound: i64,
    /// The user unfollowed the official account (WeChat would refuse the message).
    #[serde(default)]
    pub not_following: i64,
}

/// A broadcast and where its messages are.
#[derive(Debug, Serialize, ToSchema)]
pub struct BroadcastResponse {
    /// Its id.
    pub id: Uuid,
    /// `scheduled` (waiting for `send_at`), `sending` (messages not finished), `done` or
    /// `cancelled`.
    #[schema(example = "sending")]
    pub status: String,
    /// The template.
    pub template_id: String,
    /// Recipients asked for (after removing duplicates): queued messages plus skipped.
    pub total: i64,
    /// By status.
    pub counts: StatusCounts,
    /// By delivery report.
    pub delivery: DeliveryCounts,
    /// Why recipients were skipped.
    pub skipped_reasons: SkippedReasons,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Not sent before this time.
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours too.
    pub urgent: bool,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
}

fn respond(b: Broadcast, rows: &[db::broadcasts::StatusCount]) -> BroadcastResponse {
    let skipped: SkippedReasons = serde_json::from_value(b.skipped).unwrap_or_default();
    let mut counts = StatusCounts {
        skipped: skipped.user_not_found + skipped.not_bound + skipped.not_following,
        ..StatusCounts::default()
    };
    let mut delivery = DeliveryCounts::default();
    for r in rows {
        match r.status.as_str() {
            "queued" => counts.queued += r.n,
            "sending" => counts.sending += r.n,
            "sent" => counts.sent += r.n,
            "under_review" => counts.under_review += r.n,
            _ => counts.failed += r.n,
        }
        match r.delivery.as_str() {
            "delivered" => delivery.delivered += r.n,
            "blocked" => delivery.blocked += r.n,
            "failed" => delivery.failed += r.n,
            _ => delivery.unknown += r.n,
        }
    }
    let unfinished = counts.queued + counts.sending;
    let status = if b.cancelled_at.is_some() {
        "cancelled"
    } else if unfinished > 0 && b.send_at.is_some_and(|at| at > Utc::now()) {
        "scheduled"
    } else if unfinished > 0 {
        "sending"
    } else {
        "done"
    };
    BroadcastResponse {
        id: b.id,
        status: status.into(),
        template_id: b.template_id,
        total: i64::from(b.total),
        counts,
        delivery,
        skipped_reasons: skipped,
        created_at: b.created_at,
        send_at: b.send_at,
        urgent: b.urgent,
        cancelled_at: b.cancelled_at,
    }
}

/// An admin or an API key: the caller of a broadcast route. Extracted before the body, so a
/// caller who may not broadcast is refused before a 32 MiB body is read.
pub struct Broadcaster(pub AuthUser);

impl actix_web::FromRequest for Broadcaster {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let auth = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let auth = auth.await?;
            may_broadcast(&auth)?;
            Ok(Self(auth))
        })
    }
}

fn may_broadcast(auth: &AuthUser) -> Result<(), ApiError> {
    if auth.may_send_to_anyone() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only admins and API keys broadcast"))
    }
}

/// Checks the common `data` and every recipient's fields merged over it against the template;
/// returns the common data and each recipient's own fields (user id, fields).
fn check_data(
    templates: &crate::templates::Registry,
    template_id: &str,
    data: BTreeMap<String, TemplateValue>,
    by_user: BTreeMap<String, BTreeMap<String, TemplateValue>>,
) -> Result<(TemplateData, Vec<(i64, serde_json::Value)>), ApiError> {
    if by_user.len() > MAX_USER_IDS {
        return Err(ApiError::invalid(
            "data_by_user may name at most 100000 users",
        ));
    }
    let common = TemplateData::parse(data.clone()).map_err(|e| ApiError::InvalidRequest(e.0))?;
    templates.check(template_id, &common)?;
    let mut overrides = Vec::with_capacity(by_user.len());
    let mut seen = std::collections::HashSet::new();
    for (user, fields) in by_user {
        let user_id: i64 = user
            .parse()
            .ok()
            .filter(|id: &i64| id.to_string() == user)
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("data_by_user: {user:?} is not a user id"))
            })?;
        if !seen.insert(user_id) {
            return Err(ApiError::InvalidRequest(format!(
                "data_by_user: user {user_id} is named twice"
            )));
        }
        let bad = |e: crate::domain::DomainError| {
            ApiError::InvalidRequest(format!("data_by_user.{user_id}: {}", e.0))
        };
        let own = TemplateData::parse(fields.clone()).map_err(bad)?;
        let mut merged = data.clone();
        merged.extend(fields);
        templates.check(template_id, &TemplateData::parse(merged).map_err(bad)?)?;
        overrides.push((user_id, own.to_json()));
    }
    Ok((common, overrides))
}

/// Queue a broadcast: one message per recipient (admins and API keys).
///
/// Validated once against the template (each recipient's `data_by_user` fields merged over
/// `data` too) and queued in one transaction: all of it or none. Recipients that are unknown,
/// not bound, or known to have unfollowed are counted in `skipped_reasons`, not failed. The
/// messages are delivered at the account's pace, fairly with other senders, within the quota
/// rules, quiet hours and the daily cap per user.
#[utoipa::path(
    tag = "broadcasts",
    security(("bearer" = [])),
    request_body = CreateBroadcastRequest,
    responses(
        (status = 202, description = "Queued", body = BroadcastResponse, links(
            ("GetBroadcast" = (operation_id = "get_broadcast", parameters(("id" = "$response.body#/id")), description = "Follow it"))
        )),
        (status = 200, description = "Already queued under this idempotency key", body = BroadcastResponse),
        (status = 400, description = "`invalid_request`: bad data, template, url, recipients, time or key (the message names the field); `invalid_template_data`: the data does not fit the template; `unknown_template`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins and API keys broadcast", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 32 MiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: the broadcast would take the sender past `WXBIND_MAX_QUEUED_PER_SENDER` messages waiting (scheduled ones included)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[post("")]
#[tracing::instrument(skip_all)]
pub async fn create_broadcast(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    Broadcaster(auth): Broadcaster,
    body: web::Json<CreateBroadcastRequest>,
) -> Result<HttpResponse, ApiError> {
    wechat.get()?;
    let req = body.into_inner();
    let default_template = state
        .config
        .wechat
        .as_ref()
        .and_then(|w| w.default_template_id.as_deref());
    let content = Content::parse(
        req.template_id.as_deref(),
        default_template,
        req.url.as_deref(),
        req.miniprogram
            .as_ref()
            .map(|m| (m.appid.as_str(), m.pagepath.as_str())),
    )?;
    let recipients = match req.recipients {
        RecipientsRequest::UserIds { user_ids } => {
            if user_ids.is_empty() || user_ids.len() > MAX_USER_IDS {
                return Err(ApiError::invalid(
                    "recipients.user_ids must name 1 to 100000 users",
                ));
            }
            Recipients::Users(user_ids)
        }
        RecipientsRequest::AllBound { all_bound: true } => Recipients::AllBound,
        RecipientsRequest::AllBound { all_bound: false } => {
            return Err(ApiError::invalid(
                "recipients must be {\"user_ids\": [...]} or {\"all_bound\": true}",
            ));
        }
    };
    sending::check_idempotency_key(req.idempotency_key.as_deref())?;
    sending::check_timing(&auth, req.send_at, req.urgent)?;
    // Up to 100,000 recipients' fields to check: on the blocking pool, not on the thread that
    // serves requests.
    let templates = std::sync::Arc::clone(&state.templates);
    let template_id = content.template_id.as_ref().to_owned();
    let by_user = req.data_by_user.unwrap_or_default();
    let (data, overrides) =
        web::block(move || check_data(&templates, &template_id, req.data, by_user))
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("checking a broadcast's data: {e}"))
            })??;
    // Admitted with its size: a broadcast may not take the sender past its waiting limit.
    let size = match &recipients {
        Recipients::Users(ids) => i64::try_from(ids.len()).unwrap_or(i64::MAX),
        Recipients::AllBound => db::run(&state.pool, db::users::count_bound).await?,
    };
    if size > state.config.delivery.max_queued_per_sender {
        // Waiting would never help: say so instead of 429.
        return Err(ApiError::InvalidRequest(format!(
            "recipients: {size} messages exceed WXBIND_MAX_QUEUED_PER_SENDER ({}); split the broadcast or raise the limit",
            state.config.delivery.max_queued_per_sender
        )));
    }
    state
        .limits
        .admit_many(&state.pool, auth.id, true, size)
        .await?;
    let new = NewBroadcast {
        id: Uuid::new_v4(),
        sender_id: auth.id,
        template_id: content.template_id.as_ref().to_owned(),
        url: content.url.as_ref().map(|u| u.as_ref().to_owned()),
        miniprogram: content.miniprogram.as_ref().map(Miniprogram::to_json),
        data: data.to_json(),
        overrides,
        recipients,
        idempotency_key: req.idempotency_key,
        send_at: req.send_at,
        urgent: req.urgent,
    };
    let (created, rows) = db::run_within(&state.pool, db::broadcasts::DEADLINE, move |conn| {
        let created = db::broadcasts::create(conn, &new)?;
        let id = match &created {
            Created::New(b) | Created::Existing(b) => b.id,
        };
        Ok::<_, db::DbError>((created, db::broadcasts::counts(conn, id)?))
    })
    .await?;
    let (broadcast, fresh) = match created {
        Created::New(b) => (b, true),
        Created::Existing(b) => (b, false),
    };
    let body = respond(broadcast, &rows);
    if !fresh {
        return Ok(HttpResponse::Ok().json(body));
    }
    state.limits.accepted_many(auth.id, body.counts.queued);
    state.wake_worker.notify_one();
    tracing::info!(
        broadcast.id = %body.id,
        queued = body.counts.queued,
        skipped = body.counts.skipped,
        "broadcast queued"
    );
    Ok(HttpResponse::Accepted().json(body))
}

/// Finds a broadcast the caller may see: admins all, others their own.
async fn visible(state: &AppState, auth: &AuthUser, raw: &str) -> Result<Broadcast, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::BroadcastNotFound)?;
    db::run(&state.pool, move |conn| db::broadcasts::find(conn, id))
        .await?
        .filter(|b| sees(auth, b))
        .ok_or(ApiError::BroadcastNotFound)
}

/// Admins see every broadcast, others their own.
fn sees(auth: &AuthUser, b: &Broadcast) -> bool {
    auth.is_admin() || b.sender_id == auth.id
}

/// A broadcast with its messages counted by status and delivery (admins, and its sender).
#[utoipa::path(
    tag = "broadcasts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Broadcast id")),
    responses(
        (status = 200, description = "The broadcast", body = BroadcastResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins and API keys broadcast", body = ErrorBody),
        (status = 404, description = "`broadcast_not_found`", body = ErrorBody),
    )
)]
#[get("/{id}")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_broadcast(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    may_broadcast(&auth)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::BroadcastNotFound)?;
    let (b, rows) = db::run(&state.pool, move |conn| {
        let Some(b) = db::broadcasts::find(conn, id)?.filter(|b| sees(&auth, b)) else {
            return Ok(None);
        };
        Ok(Some((b, db::broadcasts::counts(conn, id)?)))
    })
    .await?
    .ok_or(ApiError::BroadcastNotFound)?;
    Ok(HttpResponse::Ok().json(respond(b, &rows)))
}

/// The broadcast messages query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BroadcastMessagesQuery {
    /// Only messages with this status.
    pub status: Option<MessageStatus>,
    /// The previous page's `next_cursor`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub cursor: Option<String>,
    /// Messages per page, 1-200 (50 when omitted).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A broadcast's messages, in pages (admins, and its sender).
#[utoipa::path(
    tag = "broadcasts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Broadcast id"), BroadcastMessagesQuery),
    responses(
        (status = 200, description = "One page", body = MessagePage),
        (status = 400, description = "`invalid_request`: a bad status, cursor or limit", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins and API keys broadcast", body = ErrorBody),
        (status = 404, description = "`broadcast_not_found`", body = ErrorBody),
    )
)]
#[get("/{id}/messages")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_broadcast_messages(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
    query: web::Query<BroadcastMessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    may_broadcast(&auth)?;
    let b = visible(&state, &auth, &id).await?;
    let q = query.into_inner();
    let filter = LogFilter {
        status: q.status,
        broadcast_id: Some(b.id),
        ..LogFilter::default()
    };
    let page = super::message_log::page(&state, filter, q.cursor.as_deref(), q.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Cancel what of a broadcast has not been sent (admins, and its sender).
///
/// Its queued messages end `failed` with reason `cancelled`; those being sent at this moment
/// finish. Cancelling again changes nothing.
#[utoipa::path(
    tag = "broadcasts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Broadcast id")),
    responses(
        (status = 200, description = "Cancelled; the counts after it", body = BroadcastResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins and API keys broadcast", body = ErrorBody),
        (status = 404, description = "`broadcast_not_found`", body = ErrorBody),
    )
)]
#[post("/{id}/cancel")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn cancel_broadcast(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    may_broadcast(&auth)?;
    let b = visible(&state, &auth, &id).await?;
    let id = b.id;
    let (cancelled, b, rows) = db::run_within(&state.pool, db::broadcasts::DEADLINE, move |conn| {
        let n = conn.transaction(|conn| {
            let n = db::broadcasts::cancel(conn, id)?;
            crate::audit::record_for(
                conn,
                &auth,
                crate::audit::Action::BroadcastCancelled,
                Some(&id.to_string()),
                serde_json::json!({"cancelled": n}),
            )?;
            Ok::<_, diesel::result::Error>(n)
        })?;
        let b = db::broadcasts::find(conn, id)?.ok_or(diesel::result::Error::NotFound)?;
        Ok::<_, db::DbError>((n, b, db::broadcasts::counts(conn, id)?))
    })
    .await?;
    tracing::info!(broadcast.id = %id, cancelled, "broadcast cancelled");
    Ok(HttpResponse::Ok().json(respond(b, &rows)))
}
