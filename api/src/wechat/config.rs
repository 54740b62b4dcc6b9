//! The part of the configuration that describes the official account: credentials, where
//! WeChat is, and how its pushes are verified. Parsed by `crate::config`; read here.
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// The official account and how to reach WeChat, with every base URL already resolved.
#[derive(Clone, Debug)]
pub struct WechatConfig {
    /// `appid`, public.
    pub app_id: String,
    /// `secret`, never logged.
    pub app_secret: SecretString,
    /// Base of WeChat's server API (`https://api.weixin.qq.com`).
    pub api_base: Url,
    /// Base of WeChat's OAuth pages (`https://open.weixin.qq.com`).
    pub oauth_base: Url,
    /// Base of WeChat's QR-code pages (`https://mp.weixin.qq.com`).
    pub mp_base: Url,
    /// Timeout of every call to WeChat.
    pub timeout: Duration,
    /// Template used when a message names none.
    pub default_template_id: Option<String>,
    /// Server-push security (`/api/wechat/events`); `None` means the endpoint answers 503.
    pub push: Option<PushConfig>,
}

/// How WeChat's server pushes are authenticated.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The server-URL token both sides sign with.
    pub token: SecretString,
    /// Safe-mode EncodingAESKey (43 characters); `None` for plaintext mode.
    pub aes_key: Option<SecretString>,
    /// The previous EncodingAESKey, accepted during a key rotation.
    pub aes_key_previous: Option<SecretString>,
    /// `WECHAT_PUSH_MODE=compat`: with a key, plaintext pushes are accepted as well as
    /// safe-mode ones, while an account switches to safe mode. Without a key it means
    /// nothing (the configuration refuses it): plaintext is then the only mode.
    pub compat: bool,
}

/// Which pushes the endpoint accepts, resolved from the key and `WECHAT_PUSH_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushMode {
    /// No EncodingAESKey: pushes are authenticated by `signature` alone, which covers the
    /// token, timestamp and nonce but not the body.
    Plaintext,
    /// Safe-mode pushes, and plaintext ones too (WeChat's compatible mode): a migration setting,
    /// as weak as plaintext mode against a forged body.
    Compat,
    /// Safe-mode pushes only: `encrypt_type=aes` and a `msg_signature` that covers the body.
    Safe,
}

impl PushConfig {
    /// The mode these settings put the endpoint in. Derived rather than stored, so a key can
    /// never be configured while the endpoint still takes plaintext unless `compat` says so.
    pub fn mode(&self) -> PushMode {
        match (&self.aes_key, self.compat) {
            (None, _) => PushMode::Plaintext,
            (Some(_), true) => PushMode::Compat,
            (Some(_), false) => PushMode::Safe,
        }
    }
}
