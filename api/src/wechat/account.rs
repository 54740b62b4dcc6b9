//! The official account as this process talks to it. [`Account`] is what every thread shares
//! (settings, the access-token cache, push security); [`Wechat`] is one thread's handle, and
//! the one place that says whether WeChat is configured at all. Calls that need an access
//! token go through [`Connected::with_token`], the only "refresh once on a rejected token"
//! loop in the service.
use std::future::Future;
use std::sync::Arc;

use url::Url;

use super::WechatConfig;
use super::push::PushSecurity;
use super::token::{AccessToken, AccessTokenCache, TokenError};
use super::{WechatClient, WechatError, WechatSettings, crypto::CryptoError, oauth};
use crate::db::PgPool;

/// The shared half: `Send + Sync`, built once per process.
pub struct Account {
    settings: WechatSettings,
    oauth_base: Url,
    mp_base: Url,
    tokens: AccessTokenCache,
    push: Option<PushSecurity>,
}

impl Account {
    /// The account of `config`; its token cache persists through `pool`.
    pub fn new(config: &WechatConfig, pool: PgPool) -> Result<Self, CryptoError> {
        let push = config
            .push
            .as_ref()
            .map(|p| PushSecurity::new(p, &config.app_id))
            .transpose()?;
        Ok(Self {
            settings: WechatSettings {
                api_base: config.api_base.clone(),
                app_id: config.app_id.clone(),
                app_secret: config.app_secret.clone(),
                timeout: config.timeout,
            },
            oauth_base: config.oauth_base.clone(),
            mp_base: config.mp_base.clone(),
            tokens: AccessTokenCache::new(&config.app_id, pool, config.timeout),
            push,
        })
    }

    /// The official account's app id.
    pub fn app_id(&self) -> &str {
        &self.settings.app_id
    }

    /// How server pushes are verified; `None` without `WECHAT_TOKEN`.
    pub fn push(&self) -> Option<&PushSecurity> {
        self.push.as_ref()
    }

    /// The OAuth2 authorize URL that binds the scanner, carrying `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        oauth::authorize_url(&self.oauth_base, self.app_id(), redirect_uri, state)
    }

    /// The image URL of a QR code ticket.
    pub fn showqrcode_url(&self, ticket: &str) -> String {
        oauth::showqrcode_url(&self.mp_base, ticket)
    }

    /// A client for the calling thread (awc clients are `!Send`).
    fn client(&self) -> WechatClient {
        WechatClient::new(self.settings.clone())
    }
}

/// One thread's way to WeChat, or the fact that this server has none.
pub struct Wechat(Option<Connected>);

/// This server has no WeChat credentials.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("WeChat is not configured")]
pub struct NotConfigured;

impl Wechat {
    /// A handle for the calling thread; `None` means WeChat is not configured.
    pub fn new(account: Option<Arc<Account>>) -> Self {
        Self(account.map(Connected::new))
    }

    /// The connection, or [`NotConfigured`].
    pub fn get(&self) -> Result<&Connected, NotConfigured> {
        self.0.as_ref().ok_or(NotConfigured)
    }

    /// Whether WeChat is configured.
    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }
}

/// A thread's client together with the shared account.
pub struct Connected {
    client: WechatClient,
    account: Arc<Account>,
}

/// A call that needed an access token failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No token could be had (WeChat refused the fetch, or the token store failed).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The call itself failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
}

impl Connected {
    /// The calling thread's connection to `account`.
    pub fn new(account: Arc<Account>) -> Self {
        Self {
            client: account.client(),
            account,
        }
    }

    /// The raw client, for calls that need no access token (the OAuth code exchange).
    pub fn client(&self) -> &WechatClient {
        &self.client
    }

    /// The shared account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Runs `call` with a current access token. When WeChat rejects the token (expired, or
    /// replaced by another fetch), the token is replaced (single-flight, across processes)
    /// and the call made once more; a second rejection is returned as it is.
    pub async fn with_token<'a, T, F, Fut>(&'a self, call: F) -> Result<T, CallError>
    where
        F: Fn(&'a WechatClient, AccessToken) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let tokens = &self.account.tokens;
        let token = tokens.get(&self.client).await?;
        match call(&self.client, token.clone()).await {
            Err(e) if e.is_token_invalid() => {
                tracing::info!("access token rejected; refreshing and retrying once");
                let fresh = tokens.replace_rejected(&self.client, &token).await?;
                Ok(call(&self.client, fresh).await?)
            }
            other => Ok(other?),
        }
    }
}
