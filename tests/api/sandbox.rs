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

/// A message for the sandbox's default template (`SANDBOX_TEMPLATE`, an order shipped), with
/// values its keyword types accept.
fn order_data() -> Value {
    json!({
        "thing1": {"value": "Hello from wxbind"},
        "character_string2": {"value": "202612020001"},
        "time3": {"value": "2026年12月2日 15:01"},
        "amount4": {"value": "¥199.00"},
        "phrase5": {"value": "已发货"},
    })
}

/// The simulated account's app secret (random per start).
fn app_secret(app: &TestApp) -> String {
    use secrecy::ExposeSecret;
    app.config
        .wechat
        .as_ref()
        .expect("the sandbox's credentials")
        .app_secret
        .expose_secret()
        .to_owned()
}

/// An access token of the simulated account, fetched as the service fetches it.
async fn access_token(app: &TestApp) -> String {
    let secret = app_secret(app);
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
    token["access_token"].as_str().expect("token").to_owned()
}

/// `POST /sandbox/cgi-bin/message/template/send` with `body`, as WeChat's JSON answer.
async fn template_send(app: &TestApp, token: &str, body: &Value) -> Value {
    app.http
        .post(app.url(&format!(
            "/sandbox/cgi-bin/message/template/send?access_token={token}"
        )))
        .json(body)
        .send()
        .await
        .expect("request")
        .json::<Value>()
        .await
        .expect("json")
}

