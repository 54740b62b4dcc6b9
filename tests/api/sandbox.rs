//! Sandbox mode: the whole flow against the built-in simulator, over HTTP only.
use serde_json::{Value, json};
use wxbind_tests::{DEMO_PASSWORD, TestApp, assert_error, spawn_app, spawn_sandbox_app};

async fn login(app: &TestApp, name: &str) -> String {
    let resp = app.post_login(name, DEMO_PASSWORD).await;
    assert_eq!(resp.status(), 200, "login as {name}");
    resp.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// The authorize URL without WeChat's `#wechat_redirect` fragment (browsers never send it).
fn without_fragment(url: &str) -> String {
    url.split('#').next().unwrap_or(url).to_owned()
}

async fn authorize(app: &TestApp, bind_url: &str, user: &str, decision: &str) -> reqwest::Response {
    let url = format!(
        "{}&sandbox_user={user}&sandbox_decision={decision}",
        without_fragment(bind_url)
    );
    app.http.get(url).send().await.expect("request")
}

async fn bind_url(app: &TestApp, token: &str) -> String {
    let body: Value = app
        .get_as(token, "/api/bind-url")
        .await
        .json()
        .await
        .expect("json");
    body["url"].as_str().expect("url").to_owned()
}

async fn sandbox_users(app: &TestApp) -> Vec<Value> {
    app.get("/sandbox/api/users")
        .await
        .json()
        .await
        .expect("json")
}

#[actix_web::test]
async fn the_whole_flow_runs_in_the_sandbox() {
    let app = spawn_sandbox_app().await;
    // login as demo -> bind-url
    let token = login(&app, "demo").await;
    let url = bind_url(&app, &token).await;
    assert!(
        url.starts_with(&app.url("/sandbox/connect/oauth2/authorize?appid=")),
        "{url}"
    );

    // the phone allows -> WeChat's redirect to our callback
    let redirect = authorize(&app, &url, "alice", "allow").await;
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&app.url("/api/callback?code=")),
        "{location}"
    );
    let callback = app.http.get(&location).send().await.expect("callback");
    assert_eq!(callback.status(), 200);

    let me = app.me(&token).await;
    assert_eq!(me["wechat_bound"], true);

    // follow the account in the sandbox, then send
    let follow = app
        .http
        .post(app.url("/sandbox/api/users/alice/follow"))
        .send()
        .await
        .expect("follow");
    assert_eq!(follow.status(), 200);
    let followed: Value = follow.json().await.expect("json");
    assert_eq!(followed["following"], true);
    let openid = followed["openid"].as_str().expect("openid").to_owned();

    let resp = app
        .post_message(
            &token,
            &json!({"data": {"first": {"value": "Hello from wxbind"}}, "url": "https://example.com/x"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app.wait_for_final(&token, &id).await;
    assert_eq!(done["status"], "sent", "{done}");

    let inbox: Vec<Value> = app
        .get(&format!("/sandbox/api/inbox?openid={openid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["data"]["first"]["value"], "Hello from wxbind");
    assert_eq!(inbox[0]["template_id"], "SANDBOX_TEMPLATE");
    assert_eq!(inbox[0]["url"], "https://example.com/x");
    assert_eq!(inbox[0]["msgid"], done["msgid"]);
    let phone = app.get("/sandbox/").await.text().await.expect("page");
    assert!(phone.contains("Hello from wxbind") && phone.contains("alice"));
}

#[actix_web::test]
async fn the_sandbox_gives_a_unionid_and_shows_a_miniprogram_message() {
    const MINIPROGRAM: &str = "wx1234567890abcdef";
    let app = wxbind_tests::spawn_app_with(|c| {
        c.enable_sandbox();
        c.http.miniprogram_appids = vec![MINIPROGRAM.to_owned()];
    })
    .await;
    wxbind_tests::seed_sandbox(&app);
    // demo binds through the bind link, whose scope is snsapi_userinfo: a unionid comes along.
    let token = bound_demo(&app, "alice").await;

    let me = app.me(&token).await;
    assert_eq!(me["unionid"], wxbind::sandbox::unionid_for("alice"), "{me}");
    let alice = sandbox_users(&app).await[0].clone();
    assert_eq!(alice["unionid"], me["unionid"]);
    assert_ne!(alice["unionid"], alice["openid"]);

    app.post_empty("/sandbox/api/users/alice/follow").await;
    let page = json!({"appid": MINIPROGRAM, "pagepath": "pages/order/detail?id=42"});
    let resp = app
        .post_message(
            &token,
            &json!({"data": {"first": {"value": "Open me"}}, "miniprogram": page, "url": "https://example.com/x"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.wait_for_final(&token, &id).await["status"], "sent");

    let inbox: Vec<Value> = app
        .get(&format!(
            "/sandbox/api/inbox?openid={}",
            alice["openid"].as_str().expect("openid")
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["miniprogram"], page);
    assert_eq!(inbox[0]["url"], "https://example.com/x");
    let phone = app.get("/sandbox/").await.text().await.expect("page");
    assert!(
        phone.contains(&format!("小程序 {MINIPROGRAM} · pages/order/detail?id=42")),
        "{phone}"
    );
}

#[actix_web::test]
async fn health_reports_sandbox_mode() {
    let app = spawn_sandbox_app().await;
    let body: Value = app.get("/api/health").await.json().await.expect("json");
    assert_eq!(body["sandbox"], true);
}

#[actix_web::test]
async fn sending_to_a_user_who_does_not_follow_fails_with_43004() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let url = bind_url(&app, &token).await;
    let location = authorize(&app, &url, "bob", "allow").await.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        app.http.get(&location).send().await.expect("cb").status(),
        200
    );

    let resp = app
        .post_message(&token, &json!({"data": {"k": {"value": "v"}}}))
        .await;
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app.wait_for_final(&token, &id).await;

    assert_eq!(done["status"], "failed");
    assert_eq!(done["errcode"], 43004);
}

#[actix_web::test]
async fn deny_redirects_without_a_code_and_the_callback_says_denied() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let url = bind_url(&app, &token).await;

    let redirect = authorize(&app, &url, "alice", "deny").await;

    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(!location.contains("code="), "{location}");
    assert!(location.contains("state="), "{location}");
    let callback = app.http.get(&location).send().await.expect("callback");
    assert_error(callback, 400, "authorization_denied").await;
}

#[actix_web::test]
async fn the_consent_page_is_shown_without_a_decision() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let url = bind_url(&app, &token).await;

    let page = app
        .http
        .get(without_fragment(&url))
        .send()
        .await
        .expect("page");

    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("name=\"sandbox_decision\" value=\"allow\""),
        "{html}"
    );
    assert!(html.contains("name=\"sandbox_user\""));
}

#[actix_web::test]
async fn authorize_refuses_what_wechat_refuses() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let url = without_fragment(&bind_url(&app, &token).await);
    let query = url.split_once('?').expect("query").1.to_owned();
    let base = app.url("/sandbox/connect/oauth2/authorize");
    let pairs: Vec<&str> = query.split('&').collect();
    let reordered = {
        let mut p = pairs.clone();
        p.swap(0, 1);
        p.join("&")
    };
    let replace = |from: &str, to: &str| query.replacen(from, to, 1);
    let cases = [
        ("parameter order", reordered),
        (
            "foreign appid",
            replace("appid=wxsandbox0000000001", "appid=wxother"),
        ),
        (
            "foreign redirect host",
            replace(
                "redirect_uri=http%3A%2F%2F127.0.0.1",
                "redirect_uri=http%3A%2F%2Fevil.example",
            ),
        ),
        (
            "bad scope",
            replace("scope=snsapi_userinfo", "scope=snsapi_login"),
        ),
        (
            "bad response_type",
            replace("response_type=code", "response_type=token"),
        ),
    ];
    for (case, q) in cases {
        let resp = app
            .http
            .get(format!(
                "{base}?{q}&sandbox_user=alice&sandbox_decision=allow"
            ))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400, "case {case}");
    }
    assert!(
        sandbox_users(&app).await.is_empty(),
        "nothing was authorized"
    );
}

