//! Broadcasts: one request, one message per recipient, skipped recipients counted by reason,
//! counts by status, the messages listed, cancelling what has not been sent.
use serde_json::{Value, json};
use wxbind_tests::{TestApp, assert_error, now, push_xml, spawn_app};

async fn broadcast(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.post_json(token, "/api/broadcasts", body).await
}

async fn wait_done(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let b: Value = app
            .get_as(token, &format!("/api/broadcasts/{id}"))
            .await
            .json()
            .await
            .expect("json");
        if b["status"] == "done" {
            return b;
        }
        assert!(std::time::Instant::now() < deadline, "never done: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

#[actix_web::test]
async fn a_broadcast_reaches_every_bound_follower_and_counts_the_rest_as_skipped() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let key = app.api_key(&admin.token, "backend", "send").await;
    let mut bound = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let u = app.user(name).await;
        app.bind(&u, &format!("openid-{name}")).await;
        bound.push(u);
    }
    let unbound = app.user("dave").await;
    // Carol unfollowed: WeChat would refuse her message, so she is skipped.
    let resp = app
        .push_plain(&push_xml("openid-carol", now(), "unsubscribe", ""))
        .await;
    assert_eq!(resp.status(), 200);

    let body = json!({
        "template_id": "TEMPLATE_X",
        "data": {"first": {"value": "hello"}, "k": {"value": "everyone"}},
        "data_by_user": {(bound[1].id.to_string()): {"k": {"value": "Bob"}}},
        "recipients": {"user_ids": [bound[0].id, bound[1].id, bound[1].id, bound[2].id, unbound.id, 999_999]},
        "idempotency_key": "launch-1",
    });
    let resp = broadcast(&app, &key, &body).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let made: Value = resp.json().await.expect("json");
    let id = made["id"].as_str().expect("id").to_owned();
    assert_eq!(made["total"], 5, "{made}");
    assert_eq!(made["counts"]["skipped"], 3, "{made}");
    assert_eq!(made["skipped_reasons"]["not_bound"], 1);
    assert_eq!(made["skipped_reasons"]["user_not_found"], 1);
    assert_eq!(made["skipped_reasons"]["not_following"], 1);
    assert_eq!(
        made["counts"]["queued"].as_i64().unwrap_or(0)
            + made["counts"]["sending"].as_i64().unwrap_or(0)
            + made["counts"]["sent"].as_i64().unwrap_or(0),
        2,
        "{made}"
    );

    // The same key again: the same broadcast, nothing queued twice.
    let again = broadcast(&app, &key, &body).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], id.as_str());

    let done = wait_done(&app, &key, &id).await;
    assert_eq!(done["counts"]["sent"], 2, "{done}");
    assert_eq!(done["delivery"]["unknown"], 2);
    let sends = app.wechat.sends();
    assert_eq!(sends.len(), 2);
    let bob = sends
        .iter()
        .find(|s| s.touser == "openid-bob")
        .expect("bob's");
    assert_eq!(bob.data["k"]["value"], "Bob");
    assert_eq!(bob.data["first"]["value"], "hello");
    let alice = sends
        .iter()
        .find(|s| s.touser == "openid-alice")
        .expect("alice's");
    assert_eq!(alice.data["k"]["value"], "everyone");

    // Its messages, listed and filtered; the log filters by broadcast too.
    let page: Value = app
        .get_as(
            &key,
            &format!("/api/broadcasts/{id}/messages?status=sent&limit=1"),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["messages"].as_array().expect("list").len(), 1);
    assert_eq!(page["messages"][0]["broadcast_id"], id.as_str());
    let cursor = page["next_cursor"].as_str().expect("more");
    let rest: Value = app
        .get_as(
            &key,
            &format!("/api/broadcasts/{id}/messages?status=sent&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["messages"].as_array().expect("list").len(), 1);
    assert_ne!(rest["messages"][0]["id"], page["messages"][0]["id"]);
    let log: Value = app
        .get_as(&admin.token, &format!("/api/messages?broadcast_id={id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["messages"].as_array().expect("list").len(), 2);

    // The audit log has the broadcast, by the key.
    let audit: Value = app
        .get_as(&admin.token, "/api/audit?action=broadcast.created")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(audit["items"][0]["actor"], "key:backend", "{audit}");
    assert_eq!(audit["items"][0]["target"], id.as_str());
    assert_eq!(audit["items"][0]["details"]["queued"], 2);
}

#[actix_web::test]
async fn all_bound_validation_and_who_may_broadcast() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let bob = app.user("bob").await;
    app.bind(&bob, "openid-bob").await;
    let base = json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"all_bound": true}});

    let resp = broadcast(&app, &alice.token, &base).await;
    assert_error(resp, 403, "forbidden").await;
    let resp = broadcast(&app, &admin.token, &base).await;
    assert_eq!(resp.status(), 202);
    let made: Value = resp.json().await.expect("json");
    assert_eq!(made["total"], 2, "{made}");
    let id = made["id"].as_str().expect("id");
    wait_done(&app, &admin.token, id).await;
    // A user cannot see someone else's broadcast; nobody sees one that does not exist.
    let resp = app
        .get_as(&alice.token, &format!("/api/broadcasts/{id}"))
        .await;
    assert_error(resp, 403, "forbidden").await;
    let other_key = app.api_key(&admin.token, "other", "send").await;
    let resp = app
        .get_as(&other_key, &format!("/api/broadcasts/{id}"))
        .await;
    assert_error(resp, 404, "broadcast_not_found").await;
    let resp = app.get_as(&admin.token, "/api/broadcasts/nope").await;
    assert_error(resp, 404, "broadcast_not_found").await;

    for (body, why) in [
        (
            json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"user_ids": []}}),
            "no recipients",
        ),
        (
            json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"all_bound": false}}),
            "all_bound false",
        ),
        (
            json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {}}),
            "no recipients key",
        ),
        (
            json!({"template_id": "TEMPLATE_X", "data": {}, "recipients": {"all_bound": true}}),
            "no data",
        ),
        (
            json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "data_by_user": {"x": {"k": {"value": "w"}}}, "recipients": {"all_bound": true}}),
            "bad user id",
        ),
        (
            json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"all_bound": true}, "send_at": "2099-01-01T00:00:00Z"}),
            "too far ahead",
        ),
        (
            json!({"template_id": "bad id!", "data": {"k": {"value": "v"}}, "recipients": {"all_bound": true}}),
            "bad template id",
        ),
    ] {
        let resp = broadcast(&app, &admin.token, &body).await;
        assert_eq!(resp.status(), 400, "{why}");
        let err: Value = resp.json().await.expect("json");
        assert_eq!(err["error"]["code"], "invalid_request", "{why}: {err}");
    }
}

