//! The HTTP client for WeChat's server API (awc). One per thread: awc clients are `!Send`.
use std::future::Future;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use super::WechatError;
use super::types::{
    BlockedMessage, BlockedPage, OAuthAccessToken, PrivateTemplate, PrivateTemplates, QrTicket,
    Quota, QuotaAnswer, SendAccepted, StableTokenRequest, TemplateSend, TemplateSendResponse,
    TokenResponse,
};
use crate::metrics::{CallResult, Endpoint};

/// Largest WeChat answer read; real ones are a few hundred bytes.
const MAX_BODY: usize = 256 * 1024;

/// What a [`WechatClient`] needs; `Send + Clone`, so it is built once and handed to each thread.
#[derive(Clone, Debug)]
pub struct WechatSettings {
    /// Base of the server API, e.g. `https://api.weixin.qq.com`.
    pub api_base: Url,
    /// The official account's app id.
    pub app_id: String,
    /// The app secret.
    pub app_secret: SecretString,
    /// Timeout of every call.
    pub timeout: Duration,
}

/// Calls WeChat's server API.
pub struct WechatClient {
    http: awc::Client,
    settings: WechatSettings,
}

impl WechatClient {
    /// A client for the current thread.
    pub fn new(settings: WechatSettings) -> Self {
        let http = awc::Client::builder()
            .timeout(settings.timeout)
            .disable_redirects()
            .finish();
        Self { http, settings }
    }

    /// The official account's app id.
    pub fn app_id(&self) -> &str {
        &self.settings.app_id
    }

    /// Exchanges an OAuth `code` for the user's openid (`sns/oauth2/access_token`).
    #[tracing::instrument(name = "wechat.exchange_code", skip_all)]
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthAccessToken, WechatError> {
        timed(Endpoint::OauthCode, async {
            let mut url = self.endpoint("sns/oauth2/access_token");
            url.query_pairs_mut()
                .append_pair("appid", &self.settings.app_id)
                .append_pair("secret", self.settings.app_secret.expose_secret())
                .append_pair("code", code)
                .append_pair("grant_type", "authorization_code");
            let request = self.http.get(url.as_str()).timeout(self.settings.timeout);
            decode(request.send().await).await
        })
        .await
    }

    /// Fetches the global access token (`cgi-bin/stable_token`).
    #[tracing::instrument(name = "wechat.stable_token", skip_all, fields(force_refresh))]
    pub async fn fetch_stable_token(
        &self,
        force_refresh: bool,
    ) -> Result<TokenResponse, WechatError> {
        timed(Endpoint::StableToken, async {
            let url = self.endpoint("cgi-bin/stable_token");
            let body = StableTokenRequest {
                grant_type: "client_credential",
                appid: &self.settings.app_id,
                secret: self.settings.app_secret.expose_secret(),
                force_refresh,
            };
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            decode(request.send_json(&body).await).await
        })
        .await
    }

