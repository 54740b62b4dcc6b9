//! Sandbox mode: a WeChat simulator served under `/sandbox` when no real credentials are
//! configured, with the service's own WeChat client pointed at it, so the whole flow
//! (bind, follow, message) runs on one machine. It speaks WeChat's wire format and rules,
//! its template sends included (the keyword rules are the service's own, in `domain`).
//! It only exists when `Config::sandbox` is set, which real credentials rule out, and only
//! starts on a database that records it serves the sandbox (`crate::deployment`).
mod pages;
mod push;
mod state;
mod templates;
mod wire;

use actix_web::web;
use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use state::{InboxItem, Sandbox, SimUser, openid_for, unionid_for};

use crate::config::{Config, PushConfig};
use crate::domain::Role;
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
                "/cgi-bin/template/get_all_private_template",
                web::get().to(wire::get_all_private_template),
            )
            .route(
                "/cgi-bin/openapi/quota/get",
                web::post().to(wire::quota_get),
            )
            .route("/cgi-bin/clear_quota", web::post().to(wire::clear_quota))
            .route(
                "/wxa/sec/queryblocktmplmsg",
                web::post().to(wire::query_blocked),
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
            .route("/api/templates", web::get().to(pages::templates_json))
            .route(
                "/api/templates/{id}/remove",
                web::post().to(pages::remove_template),
            )
            .route(
                "/api/templates/{id}/restore",
                web::post().to(pages::restore_template),
            )
            .route("/api/inbox", web::get().to(pages::inbox_json))
            .route("/api/faults", web::get().to(pages::faults_json))
            .route("/api/faults", web::post().to(pages::set_faults)),
    );
}

/// The demo accounts sandbox mode creates, and their roles.
pub const DEMO_USERS: [(&str, Role); 2] = [("demo", Role::User), ("admin", Role::Admin)];

/// What [`ensure_demo_accounts`] did with one demo account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoAccount {
    /// No account had the name: created, marked `demo`, with this start's password.
    Created,
    /// The sandbox's own account from an earlier start: given this start's password, which
    /// the banner prints (it is random per start unless `WXBIND_DEMO_PASSWORD` is set).
    PasswordReset,
    /// An account of this name exists that the sandbox did not make (`wxbind user add`):
    /// left exactly as it is.
    NotDemo,
}

/// Creates the demo accounts `demo` and `admin` where no account of that name exists, marked
/// `users.demo`. An existing account is never overwritten; only one the sandbox made itself
/// (`demo = true`) gets this start's password, so the banner stays true across restarts.
///
/// Only for a sandbox database: call it after [`crate::deployment::enforce`] passed in sandbox
/// mode. It checks again itself, in its own transaction, and refuses a database that does not
/// record `sandbox`, so no mistake at a call site can seed a real account's data.
pub fn ensure_demo_accounts(
    conn: &mut PgConnection,
    password: &str,
) -> anyhow::Result<Vec<(&'static str, DemoAccount)>> {
    use crate::db::schema::users;
    use crate::deployment::Serves;
    let hash = crate::auth::hash_password(password)?;
    conn.transaction(|conn| {
        let serves = crate::db::deployment::serves(conn)?.map(|s| Serves::from_stored(&s));
        if serves != Some(Serves::Sandbox) {
            let serves = serves.map_or_else(|| "nothing yet".to_owned(), |s| s.to_string());
            anyhow::bail!(
                "demo accounts are only made in a sandbox database, and this one serves {serves}"
            );
        }
        let mut done = Vec::with_capacity(DEMO_USERS.len());
        for (name, role) in DEMO_USERS {
            let created = diesel::insert_into(users::table)
                .values((
                    users::username.eq(name),
                    users::password_hash.eq(&hash),
                    users::role.eq(role),
                    users::demo.eq(true),
                ))
                .on_conflict(users::username)
                .do_nothing()
                .execute(conn)?;
            let outcome = if created == 1 {
                DemoAccount::Created
            } else {
                let reset = diesel::update(
                    users::table
                        .filter(users::username.eq(name))
                        .filter(users::demo),
                )
                .set(users::password_hash.eq(&hash))
                .execute(conn)?;
                if reset == 1 {
                    DemoAccount::PasswordReset
                } else {
                    DemoAccount::NotDemo
                }
            };
            done.push((name, outcome));
        }
        Ok(done)
    })
}

/// A name the simulator accepts for a test WeChat user.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
