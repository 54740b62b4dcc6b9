//! The message log for operators: `GET /api/messages` (admins all, an API key its own) with
//! filters and cursor pages, newest first; `POST /api/messages/{id}/retry` (admins) queues a
//! failed message again.
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::Connection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::messages::MessageResponse;
use super::paging;
use crate::audit::{self, Action};
use crate::auth::AuthUser;
use crate::db::{self, messages::LogFilter, messages::Retried};
use crate::domain::MessageStatus;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The log's filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only messages with this status.
    pub status: Option<MessageStatus>,
    /// Only messages to this user.
    pub user_id: Option<i64>,
    /// Only messages with this template.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub template_id: Option<String>,
    /// Only messages queued at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only messages queued before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// Only messages of this broadcast.
    pub broadcast_id: Option<Uuid>,
    /// The previous page's `next_cursor`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub cursor: Option<String>,
    /// Messages per page, 1-200 (50 when omitted).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// One page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Newest first.
    pub messages: Vec<MessageResponse>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    paging::seal(&format!("{}.{id}", at.timestamp_micros()))
}

fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = paging::unseal(raw)?;
    let (micros, id) = text.split_once('.')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    // Within what PostgreSQL's timestamptz holds: a forged far date would fail the query.
    use chrono::Datelike;
    (1970..=9999).contains(&at.year()).then_some(())?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// The message log (admins: every message; an API key: the ones it sent).
///
/// Newest first, in pages: pass `next_cursor` back as `cursor` for the next one. Filters
/// combine.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(LogQuery),
    responses(
        (status = 200, description = "One page", body = MessagePage),
        (status = 400, description = "`invalid_request`: a bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins and API keys read the log", body = ErrorBody),
    )
)]
#[get("/messages")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_messages(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    if !auth.is_admin() && auth.key.is_none() {
        return Err(ApiError::Forbidden(
            "only admins and API keys read the message log",
        ));
    }
    let q = query.into_inner();
    if let Some(t) = &q.template_id {
        crate::domain::TemplateId::parse(t).map_err(|e| ApiError::InvalidRequest(e.0))?;
    }
    let filter = LogFilter {
        // A key with scope `send` reads what it sent; admins (and admin keys) everything.
        sender_id: (auth.key == Some(crate::keys::Scope::Send)).then_some(auth.id),
        status: q.status,
        user_id: q.user_id,
        template_id: q.template_id,
        created_after: q.created_after,
        created_before: q.created_before,
        broadcast_id: q.broadcast_id,
        after: None,
    };
    let page = page(&state, filter, q.cursor.as_deref(), q.limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One page of the messages `filter` selects, after `cursor`, newest first.
pub async fn page(
    state: &AppState,
    mut filter: LogFilter,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<MessagePage, ApiError> {
    let limit = paging::limit(limit)?;
    filter.after = paging::cursor(cursor, decode_cursor)?;
    let rows = db::run(&state.pool, move |conn| {
        db::messages::log_page(conn, &filter, limit + 1)
    })
    .await?;
    let (rows, next_cursor) = paging::split(rows, limit, |m| encode_cursor(m.created_at, m.id));
    Ok(MessagePage {
        messages: rows.into_iter().map(MessageResponse::from).collect(),
        next_cursor,
    })
}

/// One step of a message's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `queued` (at creation, or again by a retry), `retry_scheduled` (an attempt failed and
    /// will be retried), `requeued` (handed back unspent: the account's quota ran out),
    /// `sent`, `under_review`, `failed`, and WeChat's delivery report: `delivered`, `blocked`
    /// or `delivery_failed`.
    #[schema(example = "sent")]
    pub event: String,
    /// The attempt it concerns (0 before the first).
    pub attempt: i32,
    /// WeChat's errcode, for failures that have one.
    pub errcode: Option<i32>,
    /// Why, for failures and retries.
    pub errmsg: Option<String>,
}

/// A message's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageHistory {
    /// The message as it is now.
    pub message: MessageResponse,
    /// Oldest first.
    pub events: Vec<HistoryEvent>,
}

/// A message's history: when it was queued, each attempt that will be retried, its outcome,
/// retries by an admin and WeChat's delivery report.
///
/// Visible to whoever may see the message (its sender, its recipient, admins).
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "The message and its history", body = MessageHistory),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`message_not_found`", body = ErrorBody),
    )
)]
#[get("/messages/{id}/history")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn message_history(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::MessageNotFound)?;
    let (message, events) = db::run(&state.pool, move |conn| {
        let Some(m) = db::messages::find(conn, id)? else {
            return Ok(None);
        };
        Ok(Some((m, db::messages::history(conn, id)?)))
    })
    .await?
    .filter(|(m, _)| auth.is_admin() || m.sender_id == auth.id || m.user_id == auth.id)
    .ok_or(ApiError::MessageNotFound)?;
    let mut history = vec![HistoryEvent {
        at: message.created_at,
        event: "queued".into(),
        attempt: 0,
        errcode: None,
        errmsg: None,
    }];
    history.extend(events.into_iter().map(|e| HistoryEvent {
        at: e.at,
        event: e.event,
        attempt: e.attempt,
        errcode: e.errcode,
        errmsg: e.errmsg,
    }));
    Ok(HttpResponse::Ok().json(MessageHistory {
        message: MessageResponse::from(message),
        events: history,
    }))
}

/// Queue a failed message again (admins).
///
/// With a fresh attempt budget and the same id (WeChat's `client_msg_id`, so a message WeChat
/// did deliver is not delivered twice). Only `failed` messages: any other status is 409.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 202, description = "Queued again", body = MessageResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins retry messages", body = ErrorBody),
        (status = 404, description = "`message_not_found`", body = ErrorBody),
        (status = 409, description = "`not_failed`: only a failed message can be retried (and not one WeChat's review blocked); `not_bound`: its recipient is no longer bound", body = ErrorBody),
    )
)]
#[post("/messages/{id}/retry")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn retry_message(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    auth.require_admin("only admins retry messages")?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::MessageNotFound)?;
    match db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let retried = db::messages::retry_failed(conn, id)?;
            if let Retried::Queued(m) = &retried {
                let details = serde_json::json!({
                    "user_id": m.user_id,
                    "template_id": m.template_id,
                });
                let target = m.id.to_string();
                audit::record_for(conn, &auth, Action::MessageRetried, Some(&target), details)?;
            }
            Ok(retried)
        })
    })
    .await?
    {
        Retried::Queued(m) => {
            tracing::info!(message.id = %m.id, "failed message queued again");
            state.wake_worker.notify_one();
            Ok(HttpResponse::Accepted().json(MessageResponse::from(*m)))
        }
        Retried::NotFailed(why) => Err(ApiError::NotFailed(why)),
        Retried::NotBound => Err(ApiError::NotBound),
        Retried::Missing => Err(ApiError::MessageNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        let far = paging::seal(&format!("{}.{id}", i64::MAX / 2));
        for bad in ["", "abc", "bm90LWEtY3Vyc29y", far.as_str()] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
