//! Sandbox mode: a WeChat simulator served under `/sandbox` when no real credentials are
//! configured, with the service's own WeChat client pointed at it, so the whole flow
//! (bind, follow, message) runs on one machine. It speaks WeChat's wire format and rules.
//! It only exists when `Config::sandbox` is set, which real credentials rule out.
mod pages;
mod push;
mod state;
mod wire;

use actix_web::web;
use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use state::{InboxItem, Sandbox, SimUser, openid_for};

use crate::config::{Config, PushConfig};
use crate::wechat::push::PushSecurity;

/// The simulator: its memory plus what it checks callers against.
pub struct Simulator {
    /// Users, codes, tokens, inboxes.
    pub state: Sandbox,
    app_id: String,
    app_secret: SecretString,
    public_url: Url,
    pusher: Option<push::Pusher>,
}

impl Simulator {
    /// A simulator for the sandbox configuration; `None` outside sandbox mode.
    pub fn from_config(config: &Config) -> Option<Self> {
        let account = config.wechat.as_ref().filter(|_| config.sandbox.enabled)?;
        // WeChat signs with the current key only; the previous one is the receiver's concern.
        let pusher = account
            .push
            .as_ref()
            .map(|p| PushConfig {
                aes_key_previous: None,
                ..p.clone()
            })
            .and_then(|p| match PushSecurity::new(&p, &account.app_id) {
                Ok(security) => Some(security),
                // Unreachable after config validation; say so rather than push nothing.
                Err(e) => {
                    tracing::error!(error = %e, "sandbox pushes disabled: bad push settings");
                    None
                }
            })
            .map(|security| push::Pusher::new(security, &config.http.public_url));
        Some(Self {
            state: Sandbox::default(),
            app_id: account.app_id.clone(),
            app_secret: account.app_secret.clone(),
            public_url: config.http.public_url.clone(),
            pusher,
        })
    }

    fn secret_matches(&self, given: &str) -> bool {
        given == self.app_secret.expose_secret()
    }

    /// Pushes an event for `openid`; returns the passive reply's text. Without a push token
    /// configured there is nobody to tell, and nothing is sent.
    async fn push(&self, openid: &str, event: &str, extra: &str) -> Result<Option<String>, String> {
        let Some(pusher) = &self.pusher else {
            return Ok(None);
        };
        let xml = push::Pusher::event_xml(openid, event, extra);
        let result = pusher.send(openid, &xml).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, event, "sandbox push failed");
        }
        result
    }
}

/// Registers the simulator's routes (plain actix: they are not part of the product API).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/sandbox")
            .route("", web::get().to(pages::redirect_to_phone))
            .route("/", web::get().to(pages::phone))
            .route("/connect/oauth2/authorize", web::get().to(wire::authorize))
            .route(
                "/sns/oauth2/access_token",
                web::get().to(wire::oauth_access_token),
            )
            .route("/sns/userinfo", web::get().to(wire::userinfo))
            .route("/cgi-bin/stable_token", web::post().to(wire::stable_token))
            .route("/cgi-bin/token", web::get().to(wire::classic_token))
            .route(
                "/cgi-bin/message/template/send",
                web::post().to(wire::template_send),
            )
            .route(
                "/cgi-bin/qrcode/create",
                web::post().to(wire::qrcode_create),
            )
            .route("/cgi-bin/showqrcode", web::get().to(pages::showqrcode))
            .route("/api/users", web::get().to(pages::users_json))
            .route("/api/users/{name}/follow", web::post().to(pages::follow))
            .route(
                "/api/users/{name}/unfollow",
                web::post().to(pages::unfollow),
            )
            .route("/api/users/{name}/scan", web::post().to(pages::scan))
            .route("/api/inbox", web::get().to(pages::inbox_json)),
    );
}

/// Usernames of the demo accounts sandbox mode creates.
pub const DEMO_USERS: [(&str, bool); 2] = [("demo", false), ("admin", true)];

/// Creates (or resets the password of) the demo accounts `demo` and `admin`.
pub fn ensure_demo_accounts(conn: &mut PgConnection, password: &str) -> anyhow::Result<()> {
    use crate::db::schema::users;
    use crate::domain::Role;
    let hash = crate::auth::hash_password(password)?;
    conn.transaction(|conn| {
        for (name, admin) in DEMO_USERS {
            let role = if admin { Role::Admin } else { Role::User };
            diesel::insert_into(users::table)
                .values((
                    users::username.eq(name),
                    users::password_hash.eq(&hash),
                    users::role.eq(role),
                ))
                .on_conflict(users::username)
                .do_update()
                .set(users::password_hash.eq(&hash))
                .execute(conn)?;
        }
        diesel::QueryResult::Ok(())
    })?;
    Ok(())
}

/// A name the simulator accepts for a test WeChat user.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
