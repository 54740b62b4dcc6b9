//! Ops endpoints: liveness, readiness (database and migrations) and metrics.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::wechat::Wechat;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// wxbind version.
    pub version: &'static str,
    /// Whether WeChat credentials are configured (the sandbox's count).
    pub wechat_configured: bool,
    /// Whether WeChat is the built-in simulator under `/sandbox`.
    pub sandbox: bool,
    /// Whether this process has synced the official account's template list since it
    /// started. Until it has, messages are queued without checking their `data` against
    /// their template.
    pub templates_synced: bool,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(tag = "ops", responses((status = 200, description = "Up", body = HealthResponse)))]
#[get("/health")]
pub async fn health(state: web::Data<AppState>, wechat: web::Data<Wechat>) -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        wechat_configured: wechat.is_configured(),
        sandbox: state.config.sandbox.enabled,
        templates_synced: state.templates.is_synced(),
    })
}

/// Readiness: the database answers and every migration is applied.
#[utoipa::path(
    tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyResponse),
        (status = 503, description = "`unavailable`: database down or migrations pending", body = ErrorBody),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Bounded like every unit of work: a probe must answer before its own deadline, also when
    // the database accepts connections but never answers.
    let applied = db::run_with(&state.pool, |conn| {
        db::migrations_applied(conn).map_err(ApiError::Unavailable)
    })
    .await?;
    if !applied {
        return Err(ApiError::Unavailable(anyhow::anyhow!(
            "migrations are pending; run `wxbind migrate`"
        )));
    }
    Ok(HttpResponse::Ok().json(ReadyResponse { status: "ready" }))
}

/// This process's metrics in the Prometheus text format.
///
/// Counters, gauges and histograms: sends by outcome and errcode class, WeChat call latency by
/// endpoint, enqueue-to-send latency, queue depth and age, claims, token fetches, pushes,
/// logins and limit refusals (the README's "Metrics" lists them). Label values come from fixed
/// sets. With `WXBIND_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>`.
#[utoipa::path(
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus exposition", content_type = "text/plain", body = String),
        (status = 401, description = "`unauthorized`: `WXBIND_METRICS_TOKEN` is set and the request does not carry it", body = ErrorBody),
    )
)]
#[get("/metrics")]
pub async fn metrics(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.config.http.metrics_token {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Constant time: the comparison must not tell a prober how much of the token it has.
        let matches: bool = subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            secrecy::ExposeSecret::expose_secret(expected).as_bytes(),
        )
        .into();
        if !matches {
            return Err(ApiError::Unauthorized(
                "metrics need the WXBIND_METRICS_TOKEN bearer token",
            ));
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render()))
}
