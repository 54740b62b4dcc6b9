use std::time::Duration;

use diesel::prelude::*;
use serde_json::Value;
use wxbind::db::schema::{bind_states, users};
use wxbind_tests::{CodeReply, TestApp, TestUser, assert_error, spawn_app, spawn_app_with};

fn openid_of(app: &TestApp, user_id: i64) -> Option<String> {
    app.query(|c| users::table.find(user_id).select(users::openid).first(c))
}

fn used_states(app: &TestApp) -> i64 {
    app.query(|c| {
        bind_states::table
            .filter(bind_states::used_at.is_not_null())
            .count()
            .get_result(c)
    })
}

#[actix_web::test]
async fn bind_url_has_wechats_exact_shape() {
    let app = spawn_app().await;
    let user = app.user("alice").await;

    let resp = app.get_as(&user.token, "/api/bind-url").await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let url = body["url"].as_str().expect("url");
    let state = wxbind_tests::state_of(url);
    let redirect: String =
        url::form_urlencoded::byte_serialize(app.url("/api/callback").as_bytes()).collect();
    assert_eq!(
        url,
        format!(
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxtestappid\
             &redirect_uri={redirect}&response_type=code&scope=snsapi_userinfo\
             &state={state}&connect_redirect=1#wechat_redirect"
        )
    );
    assert!(state.len() >= 22 && state.len() <= 128, "{state}");
    assert!(state.chars().all(|c| c.is_ascii_alphanumeric()), "{state}");
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("timestamp");
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::TimeDelta::minutes(9) && ttl <= chrono::TimeDelta::minutes(10));
    // Only a hash is stored.
    let stored: Vec<String> =
        app.query(|c| bind_states::table.select(bind_states::state_hash).load(c));
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], state);
}

#[actix_web::test]
async fn bind_urls_are_unique() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, a) = app.bind_url(&user).await;
    let (_, b) = app.bind_url(&user).await;
    assert_ne!(a, b);
}

#[actix_web::test]
async fn callback_binds_the_openid_and_shows_a_page() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    app.wechat
        .register_code("CODE1", CodeReply::OpenId("openid-alice".into()));

    let resp = app.callback(Some("CODE1"), Some(&state)).await;

    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(resp.text().await.expect("body").contains("bound"));
    assert_eq!(openid_of(&app, user.id).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn callback_redirects_to_bind_result_url_when_configured() {
    let app = spawn_app_with(|c| {
        c.http.bind_result_url =
            Some(url::Url::parse("https://spa.example/bound?from=wx").expect("url"));
    })
    .await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    app.wechat
        .register_code("CODE1", CodeReply::OpenId("openid-alice".into()));

    let ok = app.callback(Some("CODE1"), Some(&state)).await;
    assert_eq!(ok.status(), 302);
    assert_eq!(
        ok.headers()["location"],
        "https://spa.example/bound?from=wx&status=ok"
    );

    let reused = app.callback(Some("CODE1"), Some(&state)).await;
    assert_eq!(reused.status(), 302);
    assert_eq!(
        reused.headers()["location"],
        "https://spa.example/bound?from=wx&status=error&reason=invalid_state"
    );
}

#[actix_web::test]
async fn callback_returns_400_when_state_is_missing_unknown_or_malformed() {
    let app = spawn_app().await;
    let too_long = "a".repeat(129);
    let cases = [
        ("missing", None),
        ("unknown", Some("AbCdEf0123456789AbCdEf0123456789")),
        ("malformed", Some("not-a/valid state")),
        ("too long", Some(too_long.as_str())),
    ];
    for (case, state) in cases {
        let resp = app.callback(Some("CODE1"), state).await;
        assert_eq!(resp.status(), 400, "case {case}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_state", "case {case}");
    }
    assert_eq!(app.wechat.oauth_requests(), 0, "WeChat not called");
}

#[actix_web::test]
async fn callback_returns_400_when_state_is_reused_and_keeps_the_first_binding() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    app.wechat
        .register_code("CODE1", CodeReply::OpenId("openid-alice".into()));
    app.wechat
        .register_code("CODE2", CodeReply::OpenId("openid-other".into()));
    assert_eq!(
        app.callback(Some("CODE1"), Some(&state)).await.status(),
        200
    );

    // WeChat sometimes opens the callback twice; the second must not undo the first.
    let again = app.callback(Some("CODE2"), Some(&state)).await;

    assert_error(again, 400, "invalid_state").await;
    assert_eq!(openid_of(&app, user.id).as_deref(), Some("openid-alice"));
    assert_eq!(app.wechat.oauth_requests(), 1);
}

