//! WeChat's JSON request and response shapes, as documented.
use serde::{Deserialize, Serialize};

use crate::telemetry::redacted_debug;

/// `sns/oauth2/access_token` success body.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthAccessToken {
    /// The user's openid under this official account.
    pub openid: String,
    /// 1 when WeChat answered for a virtual "snapshot" user (page opened from a moments snapshot).
    #[serde(default)]
    pub is_snapshotuser: Option<i64>,
    /// Present when the account is linked to an open platform.
    #[serde(default)]
    pub unionid: Option<String>,
    /// Granted scope.
    #[serde(default)]
    pub scope: Option<String>,
}

/// `cgi-bin/stable_token` request body.
#[derive(Serialize)]
pub struct StableTokenRequest<'a> {
    /// Always `client_credential`.
    pub grant_type: &'a str,
    /// The official account's app id.
    pub appid: &'a str,
    /// The app secret.
    pub secret: &'a str,
    /// Only set when a normal fetch handed back the token WeChat had just rejected.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force_refresh: bool,
}
redacted_debug!(StableTokenRequest<'a> {
    grant_type,
    appid,
    secret: redacted,
    force_refresh
});

/// `cgi-bin/stable_token` / `cgi-bin/token` success body.
#[derive(Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Lifetime in seconds (7200).
    pub expires_in: i64,
}
redacted_debug!(TokenResponse {
    access_token: redacted,
    expires_in
});

/// `cgi-bin/message/template/send` request body.
#[derive(Debug, Serialize)]
pub struct TemplateSend<'a> {
    /// Recipient openid.
    pub touser: &'a str,
    /// Template id.
    pub template_id: &'a str,
    /// Page the message opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<&'a str>,
    /// `{appid, pagepath}`: a page of a mini program bound to the account, which WeChat opens
    /// instead of `url` when both are given (older clients open `url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miniprogram: Option<&'a serde_json::Value>,
    /// Field name → `{value, color?}`.
    pub data: &'a serde_json::Value,
    /// Deduplication key: WeChat sends one message per openid and client_msg_id.
    pub client_msg_id: &'a str,
}

/// `cgi-bin/message/template/send` success body.
#[derive(Debug, Deserialize)]
pub struct TemplateSendResponse {
    /// The id WeChat gives the message (reported back in TEMPLATESENDJOBFINISH).
    pub msgid: i64,
}

/// `cgi-bin/template/get_all_private_template` success body.
#[derive(Debug, Deserialize)]
pub struct PrivateTemplates {
    /// Every template the official account has.
    #[serde(default)]
    pub template_list: Vec<PrivateTemplate>,
}

/// One template of `get_all_private_template`.
#[derive(Debug, Clone, Deserialize)]
pub struct PrivateTemplate {
    /// The id sends name it by.
    pub template_id: String,
    /// Its title.
    #[serde(default)]
    pub title: String,
    /// The industry it was chosen under (legacy templates).
    #[serde(default)]
    pub primary_industry: String,
    /// The sub-industry it was chosen under.
    #[serde(default)]
    pub deputy_industry: String,
    /// Its keywords as placeholders: the source of truth for the keys a send may carry.
    #[serde(default)]
    pub content: String,
    /// An example of a filled-in message.
    #[serde(default)]
    pub example: String,
}

/// `cgi-bin/qrcode/create` success body.
#[derive(Deserialize)]
pub struct QrTicket {
    /// Exchanged for the image at showqrcode.
    pub ticket: String,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expire_seconds: Option<i64>,
    /// The URL the QR code encodes.
    #[serde(default)]
    pub url: Option<String>,
}
// The ticket shows the QR code and the URL is its content: either binds a scanner.
redacted_debug!(QrTicket {
    ticket: redacted,
    expire_seconds,
    url: redacted
});

/// What WeChat did with a template send it did not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendAccepted {
    /// Accepted for delivery (errcode 0), with WeChat's msgid.
    Sent(i64),
    /// Held for review (errcode 40252): WeChat delivers it itself if review approves, so it
    /// must never be sent again.
    UnderReview {
        /// WeChat's errcode (40252).
        errcode: i64,
        /// WeChat's errmsg.
        errmsg: String,
        /// An id the answer carried for the held message (`tmpl_msg_id`), if any: what
        /// `queryblocktmplmsg` is asked about instead of the template id.
        review_ref: Option<String>,
        /// A msgid the answer carried, if any (WeChat documents none): a late delivery
        /// report then matches the message exactly.
        msgid: Option<i64>,
    },
}

/// `cgi-bin/openapi/quota/get` success body.
#[derive(Debug, Deserialize)]
pub struct QuotaAnswer {
    /// The quota of the asked endpoint.
    pub quota: Quota,
}

/// One endpoint's daily quota.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Quota {
    /// Calls allowed today.
    pub daily_limit: i64,
    /// Calls made today.
    pub used: i64,
    /// Calls left today.
    pub remain: i64,
}

/// One message WeChat's review blocked (`wxa/sec/queryblocktmplmsg`).
#[derive(Debug, Clone, Deserialize)]
pub struct BlockedMessage {
    /// The record's id: pages are asked for with the largest one seen.
    #[serde(deserialize_with = "number_or_string")]
    pub id: i64,
    /// What the query named (the template id, or the id the 40252 answer carried).
    #[serde(default)]
    pub tmpl_msg_id: String,
    /// The recipient.
    #[serde(default)]
    pub openid: String,
    /// When it was sent, in seconds.
    #[serde(default, deserialize_with = "number_or_string")]
    pub send_timestamp: i64,
}

/// `wxa/sec/queryblocktmplmsg` success body. WeChat documents `msginfo` as a list but its
/// example shows one object: both are read.
#[derive(Debug, Deserialize)]
pub struct BlockedPage {
    /// The blocked messages of this page.
    #[serde(default, deserialize_with = "one_or_many")]
    pub msginfo: Vec<BlockedMessage>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(i64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BlockedMessage>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Many(Vec<BlockedMessage>),
        One(BlockedMessage),
        Nothing,
    }
    Ok(match Either::deserialize(d)? {
        Either::Many(v) => v,
        Either::One(m) => vec![m],
        Either::Nothing => Vec::new(),
    })
}
