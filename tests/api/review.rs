//! Messages WeChat holds for review (40252): never resent, never failed on the spot, settled by
//! the reconciliation against `queryblocktmplmsg` (blocked → failed, delivery `blocked`; not
//! listed within the settle time → sent, delivery unknown) or by a late delivery report.
use std::time::Duration;

use serde_json::Value;
use wxbind_tests::{SendReply, TestApp, TestUser, now, push_xml, spawn_app_with};

async fn reviewing_app(settle_seconds: u64) -> TestApp {
    spawn_app_with(|c| {
        c.delivery.review_interval = Duration::from_millis(200);
        c.delivery.review_settle = Duration::from_secs(settle_seconds);
    })
    .await
}

/// Queues a message for `user` that WeChat holds for review, and waits until it is
/// `under_review`.
async fn hold(app: &TestApp, user: &TestUser) -> String {
    app.wechat.script_sends([SendReply::Errcode(40252)]);
    let id = app.send_simple(user).await;
    app.wait_for_status(&user.token, &id, "under_review").await;
    id
}

/// Pushes WeChat's late report that the message `msgid` reached `openid`.
async fn report_delivered(app: &TestApp, openid: &str, msgid: i64) {
    let extra = format!("<MsgID>{msgid}</MsgID><Status><![CDATA[success]]></Status>");
    let resp = app
        .push_plain(&push_xml(openid, now(), "TEMPLATESENDJOBFINISH", &extra))
        .await;
    assert_eq!(resp.status(), 200);
}

async fn message(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_as(token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .expect("json")
}

#[actix_web::test]
async fn a_message_held_for_review_is_under_review_and_never_resent() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat.script_sends([SendReply::Errcode(40252)]);

    let id = app.send_simple(&user).await;

    let m = app.wait_for_status(&user.token, &id, "under_review").await;
    assert_eq!(m["errcode"], 40252, "{m}");
    assert!(
        m["errmsg"].as_str().is_some_and(|e| !e.is_empty()),
        "WeChat's errmsg is kept: {m}"
    );
    assert_eq!(m["delivery"], "unknown");
    // Rounds of reconciliation come and go; nothing is sent again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.wechat.sends().len(),
        1,
        "a held message is never resent"
    );
    let m = message(&app, &user.token, &id).await;
    assert_eq!(m["status"], "under_review", "{m}");
    // The reconciliation asked WeChat about the template, in WeChat's page shape.
    let queries = app.wechat.blocked_queries();
    assert!(!queries.is_empty(), "queryblocktmplmsg was asked");
    assert_eq!(queries[0]["tmpl_msg_id"], wxbind_tests::DEFAULT_TEMPLATE);
    assert_eq!(queries[0]["largest_id"], 0);
    assert_eq!(queries[0]["limit"], 100);
}

#[actix_web::test]
async fn a_message_review_blocked_ends_failed_with_delivery_blocked() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let other = app.user("bob").await;
    app.bind(&other, "openid-bob").await;
    app.wechat
        .script_sends([SendReply::Errcode(40252), SendReply::Errcode(40252)]);
    let blocked = app.send_simple(&user).await;
    app.wait_for_status(&user.token, &blocked, "under_review")
        .await;
    let kept = app.send_simple(&other).await;
    app.wait_for_status(&other.token, &kept, "under_review")
        .await;

    // WeChat lists alice's message (a blocked record of another recipient matches nothing).
    app.wechat
        .block("openid-alice", wxbind_tests::DEFAULT_TEMPLATE, now());
    app.wechat
        .block("openid-carol", wxbind_tests::DEFAULT_TEMPLATE, now());

    let m = app.wait_for_final(&user.token, &blocked).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["errcode"], 40252);
    assert_eq!(m["delivery"], "blocked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = message(&app, &other.token, &kept).await;
    assert_eq!(m["status"], "under_review", "bob's is not blocked: {m}");
    assert_eq!(app.wechat.sends().len(), 2);
}

#[actix_web::test]
async fn a_message_not_listed_as_blocked_within_the_settle_time_ends_sent() {
    let app = reviewing_app(1).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat.script_sends([SendReply::Errcode(40252)]);

    let id = app.send_simple(&user).await;

    app.wait_for_status(&user.token, &id, "under_review").await;
    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(
        m["delivery"], "unknown",
        "WeChat delivers approved ones itself"
    );
    assert!(m["errcode"].is_null(), "{m}");
    assert_eq!(app.wechat.sends().len(), 1);
}

