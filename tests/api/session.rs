//! Browser auth: the refresh session cookie, token refresh, logout, and CORS.
use diesel::prelude::*;
use serde_json::Value;
use wxbind::db::schema::sessions;
use wxbind_tests::{TEST_PASSWORD, TEST_SPA_ORIGIN, TestApp, assert_error, spawn_app};

/// Logs in and returns the `Set-Cookie` header of the session cookie.
async fn login_cookie(app: &TestApp, username: &str) -> String {
    let resp = app.post_login(username, TEST_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .find(|c| c.starts_with("wxbind_session="))
        .expect("session cookie")
}

/// `name=value` of a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

async fn refresh(app: &TestApp, cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.http.post(app.url("/api/token/refresh"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("request")
}

#[actix_web::test]
async fn login_sets_an_httponly_session_cookie() {
    let app = spawn_app().await;
    app.insert_user("alice", false);

    let cookie = login_cookie(&app, "alice").await;

    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/api"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http on 127.0.0.1 must not be Secure: {cookie}"
    );
    // Only a hash of the session key is stored, and the cookie value itself is sealed.
    let stored: Vec<String> = app.query(|c| sessions::table.select(sessions::key_hash).load(c));
    assert_eq!(stored.len(), 1);
    assert!(!cookie.contains(&stored[0]));
}

#[actix_web::test]
async fn refresh_issues_a_new_token_from_the_cookie() {
    let app = spawn_app().await;
    let id = app.insert_user("alice", false);
    let cookie = pair(&login_cookie(&app, "alice").await);

    let resp = refresh(&app, Some(&cookie)).await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["user"]["id"], id);
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(app.get_as(token, "/api/me").await.status(), 200);
}

#[actix_web::test]
async fn refresh_returns_401_without_a_valid_session() {
    let app = spawn_app().await;
    assert_error(refresh(&app, None).await, 401, "session_expired").await;
    assert_error(
        refresh(&app, Some("wxbind_session=forged")).await,
        401,
        "session_expired",
    )
    .await;

    app.insert_user("alice", false);
    let cookie = pair(&login_cookie(&app, "alice").await);
    app.query(|c| {
        diesel::update(sessions::table)
            .set(sessions::expires_at.eq(chrono::Utc::now() - chrono::TimeDelta::seconds(1)))
            .execute(c)
    });
    assert_error(refresh(&app, Some(&cookie)).await, 401, "session_expired").await;
}

#[actix_web::test]
async fn logout_revokes_the_session() {
    let app = spawn_app().await;
    app.insert_user("alice", false);
    let cookie = pair(&login_cookie(&app, "alice").await);

    let resp = app
        .http
        .post(app.url("/api/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");

    assert_eq!(resp.status(), 204);
    let cleared = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert!(
        cleared.is_some_and(|c| c.starts_with("wxbind_session=")),
        "cookie cleared"
    );
    assert_error(refresh(&app, Some(&cookie)).await, 401, "session_expired").await;
    let left: i64 = app.query(|c| sessions::table.count().get_result(c));
    assert_eq!(left, 0);
}

#[actix_web::test]
async fn the_session_id_rotates_at_login() {
    let app = spawn_app().await;
    app.insert_user("alice", false);
    let first = pair(&login_cookie(&app, "alice").await);

    // Logging in again with the old cookie gets a new session; the old one is gone.
    let resp = app
        .http
        .post(app.url("/api/login"))
        .header("cookie", &first)
        .json(&serde_json::json!({"username": "alice", "password": TEST_PASSWORD}))
        .send()
        .await
        .expect("request");
    let second = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| pair(v.to_str().expect("ascii")))
        .find(|c| c.starts_with("wxbind_session="))
        .expect("new cookie");

    assert_ne!(first, second);
    assert_error(refresh(&app, Some(&first)).await, 401, "session_expired").await;
    assert_eq!(refresh(&app, Some(&second)).await.status(), 200);
}

#[actix_web::test]
async fn cors_allows_only_the_configured_origin_with_credentials() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.http
                .request(reqwest::Method::OPTIONS, app.url("/api/login"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .expect("request")
        }
    };

    let allowed = preflight(TEST_SPA_ORIGIN).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        TEST_SPA_ORIGIN
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );

    let other = preflight("https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let simple = app
        .http
        .get(app.url("/api/health"))
        .header("origin", TEST_SPA_ORIGIN)
        .send()
        .await
        .expect("request");
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        TEST_SPA_ORIGIN
    );
    assert_ne!(simple.headers()["access-control-allow-origin"], "*");
}

fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .find(|c| c.starts_with("wxbind_session="))
        .map(|c| pair(&c))
}

#[actix_web::test]
async fn refresh_rotates_the_session_id_and_the_old_cookie_dies() {
    let app = spawn_app().await;
    app.insert_user("alice", false);
    let first = pair(&login_cookie(&app, "alice").await);

    let resp = refresh(&app, Some(&first)).await;

    assert_eq!(resp.status(), 200);
    let second = session_cookie(&resp).expect("a new cookie");
    assert_ne!(second, first);
    assert_error(refresh(&app, Some(&first)).await, 401, "session_expired").await;
    assert_eq!(refresh(&app, Some(&second)).await.status(), 200);
    let rows: i64 = app.query(|c| sessions::table.count().get_result(c));
    assert_eq!(rows, 1, "one session, moved, not copied");
}

#[actix_web::test]
async fn refresh_returns_401_after_the_sessions_absolute_lifetime() {
    let app = wxbind_tests::spawn_app_with(|c| {
        c.auth.session_max = std::time::Duration::from_secs(1);
    })
    .await;
    app.insert_user("alice", false);
    let cookie = pair(&login_cookie(&app, "alice").await);
    let resp = refresh(&app, Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp).expect("cookie");

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    assert_error(refresh(&app, Some(&cookie)).await, 401, "session_expired").await;
}

#[actix_web::test]
async fn a_refresh_that_loses_the_race_with_logout_cannot_bring_the_session_back() {
    use actix_session::storage::{SessionKey, SessionStore};
    let app = spawn_app().await;
    let store = wxbind::session::PgSessionStore::new(wxbind::db::build_pool(&app.db.url, 2));
    let ttl = actix_web::cookie::time::Duration::days(1);
    let state = std::collections::HashMap::from([("user_id".to_owned(), "1".to_owned())]);
    let key = store.save(state.clone(), &ttl).await.expect("saved");
    let stale = SessionKey::try_from(key.as_ref().to_owned()).expect("key");

    // The logout lands between the refresh's load and its write.
    store.delete(&key).await.expect("logged out");
    let moved_to = store.update(stale, state, &ttl).await.expect("no error");

    assert_eq!(store.load(&moved_to).await.expect("load"), None);
    let rows: i64 = app.query(|c| sessions::table.count().get_result(c));
    assert_eq!(rows, 0, "nothing written");
}

#[actix_web::test]
async fn tokens_and_cookies_of_the_previous_jwt_secret_survive_a_rotation() {
    use std::net::TcpListener;
    let app = spawn_app().await;
    app.insert_user("alice", false);
    let resp = app.post_login("alice", TEST_PASSWORD).await;
    let cookie = session_cookie(&resp).expect("cookie");
    let token = resp.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    // The same database behind a process whose key was rotated.
    let rotated = |previous: bool| {
        let mut config = app.config.clone();
        let old = config.auth.jwt_secret.clone();
        config.auth.jwt_secret =
            secrecy::SecretString::from("rotated-jwt-secret-rotated-jwt-secret-99".to_owned());
        config.auth.jwt_secret_previous = previous.then_some(old);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server =
            wxbind::startup::Application::build_with_listener(config, listener).expect("app");
        actix_web::rt::spawn(server.run_until_stopped());
        format!("http://127.0.0.1:{port}")
    };
    let with_previous = rotated(true);
    let me = app
        .http
        .get(format!("{with_previous}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200, "an old token still works");
    let refreshed = app
        .http
        .post(format!("{with_previous}/api/token/refresh"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200, "an old cookie still works");
    let resealed = session_cookie(&refreshed).expect("a cookie under the new key");

    let without_previous = rotated(false);
    let old_token = app
        .http
        .get(format!("{without_previous}/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(
        old_token.status(),
        401,
        "once the old key is dropped, so are its tokens"
    );
    let again = app
        .http
        .post(format!("{without_previous}/api/token/refresh"))
        .header("cookie", &resealed)
        .send()
        .await
        .expect("refresh");
    assert_eq!(
        again.status(),
        200,
        "the resealed cookie needs only the new key"
    );
}
