//! Messages that open a mini-program page: stored, shown and sent as WeChat takes them, shapes
//! checked, and held to the sender rules (non-admins only open listed mini programs).
use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind::db::schema::messages;
use wxbind_tests::{TestApp, assert_error, spawn_app, spawn_app_with};

/// A mini program the suite lists in `WXBIND_MINIPROGRAM_APPIDS` where a test needs one.
const LISTED: &str = "wx1234567890abcdef";
/// A mini program nobody lists.
const UNLISTED: &str = "wxfedcba0987654321";

fn message_count(app: &TestApp) -> i64 {
    app.query(|c| messages::table.count().get_result(c))
}

fn page(appid: &str, pagepath: &str) -> Value {
    json!({"appid": appid, "pagepath": pagepath})
}

#[actix_web::test]
async fn a_miniprogram_is_stored_shown_and_sent_next_to_the_url() {
    let app = spawn_app().await;
    // An admin, with a mini program nobody listed: admins are unrestricted.
    let admin = app.admin("root").await;
    app.bind(&admin, "openid-root").await;
    let miniprogram = page(UNLISTED, "pages/order/detail?id=42");
    let body = json!({
        "url": "https://example.com/orders/42",
        "miniprogram": miniprogram,
        "data": {"first": {"value": "Shipped"}},
    });

    let resp = app.post_message(&admin.token, &body).await;

    assert_eq!(resp.status(), 202);
    let queued: Value = resp.json().await.expect("json");
    assert_eq!(queued["miniprogram"], miniprogram, "{queued}");
    assert_eq!(queued["url"], "https://example.com/orders/42");
    let id = queued["id"].as_str().expect("id");
    let done = app.wait_for_final(&admin.token, id).await;
    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["miniprogram"], miniprogram, "{done}");
    let stored: Option<Value> = app.query(|c| {
        messages::table
            .find(uuid::Uuid::parse_str(id).expect("uuid"))
            .select(messages::miniprogram)
            .first(c)
    });
    assert_eq!(stored, Some(miniprogram.clone()));
    // Both go to WeChat, which opens the mini program (and older clients the url).
    let sends = app.wechat.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].miniprogram, Some(miniprogram));
    assert_eq!(
        sends[0].url.as_deref(),
        Some("https://example.com/orders/42")
    );
}

#[actix_web::test]
async fn a_miniprogram_alone_is_sent_without_a_url_and_none_is_null() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    app.bind(&admin, "openid-root").await;
    let alone =
        json!({"miniprogram": page(LISTED, "pages/index/index"), "data": {"k": {"value": "v"}}});
    let plain = json!({"data": {"k": {"value": "v"}}});

    let alone: Value = app
        .post_message(&admin.token, &alone)
        .await
        .json()
        .await
        .expect("json");
    let plain: Value = app
        .post_message(&admin.token, &plain)
        .await
        .json()
        .await
        .expect("json");

    assert!(plain["miniprogram"].is_null(), "{plain}");
    for m in [&alone, &plain] {
        let done = app
            .wait_for_final(&admin.token, m["id"].as_str().expect("id"))
            .await;
        assert_eq!(done["status"], "sent", "{done}");
    }
    let sends = app.wechat.sends();
    let sent = |id: &Value| {
        sends
            .iter()
            .find(|s| s.client_msg_id == id.as_str().expect("id"))
            .expect("sent")
            .clone()
    };
    let alone_sent = sent(&alone["id"]);
    assert_eq!(
        alone_sent.miniprogram,
        Some(page(LISTED, "pages/index/index"))
    );
    assert_eq!(alone_sent.url, None);
    assert_eq!(sent(&plain["id"]).miniprogram, None);
}

#[actix_web::test]
async fn bad_miniprogram_shapes_are_400_naming_the_field_and_write_nothing() {
    let app = spawn_app().await;
    // An admin: what is refused here is the shape, never the sender.
    let admin = app.admin("root").await;
    app.bind(&admin, "openid-root").await;
    let long_path = format!("pages/{}", "x".repeat(1020));
    let cases = [
        ("not an object", json!("pages/index"), "miniprogram"),
        (
            "no appid",
            json!({"pagepath": "pages/index"}),
            "miniprogram",
        ),
        ("no pagepath", json!({"appid": LISTED}), "miniprogram"),
        (
            "appid not a string",
            json!({"appid": 1, "pagepath": "pages/index"}),
            "miniprogram",
        ),
        (
            "unknown field",
            json!({"appid": LISTED, "pagepath": "pages/index", "path": "x"}),
            "miniprogram",
        ),
        (
            "short appid",
            page("wx1234", "pages/index"),
            "miniprogram.appid",
        ),
        (
            "not an appid",
            page("gh_1234567890abcde", "pages/index"),
            "miniprogram.appid",
        ),
        ("empty pagepath", page(LISTED, ""), "miniprogram.pagepath"),
        (
            "only a query",
            page(LISTED, "?id=1"),
            "miniprogram.pagepath",
        ),
        (
            "a URL",
            page(LISTED, "https://evil.example.net/login"),
            "miniprogram.pagepath",
        ),
        (
            "a host",
            page(LISTED, "//evil.example.net/pages"),
            "miniprogram.pagepath",
        ),
        (
            "a script",
            page(LISTED, "javascript:alert(1)"),
            "miniprogram.pagepath",
        ),
        ("a space", page(LISTED, "pages/a b"), "miniprogram.pagepath"),
        (
            "over 1024 bytes",
            page(LISTED, &long_path),
            "miniprogram.pagepath",
        ),
    ];
    for (case, miniprogram, field) in cases {
        let body = json!({"miniprogram": miniprogram, "data": {"k": {"value": "v"}}});
        let resp = app.post_message(&admin.token, &body).await;
        assert_eq!(resp.status(), 400, "{case}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_request", "{case}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{case}: {body}"
        );
    }
    assert_eq!(message_count(&app), 0);
}

#[actix_web::test]
async fn non_admins_open_only_the_mini_programs_listed() {
    let app = spawn_app_with(|c| c.http.miniprogram_appids = vec![LISTED.to_owned()]).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let cases = [
        (
            "an unlisted mini program",
            json!({"miniprogram": page(UNLISTED, "pages/index"), "data": {"k": {"value": "v"}}}),
            "miniprogram.appid",
        ),
        (
            "a listed mini program with a foreign link",
            json!({
                "miniprogram": page(LISTED, "pages/index"),
                "url": "https://evil.example.net/login",
                "data": {"k": {"value": "v"}},
            }),
            "url",
        ),
    ];
    for (case, body, field) in cases {
        let resp = app.post_message(&user.token, &body).await;
        assert_eq!(resp.status(), 403, "{case}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "forbidden", "{case}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{case}: {body}"
        );
    }
    assert_eq!(message_count(&app), 0);

    let ok = json!({
        "miniprogram": page(LISTED, "pages/index"),
        "url": "https://example.com/orders/1",
        "data": {"k": {"value": "v"}},
    });
    let resp = app.post_message(&user.token, &ok).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.wait_for_final(&user.token, &id).await["status"], "sent");
    assert!(
        app.wechat
            .sends()
            .iter()
            .all(|s| s.miniprogram == Some(page(LISTED, "pages/index")))
    );
}

#[actix_web::test]
async fn without_a_list_non_admins_open_no_mini_program() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let body = json!({"miniprogram": page(LISTED, "pages/index"), "data": {"k": {"value": "v"}}});

    let resp = app.post_message(&user.token, &body).await;

    assert_error(resp, 403, "forbidden").await;
    assert_eq!(message_count(&app), 0);
}