#[actix_web::test]
async fn a_late_delivery_report_settles_a_message_under_review() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let id = hold(&app, &user).await;

    // Approved: WeChat delivers it and reports under a msgid the service never saw.
    report_delivered(&app, "openid-alice", 987654321).await;

    let m = message(&app, &user.token, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(m["delivery"], "delivered");
    assert_eq!(m["msgid"], 987_654_321_i64);
}

#[actix_web::test]
async fn a_report_matching_several_messages_under_review_is_not_guessed() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat
        .script_sends([SendReply::Errcode(40252), SendReply::Errcode(40252)]);
    let a = app.send_simple(&user).await;
    let b = app.send_simple(&user).await;
    app.wait_for_status(&user.token, &a, "under_review").await;
    app.wait_for_status(&user.token, &b, "under_review").await;

    report_delivered(&app, "openid-alice", 987654321).await;

    for id in [&a, &b] {
        let m = message(&app, &user.token, id).await;
        assert_eq!(m["status"], "under_review", "{m}");
    }
}

#[actix_web::test]
async fn a_long_blocked_history_is_paged_and_read_on_from_a_cursor() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    // 150 records from last week (two pages), then alice's.
    let week_ago = now() - 7 * 24 * 3600;
    for i in 0..150 {
        app.wechat.block(
            &format!("openid-old-{i}"),
            wxbind_tests::DEFAULT_TEMPLATE,
            week_ago,
        );
    }
    let id = hold(&app, &user).await;
    app.wechat
        .block("openid-alice", wxbind_tests::DEFAULT_TEMPLATE, now());

    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(
        (m["status"].as_str(), m["delivery"].as_str()),
        (Some("failed"), Some("blocked")),
        "{m}"
    );

    // A second message under review: the rounds now start past last week's records.
    let next = hold(&app, &user).await;
    let seen = app.wechat.blocked_queries().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later: Vec<i64> = app.wechat.blocked_queries()[seen..]
        .iter()
        .map(|q| q["largest_id"].as_i64().expect("largest_id"))
        .collect();
    assert!(!later.is_empty());
    assert!(
        later.iter().all(|&l| l >= 150),
        "rounds read on from the cursor: {later:?}"
    );
    let m = message(&app, &user.token, &next).await;
    assert_eq!(
        m["status"], "under_review",
        "the old record settles no second message: {m}"
    );
}

#[actix_web::test]
async fn a_message_stays_under_review_while_wechat_cannot_be_asked() {
    let app = reviewing_app(1).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat.fail(wxbind_tests::QUERY_BLOCKED, true);
    let id = hold(&app, &user).await;

    tokio::time::sleep(Duration::from_millis(1800)).await;
    let m = message(&app, &user.token, &id).await;
    assert_eq!(m["status"], "under_review", "not settled on a guess: {m}");

    app.wechat.fail(wxbind_tests::QUERY_BLOCKED, false);
    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
}

#[actix_web::test]
async fn a_block_is_matched_to_the_openid_it_went_to_after_the_user_unbinds() {
    let app = reviewing_app(3600).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    let id = hold(&app, &user).await;
    assert_eq!(app.delete_binding(&user.token).await.status(), 204);

    app.wechat
        .block("openid-alice", wxbind_tests::DEFAULT_TEMPLATE, now());

    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(
        (m["status"].as_str(), m["delivery"].as_str()),
        (Some("failed"), Some("blocked")),
        "{m}"
    );
}

#[actix_web::test]
async fn a_late_report_reaches_a_message_that_passed_review() {
    let app = reviewing_app(1).await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.wechat.script_sends([SendReply::Errcode(40252)]);
    let id = app.send_simple(&user).await;
    let m = app.wait_for_final(&user.token, &id).await;
    assert_eq!(
        (m["status"].as_str(), m["delivery"].as_str()),
        (Some("sent"), Some("unknown")),
        "{m}"
    );

    report_delivered(&app, "openid-alice", 555).await;

    let m = message(&app, &user.token, &id).await;
    assert_eq!(
        (m["delivery"].as_str(), m["msgid"].as_i64()),
        (Some("delivered"), Some(555)),
        "{m}"
    );
}
