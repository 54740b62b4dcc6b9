use std::net::TcpListener;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind::db::schema::{messages, wechat_tokens};
use wxbind::domain::MessageStatus;
use wxbind::startup::Application;
use wxbind_tests::{SendReply, TestApp, TestUser, spawn_app, spawn_app_with};

async fn bound_user(app: &TestApp) -> TestUser {
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    user
}

#[actix_web::test]
async fn fifty_concurrent_sends_fetch_the_token_once() {
    let app = spawn_app().await;
    let user = bound_user(&app).await;

    let ids = app.queue_many(&user, 50).await;
    for id in &ids {
        assert_eq!(app.wait_for_final(&user.token, id).await["status"], "sent");
    }

    assert_eq!(
        app.wechat.token_requests().len(),
        1,
        "exactly one token fetch"
    );
    assert_eq!(app.wechat.delivered_count(), 50);
    // The token is shared through Postgres too.
    let stored: i64 = app.query(|c| wechat_tokens::table.count().get_result(c));
    assert_eq!(stored, 1);
}

#[actix_web::test]
async fn two_processes_share_one_token_fetch() {
    let app = spawn_app().await;
    let user = bound_user(&app).await;
    // A second instance on the same database and WeChat: its own memory cache, same queue.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let second =
        Application::build_with_listener(app.config.clone(), listener).expect("second app");
    actix_web::rt::spawn(second.run_until_stopped());

    let ids = app.queue_many(&user, 40).await;
    for id in &ids {
        assert_eq!(app.wait_for_final(&user.token, id).await["status"], "sent");
    }

    assert_eq!(
        app.wechat.token_requests().len(),
        1,
        "one fetch across both processes"
    );
    assert_eq!(app.wechat.delivered_count(), 40);
}

#[actix_web::test]
async fn an_invalid_token_is_refreshed_once_and_the_message_sent() {
    let app = spawn_app().await;
    let user = bound_user(&app).await;
    app.wechat.script_sends([SendReply::RevokeToken]);

    let id = app.send_simple(&user).await;
    let done = app.wait_for_final(&user.token, &id).await;

    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["attempts"], 1, "retried at once, within the attempt");
    assert_eq!(app.wechat.tokens_issued(), 2, "one refresh");
    let requests = app.wechat.token_requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.get("force_refresh").is_none()),
        "{requests:?}"
    );
    assert_eq!(app.wechat.sends().len(), 2);
}

#[actix_web::test]
async fn busy_and_server_errors_are_retried_until_sent() {
    let app = spawn_app().await;
    let user = bound_user(&app).await;
    app.wechat.script_sends([
        SendReply::Errcode(-1),
        SendReply::Http(500),
        SendReply::Errcode(45011),
    ]);

    let id = app.send_simple(&user).await;
    let done = app.wait_for_final(&user.token, &id).await;

    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["attempts"], 4);
    assert_eq!(
        done["errcode"],
        Value::Null,
        "a sent message carries no error"
    );
    assert_eq!(app.wechat.delivered_count(), 1);
}

