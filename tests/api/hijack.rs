//! Bindings cannot be hijacked, and site users cannot phish in the account's name: a binding
//! revokes the user's other bind states, a bound user is never silently re-bound, a user has
//! at most five live states, and non-admins send only the default template with allowed links.
use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind::db::schema::{bind_states, users};
use wxbind_tests::{
    CodeReply, TestApp, TestUser, assert_error, push_xml, simple_message, spawn_app,
};

fn openid_of(app: &TestApp, user: &TestUser) -> Option<String> {
    app.query(|c| users::table.find(user.id).select(users::openid).first(c))
}

fn live_states(app: &TestApp, user: &TestUser) -> i64 {
    app.query(|c| {
        bind_states::table
            .filter(bind_states::user_id.eq(user.id))
            .filter(bind_states::used_at.is_null())
            .count()
            .get_result(c)
    })
}

/// Completes the bind link carrying `state` as WeChat user `openid`.
async fn complete(app: &TestApp, state: &str, openid: &str) -> reqwest::Response {
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    app.wechat
        .register_code(&code, CodeReply::OpenId(openid.into()));
    app.callback(Some(&code), Some(state)).await
}

/// A bind QR code's scene for `user`.
async fn qr_scene(app: &TestApp, user: &TestUser) -> String {
    let resp = app.get_as(&user.token, "/api/bind-qrcode").await;
    assert_eq!(resp.status(), 200);
    app.wechat.qr_scenes().last().expect("scene").clone()
}

/// Scans `scene` as `openid` and returns the text WeChat would show.
async fn scan(app: &TestApp, openid: &str, scene: &str, at: i64) -> String {
    let xml = push_xml(
        openid,
        at,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );
    let resp = app.push_plain(&xml).await;
    assert_eq!(resp.status(), 200);
    let reply = resp.text().await.expect("body");
    let fields = wxbind::wechat::events::parse_fields(&reply).expect("reply XML");
    fields["Content"].clone()
}

#[actix_web::test]
async fn callback_revokes_the_users_other_bind_states_when_it_binds() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, glimpsed) = app.bind_url(&user).await;
    let (_, used) = app.bind_url(&user).await;
    let scene = qr_scene(&app, &user).await;

    assert_eq!(complete(&app, &used, "openid-alice").await.status(), 200);

    assert_eq!(live_states(&app, &user), 0);
    assert_error(
        complete(&app, &glimpsed, "openid-attacker").await,
        400,
        "invalid_state",
    )
    .await;
    let text = scan(&app, "openid-attacker", &scene, 1_700_000_100).await;
    assert!(text.contains("expired"), "{text}");
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn scan_binding_revokes_the_users_other_bind_states() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, glimpsed) = app.bind_url(&user).await;
    let scene = qr_scene(&app, &user).await;

    let text = scan(&app, "openid-alice", &scene, 1_700_000_100).await;
    assert!(text.contains("alice"), "{text}");

    assert_error(
        complete(&app, &glimpsed, "openid-attacker").await,
        400,
        "invalid_state",
    )
    .await;
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn callback_returns_409_when_the_user_is_bound_to_another_openid() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let (_, state) = app.bind_url(&user).await;

    let resp = complete(&app, &state, "openid-other").await;

    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "already_bound");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unbind")),
        "{body}"
    );
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-alice"));
    // Nothing changed: the link is still usable once the user has unbound.
    assert_eq!(app.delete_binding(&user.token).await.status(), 204);
    assert_eq!(complete(&app, &state, "openid-other").await.status(), 200);
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-other"));
}

#[actix_web::test]
async fn callback_succeeds_and_changes_nothing_when_the_same_openid_binds_again() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let bound_at: Option<chrono::DateTime<chrono::Utc>> =
        app.query(|c| users::table.find(user.id).select(users::bound_at).first(c));
    let (_, state) = app.bind_url(&user).await;

    assert_eq!(complete(&app, &state, "openid-alice").await.status(), 200);

    let again: Option<chrono::DateTime<chrono::Utc>> =
        app.query(|c| users::table.find(user.id).select(users::bound_at).first(c));
    assert_eq!(again, bound_at);
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn scan_is_refused_when_the_user_is_bound_to_another_openid() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let scene = qr_scene(&app, &user).await;

    let text = scan(&app, "openid-victim", &scene, 1_700_000_100).await;

    assert!(text.contains("unbind"), "{text}");
    assert_eq!(openid_of(&app, &user).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn bind_url_revokes_the_oldest_state_when_a_sixth_is_created() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let mut states = Vec::new();
    for _ in 0..6 {
        states.push(app.bind_url(&user).await.1);
    }

    assert_eq!(live_states(&app, &user), 5);
    assert_error(
        complete(&app, &states[0], "openid-alice").await,
        400,
        "invalid_state",
    )
    .await;
    assert_eq!(
        complete(&app, &states[1], "openid-alice").await.status(),
        200
    );
}

#[actix_web::test]
async fn create_message_returns_403_naming_the_field_when_a_user_oversteps() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let cases = [
        (
            "another template",
            json!({"template_id": "TEMPLATE_PHISH", "data": {"k": {"value": "v"}}}),
            "template_id",
        ),
        (
            "a foreign link",
            json!({"url": "https://evil.example.net/login", "data": {"k": {"value": "v"}}}),
            "url",
        ),
        (
            "another recipient",
            json!({"user_id": user.id + 1000, "data": {"k": {"value": "v"}}}),
            "user_id",
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
    // The default template with an allowed link is fine.
    let ok = json!({"url": "https://example.com/orders/1", "data": {"k": {"value": "v"}}});
    assert_eq!(app.post_message(&user.token, &ok).await.status(), 202);
    assert!(
        app.wechat
            .sends()
            .iter()
            .all(|s| s.template_id != "TEMPLATE_PHISH")
    );
}

#[actix_web::test]
async fn create_message_lets_admins_choose_template_and_link() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let body = json!({
        "user_id": user.id,
        "template_id": "TEMPLATE_OTHER",
        "url": "https://elsewhere.example.org/x",
        "data": simple_message()["data"],
    });

    assert_eq!(app.post_message(&admin.token, &body).await.status(), 202);
}
