//! Browser refresh sessions: actix-session over a Postgres [`SessionStore`], so no extra
//! server is needed. The cookie carries only a random session key (signed and encrypted by
//! actix-session); the database holds a SHA-256 of it and the session state.
use std::collections::HashMap;

use actix_session::SessionMiddleware;
use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::Key;
use chrono::Utc;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, Config};
use crate::db::{self, PgPool};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "wxbind_session";
/// The session state key holding the user id.
pub const USER_ID: &str = "user_id";
/// The session state key holding when the session began (seconds since the epoch): refreshes
/// end `WXBIND_SESSION_MAX_SECONDS` after it, however often the session was used.
pub const CREATED_AT: &str = "created_at";

/// Sessions stored in the `sessions` table.
#[derive(Clone)]
pub struct PgSessionStore {
    pool: PgPool,
}

impl PgSessionStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// A fresh random session key (64 alphanumerics).
fn new_session_key() -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(crate::domain::random_alphanumeric(64))
        .map_err(|e| anyhow::Error::new(e).context("generated session key refused"))
}

fn hash(key: &SessionKey) -> String {
    hex::encode(Sha256::digest(key.as_ref().as_bytes()))
}

fn expiry(ttl: &actix_web::cookie::time::Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::TimeDelta::seconds(ttl.whole_seconds())
}

fn to_json(state: &HashMap<String, String>) -> serde_json::Value {
    serde_json::to_value(state).unwrap_or_default()
}

impl SessionStore for PgSessionStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        let key_hash = hash(key);
        let state = db::run(&self.pool, move |conn| db::sessions::load(conn, &key_hash))
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        state
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| LoadError::Deserialization(e.into()))
    }

    async fn save(
        &self,
        state: HashMap<String, String>,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, SaveError> {
        let key = new_session_key().map_err(SaveError::Other)?;
        let (key_hash, json, expires_at) = (hash(&key), to_json(&state), expiry(ttl));
        db::run(&self.pool, move |conn| {
            db::sessions::insert(conn, &key_hash, &json, expires_at)
        })
        .await
        .map_err(|e| SaveError::Other(e.into()))?;
        Ok(key)
    }

    /// A changed session (a refresh) moves to a new key: a stolen cookie is worth one
    /// refresh at most, and the thief's and the owner's next refreshes cannot both succeed.
    /// When the old session is gone (a logout won the race), nothing is written and the new
    /// key names no session: a refresh can never bring a logged-out session back.
    async fn update(
        &self,
        key: SessionKey,
        state: HashMap<String, String>,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        let new_key = new_session_key().map_err(UpdateError::Other)?;
        let (old_hash, new_hash) = (hash(&key), hash(&new_key));
        let (json, expires_at) = (to_json(&state), expiry(ttl));
        db::run(&self.pool, move |conn| {
            db::sessions::rotate(conn, &old_hash, &new_hash, &json, expires_at)
        })
        .await
        .map_err(|e| UpdateError::Other(e.into()))?;
        Ok(new_key)
    }

    async fn update_ttl(
        &self,
        key: &SessionKey,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<(), anyhow::Error> {
        let (key_hash, expires_at) = (hash(key), expiry(ttl));
        db::run(&self.pool, move |conn| {
            db::sessions::update(conn, &key_hash, None, expires_at)
        })
        .await
        .map(drop)
        .map_err(anyhow::Error::new)
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let key_hash = hash(key);
        db::run(&self.pool, move |conn| {
            db::sessions::delete(conn, &key_hash)
        })
        .await
        .map(drop)
        .map_err(anyhow::Error::new)
    }
}

/// Re-seals a session cookie that only the previous key (`JWT_SECRET_PREVIOUS`) opens under
/// the current key, before the session middleware reads it. actix-session knows one key; this
/// keeps browsers logged in across a key rotation, and the next response carries a cookie
/// sealed with the current key.
#[derive(Clone)]
pub struct CookieRekey {
    current: Key,
    previous: Key,
}

impl CookieRekey {
    /// `None` unless a previous key is configured.
    pub fn new(auth: &AuthConfig) -> Option<Self> {
        let previous = auth.jwt_secret_previous.as_ref()?;
        Some(Self {
            current: cookie_key(&auth.jwt_secret),
            previous: cookie_key(previous),
        })
    }

    /// Rewrites the request's session cookie when the previous key opens it and the current
    /// one does not; anything else is left for the session middleware to judge.
    pub fn apply(&self, req: &mut actix_web::dev::ServiceRequest) {
        use actix_web::cookie::{Cookie, CookieJar};
        use actix_web::http::header::{COOKIE, HeaderValue};
        let prefix = format!("{COOKIE_NAME}=");
        // Read from the header, not `req.cookie()`: that parses once and caches, and the
        // session middleware would then see the cached, unrewritten cookie.
        let pairs: Vec<String> = req
            .headers()
            .get_all(COOKIE)
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        // Percent-decoded, as actix reads request cookies.
        let Some(sealed) = pairs
            .iter()
            .filter(|c| c.starts_with(&prefix))
            .find_map(|c| Cookie::parse_encoded(c.clone()).ok())
        else {
            return;
        };
        let mut jar = CookieJar::new();
        jar.add_original(sealed);
        if jar.private(&self.current).get(COOKIE_NAME).is_some() {
            return;
        }
        let Some(opened) = jar.private(&self.previous).get(COOKIE_NAME) else {
            return;
        };
        let mut resealed = CookieJar::new();
        resealed
            .private_mut(&self.current)
            .add(Cookie::new(COOKIE_NAME, opened.value().to_owned()));
        let Some(value) = resealed.get(COOKIE_NAME).map(|c| c.value().to_owned()) else {
            return;
        };
        let rewritten: Vec<String> = pairs
            .into_iter()
            .map(|c| {
                if c.starts_with(&prefix) {
                    format!("{prefix}{value}")
                } else {
                    c
                }
            })
            .collect();
        if let Ok(header) = HeaderValue::from_str(&rewritten.join("; ")) {
            req.headers_mut().insert(COOKIE, header);
        }
    }
}

/// The session cookie's key, derived from a JWT secret (which is at least 32 bytes).
fn cookie_key(secret: &secrecy::SecretString) -> Key {
    Key::derive_from(secret.expose_secret().as_bytes())
}

/// True when the public URL is plain http on this machine, where browsers drop `Secure`
/// cookies.
fn local_http(config: &Config) -> bool {
    config.http.public_url.scheme() == "http"
        && matches!(
            config.http.public_url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        )
}

/// The session middleware: HttpOnly cookie on `/api`, SameSite as configured, Secure unless
/// served over plain http on localhost, expiring after the session TTL without use.
pub fn middleware(config: &Config, pool: PgPool) -> SessionMiddleware<PgSessionStore> {
    // A key of its own, derived from the JWT secret.
    let key = cookie_key(&config.auth.jwt_secret);
    let ttl = actix_web::cookie::time::Duration::seconds(
        i64::try_from(config.auth.session_ttl.as_secs()).unwrap_or(i64::MAX),
    );
    SessionMiddleware::builder(PgSessionStore::new(pool), key)
        .cookie_name(COOKIE_NAME.into())
        .cookie_path("/api".into())
        .cookie_http_only(true)
        .cookie_same_site(config.auth.cookie_same_site)
        .cookie_secure(!local_http(config))
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(ttl)
                .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
        )
        .build()
}