#[actix_web::test]
async fn permanent_errcodes_fail_the_message_with_its_reason() {
    for errcode in [43004, 40003, 47003] {
        let app = spawn_app().await;
        let user = bound_user(&app).await;
        app.wechat.script_sends([SendReply::Errcode(errcode)]);

        let id = app.send_simple(&user).await;
        let done = app.wait_for_final(&user.token, &id).await;

        assert_eq!(done["status"], "failed", "{errcode}: {done}");
        assert_eq!(done["errcode"], errcode);
        assert!(done["errmsg"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(done["attempts"], 1, "{errcode}: not retried");
        assert_eq!(app.wechat.sends().len(), 1);
    }
}

#[actix_web::test]
async fn transient_failures_end_failed_after_the_attempt_bound() {
    let app = spawn_app().await; // max_attempts = 4
    let user = bound_user(&app).await;
    app.wechat
        .script_sends(std::iter::repeat_n(SendReply::Http(503), 10));

    let id = app.send_simple(&user).await;
    let done = app.wait_for_final(&user.token, &id).await;

    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempts"], 4);
    let reason = done["errmsg"].as_str().expect("errmsg");
    assert!(reason.contains("503"), "{reason}");
    assert_eq!(app.wechat.sends().len(), 4);
}

#[actix_web::test]
async fn a_lease_that_runs_out_mid_send_delivers_exactly_once() {
    let app = spawn_app_with(|c| {
        c.delivery.lease = Duration::from_millis(400);
        if let Some(w) = c.wechat.as_mut() {
            w.timeout = Duration::from_secs(3);
        }
    })
    .await;
    let user = bound_user(&app).await;
    // The first send hangs past the lease, so the message is claimed and sent again.
    app.wechat
        .script_sends([SendReply::Delay(Duration::from_millis(1200))]);

    let id = app.send_simple(&user).await;
    let done = app.wait_for_final(&user.token, &id).await;
    // Let the slow first attempt come back and try to record its outcome.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(
        app.wechat.sends().len(),
        2,
        "sent twice with one client_msg_id"
    );
    assert_eq!(app.wechat.delivered_count(), 1, "WeChat delivered it once");
    let after: Value = app
        .get_as(&user.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(after["status"], "sent");
    assert_eq!(after["attempts"], 2);
}

#[actix_web::test]
async fn a_crashed_claim_is_taken_again() {
    let app = spawn_app().await;
    let user = bound_user(&app).await;
    // A row as a crashed process leaves it: claimed, lease long gone.
    let id = uuid::Uuid::new_v4();
    app.query(|c| {
        diesel::insert_into(messages::table)
            .values((
                messages::id.eq(id),
                messages::sender_id.eq(user.id),
                messages::user_id.eq(user.id),
                messages::template_id.eq("T"),
                messages::data.eq(json!({"k": {"value": "v"}})),
                messages::status.eq(MessageStatus::Sending),
                messages::attempts.eq(1),
                messages::lease_until.eq(chrono::Utc::now() - chrono::TimeDelta::minutes(5)),
            ))
            .execute(c)
    });

    let done = app.wait_for_final(&user.token, &id.to_string()).await;

    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["attempts"], 2);
}

#[actix_web::test]
async fn a_recipient_who_unbinds_before_delivery_fails_the_message() {
    let app = spawn_app_with(|c| c.delivery.poll_interval = Duration::from_secs(60)).await;
    let user = bound_user(&app).await;
    // The binding goes before the worker gets to the message. Unbinding first and then
    // queueing directly (the API would refuse an unbound recipient) stands for that: every
    // insert wakes the workers, so queueing first would race the unbind.
    assert_eq!(app.delete_binding(&user.token).await.status(), 204);
    let id = uuid::Uuid::new_v4();
    app.query(|c| {
        diesel::insert_into(messages::table)
            .values((
                messages::id.eq(id),
                messages::sender_id.eq(user.id),
                messages::user_id.eq(user.id),
                messages::template_id.eq("T"),
                messages::data.eq(json!({"k": {"value": "v"}})),
            ))
            .execute(c)
    });
    // Any queued message wakes the worker; this one is refused (not bound), so wake it by
    // binding someone else and queueing theirs.
    let bob = app.user("bob").await;
    app.bind(&bob, "openid-bob").await;
    app.send_simple(&bob).await;

    let done = app.wait_for_final(&user.token, &id.to_string()).await;

    assert_eq!(done["status"], "failed");
    assert!(
        done["errmsg"]
            .as_str()
            .expect("errmsg")
            .contains("no longer bound")
    );
    assert!(
        app.wechat
            .sends()
            .iter()
            .all(|s| s.touser != "openid-alice")
    );
}

#[actix_web::test]
async fn a_wrong_app_secret_fails_messages_with_the_reason_and_never_leaks_it() {
    let app = spawn_app_with(|c| {
        if let Some(w) = c.wechat.as_mut() {
            w.app_secret = secrecy::SecretString::from("wrong-test-secret".to_owned());
        }
    })
    .await;
    let user = app.user("alice").await;
    // Binding needs the secret too; bind directly in the database.
    app.query(|c| {
        diesel::update(wxbind::db::schema::users::table)
            .set((
                wxbind::db::schema::users::openid.eq("openid-alice"),
                wxbind::db::schema::users::bound_at.eq(chrono::Utc::now()),
            ))
            .execute(c)
    });

    let id = app.send_simple(&user).await;
    let done = app.wait_for_final(&user.token, &id).await;

    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["errmsg"].as_str().expect("errmsg");
    assert!(reason.contains("40125"), "{reason}");
    assert!(!done.to_string().contains("wrong-test-secret"));
}
