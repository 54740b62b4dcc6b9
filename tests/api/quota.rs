//! WeChat's daily quota: 45009 pauses sending for the whole account (every process), queued
//! messages wait without spending their attempts, and sending resumes at the reset (midnight
//! Beijing time) or after an admin's `POST /api/quota/reset`. 43101 fails a message at once.
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use wxbind::startup::ProcessRole;
use wxbind_tests::{SendReply, TestApp, assert_error, spawn_app};

async fn get_json(app: &TestApp, token: &str, path: &str) -> Value {
    let resp = app.get_as(token, path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("json")
}

async fn post_as(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// Sends one message that WeChat refuses with 45009 and waits until it is back in the queue.
async fn pause_with_one_message(
    app: &TestApp,
    token: &str,
    user: &wxbind_tests::TestUser,
) -> String {
    app.wechat.script_sends([SendReply::Errcode(45009)]);
    let id = app.send_simple(user).await;
    let m = app
        .wait_until(token, &id, "handed back with 45009", |m| {
            m["errcode"] == 45009
        })
        .await;
    assert_eq!(m["status"], "queued", "{m}");
    assert_eq!(
        m["attempts"], 0,
        "the quota's refusal spends no attempt: {m}"
    );
    id
}

#[actix_web::test]
async fn a_used_up_quota_pauses_every_process_until_an_admin_resets_it() {
    let app = spawn_app().await;
    let _peer = app.spawn_peer(ProcessRole::Worker, |_| {});
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;

    let first = pause_with_one_message(&app, &admin.token, &user).await;
    let others: Vec<String> =
        futures_util::future::join_all((0..3).map(|_| app.send_simple(&user))).await;

    // Paused until midnight Beijing time, for both processes: nothing else reaches WeChat.
    let quota = get_json(&app, &admin.token, "/api/quota").await;
    let until: DateTime<Utc> = quota["paused_until"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("paused_until: {quota}"));
    // Midnight Beijing time (the day may have turned since the pause began).
    let now = Utc::now();
    let expected = [
        wxbind::quota::next_reset(now - chrono::TimeDelta::seconds(30)),
        wxbind::quota::next_reset(now),
    ];
    assert!(expected.contains(&until), "{quota}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.wechat.sends().len(), 1, "nothing is sent while paused");
    for id in &others {
        let m = get_json(&app, &admin.token, &format!("/api/messages/{id}")).await;
        assert_eq!(
            (m["status"].as_str(), m["attempts"].as_i64()),
            (Some("queued"), Some(0)),
            "{m}"
        );
    }

    let resp = post_as(&app, &admin.token, "/api/quota/reset").await;
    assert_eq!(resp.status(), 200);
    let reset: Value = resp.json().await.expect("json");
    assert_eq!(reset["was_paused"], true, "{reset}");
    assert_eq!(reset["resets_this_month"], 1);
    assert_eq!(reset["resets_left_at_most"], 9);
    let calls = app.wechat.quota_resets();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["appid"], wxbind_tests::TEST_APP_ID);

    for id in std::iter::once(&first).chain(&others) {
        let m = app.wait_for_final(&user.token, id).await;
        assert_eq!(m["status"], "sent", "{m}");
        assert_eq!(
            m["attempts"], 1,
            "one attempt each, the refused one not counted: {m}"
        );
    }
    let quota = get_json(&app, &admin.token, "/api/quota").await;
    assert!(quota["paused_until"].is_null(), "{quota}");
}

#[actix_web::test]
async fn sending_resumes_by_itself_when_the_quota_day_turns() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let id = pause_with_one_message(&app, &admin.token, &user).await;

    // The clock reaches the reset (the row says until when; move it to just ahead).
    {
        use wxbind::db::schema::send_pause;
        let mut conn = app.db.conn();
        diesel::update(send_pause::table)
            .set(send_pause::paused_until.eq(Utc::now() + chrono::TimeDelta::milliseconds(300)))
            .execute(&mut conn)
            .expect("move the reset");
    }

    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(app.wechat.quota_resets().len(), 0, "no reset was needed");
}

#[actix_web::test]
async fn the_quota_shows_wechats_figures_and_the_services_own_count() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    for _ in 0..2 {
        let id = app.send_simple(&user).await;
        app.wait_for_final(&user.token, &id).await;
    }
    app.wechat.set_quota(100_000, 1200);

    let quota = get_json(&app, &admin.token, "/api/quota").await;

    assert_eq!(quota["daily_limit"], 100_000, "{quota}");
    assert_eq!(quota["used"], 1200);
    assert_eq!(quota["remain"], 98_800);
    assert_eq!(quota["sent_today"], 2);
    assert!(quota["paused_until"].is_null());
}

