//! Everything that speaks to WeChat: endpoints, parameters, wire shapes, errcodes and what
//! they mean, the access-token cache, server-push security. No other module (but the sandbox,
//! which plays WeChat) knows a WeChat URL or errcode: callers branch on the predicates below.
mod account;
mod client;
mod config;
pub mod crypto;
pub mod events;
mod oauth;
pub mod push;
mod token;
pub mod types;

pub use account::{Account, CallError, Connected, NotConfigured, Wechat};
pub use client::{WechatClient, WechatSettings};
pub use config::{PushConfig, PushMode, WechatConfig};
pub use token::{AccessToken, AccessTokenCache, TokenError};

/// A failed call to WeChat.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WechatError {
    /// WeChat answered with `errcode != 0`.
    #[error("WeChat errcode {errcode}: {errmsg}")]
    Api {
        /// WeChat's error code.
        errcode: i64,
        /// WeChat's message (informational only; never matched on).
        errmsg: String,
    },
    /// A non-2xx HTTP status.
    #[error("WeChat answered HTTP {0}")]
    Status(u16),
    /// No answer within the configured timeout.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// The connection failed (refused, DNS, TLS).
    #[error("could not reach WeChat: {0}")]
    Connect(String),
    /// The answer was not the JSON WeChat documents.
    #[error("unexpected answer from WeChat: {0}")]
    Decode(String),
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The access token is invalid or expired: refresh it and retry at once.
    TokenInvalid,
    /// WeChat is busy, rate-limited or unreachable: retry later.
    Transient,
    /// Retrying will not help.
    Permanent,
}

impl WechatError {
    /// Classifies by errcode and transport failure, never by errmsg.
    pub fn class(&self) -> ErrorClass {
        match self {
            // 40001 invalid credential, 40014 invalid access_token, 42001 access_token expired.
            Self::Api {
                errcode: 40001 | 40014 | 42001,
                ..
            } => ErrorClass::TokenInvalid,
            // -1 system busy, 45009 daily quota, 45011 minute frequency limit.
            Self::Api {
                errcode: -1 | 45009 | 45011,
                ..
            } => ErrorClass::Transient,
            Self::Api { .. } => ErrorClass::Permanent,
            Self::Status(s) if *s >= 500 || *s == 429 => ErrorClass::Transient,
            Self::Status(_) => ErrorClass::Permanent,
            Self::Timeout | Self::Connect(_) | Self::Decode(_) => ErrorClass::Transient,
        }
    }

    /// The access token was refused (expired, or replaced by a newer fetch).
    pub fn is_token_invalid(&self) -> bool {
        self.class() == ErrorClass::TokenInvalid
    }

    /// Worth trying again later. A token rejection counts: one that outlives a refresh is
    /// WeChat trouble, not a property of the message.
    pub fn is_retryable(&self) -> bool {
        self.class() != ErrorClass::Permanent
    }

    /// WeChat refused an OAuth `code`: 40029 invalid, 40163 already used, 42003 expired. The
    /// user must scan the bind link again.
    pub fn is_rejected_oauth_code(&self) -> bool {
        matches!(self.errcode(), Some(40029 | 40163 | 42003))
    }

    /// 43004: the recipient does not follow the official account (any more).
    pub fn is_not_following(&self) -> bool {
        self.errcode() == Some(43004)
    }

    /// 45009: the account's daily quota of this call is used up. Sending stops for the
    /// whole account until the quota resets, instead of spending each message's attempts.
    pub fn is_quota_exhausted(&self) -> bool {
        self.errcode() == Some(45009)
    }

    /// 48006: no quota reset is left this month (WeChat allows 10).
    pub fn is_quota_reset_limit(&self) -> bool {
        self.errcode() == Some(48006)
    }

    /// 40037: WeChat does not know the template (deleted, or replaced by a category change).
    pub fn is_unknown_template(&self) -> bool {
        self.errcode() == Some(40037)
    }

    /// WeChat's errcode, when it gave one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(errcode: i64) -> WechatError {
        WechatError::Api {
            errcode,
            errmsg: "x".into(),
        }
    }

    #[test]
    fn errcodes_fall_in_the_documented_classes() {
        for c in [40001, 40014, 42001] {
            assert_eq!(api(c).class(), ErrorClass::TokenInvalid, "{c}");
        }
        for c in [-1, 45009, 45011] {
            assert_eq!(api(c).class(), ErrorClass::Transient, "{c}");
        }
        // 43101: the user refused this message; 43004: they do not follow.
        for c in [43004, 43101, 40003, 40037, 47003, 40029] {
            assert_eq!(api(c).class(), ErrorClass::Permanent, "{c}");
        }
        assert_eq!(WechatError::Status(500).class(), ErrorClass::Transient);
        assert_eq!(WechatError::Status(404).class(), ErrorClass::Permanent);
        assert_eq!(WechatError::Timeout.class(), ErrorClass::Transient);
    }

    #[test]
    fn predicates_name_what_callers_branch_on() {
        for c in [40029, 40163, 42003] {
            assert!(api(c).is_rejected_oauth_code(), "{c}");
        }
        assert!(!api(40001).is_rejected_oauth_code());
        assert!(api(43004).is_not_following());
        assert!(!api(40003).is_not_following());
        assert!(api(40037).is_unknown_template());
        assert!(!api(47003).is_unknown_template());
        assert!(api(45009).is_quota_exhausted());
        assert!(!api(45011).is_quota_exhausted());
        assert!(api(48006).is_quota_reset_limit());
        assert!(api(42001).is_token_invalid() && api(42001).is_retryable());
        assert!(api(-1).is_retryable() && !api(-1).is_token_invalid());
        assert!(!api(47003).is_retryable());
        assert!(WechatError::Timeout.is_retryable());
    }
}
