//! Process roles and stopping: an API-only process and a worker-only process share one
//! database, the worker wakes on PostgreSQL's notification rather than its poll, and a
//! stopping worker hands back what it could not finish.
use std::time::Duration;

use diesel::prelude::*;
use wxbind::db::schema::messages;
use wxbind::startup::ProcessRole;
use wxbind_tests::{SendReply, assert_error, simple_message, spawn_role_with};

#[actix_web::test]
async fn a_message_accepted_by_an_api_process_is_delivered_by_a_worker_process() {
    // Polls a minute apart: only the notification can wake the worker in time.
    let api = spawn_role_with(ProcessRole::Api, |c| {
        c.delivery.poll_interval = Duration::from_secs(60);
    })
    .await;
    let worker = api.spawn_peer(ProcessRole::Worker, |_| {});
    let user = api.user("alice").await;
    api.bind(&user, "openid-alice").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = api.send_simple(&user).await;

    let done = api.wait_for_final(&user.token, &id).await;
    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(api.wechat.delivered_count(), 1);
    // The worker serves health, readiness and metrics, and nothing of the product API.
    let http = &api.http;
    for path in ["/api/health", "/api/ready", "/api/metrics"] {
        let resp = http.get(format!("{}{path}", worker.address)).send().await;
        assert_eq!(resp.expect("answer").status(), 200, "{path}");
    }
    let login = http
        .post(format!("{}/api/login", worker.address))
        .json(&serde_json::json!({"username": "alice", "password": "x"}))
        .send()
        .await
        .expect("answer");
    assert_error(login, 404, "not_found").await;
}

#[actix_web::test]
async fn an_api_process_never_delivers() {
    let api = spawn_role_with(ProcessRole::Api, |_| {}).await;
    let user = api.user("alice").await;
    api.bind(&user, "openid-alice").await;

    let resp = api.post_message(&user.token, &simple_message()).await;
    assert_eq!(resp.status(), 202);
    tokio::time::sleep(Duration::from_millis(800)).await;

    assert_eq!(api.wechat.sends().len(), 0);
}

#[actix_web::test]
async fn a_stopping_worker_hands_back_the_leases_of_sends_it_could_not_finish() {
    let app = spawn_role_with(ProcessRole::Serve, |c| {
        c.delivery.lease = Duration::from_secs(60);
        c.delivery.shutdown = Duration::from_millis(300);
        if let Some(w) = c.wechat.as_mut() {
            w.timeout = Duration::from_secs(10);
        }
    })
    .await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat
        .script_sends([SendReply::Delay(Duration::from_secs(5))]);
    let id = app.send_simple(&user).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.wechat.sends().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the send never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    app.stop.stop().await;

    let uuid = uuid::Uuid::parse_str(&id).expect("uuid");
    let handed_back = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (status, lease): (String, Option<chrono::DateTime<chrono::Utc>>) = app.query(|c| {
            messages::table
                .find(uuid)
                .select((messages::status, messages::lease_until))
                .first(c)
        });
        assert_eq!(status, "sending");
        if lease.is_some_and(|l| l <= chrono::Utc::now()) {
            break;
        }
        assert!(
            std::time::Instant::now() < handed_back,
            "the lease was left to run out (60 s): {lease:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another process takes it at once and WeChat's client_msg_id makes the resend harmless.
    let next = app.spawn_peer(ProcessRole::Worker, |_| {});
    let sent_by = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status: String =
            app.query(|c| messages::table.find(uuid).select(messages::status).first(c));
        if status == "sent" {
            break;
        }
        assert!(
            std::time::Instant::now() < sent_by,
            "not taken again at once: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    next.stop.stop().await;
}