#[actix_web::test]
async fn codes_are_single_use_and_checked_like_wechat() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let url = bind_url(&app, &token).await;
    let location = authorize(&app, &url, "alice", "allow").await.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let code = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let secret = {
        use secrecy::ExposeSecret;
        app.config
            .wechat
            .as_ref()
            .expect("sandbox creds")
            .app_secret
            .expose_secret()
            .to_owned()
    };
    let exchange = |code: String, secret: String| {
        let app = &app;
        async move {
            let resp = app
                .get(&format!(
                    "/sandbox/sns/oauth2/access_token?appid=wxsandbox0000000001&secret={secret}\
                     &code={code}&grant_type=authorization_code"
                ))
                .await;
            resp.json::<Value>().await.expect("json")
        }
    };

    let wrong_secret = exchange(code.clone(), "nope".into()).await;
    assert_eq!(wrong_secret["errcode"], 40125);
    let first = exchange(code.clone(), secret.clone()).await;
    assert!(
        first["openid"].as_str().is_some_and(|o| o.len() == 28),
        "{first}"
    );
    let again = exchange(code.clone(), secret.clone()).await;
    assert_eq!(again["errcode"], 40163);
    assert!(again["errmsg"].as_str().expect("errmsg").contains("rid: "));
    assert_eq!(
        exchange("unknown".into(), secret.clone()).await["errcode"],
        40029
    );
    assert_eq!(exchange(String::new(), secret).await["errcode"], 41008);
}

