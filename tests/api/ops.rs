use serde_json::Value;
use wxbind_tests::{Sample, assert_error, metric, spawn_app, spawn_app_with};

#[actix_web::test]
async fn health_is_ok() {
    let app = spawn_app().await;
    let resp = app.get("/api/health").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["wechat_configured"], true);
}

#[actix_web::test]
async fn ready_is_200_with_a_migrated_database() {
    let app = spawn_app().await;
    let resp = app.get("/api/ready").await;
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn ready_is_503_when_the_database_is_unreachable() {
    let app = spawn_app_with(|c| {
        c.database.url = secrecy::SecretString::from(
            "postgres://postgres@127.0.0.1:1/nowhere?sslmode=disable&gssencmode=disable".to_owned(),
        );
    })
    .await;
    assert_error(app.get("/api/ready").await, 503, "unavailable").await;
    // Liveness does not depend on the database.
    assert_eq!(app.get("/api/health").await.status(), 200);
}

#[actix_web::test]
async fn ready_is_503_when_migrations_are_pending() {
    use diesel::prelude::*;
    let app = spawn_app().await;
    app.query(|c| diesel::sql_query("DELETE FROM __diesel_schema_migrations").execute(c));
    assert_error(app.get("/api/ready").await, 503, "unavailable").await;
}

#[actix_web::test]
async fn served_openapi_equals_the_committed_file() {
    let app = spawn_app().await;
    let served: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../openapi/openapi.json"
        ))
        .expect("openapi/openapi.json"),
    )
    .expect("json");
    assert_eq!(
        served, committed,
        "regenerate with: UPDATE_OPENAPI=1 cargo test -p wxbind openapi"
    );
}

