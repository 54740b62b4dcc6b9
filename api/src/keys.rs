//! API keys for servers: `Authorization: Bearer wxk_…` authenticates as the key's service
//! principal. Scope `send` may send to any bound user and read the messages it sent (and the
//! template list); `admin` may do what an admin user may. A key is `wxk_` and 40 random
//! letters and digits (about 238 bits), shown once; only its HMAC-SHA256 under the
//! deployment's secret is stored, so checking one costs a hash and an indexed lookup, never a
//! password hash. Every process holds the live keys in memory, read again every [`CACHE_TTL`]
//! (a revocation reaches every process within that), so a forged `wxbind_…` token costs a
//! hash and a map lookup, never a query; a key's last use is recorded at most once a minute.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use diesel::{Connection, PgConnection, QueryResult};

use crate::audit::{self, Action, Actor};
use crate::db::{self, DbError, PgPool, api_keys::ApiKey};

/// What every key starts with.
pub const PREFIX: &str = "wxk_";
/// Random characters after the prefix.
const RANDOM_LEN: usize = 40;
/// How long a looked-up key (or a miss) is trusted before it is read again.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// How often a key's last use is written.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What a key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send to any bound user; read the messages it sent and the templates.
    Send,
    /// Everything an admin user may do.
    Admin,
}

impl Scope {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Admin => "admin",
        }
    }

    /// The stored name back; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "send" => Some(Self::Send),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A key's name: 1-64 letters, digits, '_', '.' or '-'.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A new key: the secret to show once, and what is stored (its hash and display prefix).
pub fn generate(secret: &[u8]) -> (String, String, String) {
    let key = format!("{PREFIX}{}", crate::domain::random_alphanumeric(RANDOM_LEN));
    let hash = hash(secret, &key);
    let prefix = key[..PREFIX.len() + 6].to_owned();
    (key, hash, prefix)
}

/// The stored form of `key`: hex HMAC-SHA256 under the deployment's secret.
pub fn hash(secret: &[u8], key: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(key.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Stores a new key (its hash) and its audit row (`key.created` by `actor`) in one
/// transaction. The row names the key and its scope, never the key.
pub fn create_audited(
    conn: &mut PgConnection,
    name: &str,
    scope: Scope,
    key_hash: &str,
    prefix: &str,
    actor: Actor,
) -> QueryResult<db::api_keys::Created> {
    conn.transaction(|conn| {
        let created = db::api_keys::create(conn, name, scope.as_str(), key_hash, prefix)?;
        if let db::api_keys::Created::Key(k) = &created {
            let details = serde_json::json!({ "scope": scope.as_str() });
            audit::record(conn, actor, Action::KeyCreated, Some(&k.name), details)?;
        }
        Ok(created)
    })
}

/// Revokes the live key named `name` and records `key.revoked` by `actor`, in one
/// transaction; false (and no row) when there is no such key.
pub fn revoke_audited(conn: &mut PgConnection, name: &str, actor: Actor) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let revoked = db::api_keys::revoke(conn, name)?;
        if revoked {
            audit::record(
                conn,
                actor,
                Action::KeyRevoked,
                Some(name),
                serde_json::json!({}),
            )?;
        }
        Ok(revoked)
    })
}

/// An authenticated key.
#[derive(Debug, Clone, Copy)]
pub struct KeyPrincipal {
    /// The key's service principal (a `users` row): what messages name as their sender.
    pub user_id: i64,
    /// What it may do.
    pub scope: Scope,
}

/// Whether `token` has a key's shape: the prefix and exactly [`RANDOM_LEN`] letters or digits.
/// Anything else is refused before any hashing or lookup.
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Every live key, by hash, as last read.
#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, (i64, KeyPrincipal)>,
    read_at: Option<Instant>,
}

/// The process's key checker. Live keys are few: all of them are held in memory and read
/// again every [`CACHE_TTL`] with one query, so checking a key (or a forged one) never costs
/// a query of its own.
#[derive(Default)]
pub struct KeyChecker {
    secret: tokio::sync::OnceCell<Vec<u8>>,
    live: std::sync::RwLock<Snapshot>,
    reloading: tokio::sync::Mutex<()>,
    touched: Mutex<HashMap<i64, Instant>>,
}

impl std::fmt::Debug for KeyChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyChecker { secret: [redacted], live: [redacted] }")
    }
}

