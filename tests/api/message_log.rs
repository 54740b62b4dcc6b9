//! The message log (`GET /api/messages`) and retrying a failed message.
use serde_json::{Value, json};
use wxbind_tests::{SendReply, assert_error, spawn_app};

#[actix_web::test]
async fn the_log_pages_newest_first_with_filters_and_keys_see_their_own() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let bob = app.user("bob").await;
    app.bind(&bob, "openid-bob").await;
    let mut ids = Vec::new();
    for (to, template) in [
        (alice.id, "TEMPLATE_X"),
        (bob.id, "TEMPLATE_X"),
        (alice.id, "TEMPLATE_OTHER"),
    ] {
        let body = json!({"user_id": to, "template_id": template, "data": {"k": {"value": "v"}}});
        let m: Value = app
            .post_message(&admin.token, &body)
            .await
            .json()
            .await
            .expect("json");
        ids.push(m["id"].as_str().expect("id").to_owned());
    }
    let own = app.send_simple(&alice).await;

    // Newest first, two a page.
    let page: Value = app
        .get_as(&admin.token, "/api/messages?limit=2")
        .await
        .json()
        .await
        .expect("json");
    let got: Vec<&str> = page["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [own.as_str(), ids[2].as_str()]);
    let cursor = page["next_cursor"].as_str().expect("more");
    let page: Value = app
        .get_as(
            &admin.token,
            &format!("/api/messages?limit=2&cursor={cursor}"),
        )
        .await
        .json()
        .await
        .expect("json");
    let got: Vec<&str> = page["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [ids[1].as_str(), ids[0].as_str()]);
    assert!(page["next_cursor"].is_null(), "the last page");

    let filtered: Value = app
        .get_as(
            &admin.token,
            &format!("/api/messages?user_id={}&template_id=TEMPLATE_X", alice.id),
        )
        .await
        .json()
        .await
        .expect("json");
    let got: Vec<&str> = filtered["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [ids[0].as_str()]);

    // A send key sees what it sent only; users see no log.
    let key: Value = app
        .http
        .post(app.url("/api/keys"))
        .bearer_auth(&admin.token)
        .json(&json!({"name": "backend"}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("key");
    let sent: Value = app
        .post_message(
            key,
            &json!({"user_id": bob.id, "data": {"keyword1": {"value": "from the key"}}}),
        )
        .await
        .json()
        .await
        .expect("json");
    let log: Value = app
        .get_as(key, "/api/messages")
        .await
        .json()
        .await
        .expect("json");
    let got: Vec<&str> = log["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [sent["id"].as_str().expect("id")]);
    assert_error(
        app.get_as(&alice.token, "/api/messages").await,
        403,
        "forbidden",
    )
    .await;
    for bad in [
        "limit=0",
        "limit=201",
        "cursor=garbage",
        "status=lost",
        "created_after=yesterday",
    ] {
        assert_error(
            app.get_as(&admin.token, &format!("/api/messages?{bad}"))
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[actix_web::test]
async fn a_failed_message_is_retried_with_the_same_id_and_a_fresh_budget() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    app.wechat.script_sends([SendReply::Errcode(40003)]);
    let id = app.send_simple(&alice).await;
    let failed = app.wait_for_final(&alice.token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let retry = |token: String, id: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url(&format!("/api/messages/{id}/retry")))
                .bearer_auth(token)
                .send()
                .await
                .expect("retry")
        }
    };
    assert_error(
        retry(alice.token.clone(), id.clone()).await,
        403,
        "forbidden",
    )
    .await;
    let resp = retry(admin.token.clone(), id.clone()).await;
    assert_eq!(resp.status(), 202);
    let queued: Value = resp.json().await.expect("json");
    assert_eq!(
        (queued["status"].as_str(), queued["attempts"].as_i64()),
        (Some("queued"), Some(0)),
        "{queued}"
    );

    let sent = app.wait_for_final(&alice.token, &id).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    let sends = app.wechat.sends();
    assert_eq!(sends.len(), 2);
    assert!(
        sends.iter().all(|s| s.client_msg_id == id),
        "the same client_msg_id"
    );
    assert_error(
        retry(admin.token.clone(), id.clone()).await,
        409,
        "not_failed",
    )
    .await;
    assert_error(
        retry(
            admin.token.clone(),
            "00000000-0000-0000-0000-000000000000".into(),
        )
        .await,
        404,
        "message_not_found",
    )
    .await;
}
