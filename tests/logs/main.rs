//! No secret in any log line: one whole flow (failed logins, login, refresh, OAuth binding, URL check,
//! pushes in plaintext and safe mode, scan binding, a delivered message, logout) with the
//! service's logs captured at debug level as JSON, then searched for every secret the flow
//! handled. A binary of its own: capturing takes the process-global subscriber (actix serves
//! on its own threads), which the main suite must not share.
use std::io;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use serde_json::{Value, json};
use wxbind::wechat::crypto::{MsgCrypt, signature};
use wxbind_tests::{
    CodeReply, OAUTH_ACCESS_TOKEN, OAUTH_REFRESH_TOKEN, TEST_APP_ID, TestApp, push_config,
    push_xml, spawn_app_with,
};

// Obviously fake and unlike anything else in the output, so a hit can only be a leak.
const PASSWORD: &str = "LeakCheck-password-4f1c9a";
const JWT_SECRET: &str = "LeakCheck-jwt-secret-7b2e9d0c5a3f8e1d";
const APP_SECRET: &str = "LeakCheck-app-secret-2d8c";
const PUSH_TOKEN: &str = "LeakCheckPushToken6e3b";
/// 43 base64 characters, as WeChat's EncodingAESKey.
const AES_KEY: &str = "LeakCheckAesKey0123456789abcdefghijklmnopqA";
const OAUTH_CODE: &str = "LeakCheck-oauth-code-91af37";
const USERNAME: &str = "leakcheck";

