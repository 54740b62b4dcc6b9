//! Webhook endpoints (admins): `POST /api/webhooks` registers one and shows its secret once,
//! `GET /api/webhooks[/{id}]` lists, `DELETE /api/webhooks/{id}` removes, `POST
//! /api/webhooks/{id}/test` sends a signed ping now, `GET /api/webhooks/{id}/deliveries` shows
//! recent deliveries. Delivery itself is `webhooks::run` in the worker.
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use diesel::Connection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit;
use crate::auth::AuthUser;
use crate::db::{self, webhooks::Webhook};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::webhooks;

use super::paging;

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: an absolute http(s) URL (at most 2048 bytes, no
    /// credentials). Private, loopback and link-local addresses are refused unless the server
    /// runs with `WXBIND_WEBHOOK_ALLOW_PRIVATE=1`.
    #[schema(
        example = "https://backend.example.com/wxbind/events",
        max_length = 2048
    )]
    pub url: String,
    /// The events to send (at least one): `message.sent`, `message.failed`,
    /// `message.under_review`, `message.delivered`, `message.blocked`, `binding.created`,
    /// `binding.removed`, `user.followed`, `user.unfollowed`.
    #[schema(example = json!(["message.sent", "message.failed"]), min_items = 1)]
    pub events: Vec<String>,
    /// The signing secret, 16-128 printable ASCII characters without spaces; generated
    /// (`whsec_…`) when omitted.
    #[schema(min_length = 16, max_length = 128, pattern = "^[!-~]{16,128}$")]
    pub secret: Option<String>,
}

/// An endpoint as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    /// Its id.
    pub id: Uuid,
    /// Where events go.
    pub url: String,
    /// The events it gets.
    pub events: Vec<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was disabled (it answered 410 Gone); null while it works.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

impl From<Webhook> for WebhookResponse {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
            disabled_at: w.disabled_at,
            disabled_reason: w.disabled_reason,
        }
    }
}

/// A new endpoint with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhookResponse {
    /// The endpoint as listed.
    #[serde(flatten)]
    pub listed: WebhookResponse,
    /// The signing secret: verify `Wxbind-Webhook-Signature` with it. Not shown again.
    #[schema(example = "whsec_a1B2c3d4e5f6g7h8i9j0k1l2m3n4o5p6")]
    pub secret: String,
}

/// The endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Newest first.
    pub items: Vec<WebhookResponse>,
}

fn admin_only(auth: &AuthUser) -> Result<(), ApiError> {
    auth.require_admin("only admins manage webhooks")
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::WebhookNotFound)
}

/// Register a webhook endpoint (admins).
///
/// Events are written to an outbox in the transaction of the change that causes them and
/// delivered at least once, in order per message (and per user), signed with the secret;
/// a 2xx answer is delivered, 410 disables the endpoint, anything else is retried with
/// backoff for up to 24 hours.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Registered; the secret is shown once", body = CreatedWebhookResponse),
        (status = 400, description = "`invalid_request`: a bad or refused url, an unknown event, no events, or a bad secret", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
#[post("/webhooks")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn create_webhook(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateWebhookRequest>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let body = body.into_inner();
    if body.events.is_empty() {
        return Err(ApiError::invalid("events must name at least one event"));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for e in body.events {
        if !webhooks::EVENTS.contains(&e.as_str()) {
            return Err(ApiError::InvalidRequest(format!(
                "events: unknown event {e:?}; known: {}",
                webhooks::EVENTS.join(", ")
            )));
        }
        if !events.contains(&e) {
            events.push(e);
        }
    }
    let secret = match body.secret {
        Some(s) if webhooks::valid_secret(&s) => s,
        Some(_) => {
            return Err(ApiError::invalid(
                "secret must be 16-128 printable ASCII characters without spaces",
            ));
        }
        None => webhooks::generate_secret(),
    };
    let url = webhooks::check_target(&body.url, state.config.webhooks.allow_private)
        .await
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let (id, creator, stored_secret) = (Uuid::new_v4(), auth.id, secret.clone());
    let hook = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            let hook =
                db::webhooks::create(conn, id, url.as_str(), &events, &stored_secret, creator)?;
            audit::record_for(
                conn,
                &auth,
                audit::Action::WebhookCreated,
                Some(&id.to_string()),
                serde_json::json!({"url": hook.url, "events": hook.events}),
            )?;
            Ok(hook)
        })
    })
    .await?;
    tracing::info!(webhook.id = %hook.id, "webhook endpoint registered");
    Ok(HttpResponse::Created().json(CreatedWebhookResponse {
        listed: hook.into(),
        secret,
    }))
}

/// Every webhook endpoint, newest first (admins).
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoints (never their secrets)", body = WebhookList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
    )
)]
#[get("/webhooks")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let rows = db::run(&state.pool, db::webhooks::list).await?;
    Ok(HttpResponse::Ok().json(WebhookList {
        items: rows.into_iter().map(WebhookResponse::from).collect(),
    }))
}

/// One webhook endpoint (admins).
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    )
)]
#[get("/webhooks/{id}")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_webhook(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let id = parse_id(&id)?;
    let hook = db::run(&state.pool, move |conn| db::webhooks::find(conn, id))
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    Ok(HttpResponse::Ok().json(WebhookResponse::from(hook)))
}

