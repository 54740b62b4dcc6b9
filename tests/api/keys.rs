//! API keys: made by admins (shown once, stored as a keyed hash), `Bearer wxk_…` as a service
//! principal, scope `send` held to sending and reading what it sent, revocation.
use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind_tests::{TestApp, assert_error, spawn_app};

async fn make_key(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/api/keys"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn key(app: &TestApp, admin: &str, name: &str, scope: &str) -> String {
    let resp = make_key(app, admin, &json!({"name": name, "scope": scope})).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["scope"], scope);
    body["key"].as_str().expect("key").to_owned()
}

#[actix_web::test]
async fn a_send_key_sends_to_any_bound_user_and_reads_only_what_it_sent() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    let key = key(&app, &admin.token, "billing", "send").await;
    assert!(key.starts_with("wxk_") && key.len() >= 36, "{key}");

    let body = json!({"user_id": alice.id, "template_id": "TEMPLATE_X", "data": {"k": {"value": "invoice"}}});
    let resp = app.post_message(&key, &body).await;
    assert_eq!(resp.status(), 202);
    let sent: Value = resp.json().await.expect("json");
    let id = sent["id"].as_str().expect("id");
    let m = app.wait_for_final(&key, id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(app.get_as(&key, "/api/templates").await.status(), 200);

    // Another sender's message does not exist for it; nor does anything but sending.
    let theirs = app.send_simple(&alice).await;
    assert_error(
        app.get_as(&key, &format!("/api/messages/{theirs}")).await,
        404,
        "message_not_found",
    )
    .await;
    for path in ["/api/me", "/api/keys", "/api/bind-url", "/api/quota"] {
        assert_error(app.get_as(&key, path).await, 403, "forbidden").await;
    }
}

#[actix_web::test]
async fn an_admin_key_does_what_an_admin_may_and_a_revoked_key_nothing() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let key = key(&app, &admin.token, "ops", "admin").await;

    // It reads what an admin reads (the whole log), but keys never manage keys.
    assert_eq!(app.get_as(&key, "/api/messages").await.status(), 200);
    assert_error(app.get_as(&key, "/api/keys").await, 403, "forbidden").await;
    assert_error(
        make_key(&app, &key, &json!({"name": "successor", "scope": "admin"})).await,
        403,
        "forbidden",
    )
    .await;
    let listed: Value = app
        .get_as(&admin.token, "/api/keys")
        .await
        .json()
        .await
        .expect("json");
    let ops = listed
        .as_array()
        .and_then(|l| l.iter().find(|k| k["name"] == "ops"))
        .expect("listed");
    assert!(
        ops.get("key").is_none(),
        "a listed key never shows the key: {ops}"
    );
    assert!(key.starts_with(ops["prefix"].as_str().expect("prefix")));
    assert!(
        ops["last_used_at"].is_string(),
        "its use was recorded: {ops}"
    );
    assert!(ops["revoked_at"].is_null());

    let revoke = app
        .http
        .delete(app.url("/api/keys/ops"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), 204);
    assert_error(app.get_as(&key, "/api/messages").await, 401, "unauthorized").await;
    let again = app
        .http
        .delete(app.url("/api/keys/ops"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("revoke");
    assert_error(again, 404, "key_not_found").await;
    // Only the hash is stored.
    let stored: Vec<String> = wxbind::db::schema::api_keys::table
        .select(wxbind::db::schema::api_keys::key_hash)
        .load(&mut app.db.conn())
        .expect("rows");
    assert!(
        stored
            .iter()
            .all(|h| !h.contains(&key[4..]) && h.len() == 64)
    );
}

#[actix_web::test]
async fn only_admins_make_keys_with_plain_unique_names() {
    let app = spawn_app().await;
    let admin = app.admin("root").await;
    let user = app.user("alice").await;

    assert_error(
        make_key(&app, &user.token, &json!({"name": "mine"})).await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        make_key(&app, &admin.token, &json!({"name": "a:b"})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        make_key(&app, &admin.token, &json!({"name": "x", "scope": "root"})).await,
        400,
        "invalid_request",
    )
    .await;
    let first = make_key(&app, &admin.token, &json!({"name": "billing"})).await;
    assert_eq!(first.status(), 201);
    let body: Value = first.json().await.expect("json");
    assert_eq!(body["scope"], "send", "send by default");
    assert_error(
        make_key(&app, &admin.token, &json!({"name": "billing"})).await,
        409,
        "key_exists",
    )
    .await;
    // A made-up key, and the key principal's name as a login, get nowhere.
    assert_error(
        app.get_as("wxk_notakeyatallnotakeyatallnotakey00", "/api/templates")
            .await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        app.post_login("key:billing", "!api-key").await.status(),
        401
    );
}
