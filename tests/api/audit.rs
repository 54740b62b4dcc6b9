//! The audit log, `GET /api/audit`: read by admin users and admin keys only, newest first in
//! cursor pages, filtered by action and actor.
use serde_json::{Value, json};
use wxbind::audit::{self, Action, Actor};
use wxbind_tests::{TestApp, assert_error, spawn_app};

async fn post_as(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request")
}

async fn make_key(app: &TestApp, admin: &str, name: &str, scope: &str) -> String {
    let body = json!({"name": name, "scope": scope});
    let resp = post_as(app, admin, "/api/keys", Some(&body)).await;
    assert_eq!(resp.status(), 201, "key {name}");
    let made: Value = resp.json().await.expect("json");
    made["key"].as_str().expect("key").to_owned()
}

/// One page of `GET /api/audit` with `query`.
async fn audit_page(app: &TestApp, token: &str, query: &str) -> Value {
    let resp = app.get_as(token, &format!("/api/audit?{query}")).await;
    assert_eq!(resp.status(), 200, "GET /api/audit?{query}");
    resp.json().await.expect("json")
}

fn ids_of(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

#[actix_web::test]
async fn only_admin_users_and_admin_keys_read_the_log() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let alice = app.user("alice").await;
    let send = make_key(&app, &root.token, "billing", "send").await;
    let admin = make_key(&app, &root.token, "ops", "admin").await;

    for (who, token) in [("a user", &alice.token), ("a send key", &send)] {
        let resp = app.get_as(token, "/api/audit").await;
        assert_eq!(resp.status(), 403, "{who}");
        assert_error(resp, 403, "forbidden").await;
    }
    assert_error(app.get("/api/audit").await, 401, "unauthorized").await;
    let page = audit_page(&app, &admin, "").await;
    assert!(page["items"].is_array(), "{page}");
    assert!(page["next_cursor"].is_null());
}

#[actix_web::test]
async fn pages_are_newest_first_without_gaps_or_repeats_and_filters_combine() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let bob = app.insert_user("bob", true);
    app.query(|c| {
        for i in 0..7 {
            let (actor, action) = match i % 3 {
                0 => (Actor::User(root.id), Action::QuotaReset),
                1 => (Actor::User(bob), Action::QuotaReset),
                _ => (Actor::User(bob), Action::TemplatesSynced),
            };
            audit::record(c, actor, action, None, json!({"n": i}))?;
        }
        Ok(())
    });
    let all = ids_of(&audit_page(&app, &root.token, "").await);
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");

    let mut paged = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let page = audit_page(&app, &root.token, &query).await;
        let ids = ids_of(&page);
        assert!(ids.len() <= 3, "{ids:?}");
        paged.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all, "every row once, in order");

    let resets = audit_page(&app, &root.token, "action=quota.reset&actor=bob").await;
    let details: Vec<&Value> = resets["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| &e["details"])
        .collect();
    assert_eq!(details, [&json!({"n": 4}), &json!({"n": 1})]);
    let filtered = audit_page(&app, &root.token, "action=templates.synced&limit=1").await;
    let cursor = filtered["next_cursor"].as_str().expect("a second page");
    let rest = audit_page(
        &app,
        &root.token,
        &format!("action=templates.synced&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        rest["items"][0]["details"],
        json!({"n": 2}),
        "the filter holds across pages"
    );
    assert!(rest["next_cursor"].is_null());
}

#[actix_web::test]
async fn bad_cursors_limits_and_filters_are_invalid_requests() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    for (case, query) in [
        ("garbage cursor", "cursor=bm90LWEtY3Vyc29y"),
        ("not base64", "cursor=%21%21"),
        ("message log cursor", "cursor=MTc4MDAwMDAwMDEyMzQ1Ni4w"),
        ("limit 0", "limit=0"),
        ("limit 201", "limit=201"),
        ("limit not a number", "limit=many"),
        ("unknown action", "action=key.stolen"),
        ("empty actor", "actor="),
        ("U+0000 in actor", "actor=a%00b"),
    ] {
        let resp = app
            .get_as(&root.token, &format!("/api/audit?{query}"))
            .await;
        assert_eq!(resp.status(), 400, "{case}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_request", "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}");
    }
}