/// Remove a webhook endpoint and its undelivered events (admins).
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    )
)]
#[delete("/webhooks/{id}")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let id = parse_id(&id)?;
    let deleted = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            if !db::webhooks::delete(conn, id)? {
                return Ok(false);
            }
            audit::record_for(
                conn,
                &auth,
                audit::Action::WebhookDeleted,
                Some(&id.to_string()),
                serde_json::json!({}),
            )?;
            Ok(true)
        })
    })
    .await?;
    if !deleted {
        return Err(ApiError::WebhookNotFound);
    }
    tracing::info!(webhook.id = %id, "webhook endpoint removed");
    Ok(HttpResponse::NoContent().finish())
}

/// What a test ping got.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookTestResponse {
    /// The ping's event id (`Wxbind-Webhook-Id`).
    pub event_id: Uuid,
    /// Whether the endpoint answered 2xx.
    pub delivered: bool,
    /// The endpoint's HTTP status; null when there was no answer.
    pub status_code: Option<u16>,
    /// Why it does not count as delivered.
    pub error: Option<String>,
}

/// Send a signed `webhook.test` event to the endpoint now (admins).
///
/// Answers with what the endpoint answered; the attempt shows in its deliveries. A ping is
/// not retried.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "Sent; `delivered` says whether it answered 2xx", body = WebhookTestResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    )
)]
#[post("/webhooks/{id}/test")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn test_webhook(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let id = parse_id(&id)?;
    let event_id = Uuid::new_v4();
    let payload = serde_json::json!({
        "id": event_id,
        "type": webhooks::TEST_EVENT,
        "created_at": Utc::now(),
        "data": {"webhook_id": id},
    });
    let config = state.config.webhooks.clone();
    let lease_ms = i64::try_from(webhooks::lease(&config).as_millis()).unwrap_or(i64::MAX);
    let due = db::run(&state.pool, move |conn| {
        conn.transaction(|conn| {
            if db::webhooks::find(conn, id)?.is_none() {
                return Ok(None);
            }
            audit::record_for(
                conn,
                &auth,
                audit::Action::WebhookTested,
                Some(&id.to_string()),
                serde_json::json!({"event_id": event_id}),
            )?;
            db::webhooks::insert_test(conn, id, event_id, &payload, lease_ms).map(Some)
        })
    })
    .await?
    .ok_or(ApiError::WebhookNotFound)?;
    let client = webhooks::client(&config);
    let result = webhooks::post(&client, &config, &due.url, &due.secret, &due.payload).await;
    // A ping is not retried: record it as delivered or failed.
    let ping = crate::config::WebhookConfig {
        retry_window: std::time::Duration::ZERO,
        ..config
    };
    webhooks::settle(&state.pool, &ping, &due, result.clone()).await;
    Ok(HttpResponse::Ok().json(WebhookTestResponse {
        event_id,
        delivered: result.error.is_none(),
        status_code: result.status,
        error: result.error,
    }))
}

/// The deliveries query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// The previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Deliveries per page, 1-200 (50 when omitted).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// One event's delivery to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// The event id (`Wxbind-Webhook-Id`, and the body's `id`).
    pub event_id: Uuid,
    /// The event type.
    #[schema(example = "message.sent")]
    pub event_type: String,
    /// `pending` (not delivered yet; retried at `next_attempt_at`), `delivered` or `failed`
    /// (not delivered within 24 hours, or the endpoint was disabled or is gone).
    #[schema(example = "delivered")]
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The endpoint's HTTP status at the last attempt; null if it did not answer.
    pub last_status_code: Option<i32>,
    /// Why the last attempt did not count as delivered.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it was last tried.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When it will be tried next (while pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryResponse>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// An endpoint's recent deliveries, newest first (admins).
///
/// Finished deliveries are kept for 7 days.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Endpoint id"), DeliveriesQuery),
    responses(
        (status = 200, description = "One page", body = DeliveryPage),
        (status = 400, description = "`invalid_request`: a bad cursor or limit", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins manage webhooks", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = ErrorBody),
    )
)]
#[get("/webhooks/{id}/deliveries")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let id = parse_id(&id)?;
    let q = query.into_inner();
    let limit = paging::limit(q.limit)?;
    let before = paging::cursor(q.cursor.as_deref(), |c| {
        c.parse::<i64>().ok().filter(|n| *n > 0)
    })?;
    let rows = db::run(&state.pool, move |conn| {
        if db::webhooks::find(conn, id)?.is_none() {
            return Ok(None);
        }
        db::webhooks::deliveries(conn, id, before, limit + 1).map(Some)
    })
    .await?
    .ok_or(ApiError::WebhookNotFound)?;
    let (rows, next_cursor) = paging::split(rows, limit, |d| d.id.to_string());
    Ok(HttpResponse::Ok().json(DeliveryPage {
        items: rows
            .into_iter()
            .map(|d| DeliveryResponse {
                event_id: d.event_id,
                event_type: d.event_type,
                next_attempt_at: (d.state == "pending").then_some(d.next_attempt_at),
                state: d.state,
                attempts: d.attempts,
                last_status_code: d.last_status,
                last_error: d.last_error,
                created_at: d.created_at,
                last_attempt_at: d.last_attempt_at,
                finished_at: d.finished_at,
            })
            .collect(),
        next_cursor,
    }))
}
