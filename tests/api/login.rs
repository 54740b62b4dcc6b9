use std::net::TcpListener;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind::config::{IpNet, VerifierConfig};
use wxbind::db::schema::login_failures;
use wxbind::startup::Application;
use wxbind_tests::{
    TEST_JWT_SECRET, TEST_PASSWORD, TestApp, assert_error, spawn_app, spawn_app_with,
};

#[actix_web::test]
async fn login_returns_a_bearer_token_and_the_user() {
    let app = spawn_app().await;
    let id = app.insert_user("alice", false);

    let resp = app.post_login("alice", TEST_PASSWORD).await;

    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert_eq!(body["user"]["id"], id);
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["user"]["uid"], "6384e2b2184bcbf58eccf10ca7a6563c");
    assert_eq!(body["user"]["role"], "user");
    assert_eq!(body["user"]["wechat_bound"], false);
}

#[actix_web::test]
async fn login_returns_401_alike_for_unknown_user_and_wrong_password() {
    let app = spawn_app().await;
    app.insert_user("alice", false);

    let wrong = app.post_login("alice", "wrong-password").await;
    let wrong_status = wrong.status();
    let wrong_body: Value = wrong.json().await.expect("json");
    let unknown = app.post_login("nobody", "wrong-password").await;
    let unknown_status = unknown.status();
    let unknown_body: Value = unknown.json().await.expect("json");

    assert_eq!(wrong_status, 401);
    assert_eq!(unknown_status, 401);
    assert_eq!(
        wrong_body, unknown_body,
        "answers must not reveal which usernames exist"
    );
    assert_eq!(wrong_body["error"]["code"], "invalid_credentials");
}