#[actix_web::test]
async fn a_reset_wechat_refuses_for_the_month_is_quota_reset_limit() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    app.wechat.refuse_quota_reset(48006);

    let resp = post_as(&app, &admin.token, "/api/quota/reset").await;

    assert_error(resp, 429, "quota_reset_limit").await;
}

#[actix_web::test]
async fn only_admins_see_or_reset_the_quota() {
    let app = spawn_app().await;
    let user = app.user("alice").await;

    assert_error(
        app.get_as(&user.token, "/api/quota").await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        post_as(&app, &user.token, "/api/quota/reset").await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.wechat.quota_resets().len(), 0);
    let anonymous = app
        .http
        .get(app.url("/api/quota"))
        .send()
        .await
        .expect("request");
    assert_error(anonymous, 401, "unauthorized").await;
}

#[actix_web::test]
async fn a_user_who_refused_the_message_fails_it_without_a_retry() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat.script_sends([SendReply::Errcode(43101)]);

    let id = app.send_simple(&user).await;

    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["errcode"], 43101);
    assert_eq!(m["attempts"], 1);
    assert_eq!(app.wechat.sends().len(), 1, "not retried");
}

#[actix_web::test]
async fn a_pause_ends_by_itself_when_wechat_reports_quota_again() {
    let app = wxbind_tests::spawn_app_with(|c| {
        c.delivery.quota_check = Duration::from_millis(200);
    })
    .await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let id = pause_with_one_message(&app, &admin.token, &user).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = get_json(&app, &admin.token, &format!("/api/messages/{id}")).await;
    assert_eq!(m["status"], "queued", "WeChat still reports none left: {m}");

    // Reset in WeChat's console: the quota comes back without this service's reset.
    app.wechat.set_quota(100_000, 0);

    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(app.wechat.quota_resets().len(), 0);
}

#[actix_web::test]
async fn the_quota_shows_the_pause_when_wechat_does_not_answer() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    pause_with_one_message(&app, &admin.token, &user).await;
    app.wechat.fail(wxbind_tests::QUOTA_GET, true);

    let quota = get_json(&app, &admin.token, "/api/quota").await;

    assert!(
        quota["daily_limit"].is_null() && quota["remain"].is_null(),
        "{quota}"
    );
    assert!(
        quota["wechat_error"]
            .as_str()
            .is_some_and(|e| e.contains("-1")),
        "{quota}"
    );
    assert!(quota["paused_until"].is_string(), "{quota}");
    assert_eq!(quota["sent_today"], 0);
}

#[actix_web::test]
async fn a_second_reset_right_after_the_first_does_not_spend_another() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;

    let first = post_as(&app, &admin.token, "/api/quota/reset").await;
    let second = post_as(&app, &admin.token, "/api/quota/reset").await;

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let second: Value = second.json().await.expect("json");
    assert_eq!(second["resets_this_month"], 1, "{second}");
    assert_eq!(app.wechat.quota_resets().len(), 1, "WeChat was asked once");
}

#[actix_web::test]
async fn a_refusal_from_before_a_reset_does_not_pause_again() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let before = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        post_as(&app, &admin.token, "/api/quota/reset")
            .await
            .status(),
        200
    );
    let mut conn = app.db.conn();
    let until = wxbind::quota::next_reset(Utc::now());

    // A send that began before the reset comes back 45009 after it: stale, no pause.
    let began =
        wxbind::db::pause::set(&mut conn, until, Some(45009), "quota", before).expect("set");
    assert!(!began);
    assert!(
        wxbind::db::pause::current(&mut conn)
            .expect("read")
            .is_none()
    );
    // One that began after it pauses.
    let began =
        wxbind::db::pause::set(&mut conn, until, Some(45009), "quota", Utc::now()).expect("set");
    assert!(began);
}