    /// Sends a template message (`cgi-bin/message/template/send`): WeChat's msgid, or that
    /// WeChat holds it for review (40252, which is not a refusal).
    #[tracing::instrument(name = "wechat.template_send", skip_all)]
    pub async fn send_template(
        &self,
        access_token: &str,
        message: &TemplateSend<'_>,
    ) -> Result<SendAccepted, WechatError> {
        timed(Endpoint::TemplateSend, async {
            let mut url = self.endpoint("cgi-bin/message/template/send");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            let value = read_json(request.send_json(message).await).await?;
            if value.get("errcode").and_then(serde_json::Value::as_i64) == Some(UNDER_REVIEW) {
                let text = |k: &str| match value.get(k) {
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                return Ok(SendAccepted::UnderReview {
                    errcode: UNDER_REVIEW,
                    errmsg: text("errmsg").unwrap_or_default(),
                    review_ref: text("tmpl_msg_id"),
                    msgid: value.get("msgid").and_then(serde_json::Value::as_i64),
                });
            }
            let sent: TemplateSendResponse = from_answer(value)?;
            Ok(SendAccepted::Sent(sent.msgid))
        })
        .await
    }

    /// Today's quota of template sends (`cgi-bin/openapi/quota/get`).
    #[tracing::instrument(name = "wechat.quota_get", skip_all)]
    pub async fn get_send_quota(&self, access_token: &str) -> Result<Quota, WechatError> {
        timed(Endpoint::QuotaGet, async {
            let mut url = self.endpoint("cgi-bin/openapi/quota/get");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let body = serde_json::json!({"cgi_path": "/cgi-bin/message/template/send"});
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            let answer: QuotaAnswer = decode(request.send_json(&body).await).await?;
            Ok(answer.quota)
        })
        .await
    }

    /// Resets the account's daily API quotas (`cgi-bin/clear_quota`; 10 a month).
    #[tracing::instrument(name = "wechat.clear_quota", skip_all)]
    pub async fn clear_quota(&self, access_token: &str) -> Result<(), WechatError> {
        timed(Endpoint::ClearQuota, async {
            let mut url = self.endpoint("cgi-bin/clear_quota");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let body = serde_json::json!({"appid": self.settings.app_id});
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            let _: serde_json::Value = decode(request.send_json(&body).await).await?;
            Ok(())
        })
        .await
    }

    /// One page of the messages review blocked for `tmpl_msg_id`, after record `largest_id`
    /// (`wxa/sec/queryblocktmplmsg`).
    #[tracing::instrument(name = "wechat.queryblocktmplmsg", skip_all)]
    pub async fn query_blocked(
        &self,
        access_token: &str,
        tmpl_msg_id: &str,
        largest_id: i64,
        limit: u32,
    ) -> Result<Vec<BlockedMessage>, WechatError> {
        timed(Endpoint::QueryBlocked, async {
            let mut url = self.endpoint("wxa/sec/queryblocktmplmsg");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let body = serde_json::json!({
                "tmpl_msg_id": tmpl_msg_id, "largest_id": largest_id, "limit": limit,
            });
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            let page: BlockedPage = decode(request.send_json(&body).await).await?;
            Ok(page.msginfo)
        })
        .await
    }

    /// Lists the official account's templates (`cgi-bin/template/get_all_private_template`).
    #[tracing::instrument(name = "wechat.get_all_private_template", skip_all)]
    pub async fn get_all_private_templates(
        &self,
        access_token: &str,
    ) -> Result<Vec<PrivateTemplate>, WechatError> {
        timed(Endpoint::TemplateList, async {
            let mut url = self.endpoint("cgi-bin/template/get_all_private_template");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let request = self.http.get(url.as_str()).timeout(self.settings.timeout);
            let listed: PrivateTemplates = decode(request.send().await).await?;
            Ok(listed.template_list)
        })
        .await
    }

    /// Creates a temporary parametric QR code (`cgi-bin/qrcode/create`, `QR_STR_SCENE`).
    #[tracing::instrument(name = "wechat.qrcode_create", skip_all)]
    pub async fn create_qrcode(
        &self,
        access_token: &str,
        scene: &str,
        expire_seconds: u32,
    ) -> Result<QrTicket, WechatError> {
        timed(Endpoint::Qrcode, async {
            let mut url = self.endpoint("cgi-bin/qrcode/create");
            url.query_pairs_mut()
                .append_pair("access_token", access_token);
            let body = serde_json::json!({
                "expire_seconds": expire_seconds,
                "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": scene}},
            });
            let request = self.http.post(url.as_str()).timeout(self.settings.timeout);
            decode(request.send_json(&body).await).await
        })
        .await
    }

    /// `path` under the API base, keeping any path the base has (e.g. `/sandbox`).
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.settings.api_base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}/{path}"));
        url.set_query(None);
        url
    }
}

/// Runs one call to WeChat, recording its latency and result under `endpoint`.
async fn timed<T>(
    endpoint: Endpoint,
    call: impl Future<Output = Result<T, WechatError>>,
) -> Result<T, WechatError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => CallResult::Ok,
        Err(WechatError::Api { .. }) => CallResult::Errcode,
        Err(WechatError::Status(_)) => CallResult::HttpStatus,
        Err(WechatError::Timeout) => CallResult::Timeout,
        Err(WechatError::Connect(_)) => CallResult::Unreachable,
        Err(WechatError::Decode(_)) => CallResult::BadAnswer,
    };
    crate::metrics::wechat_call(endpoint, started.elapsed(), outcome);
    result
}

/// The errcode of a send WeChat holds for review.
const UNDER_REVIEW: i64 = 40252;

/// WeChat reports most errors as HTTP 200 with `errcode != 0`: check the status, then the
/// errcode, then decode the success shape. Error texts never include the URL (it carries
/// the secret or the access token).
async fn decode<T: DeserializeOwned>(
    sent: Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
        >,
        awc::error::SendRequestError,
    >,
) -> Result<T, WechatError> {
    from_answer(read_json(sent).await?)
}