#[actix_web::test]
async fn a_username_postgresql_cannot_hold_is_an_unknown_one() {
    let app = spawn_app().await;
    app.insert_user("alice", false);

    // No account has U+0000 in its name (PostgreSQL text cannot hold it): the same 401 as
    // any unknown name, not a failed query.
    let resp = app.post_login("ali\0ce", TEST_PASSWORD).await;

    assert_error(resp, 401, "invalid_credentials").await;
    assert_eq!(app.post_login("alice", TEST_PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn login_returns_400_when_fields_are_missing_or_malformed() {
    let app = spawn_app().await;
    let cases = [
        ("empty object", json!({})),
        ("no password", json!({"username": "alice"})),
        ("no username", json!({"password": "x"})),
        ("wrong types", json!({"username": 1, "password": true})),
        ("empty strings", json!({"username": "", "password": ""})),
    ];
    for (case, body) in cases {
        let resp = app
            .http
            .post(app.url("/api/login"))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400, "case: {case}");
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["error"]["code"], "invalid_request", "case: {case}");
    }
    let not_json = app
        .http
        .post(app.url("/api/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_error(not_json, 400, "invalid_request").await;
}

/// A login as if from `client`, through the test's trusted proxy (127.0.0.1), to the app at
/// `base`.
async fn login_from(
    http: &reqwest::Client,
    base: &str,
    client: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    http.post(format!("{base}/api/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request")
}

/// An app that trusts the loopback proxy, so tests choose the client's address with
/// `X-Forwarded-For`.
async fn spawn_behind_proxy() -> TestApp {
    spawn_app_with(|c| c.http.trusted_proxies = vec![loopback()]).await
}

fn loopback() -> IpNet {
    "127.0.0.1/32".parse().expect("net")
}

/// Another instance of `app` on the same database, as a second process (or the same one after
/// a restart) would be: nothing in memory shared.
fn spawn_instance(app: &TestApp) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let other = Application::build_with_listener(app.config.clone(), listener).expect("app");
    actix_web::rt::spawn(other.run_until_stopped());
    format!("http://127.0.0.1:{port}")
}

const HERE: &str = "203.0.113.7";
const ELSEWHERE: &str = "198.51.100.2";

#[actix_web::test]
async fn ten_failures_for_one_username_lock_out_only_that_address() {
    let app = spawn_behind_proxy().await;
    app.insert_user("alice", false);
    app.insert_user("bob", false);
    let login = |client, user, pw| login_from(&app.http, &app.address, client, user, pw);
    for i in 0..10 {
        let resp = login(HERE, "alice", "wrong-password").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }

    let blocked = login(HERE, "alice", TEST_PASSWORD).await;
    assert_eq!(blocked.headers()["retry-after"], "60");
    assert_error(blocked, 429, "too_many_attempts").await;
    // The right password from another address still works: the guesser cannot lock alice out.
    assert_eq!(login(ELSEWHERE, "alice", TEST_PASSWORD).await.status(), 200);
    // That does not lift the lock where the guesses came from.
    assert_eq!(login(HERE, "alice", TEST_PASSWORD).await.status(), 429);
    // Other usernames from the same address are below their limit.
    assert_eq!(login(HERE, "bob", TEST_PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn thirty_failures_from_one_address_lock_out_that_address() {
    let app = spawn_behind_proxy().await;
    app.insert_user("alice", false);
    let login = |client, user, pw| login_from(&app.http, &app.address, client, user, pw);
    // Three guesses each for ten names: no username reaches its own limit.
    for i in 0..30 {
        let guess = format!("guess-{}", i % 10);
        let resp = login_from(&app.http, &app.address, HERE, &guess, "wrong-password").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }

    let blocked = login(HERE, "alice", TEST_PASSWORD).await;
    assert_eq!(blocked.headers()["retry-after"], "60");
    assert_error(blocked, 429, "too_many_attempts").await;
    assert_eq!(login(ELSEWHERE, "alice", TEST_PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn logging_in_forgets_the_failures_of_that_username_and_address() {
    let app = spawn_behind_proxy().await;
    app.insert_user("alice", false);
    let login = |user, pw| login_from(&app.http, &app.address, HERE, user, pw);
    for _ in 0..2 {
        for _ in 0..9 {
            assert_eq!(login("alice", "wrong-password").await.status(), 401);
        }
        assert_eq!(login("alice", TEST_PASSWORD).await.status(), 200);
    }
}

#[actix_web::test]
async fn failures_are_shared_by_instances_and_survive_a_restart() {
    let app = spawn_behind_proxy().await;
    app.insert_user("alice", false);
    let second = spawn_instance(&app);
    for (i, base) in [&app.address, &second]
        .into_iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        let resp = login_from(&app.http, base, HERE, "alice", "wrong-password").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }

    // Five failures on each instance are ten for both.
    for base in [&app.address, &second] {
        let resp = login_from(&app.http, base, HERE, "alice", TEST_PASSWORD).await;
        assert_error(resp, 429, "too_many_attempts").await;
    }
    // An instance started afterwards (a restart: nothing in memory) knows them too.
    let restarted = spawn_instance(&app);
    let resp = login_from(&app.http, &restarted, HERE, "alice", TEST_PASSWORD).await;
    assert_error(resp, 429, "too_many_attempts").await;
    let stored: i64 = app.query(|c| login_failures::table.count().get_result(c));
    assert_eq!(stored, 10, "one row per failure, none for refused attempts");
}

#[actix_web::test]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    // No trusted proxies: every request is from its peer, 127.0.0.1, whatever it claims.
    let app = spawn_app().await;
    app.insert_user("alice", false);
    for i in 0..10 {
        let claimed = format!("192.0.2.{i}");
        let resp = login_from(&app.http, &app.address, &claimed, "alice", "wrong").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    let resp = login_from(&app.http, &app.address, ELSEWHERE, "alice", TEST_PASSWORD).await;
    assert_error(resp, 429, "too_many_attempts").await;

    // Behind a trusted proxy only the hop it added counts: entries the client wrote to its
    // left change nothing.
    let app = spawn_behind_proxy().await;
    app.insert_user("alice", false);
    for i in 0..10 {
        let chain = format!("192.0.2.{i}, {HERE}");
        let resp = login_from(&app.http, &app.address, &chain, "alice", "wrong").await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    let chain = format!("{ELSEWHERE}, {HERE}");
    let resp = login_from(&app.http, &app.address, &chain, "alice", TEST_PASSWORD).await;
    assert_error(resp, 429, "too_many_attempts").await;
    let resp = login_from(&app.http, &app.address, ELSEWHERE, "alice", TEST_PASSWORD).await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn login_answers_503_busy_when_the_verification_queue_is_full() {
    // One check at a time and no queue: concurrent logins beyond the first are refused.
    let app = spawn_app_with(|c| {
        c.auth.verifier = VerifierConfig {
            threads: 1,
            queue: 0,
            max_wait: Duration::from_secs(1),
        };
    })
    .await;
    app.insert_user("alice", false);

    let mut busy = None;
    let mut failed = 0;
    for round in 0..5 {
        let names: Vec<String> = (0..20).map(|i| format!("flood-{round}-{i}")).collect();
        let logins = names.iter().map(|n| app.post_login(n, "wrong-password"));
        let health = (0..5).map(|_| app.get("/api/health"));
        let (logins, health) = futures_util::future::join(
            futures_util::future::join_all(logins),
            futures_util::future::join_all(health),
        )
        .await;
        for resp in health {
            assert_eq!(resp.status(), 200, "health answers during the flood");
        }
        for resp in logins {
            match resp.status().as_u16() {
                401 => failed += 1,
                503 => busy = Some(resp),
                other => panic!("unexpected status {other}"),
            }
        }
        if busy.is_some() {
            break;
        }
    }
    let busy = busy.expect("some of 20 concurrent logins are refused as busy");
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_error(busy, 503, "busy").await;
    let stored: i64 = app.query(|c| login_failures::table.count().get_result(c));
    assert_eq!(stored, failed, "refused logins are not counted as failures");
    // Refused logins leave nothing behind: the next one is checked as usual.
    assert_eq!(app.post_login("alice", TEST_PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn protected_routes_return_401_for_bad_tokens() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64| {
        json!({"sub": user.id.to_string(), "role": "admin", "iat": now, "exp": exp,
               "iss": "wxbind", "aud": "wxbind-api"})
    };
    let sign = |key: &str, exp: i64| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims(exp),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("sign")
    };
    // alg "none": a header and claims with an empty signature.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(v).expect("json"))
    };
    let none_token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(now + 600))
    );
    let tampered = {
        let mut parts: Vec<String> = user.token.split('.').map(str::to_owned).collect();
        parts[1] = b64(&claims(now + 600));
        parts.join(".")
    };

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("not bearer", Some(format!("Basic {}", user.token))),
        ("garbage", Some("Bearer not-a-jwt".into())),
        (
            "wrong signature",
            Some(format!(
                "Bearer {}",
                sign("another-secret-another-secret-1234", now + 600)
            )),
        ),
        ("alg none", Some(format!("Bearer {none_token}"))),
        (
            "expired",
            Some(format!("Bearer {}", sign(TEST_JWT_SECRET, now - 120))),
        ),
        ("tampered claims", Some(format!("Bearer {tampered}"))),
    ];
    for path in ["/api/me", "/api/bind-url"] {
        for (case, header) in &cases {
            let mut req = app.http.get(app.url(path));
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 401, "{path}: {case}");
            let b: Value = resp.json().await.expect("json");
            assert_eq!(b["error"]["code"], "unauthorized", "{path}: {case}");
        }
    }
    // The genuine token works.
    assert_eq!(app.get_as(&user.token, "/api/me").await.status(), 200);
}

#[actix_web::test]
async fn me_shows_the_binding() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let before = app.me(&user.token).await;
    assert_eq!(before["wechat_bound"], false);
    assert_eq!(before["bound_at"], Value::Null);

    app.bind(&user, "openid-alice").await;

    let after = app.me(&user.token).await;
    assert_eq!(after["wechat_bound"], true);
    assert!(after["bound_at"].is_string());
    assert_eq!(after["id"], user.id);
}

#[actix_web::test]
async fn housekeeping_purges_failures_long_past_the_window() {
    let app = spawn_app().await;
    assert_eq!(app.post_login("alice", "wrong").await.status(), 401);
    app.query(|c| {
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::username_hash.eq("old"),
                login_failures::address.eq(HERE),
                login_failures::failed_at.eq(chrono::Utc::now() - chrono::TimeDelta::hours(2)),
            ))
            .execute(c)
    });

    wxbind::housekeeping::purge(&wxbind::db::build_pool(&app.db.url, 1)).await;

    let left: Vec<String> = app.query(|c| {
        login_failures::table
            .select(login_failures::address)
            .load(c)
    });
    assert_eq!(
        left,
        ["127.0.0.1"],
        "the recent failure stays, the old one is gone"
    );
}
