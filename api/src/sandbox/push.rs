//! The simulator's server push: what a phone does (follow, unfollow, scan, receive a
//! template message) becomes a signed event POSTed to the service's `/api/wechat/events`,
//! in plaintext or safe mode as configured, exactly as WeChat would send it.
use std::time::Duration;

use url::Url;

use crate::wechat::events::cdata;
use crate::wechat::push::PushSecurity;

/// `ToUserName` of the simulated official account.
pub const SANDBOX_ACCOUNT: &str = "gh_wxbindsandbox";

/// Signs and sends pushes to the service.
pub struct Pusher {
    security: PushSecurity,
    events_url: Url,
}

impl Pusher {
    /// A pusher for the service at `public_url`.
    pub fn new(security: PushSecurity, public_url: &Url) -> Self {
        let base = public_url.as_str().trim_end_matches('/');
        let events_url =
            Url::parse(&format!("{base}/api/wechat/events")).unwrap_or_else(|_| public_url.clone());
        Self {
            security,
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
        let signed = self
            .security
            .sign_push(xml, SANDBOX_ACCOUNT, chrono::Utc::now().timestamp());
        let mut url = self.events_url.clone();
        url.query_pairs_mut()
            .extend_pairs(&signed.query)
            .append_pair("openid", openid);
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(5))
            .finish();
        let mut resp = client
            .post(url.as_str())
            .insert_header(("content-type", "text/xml"))
            .send_body(signed.body)
            .await
            .map_err(|e| format!("push failed: {e}"))?;
        let status = resp.status();
        let reply = resp.body().await.map_err(|e| format!("push reply: {e}"))?;
        if !status.is_success() {
            return Err(format!("the service answered HTTP {status} to the push"));
        }
        self.security
            .read_reply(&String::from_utf8_lossy(&reply))
            .map_err(|e| e.to_string())
    }
}