/// The answer's JSON, after the transport and the HTTP status.
async fn read_json(
    sent: Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
        >,
        awc::error::SendRequestError,
    >,
) -> Result<serde_json::Value, WechatError> {
    use awc::error::SendRequestError as E;
    let mut response = sent.map_err(|e| match e {
        E::Timeout => WechatError::Timeout,
        E::Connect(c) => WechatError::Connect(connect_reason(&c)),
        other => WechatError::Connect(format!("request failed ({})", send_error_kind(&other))),
    })?;
    let status = response.status();
    let body = response.body().limit(MAX_BODY).await.map_err(|e| match e {
        awc::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            WechatError::Timeout
        }
        other => WechatError::Decode(format!("reading body: {other}")),
    })?;
    if !status.is_success() {
        return Err(WechatError::Status(status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|e| WechatError::Decode(format!("body is not JSON: {e}")))
}

/// A non-zero errcode is an error; otherwise the success shape.
fn from_answer<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, WechatError> {
    if let Some(errcode) = value.get("errcode").and_then(serde_json::Value::as_i64) {
        if errcode != 0 {
            let errmsg = value
                .get("errmsg")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return Err(WechatError::Api { errcode, errmsg });
        }
    }
    serde_json::from_value(value).map_err(|e| WechatError::Decode(e.to_string()))
}

fn connect_reason(e: &awc::error::ConnectError) -> String {
    use awc::error::ConnectError as C;
    match e {
        C::Timeout => "connect timeout".into(),
        C::Resolver(_) => "DNS lookup failed".into(),
        C::Io(io) => format!("{:?}", io.kind()),
        C::SslIsNotSupported => "TLS not supported".into(),
        _ => "connection failed".into(),
    }
}

fn send_error_kind(e: &awc::error::SendRequestError) -> &'static str {
    use awc::error::SendRequestError as E;
    match e {
        E::Url(_) => "bad url",
        E::Send(_) => "send",
        E::Response(_) => "bad response",
        E::Http(_) => "http",
        E::H2(_) => "h2",
        E::TunnelNotSupported => "tunnel",
        E::Body(_) => "body",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{body_json, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(server: &MockServer) -> WechatClient {
        WechatClient::new(WechatSettings {
            api_base: Url::parse(&server.uri()).expect("uri"),
            app_id: "wxtestappid".into(),
            app_secret: SecretString::from("test-app-secret".to_owned()),
            timeout: Duration::from_millis(300),
        })
    }

    fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    #[actix_web::test]
    async fn exchange_code_sends_the_documented_query_and_decodes_success() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/sns/oauth2/access_token"))
            .and(query_param("appid", "wxtestappid"))
            .and(query_param("secret", "test-app-secret"))
            .and(query_param("code", "CODE"))
            .and(query_param("grant_type", "authorization_code"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "ACCESS", "expires_in": 7200, "refresh_token": "R",
                "openid": "OPENID", "scope": "snsapi_userinfo", "is_snapshotuser": 1
            })))
            .expect(1)
            .mount(&server)
            .await;
        let got = client(&server).exchange_code("CODE").await.expect("ok");
        assert_eq!(got.openid, "OPENID");
        assert_eq!(got.is_snapshotuser, Some(1));
    }

    #[actix_web::test]
    async fn errcode_in_a_200_body_is_an_api_error() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(path("/sns/oauth2/access_token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errcode": 40029, "errmsg": "invalid code, rid: 1"})),
            )
            .mount(&server)
            .await;
        let err = client(&server)
            .exchange_code("bad")
            .await
            .expect_err("error");
        assert_eq!(err.errcode(), Some(40029));
    }

    #[actix_web::test]
    async fn stable_token_posts_client_credentials_without_force_refresh() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/stable_token"))
            .and(body_json(json!({
                "grant_type": "client_credential", "appid": "wxtestappid", "secret": "test-app-secret"
            })))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "TOKEN", "expires_in": 7200})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let t = client(&server).fetch_stable_token(false).await.expect("ok");
        assert_eq!((t.access_token.as_str(), t.expires_in), ("TOKEN", 7200));
    }

    #[actix_web::test]
    async fn template_send_carries_the_token_and_returns_msgid() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/message/template/send"))
            .and(query_param("access_token", "TOKEN"))
            .and(body_json(json!({
                "touser": "OPENID", "template_id": "T", "data": {"k": {"value": "v"}},
                "client_msg_id": "m1"
            })))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errcode": 0, "errmsg": "ok", "msgid": 200228332})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let data = json!({"k": {"value": "v"}});
        let msg = TemplateSend {
            touser: "OPENID",
            template_id: "T",
            url: None,
            miniprogram: None,
            data: &data,
            client_msg_id: "m1",
        };
        let msgid = client(&server)
            .send_template("TOKEN", &msg)
            .await
            .expect("sent");
        assert_eq!(msgid, SendAccepted::Sent(200228332));
    }

    #[actix_web::test]
    async fn a_send_held_for_review_is_not_an_error_and_keeps_what_the_answer_carries() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(path("/cgi-bin/message/template/send"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errcode": 40252, "errmsg": "under review rid: 1"})),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(path("/cgi-bin/message/template/send"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"errcode": 40252, "errmsg": "under review", "tmpl_msg_id": "X1"}),
            ))
            .mount(&server)
            .await;
        let data = json!({"k": {"value": "v"}});
        let msg = TemplateSend {
            touser: "OPENID",
            template_id: "T",
            url: None,
            miniprogram: None,
            data: &data,
            client_msg_id: "m1",
        };
        let c = client(&server);
        assert_eq!(
            c.send_template("TOKEN", &msg).await.expect("held"),
            SendAccepted::UnderReview {
                errcode: 40252,
                errmsg: "under review rid: 1".into(),
                review_ref: None,
                msgid: None,
            }
        );
        let SendAccepted::UnderReview { review_ref, .. } =
            c.send_template("TOKEN", &msg).await.expect("held")
        else {
            panic!("held");
        };
        assert_eq!(review_ref.as_deref(), Some("X1"));
    }

    #[actix_web::test]
    async fn quota_reset_and_the_blocked_list_speak_wechats_shapes() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/openapi/quota/get"))
            .and(query_param("access_token", "TOKEN"))
            .and(body_json(
                json!({"cgi_path": "/cgi-bin/message/template/send"}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 0, "errmsg": "ok",
                "quota": {"daily_limit": 100000, "used": 7, "remain": 99993}
            })))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/cgi-bin/clear_quota"))
            .and(body_json(json!({"appid": "wxtestappid"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 48006, "errmsg": "forbid to clear quota because of reaching the limit"
            })))
            .mount(&server)
            .await;
        // WeChat's own example shows `msginfo` as one object; ids may come as strings.
        Mock::given(method("POST"))
            .and(path("/wxa/sec/queryblocktmplmsg"))
            .and(body_json(
                json!({"tmpl_msg_id": "T", "largest_id": 0, "limit": 100}),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 0, "errmsg": "ok",
                "msginfo": {"id": "12", "tmpl_msg_id": "T", "title": "t", "content": "c",
                            "send_timestamp": 1780000000, "openid": "OPENID"}
            })))
            .mount(&server)
            .await;
        let c = client(&server);
        let q = c.get_send_quota("TOKEN").await.expect("quota");
        assert_eq!((q.daily_limit, q.used, q.remain), (100_000, 7, 99_993));
        let e = c.clear_quota("TOKEN").await.expect_err("limit");
        assert!(e.is_quota_reset_limit(), "{e:?}");
        let blocked = c.query_blocked("TOKEN", "T", 0, 100).await.expect("list");
        assert_eq!(blocked.len(), 1);
        assert_eq!(
            (blocked[0].id, blocked[0].send_timestamp),
            (12, 1_780_000_000)
        );
        assert_eq!(blocked[0].openid, "OPENID");
    }

    #[actix_web::test]
    async fn the_template_list_carries_the_token_and_decodes_each_template() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/cgi-bin/template/get_all_private_template"))
            .and(query_param("access_token", "TOKEN"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"template_list": [{
                    "template_id": "iPk5sOIt5X_flOVKn5GrTFpncEYTojx6ddbt8WYoV5s",
                    "title": "领取奖金提醒",
                    "primary_industry": "IT科技",
                    "deputy_industry": "互联网|电子商务",
                    "content": "{ {result.DATA} }\n\n领奖金额:{ {withdrawMoney.DATA} }\n",
                    "example": "您已提交领奖申请\n\n领奖金额：xxxx元\n"
                }]})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let listed = client(&server)
            .get_all_private_templates("TOKEN")
            .await
            .expect("listed");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].title, "领取奖金提醒");
        assert!(listed[0].content.contains("withdrawMoney"));
    }

    #[actix_web::test]
    async fn server_errors_and_timeouts_are_transient() {
        install_crypto();
        let server = MockServer::start().await;
        Mock::given(path("/cgi-bin/stable_token"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(path("/cgi-bin/stable_token"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
            .mount(&server)
            .await;
        let c = client(&server);
        let first = c.fetch_stable_token(false).await.expect_err("500");
        assert!(matches!(first, WechatError::Status(500)), "{first:?}");
        let second = c.fetch_stable_token(false).await.expect_err("timeout");
        assert!(matches!(second, WechatError::Timeout), "{second:?}");
        assert!(!format!("{first} {second}").contains("test-app-secret"));
    }
}
