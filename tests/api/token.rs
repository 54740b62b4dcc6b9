//! The cross-process access-token lock cannot leak: a refresh whose future is dropped while it
//! waits for WeChat (a client that hung up, a request timeout) must not leave a pooled
//! connection holding the lock, or every later refresh in every process would wait forever.
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use wxbind::wechat::{AccessTokenCache, WechatClient, WechatSettings};
use wxbind_tests::{TEST_APP_ID, TEST_APP_SECRET, TestDb};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn advisory_locks_held(db: &TestDb) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result::<Count>(&mut db.conn())
    .expect("pg_locks")
    .n
}

#[actix_web::test]
async fn a_dropped_refresh_releases_the_token_lock() {
    wxbind::startup::install_crypto_provider();
    let db = TestDb::create();
    let wechat = MockServer::start().await;
    let token = |t: &str| json!({"access_token": t, "expires_in": 7200});
    Mock::given(method("POST"))
        .and(path("/cgi-bin/stable_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token("SLOW_TOKEN"))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .mount(&wechat)
        .await;
    Mock::given(method("POST"))
        .and(path("/cgi-bin/stable_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token("FRESH_TOKEN")))
        .mount(&wechat)
        .await;
    let client = WechatClient::new(WechatSettings {
        api_base: url::Url::parse(&wechat.uri()).expect("url"),
        app_id: TEST_APP_ID.into(),
        app_secret: SecretString::from(TEST_APP_SECRET.to_owned()),
        timeout: Duration::from_secs(5),
    });
    let cache = |pool| AccessTokenCache::new(TEST_APP_ID, pool, Duration::from_secs(5));
    let first = cache(wxbind::db::build_pool(&db.url, 2));

    // Dropped while WeChat is still answering, with the lock taken.
    let dropped = tokio::time::timeout(Duration::from_millis(500), first.get(&client)).await;
    assert!(dropped.is_err(), "the refresh was still waiting");

    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while advisory_locks_held(&db) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped refresh left the lock held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another process's refresh goes through at once.
    let other = cache(wxbind::db::build_pool(&db.url, 2));
    let got = tokio::time::timeout(Duration::from_secs(2), other.get(&client))
        .await
        .expect("not blocked by a leaked lock")
        .expect("a token");
    assert_eq!(got.secret(), "FRESH_TOKEN");
}
