//! Signed webhooks: registered by admins, fed by the outbox in the transaction of each change,
//! delivered signed, in order per message, retried with backoff, disabled by a 410.
use serde_json::{Value, json};
use wxbind_tests::{Receiver, TestApp, assert_error, now, push_xml, spawn_app, spawn_app_with};

/// Registers `receiver` for `events` as `token`; returns (id, secret).
async fn register(
    app: &TestApp,
    token: &str,
    receiver: &Receiver,
    events: &[&str],
) -> (String, String) {
    let resp = app
        .post_json(
            token,
            "/api/webhooks",
            &json!({"url": receiver.url(), "events": events}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    let secret = body["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    (
        body["id"].as_str().expect("id").to_owned(),
        secret.to_owned(),
    )
}

async fn report_delivered(app: &TestApp, openid: &str, msgid: i64) {
    let extra = format!("<MsgID>{msgid}</MsgID><Status><![CDATA[success]]></Status>");
    let resp = app
        .push_plain(&push_xml(openid, now(), "TEMPLATESENDJOBFINISH", &extra))
        .await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn events_arrive_signed_in_order_per_message_and_failures_are_retried() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let receiver = Receiver::start().await;
    let (hook, secret) = register(
        &app,
        &admin.token,
        &receiver,
        &["message.sent", "message.delivered", "message.failed"],
    )
    .await;
    // The first event's first two attempts fail: the second event must wait for it.
    receiver.script(&[500, 503]);

    let id = app.send_simple(&alice).await;
    let sent = app.wait_for_status(&alice.token, &id, "sent").await;
    report_delivered(&app, "openid-alice", sent["msgid"].as_i64().expect("msgid")).await;

    let got = receiver
        .wait_for("message.sent then message.delivered", |r| {
            r.iter().any(|d| d.kind() == "message.delivered")
        })
        .await;
    let kinds: Vec<(&str, u16)> = got.iter().map(|d| (d.kind(), d.answered)).collect();
    assert_eq!(
        kinds,
        [
            ("message.sent", 500),
            ("message.sent", 503),
            ("message.sent", 200),
            ("message.delivered", 200)
        ]
    );
    for d in &got {
        assert!(d.signed_with(&secret), "bad signature on {:?}", d.json);
        assert!(!d.signed_with("some-other-secret-value"));
        assert_eq!(d.json["id"], d.id, "the body's id is the header's");
        assert_eq!(d.json["data"]["message_id"], id);
        assert!(d.json["created_at"].is_string());
    }
    // At least once with a stable id: the retries carry the first attempt's event id.
    assert_eq!(got[0].id, got[1].id);
    assert_eq!(got[1].id, got[2].id);
    assert_ne!(got[2].id, got[3].id);
    assert_eq!(got[0].json["data"]["status"], "sent");
    assert_eq!(got[3].json["data"]["delivery"], "delivered");

    // The deliveries log: newest first, with attempts and the last answer.
    let log: Value = app
        .get_as(&admin.token, &format!("/api/webhooks/{hook}/deliveries"))
        .await
        .json()
        .await
        .expect("json");
    let items = log["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(items[0]["event_type"], "message.delivered");
    assert_eq!(items[1]["event_type"], "message.sent");
    assert_eq!(items[1]["attempts"], 3);
    assert_eq!(items[1]["state"], "delivered");
    assert_eq!(items[1]["last_status_code"], 200);
    // A page of one, then the rest.
    let page: Value = app
        .get_as(
            &admin.token,
            &format!("/api/webhooks/{hook}/deliveries?limit=1"),
        )
        .await
        .json()
        .await
        .expect("json");
    let cursor = page["next_cursor"].as_str().expect("more");
    let rest: Value = app
        .get_as(
            &admin.token,
            &format!("/api/webhooks/{hook}/deliveries?limit=1&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["items"][0]["event_type"], "message.sent");
    assert!(rest["next_cursor"].is_null());
    let bad = app
        .get_as(
            &admin.token,
            &format!("/api/webhooks/{hook}/deliveries?cursor=x"),
        )
        .await;
    assert_error(bad, 400, "invalid_request").await;
}

#[actix_web::test]
async fn a_410_disables_the_endpoint_and_nothing_more_is_sent_to_it() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let receiver = Receiver::start().await;
    let (hook, _) = register(&app, &admin.token, &receiver, &["message.sent"]).await;
    receiver.script(&[410]);

    let first = app.send_simple(&alice).await;
    app.wait_for_status(&alice.token, &first, "sent").await;
    receiver
        .wait_for("the first event", |r| !r.is_empty())
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let shown = loop {
        let shown: Value = app
            .get_as(&admin.token, &format!("/api/webhooks/{hook}"))
            .await
            .json()
            .await
            .expect("json");
        if !shown["disabled_at"].is_null() || std::time::Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(shown["disabled_at"].is_string(), "{shown}");
    assert!(
        shown["disabled_reason"]
            .as_str()
            .expect("reason")
            .contains("410"),
        "{shown}"
    );
    assert!(shown.get("secret").is_none(), "the secret is shown once");

    let second = app.send_simple(&alice).await;
    app.wait_for_status(&alice.token, &second, "sent").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint gets nothing"
    );
}

#[actix_web::test]
async fn binding_and_follow_events_and_a_test_ping() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let receiver = Receiver::start().await;
    let (hook, secret) = register(
        &app,
        &admin.token,
        &receiver,
        &[
            "binding.created",
            "binding.removed",
            "user.followed",
            "user.unfollowed",
        ],
    )
    .await;

    let ping: Value = app
        .post_json(
            &admin.token,
            &format!("/api/webhooks/{hook}/test"),
            &json!({}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ping["delivered"], true, "{ping}");
    assert_eq!(ping["status_code"], 200);

    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let resp = app
        .push_plain(&push_xml("openid-alice", now(), "subscribe", ""))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .push_plain(&push_xml("openid-alice", now() + 1, "unsubscribe", ""))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.delete_binding(&alice.token).await.status(), 204);

    let got = receiver.wait_for("five events", |r| r.len() >= 5).await;
    let kinds: Vec<&str> = got.iter().map(|d| d.kind()).collect();
    assert_eq!(kinds[0], "webhook.test");
    let mut rest = kinds[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(
        rest,
        [
            "binding.created",
            "binding.removed",
            "user.followed",
            "user.unfollowed"
        ]
    );
    let position = |k: &str| kinds.iter().position(|x| *x == k).expect("kind");
    assert!(position("binding.created") < position("binding.removed"));
    assert!(position("user.followed") < position("user.unfollowed"));
    for d in &got {
        assert!(d.signed_with(&secret));
    }
    let created = &got[position("binding.created")].json["data"];
    assert_eq!(created["user_id"], alice.id);
    assert_eq!(created["openid"], "openid-alice");
    assert_eq!(
        got[position("user.followed")].json["data"]["user_id"],
        alice.id
    );
}

#[actix_web::test]
async fn only_admins_register_http_targets_and_private_ones_are_refused_by_default() {
    let app = spawn_app_with(|c| c.webhooks.allow_private = false).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let send_key = app.api_key(&admin.token, "backend", "send").await;
    let good = json!({"url": "https://203.0.114.7/hook", "events": ["message.sent"]});
    for token in [&alice.token, &send_key] {
        let resp = app.post_json(token, "/api/webhooks", &good).await;
        assert_error(resp, 403, "forbidden").await;
        let resp = app.get_as(token, "/api/webhooks").await;
        assert_error(resp, 403, "forbidden").await;
    }
    for (body, why) in [
        (
            json!({"url": "http://127.0.0.1:9/hook", "events": ["message.sent"]}),
            "loopback",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["message.sent"]}),
            "metadata",
        ),
        (
            json!({"url": "http://10.0.0.8/hook", "events": ["message.sent"]}),
            "private",
        ),
        (
            json!({"url": "http://[::1]/hook", "events": ["message.sent"]}),
            "IPv6 loopback",
        ),
        (
            json!({"url": "http://localhost/hook", "events": ["message.sent"]}),
            "localhost",
        ),
        (
            json!({"url": "ftp://example.com/hook", "events": ["message.sent"]}),
            "scheme",
        ),
        (
            json!({"url": "https://203.0.114.7/hook", "events": []}),
            "no events",
        ),
        (
            json!({"url": "https://203.0.114.7/hook", "events": ["message.eaten"]}),
            "unknown event",
        ),
        (
            json!({"url": "https://203.0.114.7/hook", "events": ["message.sent"], "secret": "short"}),
            "short secret",
        ),
    ] {
        let resp = app.post_json(&admin.token, "/api/webhooks", &body).await;
        assert_eq!(resp.status(), 400, "{why}");
        let err: Value = resp.json().await.expect("json");
        assert_eq!(err["error"]["code"], "invalid_request", "{why}");
    }
    // A public target is taken (nothing is sent to it here), listed, and removed.
    let resp = app.post_json(&admin.token, "/api/webhooks", &good).await;
    assert_eq!(resp.status(), 201);
    let made: Value = resp.json().await.expect("json");
    let id = made["id"].as_str().expect("id");
    let list: Value = app
        .get_as(&admin.token, "/api/webhooks")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"][0]["id"], id);
    assert!(list["items"][0].get("secret").is_none());
    let resp = app
        .http
        .delete(app.url(&format!("/api/webhooks/{id}")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 204);
    let resp = app
        .get_as(&admin.token, &format!("/api/webhooks/{id}"))
        .await;
    assert_error(resp, 404, "webhook_not_found").await;
    let resp = app.get_as(&admin.token, "/api/webhooks/not-a-uuid").await;
    assert_error(resp, 404, "webhook_not_found").await;

    // Both changes are in the audit log, by the admin, without the secret.
    let audit: Value = app
        .get_as(&admin.token, "/api/audit")
        .await
        .json()
        .await
        .expect("json");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["target"] == id)
        .map(|r| r["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["webhook.deleted", "webhook.created"], "{audit}");
    assert!(
        !audit.to_string().contains("whsec_"),
        "no secret in the audit log"
    );
}

#[actix_web::test]
async fn a_slow_endpoint_holds_a_few_delivery_slots_and_the_others_keep_flowing() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    // Slower than the test app's 2 s delivery timeout: every attempt there ties up a slot.
    let slow = Receiver::start_slow(std::time::Duration::from_secs(3)).await;
    let fast = Receiver::start().await;
    register(&app, &admin.token, &slow, &["message.sent"]).await;
    register(&app, &admin.token, &fast, &["message.sent"]).await;
    let ids = app.queue_many(&alice, 24).await;
    for id in &ids {
        app.wait_for_status(&alice.token, id, "sent").await;
    }
    fast.wait_for("every message.sent", |r| r.len() >= ids.len())
        .await;
    // The fast endpoint got all 24 while the slow one, answering nothing within the 2 s
    // timeout, had at most 4 in flight: no 1.5 s window holds more than 4 of its arrivals
    // (without the cap the first 16 would arrive at once and the fast one would wait).
    let arrivals: Vec<std::time::Instant> = slow.received().iter().map(|r| r.at).collect();
    assert!(!arrivals.is_empty(), "the slow endpoint is tried too");
    let crowded = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start).as_millis() < 1500)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        crowded <= 4,
        "{crowded} attempts at the slow endpoint within 1.5 s"
    );
}
