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
}