impl KeyChecker {
    /// The deployment's secret, read (or made) once.
    async fn secret(&self, pool: &PgPool) -> Result<&[u8], DbError> {
        self.secret
            .get_or_try_init(|| db::run(pool, db::api_keys::secret))
            .await
            .map(Vec::as_slice)
    }

    /// Makes the next check read the live keys again.
    fn invalidate(&self) {
        self.live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_at = None;
    }

    /// Creates a key named `name`, audited as `actor`'s ([`create_audited`]); `Ok(None)` when
    /// the name is taken.
    pub async fn create(
        &self,
        pool: &PgPool,
        name: &str,
        scope: Scope,
        actor: Actor,
    ) -> Result<Option<(ApiKey, String)>, DbError> {
        let (key, hash, prefix) = generate(self.secret(pool).await?);
        let name = name.to_owned();
        let created = db::run(pool, move |conn| {
            create_audited(conn, &name, scope, &hash, &prefix, actor)
        })
        .await?;
        self.invalidate();
        Ok(match created {
            db::api_keys::Created::Key(k) => Some((k, key)),
            db::api_keys::Created::NameTaken => None,
        })
    }

    /// Revokes a key, audited as `actor`'s ([`revoke_audited`]); this process refuses it from
    /// now on, the others within [`CACHE_TTL`].
    pub async fn revoke(&self, pool: &PgPool, name: &str, actor: Actor) -> Result<bool, DbError> {
        let name = name.to_owned();
        let revoked = db::run(pool, move |conn| revoke_audited(conn, &name, actor)).await?;
        self.invalidate();
        Ok(revoked)
    }

    /// The live keys, read again when the snapshot is older than [`CACHE_TTL`] (one reader at
    /// a time; the others wait for its result).
    async fn refresh(&self, pool: &PgPool) -> Result<(), DbError> {
        let fresh = |s: &Snapshot| s.read_at.is_some_and(|t| t.elapsed() < CACHE_TTL);
        if fresh(
            &self
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return Ok(());
        }
        let _one = self.reloading.lock().await;
        if fresh(
            &self
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return Ok(());
        }
        // Taken before the read: a revocation committed while it runs is read next time.
        let started = Instant::now();
        let rows = db::run(pool, db::api_keys::live).await?;
        let keys = rows
            .into_iter()
            .filter_map(|(id, hash, user_id, scope)| {
                Scope::parse(&scope).map(|scope| (hash, (id, KeyPrincipal { user_id, scope })))
            })
            .collect();
        *self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Snapshot {
            keys,
            read_at: Some(started),
        };
        Ok(())
    }

    /// The live key `key` is, if any.
    pub async fn check(&self, pool: &PgPool, key: &str) -> Result<Option<KeyPrincipal>, DbError> {
        if !well_formed(key) {
            return Ok(None);
        }
        let hash = hash(self.secret(pool).await?, key);
        self.refresh(pool).await?;
        let found = self
            .live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .get(&hash)
            .copied();
        let Some((id, principal)) = found else {
            return Ok(None);
        };
        let due = {
            let mut touched = self
                .touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = touched.get(&id).is_none_or(|t| t.elapsed() >= TOUCH_EVERY);
            if due {
                touched.insert(id, Instant::now());
            }
            due
        };
        if due {
            if let Err(e) = db::run(pool, move |conn| db::api_keys::touch(conn, id)).await {
                tracing::warn!(error = %crate::error::ErrorChain(&e), "recording a key's use failed");
            }
        }
        Ok(Some(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_stored_only_as_a_keyed_hash() {
        let (key, stored, prefix) = generate(b"secret");
        assert!(key.starts_with(PREFIX) && key.len() == PREFIX.len() + RANDOM_LEN);
        assert!(key.starts_with(&prefix));
        assert_eq!(stored, hash(b"secret", &key));
        assert_ne!(stored, hash(b"another secret", &key), "keyed");
        assert!(!stored.contains(&key[PREFIX.len()..]));
        assert_ne!(generate(b"secret").0, key);
    }

    #[test]
    fn only_a_keys_shape_is_looked_at() {
        let (key, _, _) = generate(b"secret");
        assert!(well_formed(&key));
        for bad in [
            "wxk_",
            "wxk_short",
            &format!("{key}x"),
            &key.replace("wxk_", "wxk-"),
            &format!("wxk_{}", "é".repeat(20)),
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("billing-backend_2.prod"));
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