/// Everything logged, shared with the subscriber's writer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the global subscriber, JSON at debug, writing here.
    fn install() -> Self {
        let captured = Self::default();
        let sink = captured.clone();
        assert!(
            wxbind::telemetry::init_with_filter("debug", true, move || sink.clone()),
            "another subscriber was installed first"
        );
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// The forms a secret can take on its way into a line: as is, and URL-encoded.
fn forms(secret: &str) -> Vec<String> {
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut forms = vec![secret.to_owned(), encoded];
    forms.dedup();
    forms
}

/// `name=value` of the session cookie in a response.
fn session_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("wxbind_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned()
}

async fn json(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    resp.json().await.expect("json")
}

/// A signed push, as WeChat sends it; `crypt` seals it for safe mode. Returns the response
/// and the signatures it carried.
async fn push(
    app: &TestApp,
    crypt: Option<&MsgCrypt>,
    xml: &str,
    nonce: &str,
) -> (reqwest::Response, Vec<String>) {
    let timestamp = wxbind_tests::now().to_string();
    let timestamp = timestamp.as_str();
    let sig = signature(&[PUSH_TOKEN, timestamp, nonce]);
    let (query, body, mut sigs) = match crypt {
        Some(crypt) => {
            let sealed = crypt.encrypt(xml);
            let msg_sig = signature(&[PUSH_TOKEN, timestamp, nonce, &sealed]);
            (
                format!(
                    "signature={sig}&timestamp={timestamp}&nonce={nonce}&openid=x\
                     &encrypt_type=aes&msg_signature={msg_sig}"
                ),
                format!(
                    "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>"
                ),
                vec![msg_sig],
            )
        }
        None => (
            format!("signature={sig}&timestamp={timestamp}&nonce={nonce}&openid=x"),
            xml.to_owned(),
            vec![],
        ),
    };
    sigs.push(sig);
    let resp = app
        .http
        .post(app.url(&format!("/api/wechat/events?{query}")))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .expect("request");
    (resp, sigs)
}

#[actix_web::test]
async fn no_secret_of_a_whole_flow_reaches_the_debug_json_log() {
    let logs = Captured::install();
    let app = spawn_app_with(|c| {
        c.auth.jwt_secret = SecretString::from(JWT_SECRET.to_owned());
        if let Some(w) = c.wechat.as_mut() {
            w.app_secret = SecretString::from(APP_SECRET.to_owned());
        }
        if let Some(p) = push_config(c) {
            p.token = SecretString::from(PUSH_TOKEN.to_owned());
            p.aes_key = Some(SecretString::from(AES_KEY.to_owned()));
            // Compatible mode, so the flow can carry a plaintext push as well.
            p.compat = true;
        }
    })
    .await;
    app.wechat.set_app_secret(APP_SECRET);
    let hash = wxbind::auth::hash_password(PASSWORD).expect("hash");
    let user_id = wxbind::db::users::insert(
        &mut app.db.conn(),
        &wxbind::db::users::NewUser {
            username: USERNAME,
            password_hash: &hash,
            role: wxbind::domain::Role::User,
        },
    )
    .expect("user")
    .id;
    let mut secrets: Vec<(&str, String)> = vec![
        ("password", PASSWORD.into()),
        ("JWT secret", JWT_SECRET.into()),
        ("app secret", APP_SECRET.into()),
        ("push token", PUSH_TOKEN.into()),
        ("AES key", AES_KEY.into()),
        ("OAuth code", OAUTH_CODE.into()),
        ("OAuth user access token", OAUTH_ACCESS_TOKEN.into()),
        ("OAuth refresh token", OAUTH_REFRESH_TOKEN.into()),
    ];

    // A mistyped password, and one sent as a number (serde would quote it in its error).
    let typo = "LeakCheck-typo-password-83d0";
    assert_eq!(app.post_login(USERNAME, typo).await.status(), 401);
    let numeric = 730_152_946_183_u64;
    let resp = app
        .http
        .post(app.url("/api/login"))
        .json(&serde_json::json!({"username": USERNAME, "password": numeric}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    secrets.extend([
        ("mistyped password", typo.to_owned()),
        ("numeric password", numeric.to_string()),
    ]);

    // Login, then a refresh from the session cookie.
    let login = app.post_login(USERNAME, PASSWORD).await;
    let cookie = session_cookie(&login);
    let token = json(login, 200).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refresh = app
        .http
        .post(app.url("/api/token/refresh"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    let refreshed = json(refresh, 200).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let cookie_value = cookie.trim_start_matches("wxbind_session=").to_owned();
    secrets.extend([
        ("JWT access token", token.clone()),
        ("refreshed JWT", refreshed),
        ("session cookie", cookie_value),
    ]);

    // Binding through the OAuth callback.
    let bind_url = json(app.get_as(&token, "/api/bind-url").await, 200).await;
    let oauth_state = wxbind_tests::state_of(bind_url["url"].as_str().expect("url"));
    app.wechat
        .register_code(OAUTH_CODE, CodeReply::OpenId("openid-leak-oauth".into()));
    let callback = app.callback(Some(OAUTH_CODE), Some(&oauth_state)).await;
    assert_eq!(callback.status(), 200, "callback");
    secrets.push(("OAuth state", oauth_state));
    let unbind = app.delete_binding(&token).await;
    assert_eq!(unbind.status(), 204);

    // WeChat's server-URL check.
    let echostr = "LeakCheckEchostr5521";
    let ts = wxbind_tests::now().to_string();
    let (ts, nonce) = (ts.as_str(), "LeakCheckNonce0417");
    let url_sig = signature(&[PUSH_TOKEN, ts, nonce]);
    let check = app
        .get(&format!(
            "/api/wechat/events?signature={url_sig}&timestamp={ts}&nonce={nonce}&echostr={echostr}"
        ))
        .await;
    assert_eq!(check.text().await.expect("body"), echostr);
    secrets.extend([
        ("URL check signature", url_sig),
        ("echostr", echostr.into()),
    ]);

    // Scan binding: the QR code's scene comes back in a safe-mode SCAN push.
    let qr = json(app.get_as(&token, "/api/bind-qrcode").await, 200).await;
    let scene = app.wechat.qr_scenes().last().expect("scene").clone();
    let crypt = MsgCrypt::new(AES_KEY, None, TEST_APP_ID).expect("crypt");
    let scan = push_xml(
        "openid-leak-scan",
        1_700_000_500,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );
    let (resp, sigs) = push(&app, Some(&crypt), &scan, "LeakCheckNonce0501").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("body").contains("<Encrypt>"));
    assert_eq!(app.me(&token).await["wechat_bound"], true, "scan bound");
    secrets.extend(sigs.into_iter().map(|s| ("push signature", s)));
    secrets.extend([
        (
            "QR scene state",
            scene.trim_start_matches("bind_").to_owned(),
        ),
        (
            "QR ticket",
            qr["ticket"].as_str().expect("ticket").to_owned(),
        ),
    ]);

    // A plaintext push too: the follow that the message below needs.
    let follow = push_xml("openid-leak-scan", 1_700_000_600, "subscribe", "");
    let (resp, sigs) = push(&app, None, &follow, "LeakCheckNonce0602").await;
    assert_eq!(resp.status(), 200);
    secrets.extend(sigs.into_iter().map(|s| ("push signature", s)));

    // A message, delivered through the fake WeChat with its access token.
    let user = wxbind_tests::TestUser {
        id: user_id,
        username: USERNAME.into(),
        token: token.clone(),
    };
    let id = app.send_simple(&user).await;
    assert_eq!(app.wait_for_final(&token, &id).await["status"], "sent");
    let access_tokens = app.wechat.access_tokens();
    assert!(!access_tokens.is_empty(), "the send fetched a token");
    secrets.extend(
        access_tokens
            .into_iter()
            .map(|t| ("WeChat access token", t)),
    );

    // A backend's key broadcasts, and a signed webhook reports the sends: neither the key,
    // nor the webhook's secret, nor a delivery's signature is logged.
    let admin = app.admin("leakcheck-admin").await;
    let key = app.api_key(&admin.token, "leakcheck-backend", "send").await;
    let receiver = wxbind_tests::Receiver::start().await;
    let hook_secret = "LeakCheck-webhook-secret-5f1e9a7c";
    let hook = app
        .post_json(
            &admin.token,
            "/api/webhooks",
            &json!({"url": receiver.url(), "events": ["message.sent"], "secret": hook_secret}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let broadcast = app
        .post_json(
            &key,
            "/api/broadcasts",
            &json!({"data": {"k": {"value": "leak check"}}, "recipients": {"user_ids": [user_id]}}),
        )
        .await;
    assert_eq!(broadcast.status(), 202);
    let delivered = receiver
        .wait_for("a signed message.sent", |r| !r.is_empty())
        .await;
    secrets.extend([
        ("API key", key.clone()),
        ("webhook secret", hook_secret.to_owned()),
        ("admin token", admin.token.clone()),
    ]);
    secrets.extend(delivered.iter().map(|d| {
        (
            "webhook signature",
            d.signature.trim_start_matches("v1=").to_owned(),
        )
    }));

    // Logout ends the session.
    let logout = app
        .http
        .post(app.url("/api/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(logout.status(), 204);
    let after = app
        .http
        .post(app.url("/api/token/refresh"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(after.status(), 401);

    let text = logs.text();
    // The capture is the real thing: debug lines, request spans, redacted targets.
    for expected in [
        r#""level":"DEBUG""#,
        "message sent",
        "WeChat account bound",
        "/api/callback?code=[redacted]&state=[redacted]",
        "encrypt_type=aes&msg_signature=[redacted]",
    ] {
        assert!(
            text.contains(expected),
            "no {expected:?} in the log:\n{text}"
        );
    }
    for (what, secret) in &secrets {
        for form in forms(secret) {
            if let Some(line) = text.lines().find(|l| l.contains(&form)) {
                panic!("the {what} is in the log: {line}");
            }
        }
    }
}
