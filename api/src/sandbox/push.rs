//! The simulator's server push: what a phone does (follow, unfollow, scan, receive a
//! template message) becomes a signed event POSTed to the service's `/api/wechat/events`,
//! in plaintext or safe mode as configured, exactly as WeChat would send it.
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::wechat::crypto::{self, MsgCrypt};
use crate::wechat::events::{cdata, parse_fields};

/// `ToUserName` of the simulated official account.
pub const SANDBOX_ACCOUNT: &str = "gh_wxbindsandbox";

/// Signs and sends pushes to the service.
pub struct Pusher {
    token: SecretString,
    crypt: Option<MsgCrypt>,
    events_url: Url,
}

impl Pusher {
    /// A pusher for the service at `public_url`.
    pub fn new(token: SecretString, crypt: Option<MsgCrypt>, public_url: &Url) -> Self {
        let base = public_url.as_str().trim_end_matches('/');
        let events_url =
            Url::parse(&format!("{base}/api/wechat/events")).unwrap_or_else(|_| public_url.clone());
        Self {
            token,
            crypt,
            events_url,
        }
    }

    /// An event push in WeChat's shape; `extra` goes inside `<xml>`.
    pub fn event_xml(openid: &str, event: &str, extra: &str) -> String {
        format!(
            "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{}</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType><Event>{}</Event>{extra}</xml>",
            cdata(SANDBOX_ACCOUNT),
            cdata(openid),
            chrono::Utc::now().timestamp(),
            cdata(event),
        )
    }

    /// POSTs `xml` as WeChat does and returns the passive reply's text content, if any.
    pub async fn send(&self, openid: &str, xml: &str) -> Result<Option<String>, String> {
        let token = self.token.expose_secret();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = crate::domain::random_alphanumeric(9);
        let signature = crypto::signature(&[token, &timestamp, &nonce]);
        let mut url = self.events_url.clone();
        url.query_pairs_mut()
            .append_pair("signature", &signature)
            .append_pair("timestamp", &timestamp)
            .append_pair("nonce", &nonce)
            .append_pair("openid", openid);
        let body = match &self.crypt {
            Some(crypt) => {
                let sealed = crypt.encrypt(xml);
                let msg_signature = crypto::signature(&[token, &timestamp, &nonce, &sealed]);
                url.query_pairs_mut()
                    .append_pair("encrypt_type", "aes")
                    .append_pair("msg_signature", &msg_signature);
                format!(
                    "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt></xml>",
                    cdata(SANDBOX_ACCOUNT),
                    cdata(&sealed)
                )
            }
            None => xml.to_owned(),
        };
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish();
        let mut resp = client
            .post(url.as_str())
            .insert_header(("content-type", "text/xml"))
            .send_body(body)
            .await
            .map_err(|e| format!("push failed: {e}"))?;
        let status = resp.status();
        let reply = resp.body().await.map_err(|e| format!("push reply: {e}"))?;
        if !status.is_success() {
            return Err(format!("the service answered HTTP {status} to the push"));
        }
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if reply.trim() == "success" || reply.trim().is_empty() {
            return Ok(None);
        }
        let fields = parse_fields(&reply).map_err(|e| e.to_string())?;
        let inner = match (fields.get("Encrypt"), &self.crypt) {
            (Some(sealed), Some(crypt)) => crypt.decrypt(sealed).map_err(|e| e.to_string())?,
            _ => reply,
        };
        let content = parse_fields(&inner).map_err(|e| e.to_string())?;
        Ok(content.get("Content").cloned())
    }
}
