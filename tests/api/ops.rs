use serde_json::Value;
use wxbind_tests::{assert_error, spawn_app, spawn_app_with};

#[actix_web::test]
async fn health_is_ok() {
    let app = spawn_app().await;
    let resp = app.get("/api/health").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["wechat_configured"], true);
}

#[actix_web::test]
async fn ready_is_200_with_a_migrated_database() {
    let app = spawn_app().await;
    let resp = app.get("/api/ready").await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn ready_is_503_when_the_database_is_unreachable() {
    let app = spawn_app_with(|c| {
        c.database.url = secrecy::SecretString::from(
            "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable&gssencmode=disable".to_owned(),
        );
    })
    .await;
    assert_error(app.get("/api/ready").await, 503, "unavailable").await;
    // Liveness does not depend on the database.
    assert_eq!(app.get("/api/health").await.status(), 200);
}

#[actix_web::test]
async fn ready_is_503_when_migrations_are_pending() {
    use diesel::prelude::*;
    let app = spawn_app().await;
    app.query(|c| diesel::sql_query("DELETE FROM __diesel_schema_migrations").execute(c));
    assert_error(app.get("/api/ready").await, 503, "unavailable").await;
}

#[actix_web::test]
async fn served_openapi_equals_the_committed_file() {
    let app = spawn_app().await;
    let served: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../openapi/openapi.json"
        ))
        .expect("openapi/openapi.json"),
    )
    .expect("json");
    assert_eq!(
        served, committed,
        "regenerate with: UPDATE_OPENAPI=1 cargo test -p wxbind openapi"
    );
}

#[actix_web::test]
async fn swagger_ui_is_served() {
    let app = spawn_app().await;
    let bare = app.get("/api/docs").await;
    assert!(bare.status().is_redirection());
    assert_eq!(bare.headers()["location"], "/api/docs/");
    let page = app.get("/api/docs/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("swagger"));
}

#[actix_web::test]
async fn unknown_routes_get_json_404_and_wrong_methods_json_405() {
    let app = spawn_app().await;
    assert_error(app.get("/api/nope").await, 404, "not_found").await;
    assert_error(app.get("/elsewhere").await, 404, "not_found").await;

    let wrong = app
        .http
        .get(app.url("/api/login"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.headers()["allow"], "POST");
    assert_error(wrong, 405, "method_not_allowed").await;
    let wrong = app
        .http
        .put(app.url("/api/messages/abc"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.headers()["allow"], "GET");
    assert_error(wrong, 405, "method_not_allowed").await;
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let id = app.send_simple(&user).await;
    app.wait_for_final(&user.token, &id).await;

    let text = app.get("/api/metrics").await.text().await.expect("body");

    assert!(text.contains("wxbind_messages_accepted_total 1"), "{text}");
    assert!(text.contains("wxbind_messages_sent_total 1"), "{text}");
    assert!(
        text.contains("wxbind_wechat_token_fetches_total 1"),
        "{text}"
    );
    assert!(text.contains("wxbind_bindings_total 1"), "{text}");
}

#[actix_web::test]
async fn responses_carry_nosniff_and_no_referrer_and_hsts_only_over_https() {
    let app = spawn_app().await;
    for path in ["/api/health", "/api/nowhere", "/api/docs/"] {
        let resp = app.get(path).await;
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "{path}");
    }
    let https = spawn_app_with(|c| {
        c.http.public_url = url::Url::parse("https://wxbind.example.com").expect("url");
    })
    .await;
    let resp = https.get("/api/health").await;
    assert!(
        resp.headers()["strict-transport-security"]
            .to_str()
            .expect("ascii")
            .starts_with("max-age=")
    );
}

#[actix_web::test]
async fn metrics_need_the_token_when_one_is_set() {
    let app = spawn_app_with(|c| {
        c.http.metrics_token = Some(secrecy::SecretString::from(
            "test-metrics-token-0123".to_owned(),
        ));
    })
    .await;
    assert_error(app.get("/api/metrics").await, 401, "unauthorized").await;
    let wrong = app.get_as("test-metrics-token-0124", "/api/metrics").await;
    assert_error(wrong, 401, "unauthorized").await;
    let right = app.get_as("test-metrics-token-0123", "/api/metrics").await;
    assert_eq!(right.status(), 200);
    assert!(right.text().await.expect("body").contains("wxbind_"));
}
