//! HTTP routes: `configure` is the one place handlers are registered, so what is served and
//! what the OpenAPI document describes cannot differ.
pub mod audit;
pub mod auth;
pub mod binding;
pub mod broadcasts;
pub mod health;
pub mod keys;
pub mod me;
pub mod message_log;
pub mod messages;
pub mod paging;
pub mod quota;
pub mod templates;
pub mod users;
pub mod webhooks;
pub mod wechat_events;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::{scope, service_config::ServiceConfig};

use crate::auth::Role;
use crate::db::users::Profile;
use crate::error::ApiError;

/// Registers every API route under `/api`.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/api")
            .service(auth::login)
            .service(auth::refresh_token)
            .service(auth::logout)
            .service(me::get_me)
            .service(users::find_user)
            .service(binding::get_bind_url)
            .service(binding::wechat_callback)
            .service(binding::delete_binding)
            .service(binding::get_bind_qrcode)
            .service(messages::create_message)
            .service(messages::get_message)
            .service(message_log::list_messages)
            .service(message_log::retry_message)
            .service(message_log::message_history)
            .service(templates::list_templates)
            .service(templates::sync_templates)
            .service(quota::get_quota)
            .service(quota::reset_quota)
            .service(keys::create_key)
            .service(keys::list_keys)
            .service(keys::revoke_key)
            .service(
                scope("/broadcasts")
                    .app_data(
                        actix_web::web::JsonConfig::default()
                            .limit(broadcasts::MAX_BODY_BYTES)
                            .error_handler(crate::error::json_error_handler),
                    )
                    .service(broadcasts::create_broadcast)
                    .service(broadcasts::get_broadcast)
                    .service(broadcasts::list_broadcast_messages)
                    .service(broadcasts::cancel_broadcast),
            )
            .service(webhooks::create_webhook)
            .service(webhooks::list_webhooks)
            .service(webhooks::get_webhook)
            .service(webhooks::delete_webhook)
            .service(webhooks::test_webhook)
            .service(webhooks::list_deliveries)
            .service(audit::list_audit)
            .service(health::health)
            .service(health::ready)
            .service(wechat_events::verify_wechat_url)
            .service(wechat_events::receive_wechat_event)
            .service(health::metrics),
    );
}

// Wire types more than one area answers with.

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
    /// The bound WeChat user's unionid: the same person across the company's apps (the openid
    /// is per account). WeChat gives it only when the official account is linked to an Open
    /// Platform account and only to a bind link (a QR-code scan brings none); null otherwise.
    #[schema(example = "o6_bmasdasdsad6_2sgVt7hMZOPfL")]
    pub unionid: Option<String>,
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
            role: user.role,
            wechat_bound: user.openid.is_some(),
            bound_at: user.bound_at,
            unionid: user.unionid,
            // A follow state is only the user's while the openid is bound to them.
            subscribed: follower.as_ref().map(|f| f.subscribed),
            subscribed_at: follower.and_then(|f| f.subscribed_at),
        }
    }
}

/// Registers what a worker-only process serves: health, readiness and metrics.
pub fn configure_ops(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/api")
            .service(health::health)
            .service(health::ready)
            .service(health::metrics),
    );
}

/// Which methods each documented path accepts, to tell 405 from 404.
pub struct AllowedMethods(Vec<(Vec<String>, Vec<&'static str>)>);

impl AllowedMethods {
    /// The paths and methods `configure` registers.
    pub fn of(configure: fn(&mut ServiceConfig)) -> Self {
        use utoipa_actix_web::AppExt;
        let (_, doc) = actix_web::App::new()
            .into_utoipa_app()
            .configure(configure)
            .split_for_parts();
        Self::from_spec(&doc)
    }

    /// Reads the paths and methods of the OpenAPI document.
    pub fn from_spec(spec: &utoipa::openapi::OpenApi) -> Self {
        let routes = spec
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path.split('/').map(str::to_owned).collect();
                let mut methods = Vec::new();
                for (name, op) in [
                    ("GET", &item.get),
                    ("POST", &item.post),
                    ("PUT", &item.put),
                    ("PATCH", &item.patch),
                    ("DELETE", &item.delete),
                ] {
                    if op.is_some() {
                        methods.push(name);
                    }
                }
                (segments, methods)
            })
            .collect();
        Self(routes)
    }

    /// The methods allowed on `path`, if any route matches it.
    pub fn for_path(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut allowed: Vec<&str> = Vec::new();
        for (segments, methods) in &self.0 {
            let matches = segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| s == p || (s.starts_with('{') && !p.is_empty()));
            if matches {
                allowed.extend(methods);
            }
        }
        (!allowed.is_empty()).then(|| {
            allowed.sort_unstable();
            allowed.dedup();
            allowed.join(", ")
        })
    }
}

/// The default service: JSON 405 for a known path with another method, JSON 404 otherwise.
pub async fn fallback(
    req: actix_web::HttpRequest,
    allowed: actix_web::web::Data<AllowedMethods>,
) -> Result<actix_web::HttpResponse, ApiError> {
    Err(match allowed.for_path(req.path()) {
        Some(allow) => ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        },
        None => ApiError::NotFound(req.path().to_owned()),
    })
}
