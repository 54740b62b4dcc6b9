//! Send limits: a non-admin's messages a minute, every sender's waiting messages, and the
//! retention of finished ones.
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use serde_json::json;
use wxbind_tests::{assert_error, metric, simple_message, spawn_app_with};

#[actix_web::test]
async fn a_user_is_limited_to_their_sends_a_minute_and_an_admin_is_not() {
    let app = spawn_app_with(|c| c.delivery.user_sends_per_minute = 3).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let admin = app.admin("root").await;
    let refusals = [("code", "too_many_requests"), ("reason", "per_minute")];
    let (_, before) = app.scrape_metrics().await;

    for _ in 0..3 {
        assert_eq!(
            app.post_message(&user.token, &simple_message())
                .await
                .status(),
            202
        );
    }
    let refused = app.post_message(&user.token, &simple_message()).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(refused, 429, "too_many_requests").await;
    let (_, after) = app.scrape_metrics().await;
    let counted = |m| metric(m, "wxbind_rate_limited_total", &refusals).expect("series");
    assert!(counted(&after) >= counted(&before) + 1.0);

    let to_alice = json!({"user_id": user.id, "data": {"keyword1": {"value": "from ops"}}});
    for _ in 0..5 {
        assert_eq!(
            app.post_message(&admin.token, &to_alice).await.status(),
            202
        );
    }
}

#[actix_web::test]
async fn a_sender_with_a_full_queue_is_refused_until_it_drains() {
    let app = spawn_app_with(|c| c.delivery.max_queued_per_sender = 5).await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let mut conn = app.db.conn();
    diesel::sql_query(
        "INSERT INTO send_pause (paused_until, errmsg) VALUES (now() + interval '1 hour', 'test')",
    )
    .execute(&mut conn)
    .expect("pause");
    let body = json!({"user_id": user.id, "data": {"keyword1": {"value": "queued"}}});
    let refusals = [("code", "too_many_requests"), ("reason", "queue_full")];
    let (_, before) = app.scrape_metrics().await;

    for _ in 0..5 {
        assert_eq!(app.post_message(&admin.token, &body).await.status(), 202);
    }
    let refused = app.post_message(&admin.token, &body).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 429, "too_many_requests").await;
    let (_, after) = app.scrape_metrics().await;
    let counted = |m| metric(m, "wxbind_rate_limited_total", &refusals).expect("series");
    assert!(counted(&after) >= counted(&before) + 1.0);
    // Another sender's queue is their own.
    assert_eq!(
        app.post_message(&user.token, &simple_message())
            .await
            .status(),
        202
    );

    diesel::sql_query("DELETE FROM send_pause")
        .execute(&mut conn)
        .expect("resume");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.wechat.delivered_count() < 6 {
        assert!(std::time::Instant::now() < deadline, "never drained");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.post_message(&admin.token, &body).await.status(), 202);
}

#[actix_web::test]
async fn housekeeping_deletes_finished_messages_past_their_retention_in_batches() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let mut conn = app.db.conn();
    // 12,000 finished messages from 100 days ago (more than two delete batches), a queued one
    // as old, and finished ones from yesterday.
    // The queued one waits for a retry tomorrow, so the worker leaves it alone.
    diesel::sql_query(
        "INSERT INTO messages (id, sender_id, user_id, template_id, data, status, created_at,
                               attempts, next_attempt_at)
         SELECT gen_random_uuid(), $1, $1, 'T', '{}'::jsonb,
                CASE WHEN g % 2 = 0 THEN 'sent' ELSE 'failed' END,
                now() - interval '100 days', 1, now()
         FROM generate_series(1, 12000) g
         UNION ALL SELECT gen_random_uuid(), $1, $1, 'T', '{}'::jsonb, 'queued',
                          now() - interval '100 days', 1, now() + interval '1 day'
         UNION ALL SELECT gen_random_uuid(), $1, $1, 'T', '{}'::jsonb, 'sent',
                          now() - interval '1 day', 1, now()",
    )
    .bind::<diesel::sql_types::BigInt, _>(user.id)
    .execute(&mut conn)
    .expect("seed");
    let pool = wxbind::db::build_pool(
        secrecy::ExposeSecret::expose_secret(&app.config.database.url),
        2,
    );

    let purged =
        wxbind::housekeeping::purge_messages(&pool, Utc::now() - TimeDelta::days(90)).await;

    assert_eq!(purged, 12_000);
    let left: Vec<(String, bool)> = diesel::sql_query(
        "SELECT status, created_at < now() - interval '90 days' AS old FROM messages ORDER BY status",
    )
    .load::<Left>(&mut conn)
    .expect("rows")
    .into_iter()
    .map(|l| (l.status, l.old))
    .collect();
    assert_eq!(
        left,
        [("queued".to_owned(), true), ("sent".to_owned(), false)],
        "a queued message is never purged, a recent one is kept"
    );
}

#[derive(QueryableByName)]
struct Left {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    old: bool,
}
