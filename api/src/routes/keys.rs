//! API keys (admins): `POST /api/keys` makes one and shows it once, `GET /api/keys` lists
//! them, `DELETE /api/keys/{name}` revokes one. The rules live in `keys`.
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::auth::AuthUser;
use crate::db::{self, api_keys::ApiKey};
use crate::error::{ApiError, ErrorBody};
use crate::keys::{self, Scope};
use crate::state::AppState;

/// A key to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1-64 letters, digits, '_', '.' or '-'; unique (a revoked key's name is not reused).
    #[schema(
        example = "billing-backend",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.-]{1,64}$"
    )]
    pub name: String,
    /// `send` (send to any bound user, read what it sent) or `admin`; `send` when omitted.
    #[serde(default)]
    pub scope: Option<Scope>,
}

/// A key as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    /// Its name.
    #[schema(example = "billing-backend")]
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// Its first characters, to recognise it (`wxk_` and six more).
    #[schema(example = "wxk_a1B2c3")]
    pub prefix: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used (recorded at most once a minute); null if never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; null while it works.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            scope: Scope::parse(&k.scope).unwrap_or(Scope::Send),
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    /// The key as listed.
    #[serde(flatten)]
    pub listed: KeyResponse,
    /// The key itself: `Authorization: Bearer <key>`. Only its hash is stored; it cannot be
    /// shown again.
    #[schema(example = "wxk_a1B2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0")]
    pub key: String,
}

/// Admin users only: a key may not make, list or revoke keys (a leaked admin key could
/// otherwise mint itself successors and outlive its revocation).
fn admin_only(auth: &AuthUser) -> Result<(), ApiError> {
    if auth.key.is_some() {
        return Err(ApiError::Forbidden(
            "API keys cannot manage API keys; use an admin account or the CLI",
        ));
    }
    auth.require_admin("only admins may manage API keys")
}

/// Make an API key (admins).
///
/// The key is in the answer and nowhere else: store it in the calling server's secrets.
#[utoipa::path(
    tag = "keys",
    security(("bearer" = [])),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Made; the key is shown once", body = CreatedKeyResponse),
        (status = 400, description = "`invalid_request`: a bad name or scope", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may manage API keys", body = ErrorBody),
        (status = 409, description = "`key_exists`: a key of that name exists (or existed)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
#[post("/keys")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn create_key(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let body = body.into_inner();
    if !keys::valid_name(&body.name) {
        return Err(ApiError::invalid(
            "name must be 1-64 letters, digits, '_', '.' or '-'",
        ));
    }
    let scope = body.scope.unwrap_or(Scope::Send);
    let actor = Actor::User(auth.id);
    let created = match state
        .keys
        .create(&state.pool, &body.name, scope, actor)
        .await
    {
        Err(e) if e.is_unique_violation() => None,
        other => other?,
    };
    let Some((stored, key)) = created else {
        return Err(ApiError::KeyExists);
    };
    tracing::info!(key.name = %stored.name, key.scope = scope.as_str(), "API key made");
    Ok(HttpResponse::Created().json(CreatedKeyResponse {
        listed: stored.into(),
        key,
    }))
}

/// Every API key, newest first, revoked ones included (admins).
#[utoipa::path(
    tag = "keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The keys (never the keys themselves)", body = Vec<KeyResponse>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may manage API keys", body = ErrorBody),
    )
)]
#[get("/keys")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_keys(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    let rows = db::run(&state.pool, db::api_keys::list).await?;
    let list: Vec<KeyResponse> = rows.into_iter().map(KeyResponse::from).collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Revoke an API key (admins).
///
/// Requests with it are refused from then on (within 10 seconds on every instance).
#[utoipa::path(
    tag = "keys",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may manage API keys", body = ErrorBody),
        (status = 404, description = "`key_not_found`: no live key of that name", body = ErrorBody),
    )
)]
#[delete("/keys/{name}")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn revoke_key(
    state: web::Data<AppState>,
    auth: AuthUser,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&auth)?;
    if !state
        .keys
        .revoke(&state.pool, &name, Actor::User(auth.id))
        .await?
    {
        return Err(ApiError::KeyNotFound);
    }
    tracing::info!(key.name = %name, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
