//! Claims interleave senders: one sender's backlog does not hold back another sender's
//! message for more than a claim round.
use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;
use wxbind_tests::spawn_app_with;

#[actix_web::test]
async fn a_senders_backlog_does_not_starve_another_senders_message() {
    let app = spawn_app_with(|c| c.delivery.concurrency = 4).await;
    let backend = app.admin("backend").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let bob = app.user("bob").await;
    app.bind(&bob, "openid-bob").await;
    // Hold delivery while the queue fills, so the order of claims is all that decides.
    let mut conn = app.db.conn();
    diesel::sql_query(
        "INSERT INTO send_pause (paused_until, errmsg) VALUES (now() + interval '1 hour', 'test')",
    )
    .execute(&mut conn)
    .expect("pause");

    // The backend queues 300 messages for alice, then bob queues one for himself.
    let body = json!({"user_id": alice.id, "data": {"keyword1": {"value": "backlog"}}});
    for chunk in 0..6 {
        let posts = (0..50).map(|i| {
            let mut body = body.clone();
            body["idempotency_key"] = json!(format!("backlog-{chunk}-{i}"));
            let (app, token) = (&app, &backend.token);
            async move {
                assert_eq!(app.post_message(token, &body).await.status(), 202);
            }
        });
        futures_util::future::join_all(posts).await;
    }
    let theirs = app.send_simple(&bob).await;

    diesel::sql_query("DELETE FROM send_pause")
        .execute(&mut conn)
        .expect("resume");
    diesel::sql_query("SELECT pg_notify('wxbind_messages', '')")
        .execute(&mut conn)
        .expect("wake");

    let m = app.wait_for_final(&bob.token, &theirs).await;
    assert_eq!(m["status"], "sent", "{m}");
    let order: Vec<String> = app.wechat.sends().into_iter().map(|s| s.touser).collect();
    let position = order
        .iter()
        .position(|t| t == "openid-bob")
        .expect("bob's message was sent");
    // Oldest-first, bob's would be the 301st send; fairly, it goes in the first claim round
    // (at most as many sends as the worker has slots, twice over for the round in flight).
    assert!(
        position < 8,
        "bob's message was send number {} of {}",
        position + 1,
        order.len()
    );
    // The backlog still drains completely.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.wechat.delivered_count() < 301 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
