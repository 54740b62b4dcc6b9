//! The audit log for operators: `GET /api/audit` (admin users and admin keys) lists the admin
//! and key actions newest first, in cursor pages, filtered by action or actor. What is
//! recorded, and when, lives in `audit`.
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::Action;
use crate::auth::AuthUser;
use crate::db::{self, audit_log::AuditFilter, audit_log::AuditRow};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

use super::paging;

/// Rows per page when `limit` is not given, and at most.
/// The longest `actor` recorded: `key:` and a 64-character key name.
const MAX_ACTOR_LEN: usize = 128;

/// The audit log's filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action.
    #[param(inline)]
    pub action: Option<Action>,
    /// Only this actor: a username, `key:<name>` for an API key, or `cli`.
    #[param(min_length = 1, max_length = 128, example = "key:deploy")]
    pub actor: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub cursor: Option<String>,
    /// Rows per page, 1-200 (50 when omitted).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// One audited action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Its id; larger is newer.
    #[schema(example = 42)]
    pub id: i64,
    /// When it was done.
    pub at: DateTime<Utc>,
    /// Who did it: the username at the time, `key:<name>` for an API key, `cli` for the
    /// command line.
    #[schema(example = "key:deploy")]
    pub actor: String,
    /// What was done: `message.sent_to_other`, `message.retried`, `broadcast.created`,
    /// `broadcast.cancelled`, `key.created`, `key.revoked`, `webhook.created`,
    /// `webhook.deleted`, `webhook.tested`, `templates.synced` or `quota.reset` (a string, so
    /// that actions added later still list).
    #[schema(example = "key.created")]
    pub action: String,
    /// What it was done to (a message id, a key name, …); null when the action names nothing.
    #[schema(example = "billing-backend")]
    pub target: Option<String>,
    /// More about it, by action (never a secret).
    #[schema(value_type = Object, example = json!({"scope": "send"}))]
    pub details: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
        }
    }
}

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

fn encode_cursor(id: i64) -> String {
    paging::seal(&format!("a.{id}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let id: i64 = paging::unseal(raw)?.strip_prefix("a.")?.parse().ok()?;
    (id > 0).then_some(id)
}

/// The audit log of admin and key actions (admins).
///
/// Sends to other users, broadcasts, retries, key and webhook changes, template syncs and
/// quota resets, newest first, in pages: pass `next_cursor` back as `cursor` for the next one.
/// Filters combine.
#[utoipa::path(
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page", body = AuditPage),
        (status = 400, description = "`invalid_request`: a bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins (and admin keys) read the audit log", body = ErrorBody),
    )
)]
#[get("/audit")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_audit(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    auth.require_admin("only admins read the audit log")?;
    let q = query.into_inner();
    let limit = paging::limit(q.limit)?;
    let before = paging::cursor(q.cursor.as_deref(), decode_cursor)?;
    if let Some(a) = &q.actor {
        // PostgreSQL text holds no U+0000: such a filter would fail the query, not match.
        if a.is_empty() || a.chars().count() > MAX_ACTOR_LEN || a.contains('\0') {
            return Err(ApiError::invalid(
                "actor must be 1-128 characters, without U+0000",
            ));
        }
    }
    let filter = AuditFilter {
        action: q.action.map(|a| a.as_str().to_owned()),
        actor: q.actor,
        before,
    };
    let rows = db::run(&state.pool, move |conn| {
        db::audit_log::page(conn, &filter, limit + 1)
    })
    .await?;
    let (rows, next_cursor) = paging::split(rows, limit, |r| encode_cursor(r.id));
    Ok(HttpResponse::Ok().json(AuditPage {
        items: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for id in [1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        }
        let b64 = paging::seal;
        for bad in [
            String::new(),
            "abc".into(),
            "bm90LWEtY3Vyc29y".into(),
            b64("42"),
            b64("a.-1"),
            b64("a.0"),
            b64("a.99999999999999999999"),
            b64("m.42"),
        ] {
            assert_eq!(decode_cursor(&bad), None, "{bad}");
        }
    }
}