#[actix_web::test]
async fn stale_and_unknown_tokens_are_refused_with_40001() {
    let app = spawn_sandbox_app().await;
    let secret = {
        use secrecy::ExposeSecret;
        app.config
            .wechat
            .as_ref()
            .expect("creds")
            .app_secret
            .expose_secret()
            .to_owned()
    };
    let classic = format!(
        "/sandbox/cgi-bin/token?grant_type=client_credential&appid=wxsandbox0000000001&secret={secret}"
    );
    let t1: Value = app.get(&classic).await.json().await.expect("json");
    let t2: Value = app.get(&classic).await.json().await.expect("json");
    assert_eq!(t1["expires_in"], 7200);
    assert_ne!(t1["access_token"], t2["access_token"]);
    let send = |token: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url(&format!("/sandbox/cgi-bin/message/template/send?access_token={token}")))
                .json(&json!({"touser": "ounknown", "template_id": "T", "data": {"k": {"value": "v"}}}))
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    // The previous token still works during the 5-minute overlap (40003: it got past the token check).
    assert_eq!(
        send(t1["access_token"].as_str().expect("t").into()).await["errcode"],
        40003
    );
    assert_eq!(
        send(t2["access_token"].as_str().expect("t").into()).await["errcode"],
        40003
    );
    assert_eq!(send("stale-or-made-up".into()).await["errcode"], 40001);
}