#[actix_web::test]
async fn callback_returns_400_when_state_has_expired() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    app.query(|c| {
        diesel::update(bind_states::table)
            .set(bind_states::expires_at.eq(chrono::Utc::now() - chrono::TimeDelta::seconds(1)))
            .execute(c)
    });
    app.wechat
        .register_code("CODE1", CodeReply::OpenId("openid-alice".into()));

    let resp = app.callback(Some("CODE1"), Some(&state)).await;

    assert_error(resp, 400, "invalid_state").await;
    assert_eq!(openid_of(&app, user.id), None);
    assert_eq!(app.wechat.oauth_requests(), 0);
}

#[actix_web::test]
async fn concurrent_callbacks_with_one_state_bind_once() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    for i in 0..8 {
        app.wechat.register_code(
            &format!("CODE{i}"),
            CodeReply::OpenId(format!("openid-{i}")),
        );
    }

    let calls = (0..8).map(|i| {
        let (app, state) = (&app, state.clone());
        async move {
            app.callback(Some(&format!("CODE{i}")), Some(&state))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;

    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(app.wechat.oauth_requests(), 1);
}

#[actix_web::test]
async fn callback_returns_400_when_the_user_refuses() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;

    let resp = app.callback(None, Some(&state)).await;

    assert_error(resp, 400, "authorization_denied").await;
    assert_eq!(used_states(&app), 0, "the link stays usable");
    assert_eq!(app.wechat.oauth_requests(), 0);
}

async fn assert_upstream_failure(reply: CodeReply, status: u16, code: &str) {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let (_, state) = app.bind_url(&user).await;
    app.wechat.register_code("CODE1", reply.clone());

    let resp = app.callback(Some("CODE1"), Some(&state)).await;

    assert_eq!(resp.status(), status, "{reply:?}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], code, "{reply:?}");
    assert_eq!(openid_of(&app, user.id), None, "{reply:?}: nothing bound");
    assert_eq!(used_states(&app), 0, "{reply:?}: the state is given back");
    let text = body.to_string();
    assert!(
        !text.contains("test-app-secret") && !text.contains("CODE1"),
        "{text}"
    );
}

#[actix_web::test]
async fn callback_returns_400_invalid_code_for_wechats_code_errors() {
    for errcode in [40029, 40163, 42003] {
        assert_upstream_failure(CodeReply::Errcode(errcode), 400, "invalid_code").await;
    }
}

#[actix_web::test]
async fn callback_returns_502_when_wechat_fails() {
    for reply in [
        CodeReply::Errcode(-1),
        CodeReply::Errcode(40013),
        CodeReply::Http(500),
        CodeReply::Delay(Duration::from_secs(3)),
    ] {
        assert_upstream_failure(reply, 502, "wechat_unavailable").await;
    }
}

#[actix_web::test]
async fn callback_returns_400_for_a_snapshot_user() {
    assert_upstream_failure(
        CodeReply::Snapshot("openid-virtual".into()),
        400,
        "snapshot_user",
    )
    .await;
}

#[actix_web::test]
async fn callback_returns_409_when_the_openid_is_bound_to_someone_else() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.bind(&alice, "openid-shared").await;
    let (_, state) = app.bind_url(&bob).await;
    app.wechat
        .register_code("CODE-BOB", CodeReply::OpenId("openid-shared".into()));

    let resp = app.callback(Some("CODE-BOB"), Some(&state)).await;

    assert_error(resp, 409, "already_bound").await;
    assert_eq!(openid_of(&app, alice.id).as_deref(), Some("openid-shared"));
    assert_eq!(openid_of(&app, bob.id), None);
}

#[actix_web::test]
async fn rebinding_the_same_openid_to_the_same_user_succeeds() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    app.bind(&alice, "openid-alice").await;
    assert_eq!(openid_of(&app, alice.id).as_deref(), Some("openid-alice"));
}

#[actix_web::test]
async fn delete_binding_clears_the_openid() {
    let app = spawn_app().await;
    let user: TestUser = app.user("alice").await;
    app.bind(&user, "openid-alice").await;

    let resp = app.delete_binding(&user.token).await;

    assert_eq!(resp.status(), 204);
    assert_eq!(openid_of(&app, user.id), None);
    let me = app.me(&user.token).await;
    assert_eq!(me["wechat_bound"], false);
    // The openid is free for another account now.
    let bob = app.user("bob").await;
    app.bind(&bob, "openid-alice").await;
}

#[actix_web::test]
async fn wechat_routes_return_503_without_credentials() {
    let app = spawn_app_with(|c| c.wechat = None).await;
    let user = app.user("alice").await;

    assert_error(
        app.get_as(&user.token, "/api/bind-url").await,
        503,
        "wechat_not_configured",
    )
    .await;
    assert_error(
        app.callback(Some("C"), Some("abc")).await,
        503,
        "wechat_not_configured",
    )
    .await;
    assert_error(
        app.post_message(&user.token, &wxbind_tests::simple_message())
            .await,
        503,
        "wechat_not_configured",
    )
    .await;
}