/// The messages that reached `openid`'s phone, oldest first.
async fn inbox(app: &TestApp, openid: &str) -> Vec<Value> {
    app.get(&format!("/sandbox/api/inbox?openid={openid}"))
        .await
        .json()
        .await
        .expect("json")
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
            &json!({"data": order_data(), "url": "https://example.com/x"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app.wait_for_final(&token, &id).await;
    assert_eq!(done["status"], "sent", "{done}");

    let inbox = inbox(&app, &openid).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["data"], order_data());
    assert_eq!(inbox[0]["template_id"], "SANDBOX_TEMPLATE");
    assert_eq!(inbox[0]["url"], "https://example.com/x");
    assert_eq!(inbox[0]["msgid"], done["msgid"]);
    let phone = app.get("/sandbox/").await.text().await.expect("page");
    assert!(phone.contains("Hello from wxbind") && phone.contains("alice"));
    assert!(
        phone.contains("订单发货通知") && phone.contains("商品名称"),
        "rendered as a template card, with its title and labels"
    );
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
            &json!({"data": order_data(), "miniprogram": page, "url": "https://example.com/x"}),
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
    app.wait_templates_synced().await;
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
        .post_message(&token, &json!({"data": order_data()}))
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
    let secret = app_secret(&app);
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
    let secret = app_secret(&app);
    let classic = format!(
        "/sandbox/cgi-bin/token?grant_type=client_credential&appid=wxsandbox0000000001&secret={secret}"
    );
    let t1: Value = app.get(&classic).await.json().await.expect("json");
    let t2: Value = app.get(&classic).await.json().await.expect("json");
    assert_eq!(t1["expires_in"], 7200);
    assert_ne!(t1["access_token"], t2["access_token"]);
    let send = |token: String| {
        let app = &app;
        let body = json!({"touser": "ounknown", "template_id": "T", "data": {"k": {"value": "v"}}});
        async move { template_send(app, &token, &body).await }
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

/// A follower of the simulated account: its openid.
async fn follower(app: &TestApp, name: &str) -> String {
    let followed: Value = app
        .post_empty(&format!("/sandbox/api/users/{name}/follow"))
        .await
        .json()
        .await
        .expect("json");
    followed["openid"].as_str().expect("openid").to_owned()
}

#[actix_web::test]
async fn template_send_checks_the_data_shape() {
    let app = spawn_sandbox_app().await;
    let token = access_token(&app).await;
    let openid = follower(&app, "carol").await;
    let send = |data: Value| {
        let body =
            json!({"touser": openid, "template_id": "SANDBOX_TEMPLATE_LEGACY", "data": data});
        let (app, token) = (&app, token.clone());
        async move { template_send(app, &token, &body).await }
    };
    assert_eq!(send(json!("text")).await["errcode"], 47003);
    assert_eq!(
        send(json!({"keyword1": {"value": 1}})).await["errcode"],
        47003
    );
    assert_eq!(
        send(json!({"keyword1": {"value": "v"}})).await["errcode"],
        0
    );
}

#[actix_web::test]
async fn template_send_holds_values_to_the_services_rules_and_shows_what_wechat_shows() {
    let app = spawn_sandbox_app().await;
    let token = access_token(&app).await;
    let openid = follower(&app, "carol").await;
    let send = |template_id: &str, data: Value| {
        let body = json!({"touser": openid, "template_id": template_id, "data": data});
        let (app, token) = (&app, token.clone());
        async move { template_send(app, &token, &body).await }
    };
    let with = |key: &str, value: &str| {
        let mut data = order_data();
        data[key] = json!({ "value": value });
        data
    };
    let cases = [
        ("a phrase in latin letters", "phrase5", "shipped"),
        (
            "a thing of 21 characters",
            "thing1",
            "123456789012345678901",
        ),
        ("a time without a clock", "time3", "2026年12月2日"),
        ("an amount without a currency", "amount4", "199.00"),
        ("Chinese in a code", "character_string2", "订单202612020001"),
    ];
    for (case, key, value) in cases {
        let answer = send("SANDBOX_TEMPLATE", with(key, value)).await;
        assert_eq!(answer["errcode"], 47003, "{case}: {answer}");
        let errmsg = answer["errmsg"].as_str().expect("errmsg");
        assert!(
            errmsg.contains(&format!("data.{key}.value invalid")),
            "{case}: {errmsg}"
        );
    }
    let mut missing = order_data();
    missing.as_object_mut().expect("object").remove("time3");
    assert_eq!(send("SANDBOX_TEMPLATE", missing).await["errcode"], 47003);
    assert_eq!(
        send("NO_SUCH_TEMPLATE", order_data()).await["errcode"],
        40037
    );

    // first, remark and colours are dropped, not refused; a const keyword shows its text.
    let mut greeted = order_data();
    greeted["first"] = json!({"value": "Hello"});
    greeted["remark"] = json!({"value": "Bye"});
    greeted["thing1"]["color"] = json!("#173177");
    assert_eq!(send("SANDBOX_TEMPLATE", greeted).await["errcode"], 0);
    let booking = json!({
        "name1": {"value": "张三"},
        "phone_number2": {"value": "+86-0766-66888866"},
        "date3": {"value": "2026年12月5日"},
        "number4": {"value": "2"},
    });
    assert_eq!(
        send("SANDBOX_TEMPLATE_BOOKING", booking.clone()).await["errcode"],
        0
    );
    let mut own_const = booking;
    own_const["const5"] = json!({"value": "mine"});
    assert_eq!(
        send("SANDBOX_TEMPLATE_BOOKING", own_const).await["errcode"],
        47003
    );
    let inbox = inbox(&app, &openid).await;
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0]["data"], order_data(), "no first, remark or colour");
    assert_eq!(inbox[1]["data"]["const5"]["value"], "请提前10分钟到店");
}

#[actix_web::test]
async fn get_all_private_template_lists_the_sandbox_templates() {
    let app = spawn_sandbox_app().await;
    let token = access_token(&app).await;
    let listed: Value = app
        .get(&format!(
            "/sandbox/cgi-bin/template/get_all_private_template?access_token={token}"
        ))
        .await
        .json()
        .await
        .expect("json");
    let list = listed["template_list"].as_array().expect("template_list");
    let ids: Vec<&str> = list
        .iter()
        .map(|t| t["template_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "SANDBOX_TEMPLATE",
            "SANDBOX_TEMPLATE_BOOKING",
            "SANDBOX_TEMPLATE_PARKING",
            "SANDBOX_TEMPLATE_LEGACY"
        ]
    );
    for field in [
        "title",
        "primary_industry",
        "deputy_industry",
        "content",
        "example",
    ] {
        assert!(list[0][field].is_string(), "{field} in {}", list[0]);
    }
    let without: Value = app
        .get("/sandbox/cgi-bin/template/get_all_private_template")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(without["errcode"], 41001);
}

#[actix_web::test]
async fn the_service_syncs_the_sandbox_templates_and_checks_messages_against_them() {
    let app = spawn_sandbox_app().await;
    let token = bound_demo(&app, "alice").await;
    let admin = login(&app, "admin").await;
    app.wait_templates_synced().await;

    let list = app.templates(&token).await;
    assert_eq!(list.len(), 4);
    let default = list
        .iter()
        .find(|t| t["default"] == true)
        .expect("a default template");
    assert_eq!(default["template_id"], "SANDBOX_TEMPLATE");
    assert_eq!(default["kind"], "category");
    let keys: Vec<&str> = default["keywords"]
        .as_array()
        .expect("keywords")
        .iter()
        .map(|k| k["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["thing1", "character_string2", "time3", "amount4", "phrase5"]
    );
    let legacy = list
        .iter()
        .find(|t| t["template_id"] == "SANDBOX_TEMPLATE_LEGACY")
        .expect("legacy");
    assert_eq!(legacy["kind"], "legacy");

    let mut greeted = order_data();
    greeted["first"] = json!({"value": "Hello"});
    greeted["phrase5"] = json!({"value": "shipped"});
    let resp = app.post_message(&token, &json!({"data": greeted})).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_template_data", "{body}");
    let keys: Vec<&str> = body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["phrase5", "first"]);
    assert_error(
        app.post_message(
            &admin,
            &json!({"template_id": "NOPE", "data": order_data()}),
        )
        .await,
        400,
        "unknown_template",
    )
    .await;
    assert_error(app.sync_templates(&token).await, 403, "forbidden").await;
    assert_eq!(app.sync_templates(&admin).await.status(), 200);
}

#[actix_web::test]
async fn a_template_the_sandbox_deletes_fails_with_40037_then_fast_and_returns_when_restored() {
    let app = spawn_sandbox_app().await;
    let token = bound_demo(&app, "alice").await;
    app.post_empty("/sandbox/api/users/alice/follow").await;
    let admin = login(&app, "admin").await;
    app.wait_templates_synced().await;
    let message = json!({"data": order_data()});

    // Deleted in WeChat overnight; the service has not synced since.
    let removed = app
        .post_empty("/sandbox/api/templates/SANDBOX_TEMPLATE/remove")
        .await;
    assert_eq!(removed.status(), 200);
    let resp = app.post_message(&token, &message).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app.wait_for_final(&token, &id).await;
    assert_eq!(done["errcode"], 40037, "{done}");
    assert_error(
        app.post_message(&token, &message).await,
        400,
        "unknown_template",
    )
    .await;

    app.post_empty("/sandbox/api/templates/SANDBOX_TEMPLATE_PARKING/remove")
        .await;
    let synced: Vec<Value> = app.sync_templates(&admin).await.json().await.expect("json");
    let gone: Vec<&str> = synced
        .iter()
        .filter(|t| t["gone_at"].is_string())
        .map(|t| t["template_id"].as_str().expect("id"))
        .collect();
    assert_eq!(gone, ["SANDBOX_TEMPLATE", "SANDBOX_TEMPLATE_PARKING"]);

    app.post_empty("/sandbox/api/templates/SANDBOX_TEMPLATE/restore")
        .await;
    assert_eq!(app.sync_templates(&admin).await.status(), 200);
    let resp = app.post_message(&token, &message).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.wait_for_final(&token, &id).await["status"], "sent");
    let library: Vec<Value> = app
        .get("/sandbox/api/templates")
        .await
        .json()
        .await
        .expect("json");
    let parking = library
        .iter()
        .find(|t| t["template_id"] == "SANDBOX_TEMPLATE_PARKING")
        .expect("in the library");
    assert_eq!(parking["listed"], false);
    assert_eq!(
        app.post_empty("/sandbox/api/templates/NOPE/remove")
            .await
            .status(),
        404
    );
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
    let mut body = Value::Null;
    for _ in 0..400 {
        body = app.get_as(token, path).await.json().await.expect("json");
        if done(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{path} never reached the expected state: {body}");
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
        .post_message(&token, &json!({"data": order_data()}))
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

/// A sandbox app whose reconciliation of messages under review runs every 200 ms.
async fn reviewing_sandbox(settle_seconds: u64) -> TestApp {
    let app = wxbind_tests::spawn_app_with(|c| {
        c.enable_sandbox();
        c.delivery.review_interval = std::time::Duration::from_millis(200);
        c.delivery.review_settle = std::time::Duration::from_secs(settle_seconds);
    })
    .await;
    wxbind_tests::seed_sandbox(&app);
    app
}

async fn set_faults(app: &TestApp, body: &Value) -> Value {
    let resp = app
        .http
        .post(app.url("/sandbox/api/faults"))
        .json(body)
        .send()
        .await
        .expect("faults");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

async fn queue_order(app: &TestApp, token: &str) -> String {
    let resp = app
        .post_message(token, &json!({"data": order_data()}))
        .await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[actix_web::test]
async fn review_in_the_sandbox_blocks_or_approves_what_it_holds() {
    let app = reviewing_sandbox(3600).await;
    let token = bound_demo(&app, "alice").await;
    app.post_empty("/sandbox/api/users/alice/follow").await;

    // Blocked: listed by queryblocktmplmsg, so the message ends failed, delivery blocked.
    let faults = set_faults(&app, &json!({"send_errcodes": [40252], "review": "block"})).await;
    assert_eq!(faults["send_errcodes"], json!([40252]), "{faults}");
    assert_eq!(faults["review"], "block");
    let blocked = queue_order(&app, &token).await;
    let m = wait_for(&app, &token, &format!("/api/messages/{blocked}"), |m| {
        m["status"] == "failed"
    })
    .await;
    assert_eq!(
        (m["errcode"].as_i64(), m["delivery"].as_str()),
        (Some(40252), Some("blocked")),
        "{m}"
    );

    // Approved: WeChat delivers it itself and reports late; the message ends sent, delivered.
    set_faults(
        &app,
        &json!({"send_errcodes": [40252], "review": "approve"}),
    )
    .await;
    let approved = queue_order(&app, &token).await;
    let held = wait_for(&app, &token, &format!("/api/messages/{approved}"), |m| {
        m["status"] == "under_review"
    })
    .await;
    assert!(held["msgid"].is_null(), "{held}");
    let m = wait_for(&app, &token, &format!("/api/messages/{approved}"), |m| {
        m["status"] == "sent" && m["delivery"] == "delivered"
    })
    .await;
    assert!(m["msgid"].is_i64(), "{m}");

    let alice = sandbox_users(&app).await[0]["openid"]
        .as_str()
        .expect("openid")
        .to_owned();
    assert_eq!(
        inbox(&app, &alice).await.len(),
        1,
        "only the approved one arrived"
    );
    let faults: Value = app
        .get("/sandbox/api/faults")
        .await
        .json()
        .await
        .expect("json");
    let held = faults["held"].as_array().expect("held");
    assert_eq!(held.len(), 1, "the blocked one stays listed: {faults}");
    assert_eq!(held[0]["verdict"], "block");
    // The phone view shows it as blocked.
    let phone = app.get("/sandbox/").await.text().await.expect("html");
    assert!(phone.contains("blocked by review"), "{phone}");
}

#[actix_web::test]
async fn a_used_up_quota_in_the_sandbox_pauses_sending_until_the_admin_resets_it() {
    let app = spawn_sandbox_app().await;
    let token = bound_demo(&app, "alice").await;
    app.post_empty("/sandbox/api/users/alice/follow").await;
    let admin = login(&app, "admin").await;

    set_faults(&app, &json!({"send_errcodes": [45009]})).await;
    let id = queue_order(&app, &token).await;
    let m = wait_for(&app, &token, &format!("/api/messages/{id}"), |m| {
        m["errcode"] == 45009
    })
    .await;
    assert_eq!(
        (m["status"].as_str(), m["attempts"].as_i64()),
        (Some("queued"), Some(0)),
        "{m}"
    );
    let quota: Value = app
        .get_as(&admin, "/api/quota")
        .await
        .json()
        .await
        .expect("json");
    assert!(quota["paused_until"].is_string(), "{quota}");
    assert_eq!(quota["daily_limit"], 100_000);
    let faults: Value = app
        .get("/sandbox/api/faults")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(faults["quota"]["exhausted"], true, "{faults}");

    let resp = app
        .http
        .post(app.url("/api/quota/reset"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("reset");
    assert_eq!(resp.status(), 200);

    let m = wait_for(&app, &token, &format!("/api/messages/{id}"), |m| {
        m["status"] == "sent"
    })
    .await;
    assert_eq!(m["attempts"], 1, "{m}");
    let faults: Value = app
        .get("/sandbox/api/faults")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(faults["quota"]["resets_this_month"], 1, "{faults}");
}

#[actix_web::test]
async fn the_sandbox_refuses_faults_it_cannot_play() {
    let app = spawn_sandbox_app().await;
    for body in [
        json!({"send_errcodes": [0]}),
        json!({"review": "maybe"}),
        json!({"review": "pending"}),
        json!({"send_errcodes": "40252"}),
        json!({"surprise": 1}),
    ] {
        let resp = app
            .http
            .post(app.url("/sandbox/api/faults"))
            .json(&body)
            .send()
            .await
            .expect("faults");
        assert_error(resp, 400, "invalid_request").await;
    }
}

#[actix_web::test]
async fn a_user_who_refused_the_message_in_the_sandbox_fails_it_without_a_retry() {
    let app = spawn_sandbox_app().await;
    let token = bound_demo(&app, "alice").await;
    app.post_empty("/sandbox/api/users/alice/follow").await;
    set_faults(&app, &json!({"send_errcodes": [43101]})).await;

    let id = queue_order(&app, &token).await;

    let m = wait_for(&app, &token, &format!("/api/messages/{id}"), |m| {
        m["status"] == "failed"
    })
    .await;
    assert_eq!(
        (m["errcode"].as_i64(), m["attempts"].as_i64()),
        (Some(43101), Some(1)),
        "{m}"
    );
    let alice = sandbox_users(&app).await[0]["openid"]
        .as_str()
        .expect("openid")
        .to_owned();
    assert!(inbox(&app, &alice).await.is_empty());
}