#[actix_web::test]
async fn template_send_checks_the_data_shape() {
    let app = spawn_sandbox_app().await;
    let secret = {
        use secrecy::ExposeSecret;
        app.config
            .wechat
            .as_ref()
            .expect("creds")
            .app_secret
            .expose_secret()
            .to_owned()
    };
    let token: Value = app
        .http
        .post(app.url("/sandbox/cgi-bin/stable_token"))
        .json(&json!({"grant_type": "client_credential", "appid": "wxsandbox0000000001", "secret": secret}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("token").to_owned();
    app.post_empty("/sandbox/api/users/carol/follow").await;
    let openid = sandbox_users(&app).await[0]["openid"]
        .as_str()
        .expect("openid")
        .to_owned();
    let send = |data: Value| {
        let (app, token, openid) = (&app, token.clone(), openid.clone());
        async move {
            app.http
                .post(app.url(&format!(
                    "/sandbox/cgi-bin/message/template/send?access_token={token}"
                )))
                .json(&json!({"touser": openid, "template_id": "T", "data": data}))
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    assert_eq!(send(json!("text")).await["errcode"], 47003);
    assert_eq!(send(json!({"k": {"value": 1}})).await["errcode"], 47003);
    assert_eq!(send(json!({"k": {"value": "v"}})).await["errcode"], 0);
}

#[actix_web::test]
async fn with_real_credentials_the_sandbox_does_not_exist() {
    let app = spawn_app().await;
    for path in [
        "/sandbox/",
        "/sandbox/api/users",
        "/sandbox/connect/oauth2/authorize",
    ] {
        assert_error(app.get(path).await, 404, "not_found").await;
    }
    let body: Value = app.get("/api/health").await.json().await.expect("json");
    assert_eq!(body["sandbox"], false);
}

async fn wait_for<F: Fn(&Value) -> bool>(app: &TestApp, token: &str, path: &str, done: F) -> Value {
    for _ in 0..200 {
        let body: Value = app.get_as(token, path).await.json().await.expect("json");
        if done(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{path} never reached the expected state");
}

async fn bound_demo(app: &TestApp, wechat_user: &str) -> String {
    let token = login(app, "demo").await;
    let url = bind_url(app, &token).await;
    let location = authorize(app, &url, wechat_user, "allow").await.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        app.http.get(&location).send().await.expect("cb").status(),
        200
    );
    token
}

#[actix_web::test]
async fn following_in_the_sandbox_pushes_events_the_service_applies() {
    let app = spawn_sandbox_app().await;
    let token = bound_demo(&app, "alice").await;

    app.post_empty("/sandbox/api/users/alice/follow").await;
    let me = app.me(&token).await;
    assert_eq!(me["subscribed"], true);

    // A template send is followed by WeChat's delivery report.
    let resp = app
        .post_message(&token, &json!({"data": {"k": {"value": "v"}}}))
        .await;
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let report = wait_for(&app, &token, &format!("/api/messages/{id}"), |m| {
        m["delivery"] != "unknown"
    })
    .await;
    assert_eq!(report["delivery"], "delivered");

    app.post_empty("/sandbox/api/users/alice/unfollow").await;
    let me = app.me(&token).await;
    assert_eq!(me["subscribed"], false);
}

#[actix_web::test]
async fn scanning_a_bind_qrcode_in_the_sandbox_follows_and_binds() {
    let app = spawn_sandbox_app().await;
    let token = login(&app, "demo").await;
    let qr: Value = app
        .get_as(&token, "/api/bind-qrcode")
        .await
        .json()
        .await
        .expect("json");
    let ticket = qr["ticket"].as_str().expect("ticket").to_owned();
    assert!(
        qr["qrcode_url"]
            .as_str()
            .expect("url")
            .starts_with(&app.url("/sandbox/cgi-bin/showqrcode?ticket="))
    );
    assert_eq!(
        app.get(&format!(
            "/sandbox/cgi-bin/showqrcode?ticket={}",
            url_encode(&ticket)
        ))
        .await
        .status(),
        200
    );

    let scanned: Value = app
        .http
        .post(app.url(&format!(
            "/sandbox/api/users/carol/scan?ticket={}",
            url_encode(&ticket)
        )))
        .send()
        .await
        .expect("scan")
        .json()
        .await
        .expect("json");

    assert!(
        scanned["reply"].as_str().expect("reply").contains("demo"),
        "{scanned}"
    );
    let me = app.me(&token).await;
    assert_eq!(me["wechat_bound"], true);
    assert_eq!(me["subscribed"], true);
    let users = sandbox_users(&app).await;
    assert_eq!(users[0]["following"], true);
}

#[actix_web::test]
async fn sandbox_pushes_use_safe_mode_when_an_aes_key_is_set() {
    let app = wxbind_tests::spawn_app_with(|c| {
        c.enable_sandbox();
        if let Some(p) = wxbind_tests::push_config(c) {
            p.aes_key = Some(secrecy::SecretString::from(
                wxbind_tests::TEST_AES_KEY.to_owned(),
            ));
        }
    })
    .await;
    wxbind_tests::seed_sandbox(&app);
    let token = bound_demo(&app, "dave").await;

    app.post_empty("/sandbox/api/users/dave/follow").await;

    let me = app.me(&token).await;
    assert_eq!(me["subscribed"], true);
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
