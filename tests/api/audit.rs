//! The audit log: retries, key changes (API and command line), template syncs and quota
//! resets recorded with their actor (a username, `key:<name>` for a key, `cli`), read by
//! admins only through `GET /api/audit` in cursor pages, never holding a secret.
use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind::audit::{self, Action, Actor};
use wxbind::db::schema::audit_log;
use wxbind_tests::{SendReply, TestApp, assert_error, spawn_app};

/// actor_id, actor, action, target, details.
type AuditRow = (Option<i64>, String, String, Option<String>, Value);

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

async fn revoke_key(app: &TestApp, admin: &str, name: &str) {
    let resp = app
        .http
        .delete(app.url(&format!("/api/keys/{name}")))
        .bearer_auth(admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 204, "revoke {name}");
}

/// One page of `GET /api/audit` with `query`.
async fn audit_page(app: &TestApp, token: &str, query: &str) -> Value {
    let resp = app.get_as(token, &format!("/api/audit?{query}")).await;
    assert_eq!(resp.status(), 200, "GET /api/audit?{query}");
    resp.json().await.expect("json")
}

/// Every entry, newest first, as `(actor, action, target, details)`.
async fn entries(app: &TestApp, token: &str) -> Vec<(String, String, Option<String>, Value)> {
    let page = audit_page(app, token, "limit=200").await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().expect("actor").to_owned(),
                e["action"].as_str().expect("action").to_owned(),
                e["target"].as_str().map(str::to_owned),
                e["details"].clone(),
            )
        })
        .collect()
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
async fn each_admin_and_key_action_is_recorded_with_its_actor() {
    let app = spawn_app().await;
    let root = app.admin("root").await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;
    app.wait_templates_synced().await;

    // An admin user makes a key; the admin key syncs, retries and resets; the user revokes it.
    let key = make_key(&app, &root.token, "deploy", "admin").await;
    assert_eq!(app.sync_templates(&key).await.status(), 200);
    app.wechat.script_sends([SendReply::Errcode(40003)]);
    let failed = app.send_simple(&alice).await;
    assert_eq!(
        app.wait_for_final(&alice.token, &failed).await["status"],
        "failed"
    );
    let resp = post_as(&app, &key, &format!("/api/messages/{failed}/retry"), None).await;
    assert_eq!(resp.status(), 202);
    let resp = post_as(&app, &root.token, "/api/quota/reset", None).await;
    assert_eq!(resp.status(), 200);
    revoke_key(&app, &root.token, "deploy").await;

    let live = app
        .templates(&root.token)
        .await
        .iter()
        .filter(|t| t["gone_at"].is_null())
        .count();
    let got = entries(&app, &root.token).await;
    let expected = [
        ("root", "key.revoked", Some("deploy"), json!({})),
        (
            "root",
            "quota.reset",
            None,
            json!({"was_paused": false, "resets_this_month": 1}),
        ),
        (
            "key:deploy",
            "message.retried",
            Some(failed.as_str()),
            json!({"user_id": alice.id, "template_id": wxbind_tests::DEFAULT_TEMPLATE}),
        ),
        (
            "key:deploy",
            "templates.synced",
            None,
            json!({"live": live, "gone": 0}),
        ),
        (
            "root",
            "key.created",
            Some("deploy"),
            json!({"scope": "admin"}),
        ),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.map(str::to_owned), d))
        .collect();
    assert_eq!(got, expected);

    // The actor's id is kept beside its name; the key itself is nowhere in the log.
    let rows: Vec<(Option<i64>, Value)> = app.query(|c| {
        audit_log::table
            .order(audit_log::id)
            .select((audit_log::actor_id, audit_log::details))
            .load(c)
    });
    assert_eq!(rows.first().map(|r| r.0), Some(Some(root.id)));
    assert!(
        rows.iter()
            .all(|(_, details)| !details.to_string().contains(&key[4..])),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn a_plain_users_own_actions_are_not_audited_and_refusals_leave_no_row() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.bind(&alice, "openid-alice").await;

    let own = app.send_simple(&alice).await;
    app.wait_for_final(&alice.token, &own).await;
    assert_error(app.sync_templates(&alice.token).await, 403, "forbidden").await;
    assert_error(
        post_as(&app, &alice.token, "/api/quota/reset", None).await,
        403,
        "forbidden",
    )
    .await;

    let rows: i64 = app.query(|c| audit_log::table.count().get_result(c));
    assert_eq!(rows, 0);
}

#[actix_web::test]
async fn the_command_line_is_recorded_as_cli_and_an_unknown_actor_writes_nothing() {
    let app = spawn_app().await;
    let mut conn = app.db.conn();
    // What `wxbind key add` and `wxbind key revoke` run.
    let (_, hash, prefix) = wxbind::keys::generate(b"test-only-secret");
    let created = wxbind::keys::create_audited(
        &mut conn,
        "nightly",
        wxbind::keys::Scope::Send,
        &hash,
        &prefix,
        Actor::Cli,
    )
    .expect("create");
    assert!(matches!(created, wxbind::db::api_keys::Created::Key(_)));
    assert!(wxbind::keys::revoke_audited(&mut conn, "nightly", Actor::Cli).expect("revoke"));
    assert!(!wxbind::keys::revoke_audited(&mut conn, "nightly", Actor::Cli).expect("again"));

    let rows: Vec<AuditRow> = audit_log::table
        .order(audit_log::id)
        .select((
            audit_log::actor_id,
            audit_log::actor,
            audit_log::action,
            audit_log::target,
            audit_log::details,
        ))
        .load(&mut conn)
        .expect("rows");
    let nightly = Some("nightly".to_owned());
    assert_eq!(
        rows,
        [
            (
                None,
                "cli".into(),
                "key.created".into(),
                nightly.clone(),
                json!({"scope": "send"})
            ),
            (None, "cli".into(), "key.revoked".into(), nightly, json!({})),
        ]
    );

    // An actor that is no user fails the statement (and with it the change it records).
    let missing = audit::record(
        &mut conn,
        Actor::User(i64::MAX),
        Action::QuotaReset,
        None,
        json!({}),
    );
    assert!(
        matches!(missing, Err(diesel::result::Error::NotFound)),
        "{missing:?}"
    );
    let count: i64 = audit_log::table
        .count()
        .get_result(&mut conn)
        .expect("count");
    assert_eq!(count, 2);
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
