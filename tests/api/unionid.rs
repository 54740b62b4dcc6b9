//! The unionid a bind link's code exchange may return: stored with the binding, shown in
//! `/api/me`, cleared with it, and what admins look accounts up by (`GET /api/users`).
use diesel::prelude::*;
use serde_json::Value;
use wxbind::db::schema::users;
use wxbind_tests::{CodeReply, TestApp, TestUser, assert_error, push_xml, spawn_app};

fn with_unionid(openid: &str, unionid: &str) -> CodeReply {
    CodeReply::WithUnionId {
        openid: openid.into(),
        unionid: unionid.into(),
    }
}

fn unionid_of(app: &TestApp, user: &TestUser) -> Option<String> {
    app.query(|c| users::table.find(user.id).select(users::unionid).first(c))
}

fn lookup_path(unionid: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(unionid.as_bytes()).collect();
    format!("/api/users?unionid={encoded}")
}

#[actix_web::test]
async fn a_unionid_from_the_code_exchange_is_stored_and_shown_in_me() {
    let app = spawn_app().await;
    let user = app.user("alice").await;

    app.bind_as(&user, with_unionid("openid-alice", "unionid-alice"))
        .await;

    let me = app.me(&user.token).await;
    assert_eq!(me["wechat_bound"], true);
    assert_eq!(me["unionid"], "unionid-alice", "{me}");
    assert!(me["bound_at"].is_string(), "{me}");
    assert_eq!(unionid_of(&app, &user).as_deref(), Some("unionid-alice"));
}

#[actix_web::test]
async fn no_unionid_is_shown_when_wechat_gives_none() {
    let app = spawn_app().await;
    let user = app.user("alice").await;

    app.bind(&user, "openid-alice").await;

    let me = app.me(&user.token).await;
    assert_eq!(me["wechat_bound"], true);
    assert!(me["unionid"].is_null(), "{me}");
    assert_eq!(unionid_of(&app, &user), None);
}

#[actix_web::test]
async fn unbinding_clears_the_unionid_and_frees_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.bind_as(&alice, with_unionid("openid-shared", "unionid-shared"))
        .await;

    assert_eq!(app.delete_binding(&alice.token).await.status(), 204);

    let me = app.me(&alice.token).await;
    assert!(me["unionid"].is_null() && me["bound_at"].is_null(), "{me}");
    assert_eq!(unionid_of(&app, &alice), None);
    // The WeChat user may bind another account now.
    let bob = app.user("bob").await;
    app.bind_as(&bob, with_unionid("openid-shared", "unionid-shared"))
        .await;
    assert_eq!(unionid_of(&app, &bob).as_deref(), Some("unionid-shared"));
}

#[actix_web::test]
async fn a_unionid_belongs_to_one_account() {
    // WeChat never gives one person two openids under one account; should it, the second
    // binding is refused like a doubly bound openid, and nothing is half-written.
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.bind_as(&alice, with_unionid("openid-alice", "unionid-person"))
        .await;
    let (_, state) = app.bind_url(&bob).await;
    app.wechat
        .register_code("CODE-BOB", with_unionid("openid-bob", "unionid-person"));

    let resp = app.callback(Some("CODE-BOB"), Some(&state)).await;

    assert_error(resp, 409, "already_bound").await;
    assert_eq!(app.me(&bob.token).await["wechat_bound"], false);
    assert_eq!(unionid_of(&app, &bob), None);
}

#[actix_web::test]
async fn a_bind_link_completes_the_unionid_a_scan_binding_lacks() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    // Scan binding: a QR code's scene, pushed by WeChat with the openid only.
    assert_eq!(
        app.get_as(&user.token, "/api/bind-qrcode").await.status(),
        200
    );
    let scene = app.wechat.qr_scenes().last().expect("scene").clone();
    let xml = push_xml(
        "openid-alice",
        wxbind_tests::now(),
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );
    assert_eq!(app.push_plain(&xml).await.status(), 200);
    let me = app.me(&user.token).await;
    assert_eq!(me["wechat_bound"], true);
    assert!(me["unionid"].is_null(), "a scan brings no unionid: {me}");

    // The same WeChat user completes a bind link: the binding stays, the unionid is added.
    app.bind_as(&user, with_unionid("openid-alice", "unionid-alice"))
        .await;

    let again = app.me(&user.token).await;
    assert_eq!(again["unionid"], "unionid-alice", "{again}");
    assert_eq!(again["bound_at"], me["bound_at"]);
}

#[actix_web::test]
async fn admins_look_accounts_up_by_unionid() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind_as(
        &alice,
        with_unionid("openid-alice", "o6_bmasdasdsad6_2sgVt7hMZOPfL"),
    )
    .await;

    let resp = app
        .get_as(&admin.token, &lookup_path("o6_bmasdasdsad6_2sgVt7hMZOPfL"))
        .await;

    assert_eq!(resp.status(), 200);
    let found: Value = resp.json().await.expect("json");
    assert_eq!(
        found,
        app.me(&alice.token).await,
        "the same view as /api/me"
    );
    assert_eq!(found["id"], alice.id);
    assert_eq!(found["username"], "alice");
    assert_eq!(found["unionid"], "o6_bmasdasdsad6_2sgVt7hMZOPfL");

    // Unbound, the account is no longer the WeChat user's.
    assert_eq!(app.delete_binding(&alice.token).await.status(), 204);
    assert_error(
        app.get_as(&admin.token, &lookup_path("o6_bmasdasdsad6_2sgVt7hMZOPfL"))
            .await,
        404,
        "user_not_found",
    )
    .await;
}

#[actix_web::test]
async fn looking_users_up_is_refused_or_rejected_otherwise() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind_as(&alice, with_unionid("openid-alice", "unionid-alice"))
        .await;
    let too_long = "u".repeat(129);

    // Users may not look anyone up, themselves included, and learn nothing about the query.
    for path in [lookup_path("unionid-alice"), "/api/users".to_owned()] {
        let resp = app.get_as(&alice.token, &path).await;
        assert_error(resp, 403, "forbidden").await;
    }
    assert_error(
        app.get(&lookup_path("unionid-alice")).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.get_as(&admin.token, &lookup_path("unionid-nobody"))
            .await,
        404,
        "user_not_found",
    )
    .await;
    // PostgreSQL text cannot hold U+0000: no binding has one, and asking must not fail.
    assert_error(
        app.get_as(&admin.token, &lookup_path("unionid\0alice"))
            .await,
        404,
        "user_not_found",
    )
    .await;
    for (case, path) in [
        ("missing", "/api/users".to_owned()),
        ("empty", "/api/users?unionid=".to_owned()),
        ("too long", lookup_path(&too_long)),
    ] {
        let resp = app.get_as(&admin.token, &path).await;
        assert_eq!(resp.status(), 400, "{case}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_request", "{case}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("unionid")),
            "{case}: {body}"
        );
    }
}