#[actix_web::test]
async fn cancelling_fails_what_was_not_sent_with_reason_cancelled() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    // Scheduled for later: nothing is sent before it is cancelled.
    let at = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let resp = broadcast(
        &app,
        &admin.token,
        &json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"user_ids": [alice.id]}, "send_at": at}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let made: Value = resp.json().await.expect("json");
    assert_eq!(made["status"], "scheduled", "{made}");
    let id = made["id"].as_str().expect("id");
    let cancelled: Value = app
        .post_json(
            &admin.token,
            &format!("/api/broadcasts/{id}/cancel"),
            &json!({}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["counts"]["failed"], 1);
    let page: Value = app
        .get_as(&admin.token, &format!("/api/broadcasts/{id}/messages"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["messages"][0]["status"], "failed");
    assert_eq!(page["messages"][0]["reason"], "cancelled");
    assert!(app.wechat.sends().is_empty());
}

#[actix_web::test]
async fn a_broadcast_is_admitted_with_its_size_and_scheduled_messages_count() {
    let app = wxbind_tests::spawn_app_with(|c| c.delivery.max_queued_per_sender = 2).await;
    let admin = app.admin("root").await;
    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let u = app.user(name).await;
        app.bind(&u, &format!("openid-{name}")).await;
        ids.push(u.id);
    }
    // Larger than the limit itself: waiting would never help, so 400, not 429.
    let body = json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"user_ids": ids}});
    let resp = broadcast(&app, &admin.token, &body).await;
    assert_error(resp, 400, "invalid_request").await;
    let resp = broadcast(&app, &admin.token, &json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"all_bound": true}})).await;
    assert_error(resp, 400, "invalid_request").await;

    // Two scheduled messages fill the sender's allowance: a third is refused.
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    for to in &ids[..2] {
        let resp = app
            .post_message(
                &admin.token,
                &json!({"user_id": to, "data": {"k": {"value": "later"}}, "send_at": later}),
            )
            .await;
        assert_eq!(resp.status(), 202);
    }
    // The limit reads the queue at most once a second per sender and process.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let resp = app
        .post_message(
            &admin.token,
            &json!({"user_id": ids[2], "data": {"k": {"value": "later"}}, "send_at": later}),
        )
        .await;
    assert_error(resp, 429, "too_many_requests").await;
    let one = json!({"template_id": "TEMPLATE_X", "data": {"k": {"value": "v"}}, "recipients": {"user_ids": [ids[2]]}});
    let resp = broadcast(&app, &admin.token, &one).await;
    assert_error(resp, 429, "too_many_requests").await;
}