#[actix_web::test]
async fn swagger_ui_is_served() {
    let app = spawn_app().await;
    let bare = app.get("/api/docs").await;
    assert!(bare.status().is_redirection());
    assert_eq!(bare.headers()["location"], "/api/docs/");
    let page = app.get("/api/docs/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("swagger"));
}

#[actix_web::test]
async fn unknown_routes_get_json_404_and_wrong_methods_json_405() {
    let app = spawn_app().await;
    assert_error(app.get("/api/nope").await, 404, "not_found").await;
    assert_error(app.get("/elsewhere").await, 404, "not_found").await;

    let wrong = app
        .http
        .get(app.url("/api/login"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.headers()["allow"], "POST");
    assert_error(wrong, 405, "method_not_allowed").await;
    let wrong = app
        .http
        .put(app.url("/api/messages/abc"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.headers()["allow"], "GET");
    assert_error(wrong, 405, "method_not_allowed").await;
}

#[actix_web::test]
async fn metrics_show_sends_logins_pushes_and_latencies_with_bounded_labels() {
    use wxbind_tests::{SendReply, TEST_PASSWORD, now, push_xml};

    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    // The recorder is process-wide and other tests run alongside: counters are compared with
    // what they were before, and only ever grow.
    let (_, before) = app.scrape_metrics().await;
    let grew = |after: &[Sample], name: &str, labels: &[(&str, &str)]| {
        let was = metric(&before, name, labels).unwrap_or(0.0);
        let is = metric(after, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing"));
        assert!(is >= was + 1.0, "{name} {labels:?}: {was} -> {is}");
    };

    let sent = app.send_simple(&user).await;
    assert_eq!(
        app.wait_for_final(&user.token, &sent).await["status"],
        "sent"
    );
    app.wechat.script_sends([SendReply::Errcode(40003)]);
    let failed = app.send_simple(&user).await;
    assert_eq!(
        app.wait_for_final(&user.token, &failed).await["status"],
        "failed"
    );
    assert_error(
        app.post_login("alice", "not-the-password").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.post_login("alice", TEST_PASSWORD).await.status(), 200);
    let follow = push_xml("openid-alice", now(), "subscribe", "");
    assert_eq!(app.push_plain(&follow).await.status(), 200);
    let forged = format!("signature=0000&timestamp={}&nonce=1234&openid=x", now());
    assert_error(
        app.post_push(&forged, &follow).await,
        401,
        "invalid_signature",
    )
    .await;

    let (text, after) = app.scrape_metrics().await;
    grew(&after, "wxbind_messages_accepted_total", &[]);
    grew(
        &after,
        "wxbind_sends_total",
        &[("outcome", "sent"), ("errcode_class", "none")],
    );
    grew(
        &after,
        "wxbind_sends_total",
        &[("outcome", "failed"), ("errcode_class", "permanent")],
    );
    grew(&after, "wxbind_logins_total", &[("outcome", "invalid")]);
    grew(&after, "wxbind_logins_total", &[("outcome", "ok")]);
    grew(&after, "wxbind_pushes_total", &[("type", "subscribe")]);
    grew(
        &after,
        "wxbind_pushes_rejected_total",
        &[("reason", "bad_signature")],
    );
    grew(&after, "wxbind_claims_total", &[("result", "ok")]);
    grew(&after, "wxbind_claimed_messages_total", &[]);
    grew(
        &after,
        "wxbind_wechat_requests_total",
        &[("endpoint", "template_send"), ("result", "ok")],
    );
    grew(
        &after,
        "wxbind_wechat_requests_total",
        &[("endpoint", "template_send"), ("result", "errcode")],
    );
    grew(
        &after,
        "wxbind_wechat_request_duration_seconds_count",
        &[("endpoint", "template_send")],
    );
    grew(&after, "wxbind_enqueue_to_send_seconds_count", &[]);
    // Bound earlier, before the first scrape: there, not grown.
    assert!(metric(&after, "wxbind_bindings_total", &[]).is_some_and(|v| v >= 1.0));
    assert!(
        metric(
            &after,
            "wxbind_wechat_token_fetches_total",
            &[("result", "ok")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        metric(
            &after,
            "wxbind_wechat_requests_total",
            &[("endpoint", "oauth_code"), ("result", "ok")]
        )
        .is_some_and(|v| v >= 1.0)
    );

    // Real histograms, with the configured buckets.
    for le in ["0.005", "0.05", "1", "10", "+Inf"] {
        assert!(
            metric(
                &after,
                "wxbind_wechat_request_duration_seconds_bucket",
                &[("endpoint", "template_send"), ("le", le)]
            )
            .is_some_and(|v| v >= 2.0),
            "template_send bucket le={le}\n{text}"
        );
    }
    for le in ["0.05", "1", "60", "3600", "86400", "+Inf"] {
        assert!(
            metric(
                &after,
                "wxbind_enqueue_to_send_seconds_bucket",
                &[("le", le)]
            )
            .is_some(),
            "enqueue-to-send bucket le={le}\n{text}"
        );
    }
    assert!(
        metric(
            &after,
            "wxbind_enqueue_to_send_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(
        text.contains("# TYPE wxbind_wechat_request_duration_seconds histogram"),
        "{text}"
    );

    // The gauges the worker's probe sets at start.
    for state in ["waiting", "retrying", "sending"] {
        assert!(
            metric(&after, "wxbind_queue_depth", &[("state", state)]).is_some(),
            "{state}\n{text}"
        );
    }
    for state in ["waiting", "retrying"] {
        assert!(
            metric(
                &after,
                "wxbind_queue_oldest_age_seconds",
                &[("state", state)]
            )
            .is_some(),
            "{state}"
        );
    }
    assert!(metric(&after, "wxbind_send_paused", &[]).is_some());
    assert!(metric(&after, "wxbind_queue_probed_at_seconds", &[]).is_some_and(|t| t > 1.7e9));

    // Bounded labels: only these names, and never an id, openid or template.
    let allowed = [
        "outcome",
        "errcode_class",
        "result",
        "endpoint",
        "state",
        "code",
        "reason",
        "type",
        "le",
    ];
    let user_id = user.id.to_string();
    let secrets = [
        "openid-alice",
        wxbind_tests::DEFAULT_TEMPLATE,
        &user_id,
        &sent,
    ];
    for (name, labels, _) in after.iter().filter(|(n, ..)| n.starts_with("wxbind_")) {
        for (k, v) in labels.iter().filter(|(k, _)| k != "le") {
            assert!(allowed.contains(&k.as_str()), "{name} has label {k}");
            assert!(!secrets.contains(&v.as_str()), "{name} has {k}={v}");
        }
    }
    assert!(
        !text.contains("openid-alice") && !text.contains(&sent),
        "{text}"
    );
}

#[actix_web::test]
async fn responses_carry_nosniff_and_no_referrer_and_hsts_only_over_https() {
    let app = spawn_app().await;
    for path in ["/api/health", "/api/nowhere", "/api/docs/"] {
        let resp = app.get(path).await;
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "{path}");
    }
    let https = spawn_app_with(|c| {
        c.http.public_url = url::Url::parse("https://wxbind.example.com").expect("url");
    })
    .await;
    let resp = https.get("/api/health").await;
    assert!(
        resp.headers()["strict-transport-security"]
            .to_str()
            .expect("ascii")
            .starts_with("max-age=")
    );
}

#[actix_web::test]
async fn metrics_need_the_token_when_one_is_set() {
    let app = spawn_app_with(|c| {
        c.http.metrics_token = Some(secrecy::SecretString::from(
            "test-metrics-token-0123".to_owned(),
        ));
    })
    .await;
    assert_error(app.get("/api/metrics").await, 401, "unauthorized").await;
    let wrong = app.get_as("test-metrics-token-0124", "/api/metrics").await;
    assert_error(wrong, 401, "unauthorized").await;
    let right = app.get_as("test-metrics-token-0123", "/api/metrics").await;
    assert_eq!(right.status(), 200);
    assert!(right.text().await.expect("body").contains("wxbind_"));
}

#[actix_web::test]
async fn the_queue_probe_counts_by_state_and_finds_the_oldest_at_the_head() {
    use diesel::prelude::*;
    let db = wxbind_tests::TestDb::create();
    let mut conn = db.conn();
    let empty = wxbind::db::messages::queue_stats(&mut conn).expect("stats");
    assert_eq!((empty.waiting, empty.retrying, empty.sending), (0, 0, 0));
    assert_eq!(
        (empty.oldest_waiting, empty.oldest_retrying, empty.paused),
        (None, None, false)
    );

    diesel::sql_query(
        "INSERT INTO users (id, username, password_hash, role, openid, bound_at)
         VALUES (1, 'alice', 'x', 'user', 'openid-alice', now()),
                (2, 'bob', 'x', 'user', 'openid-bob', now())",
    )
    .execute(&mut conn)
    .expect("users");
    // Alice has a backlog ranked 1..3, the oldest first; bob one message queued later but
    // ranked near the head; two retries, one claimed, one sent.
    diesel::sql_query(
        "INSERT INTO messages (id, sender_id, user_id, template_id, data, status, attempts,
                               fair_rank, created_at, next_attempt_at, lease_until)
         VALUES (gen_random_uuid(), 1, 1, 'T', '{}', 'queued', 0, 1, now() - interval '300 s', now(), NULL),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'queued', 0, 2, now() - interval '200 s', now(), NULL),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'queued', 0, 3, now() - interval '100 s', now(), NULL),
                (gen_random_uuid(), 2, 2, 'T', '{}', 'queued', 0, 2, now() - interval '50 s', now(), NULL),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'queued', 2, 0, now() - interval '900 s', now() + interval '1 min', NULL),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'queued', 1, 0, now() - interval '600 s', now() - interval '1 s', NULL),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'sending', 1, 0, now() - interval '10 s', now(), now() + interval '1 min'),
                (gen_random_uuid(), 1, 1, 'T', '{}', 'sent', 1, 0, now() - interval '5000 s', now(), NULL)",
    )
    .execute(&mut conn)
    .expect("messages");
    diesel::sql_query(
        "INSERT INTO send_pause (paused_until, errmsg) VALUES (now() + interval '1 hour', 'test')",
    )
    .execute(&mut conn)
    .expect("pause");

    let s = wxbind::db::messages::queue_stats(&mut conn).expect("stats");
    assert_eq!((s.waiting, s.retrying, s.sending), (4, 2, 1));
    let age =
        |t: Option<chrono::DateTime<chrono::Utc>>| (s.now - t.expect("an oldest")).num_seconds();
    assert!(
        (299..=301).contains(&age(s.oldest_waiting)),
        "{}",
        age(s.oldest_waiting)
    );
    assert!(
        (899..=901).contains(&age(s.oldest_retrying)),
        "{}",
        age(s.oldest_retrying)
    );
    assert!(s.paused);
}
