//! Scheduled sends, quiet hours (urgent messages go through), the daily cap per user, and a
//! message's history.
use std::time::Duration;

use chrono::{Timelike, Utc};
use serde_json::{Value, json};
use wxbind::schedule::QuietHours;
use wxbind_tests::{SendReply, assert_error, spawn_app, spawn_app_with};

#[actix_web::test]
async fn a_scheduled_message_waits_for_send_at() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let at = Utc::now() + chrono::TimeDelta::milliseconds(1500);
    let resp = app
        .post_message(
            &alice.token,
            &json!({"data": {"k": {"value": "later"}}, "send_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let m: Value = resp.json().await.expect("json");
    let id = m["id"].as_str().expect("id");
    assert!(m["send_at"].is_string(), "{m}");
    // A message queued after it, for now, goes first.
    let now_id = app.send_simple(&alice).await;
    app.wait_for_status(&alice.token, &now_id, "sent").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting: Value = app
        .get_as(&alice.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(waiting["status"], "queued", "not before send_at: {waiting}");
    app.wait_for_status(&alice.token, id, "sent").await;
    let sent_at = app
        .wechat
        .sends()
        .into_iter()
        .find(|s| s.client_msg_id == id)
        .expect("sent");
    assert!(
        Utc::now() >= at && sent_at.data["k"]["value"] == "later",
        "sent after send_at"
    );

    let far = (Utc::now() + chrono::TimeDelta::days(31)).to_rfc3339();
    let resp = app
        .post_message(
            &alice.token,
            &json!({"data": {"k": {"value": "x"}}, "send_at": far}),
        )
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

/// Quiet hours around now (in UTC), so the test runs at any time of day.
fn quiet_now() -> QuietHours {
    let now = Utc::now();
    let start = (now - chrono::TimeDelta::hours(1)).time();
    let end = (now + chrono::TimeDelta::hours(1)).time();
    QuietHours::parse(&format!(
        "{:02}:{:02}-{:02}:{:02}",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    ))
    .expect("window")
}

#[actix_web::test]
async fn quiet_hours_hold_messages_unless_an_admin_or_key_marks_them_urgent() {
    let app = spawn_app_with(|c| {
        c.delivery.schedule.quiet_hours = Some(quiet_now());
        c.delivery.schedule.timezone = chrono_tz::UTC;
    })
    .await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;

    let held = app.send_simple(&alice).await;
    let resp = app
        .post_message(
            &alice.token,
            &json!({"data": {"k": {"value": "x"}}, "urgent": true}),
        )
        .await;
    assert_error(resp, 403, "forbidden").await;
    let resp = app
        .post_message(
            &admin.token,
            &json!({"user_id": alice.id, "data": {"k": {"value": "now"}}, "urgent": true}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let urgent: Value = resp.json().await.expect("json");
    let urgent = urgent["id"].as_str().expect("id");
    app.wait_for_status(&admin.token, urgent, "sent").await;
    // An admin's send to someone else is audited; a user's own send is not.
    let audit: Value = app
        .get_as(&admin.token, "/api/audit?action=message.sent_to_other")
        .await
        .json()
        .await
        .expect("json");
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["target"], urgent);
    assert_eq!(items[0]["actor"], "root");
    assert_eq!(items[0]["details"]["user_id"], alice.id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: Value = app
        .get_as(&alice.token, &format!("/api/messages/{held}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        waiting["status"], "queued",
        "held in quiet hours: {waiting}"
    );
    assert_eq!(app.wechat.sends().len(), 1);
}

#[actix_web::test]
async fn the_daily_cap_fails_further_messages_with_frequency_cap() {
    let app = spawn_app_with(|c| c.delivery.schedule.max_per_user_per_day = Some(2)).await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let id = app.send_simple(&alice).await;
        outcomes.push(app.wait_for_final(&alice.token, &id).await);
    }
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|m| m["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["sent", "sent", "failed"]);
    assert_eq!(outcomes[2]["reason"], "frequency_cap");
    assert!(outcomes[2]["errcode"].is_null());
    assert_eq!(app.wechat.sends().len(), 2, "never sent");
    // Counted across processes: the count is in the database.
    let counted: i32 = app.query(|conn| {
        use diesel::prelude::*;
        wxbind::db::schema::user_day_sends::table
            .select(wxbind::db::schema::user_day_sends::sends)
            .first(conn)
    });
    assert_eq!(counted, 2);
}

#[actix_web::test]
async fn a_message_history_shows_its_retries_outcome_and_delivery() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    app.wechat.script_sends([SendReply::Http(500)]);
    let id = app.send_simple(&alice).await;
    let sent = app.wait_for_status(&alice.token, &id, "sent").await;
    let msgid = sent["msgid"].as_i64().expect("msgid");
    let extra = format!("<MsgID>{msgid}</MsgID><Status><![CDATA[success]]></Status>");
    let resp = app
        .push_plain(&wxbind_tests::push_xml(
            "openid-alice",
            wxbind_tests::now(),
            "TEMPLATESENDJOBFINISH",
            &extra,
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let history: Value = app
        .get_as(&alice.token, &format!("/api/messages/{id}/history"))
        .await
        .json()
        .await
        .expect("json");
    let events: Vec<(&str, i64)> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().expect("event"),
                e["attempt"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("queued", 0),
            ("retry_scheduled", 1),
            ("sent", 2),
            ("delivered", 2)
        ],
        "{history}"
    );
    assert!(history["events"][1]["errmsg"].is_string());
    assert_eq!(history["message"]["id"], id.as_str());
    // Only who may see the message sees its history.
    let bob = app.user("bob").await;
    let resp = app
        .get_as(&bob.token, &format!("/api/messages/{id}/history"))
        .await;
    assert_error(resp, 404, "message_not_found").await;
    let resp = app
        .get_as(&admin.token, &format!("/api/messages/{id}/history"))
        .await;
    assert_eq!(resp.status(), 200);
}
