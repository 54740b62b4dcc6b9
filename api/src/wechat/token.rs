//! The global access token: one per app id, cached in memory and in Postgres, refreshed before
//! it expires and fetched once however many tasks or processes need it at the same moment:
//! an async mutex makes a refresh single-flight inside the process, a Postgres advisory lock
//! (then a re-read) across processes.
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeDelta, Utc};

use super::{WechatClient, WechatError};
use diesel::connection::{AnsiTransactionManager, TransactionManager};

use crate::db::{self, DbError, PgPool, PgPooled};

/// Refresh this long before expiry, so no send goes out with a token about to lapse.
const REFRESH_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// An access token and its expiry. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    value: Arc<str>,
    expires_at: DateTime<Utc>,
}

crate::telemetry::redacted_debug!(AccessToken {
    value: redacted,
    expires_at
});

impl AccessToken {
    /// The token, for the `access_token` query parameter only.
    pub fn secret(&self) -> &str {
        &self.value
    }

    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        now + REFRESH_MARGIN < self.expires_at
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// WeChat refused or failed the fetch.
    #[error("fetching the access token failed")]
    Wechat(#[from] WechatError),
    /// The shared token store could not be used.
    #[error("the shared token store failed")]
    Store(#[source] DbError),
}

/// The process-wide token cache; one `Arc` is shared by every thread.
pub struct AccessTokenCache {
    app_id: String,
    pool: PgPool,
    /// How long to wait for another process's refresh: it makes at most two fetches.
    lock_wait: std::time::Duration,
    current: RwLock<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
}

impl AccessTokenCache {
    /// An empty cache for `app_id`.
    pub fn new(
        app_id: impl Into<String>,
        pool: PgPool,
        fetch_timeout: std::time::Duration,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            pool,
            lock_wait: fetch_timeout * 2 + std::time::Duration::from_secs(2),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// A token valid for at least the refresh margin.
    pub async fn get(&self, client: &WechatClient) -> Result<AccessToken, TokenError> {
        if let Some(t) = self.cached().filter(|t| t.is_fresh(Utc::now())) {
            return Ok(t);
        }
        self.refresh(client, None).await
    }

    /// A token other than `rejected`, which WeChat just refused. When another task already
    /// replaced it, that replacement is returned and WeChat is not asked again.
    pub async fn replace_rejected(
        &self,
        client: &WechatClient,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        self.refresh(client, Some(rejected.secret())).await
    }

    fn cached(&self) -> Option<AccessToken> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_cached(&self, token: &AccessToken) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
    }

    async fn refresh(
        &self,
        client: &WechatClient,
        rejected: Option<&str>,
    ) -> Result<AccessToken, TokenError> {
        let usable = |t: &AccessToken| t.is_fresh(Utc::now()) && Some(t.secret()) != rejected;
        let _single_flight = self.refresh.lock().await;
        if let Some(t) = self.cached().filter(usable) {
            return Ok(t);
        }

        // Across processes: hold the advisory lock while fetching, and re-read first, since
        // another process may have refreshed while this one waited for the lock.
        let (conn, stored) = self.lock_and_read().await?;
        let stored = stored.filter(usable);
        let outcome = match &stored {
            Some(t) => Ok(t.clone()),
            None => self.fetch(client, rejected).await,
        };
        // Always end the transaction (releasing the lock), whatever the fetch did; store only
        // a fetched token.
        let to_store = outcome.as_ref().ok().filter(|_| stored.is_none()).cloned();
        self.store_and_commit(conn, to_store).await?;

        let token = outcome?;
        self.set_cached(&token);
        Ok(token)
    }

    async fn fetch(
        &self,
        client: &WechatClient,
        rejected: Option<&str>,
    ) -> Result<AccessToken, TokenError> {
        let fetch = |force_refresh| async move {
            let fetched = client.fetch_stable_token(force_refresh).await;
            crate::metrics::token_fetch(fetched.is_ok());
            fetched
        };
        let mut fetched = fetch(false).await?;
        // A normal stable_token fetch returns the current token while WeChat still deems it
        // valid; only when that is the very token a call just refused is a forced refresh due.
        if Some(fetched.access_token.as_str()) == rejected {
            tracing::warn!("WeChat returned the token it had refused; forcing a refresh");
            fetched = fetch(true).await?;
        }
        let lifetime = TimeDelta::seconds(fetched.expires_in.clamp(60, 7 * 24 * 3600));
        tracing::info!(
            token.expires_in = fetched.expires_in,
            "fetched a new access token"
        );
        Ok(AccessToken {
            value: fetched.access_token.into(),
            expires_at: Utc::now() + lifetime,
        })
    }

    /// Opens a transaction holding the cross-process refresh lock and reads the stored token.
    /// The connection comes back inside that transaction; [`Self::store_and_commit`] ends it.
    async fn lock_and_read(&self) -> Result<(PgPooled, Option<AccessToken>), TokenError> {
        let pool = self.pool.clone();
        let app_id = self.app_id.clone();
        let wait = self.lock_wait;
        actix_web::web::block(move || {
            let mut conn = pool.get()?;
            // Opened by hand, not with `transaction(..)`: it must stay open across the
            // asynchronous fetch from WeChat. Should the caller's future be dropped meanwhile,
            // the pool discards the connection (an open transaction marks it broken), and
            // PostgreSQL releases the lock with it.
            AnsiTransactionManager::begin_transaction(&mut *conn)?;
            db::tokens::lock_for_transaction(&mut conn, &app_id, wait)?;
            let row = db::tokens::find(&mut conn, &app_id)?;
            Ok((
                conn,
                row.map(|r| AccessToken {
                    value: r.access_token.into(),
                    expires_at: r.expires_at,
                }),
            ))
        })
        .await
        .map_err(|e| TokenError::Store(DbError::Task(e)))?
        .map_err(TokenError::Store)
    }

    /// Stores a fetched token (if any) and commits, which releases the lock. On an error the
    /// connection is dropped mid-transaction and discarded, which releases it too.
    async fn store_and_commit(
        &self,
        mut conn: PgPooled,
        token: Option<AccessToken>,
    ) -> Result<(), TokenError> {
        let app_id = self.app_id.clone();
        actix_web::web::block(move || {
            if let Some(t) = token {
                db::tokens::upsert(&mut conn, &app_id, t.secret(), t.expires_at)?;
            }
            AnsiTransactionManager::commit_transaction(&mut *conn)?;
            Ok(())
        })
        .await
        .map_err(|e| TokenError::Store(DbError::Task(e)))?
        .map_err(TokenError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let token = AccessToken {
            value: "SECRET-ACCESS-TOKEN".into(),
            expires_at: Utc::now(),
        };
        let debug = format!("{token:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("expires_at"), "{debug}");
    }
}
