//! The template registry against the fake WeChat: the list synced at start, on a timer and on
//! request; `POST /api/messages` checked against it with WeChat's keyword rules; templates
//! gone from WeChat (left its list, or refused a send with 40037) refused at once.
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Map, Value, json};
use wxbind::db::schema::{messages, templates};
use wxbind_tests::{
    DEFAULT_TEMPLATE, KEYWORD_TYPES, ORDER_TEMPLATE, SendReply, TYPES_TEMPLATE, TestApp, TestUser,
    assert_error, default_templates, spawn_app, spawn_app_prepared, spawn_app_with, template,
};

/// An admin (only admins choose the template) bound to WeChat, once the list is synced.
async fn synced_admin(app: &TestApp) -> TestUser {
    let admin = app.admin("root").await;
    app.bind(&admin, "openid-root").await;
    app.wait_templates_synced().await;
    admin
}

fn message_count(app: &TestApp) -> i64 {
    app.query(|c| messages::table.count().get_result(c))
}

/// Valid data for [`ORDER_TEMPLATE`].
fn order_data() -> Map<String, Value> {
    let data = json!({
        "thing1": {"value": "无线耳机"},
        "character_string2": {"value": "202612020001"},
        "time3": {"value": "2026年12月2日 15:01"},
        "amount4": {"value": "¥199.00"},
        "phrase5": {"value": "已发货"},
    });
    data.as_object().cloned().unwrap_or_default()
}

/// A valid value of each type but `const`, in [`KEYWORD_TYPES`] order.
const VALID_VALUES: [&str; 12] = [
    "无线耳机",
    "3.14",
    "abc",
    "★",
    "SN-2026-0001",
    "15:01",
    "2026-12-02",
    "¥8.80",
    "+86-0766-66888866",
    "粤A8Z888挂",
    "张三",
    "配送中",
];

/// The key [`TYPES_TEMPLATE`] gives `kind`.
fn key_of(kind: &str) -> String {
    let n = KEYWORD_TYPES
        .iter()
        .position(|t| *t == kind)
        .expect("a keyword type");
    format!("{kind}{}", n + 1)
}

/// Valid data for [`TYPES_TEMPLATE`].
fn types_data() -> Map<String, Value> {
    KEYWORD_TYPES
        .iter()
        .zip(VALID_VALUES)
        .map(|(kind, value)| (key_of(kind), json!({ "value": value })))
        .collect()
}

async fn send(
    app: &TestApp,
    admin: &TestUser,
    template_id: &str,
    data: &Map<String, Value>,
) -> reqwest::Response {
    app.post_message(
        &admin.token,
        &json!({"template_id": template_id, "data": data}),
    )
    .await
}

/// The body of a 400 `invalid_template_data`, checked for its shape.
async fn misfit(resp: reqwest::Response) -> Value {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_template_data", "{body}");
    body["error"].clone()
}

fn detail_keys(error: &Value) -> Vec<&str> {
    error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["key"].as_str().expect("key"))
        .collect()
}

fn list_of_all_but(template_id: &str) -> Vec<Value> {
    default_templates()
        .into_iter()
        .filter(|t| t["template_id"] != template_id)
        .collect()
}

fn find<'a>(list: &'a [Value], template_id: &str) -> &'a Value {
    list.iter()
        .find(|t| t["template_id"] == template_id)
        .unwrap_or_else(|| panic!("{template_id} not in {list:?}"))
}

#[actix_web::test]
async fn the_list_is_synced_at_start_and_listed_with_the_keywords_of_each_template() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.wait_templates_synced().await;

    let list = app.templates(&user.token).await;

    let ids: Vec<&str> = list
        .iter()
        .map(|t| t["template_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            DEFAULT_TEMPLATE,
            ORDER_TEMPLATE,
            "TEMPLATE_OTHER",
            TYPES_TEMPLATE,
            "TEMPLATE_X"
        ],
        "every template, by id"
    );
    let order = find(&list, ORDER_TEMPLATE);
    assert_eq!(order["kind"], "category");
    assert_eq!(order["title"], "订单发货通知");
    assert_eq!(order["default"], false);
    assert_eq!(order["gone_at"], Value::Null);
    assert_eq!(
        order["keywords"][0],
        json!({"key": "thing1", "type": "thing", "label": "商品名称"})
    );
    assert_eq!(order["keywords"][4]["type"], "phrase");
    let legacy = find(&list, DEFAULT_TEMPLATE);
    assert_eq!(legacy["kind"], "legacy");
    assert_eq!(legacy["default"], true, "the server's WECHAT_TEMPLATE_ID");
    assert_eq!(
        legacy["keywords"],
        json!([
            {"key": "first", "type": "legacy", "label": null},
            {"key": "k", "type": "legacy", "label": "内容"},
            {"key": "keyword1", "type": "legacy", "label": "详情"},
            {"key": "remark", "type": "legacy", "label": null},
        ])
    );
    let types: Vec<&str> = find(&list, TYPES_TEMPLATE)["keywords"]
        .as_array()
        .expect("keywords")
        .iter()
        .map(|k| k["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, KEYWORD_TYPES);
    let stored: i64 = app.query(|c| templates::table.count().get_result(c));
    assert_eq!(stored, 5);
    assert_error(app.get("/api/templates").await, 401, "unauthorized").await;
}

#[actix_web::test]
async fn each_value_type_is_held_to_its_rule() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let twenty = "二十个字".repeat(5);
    let twenty_one = format!("{twenty}多");
    let cases: Vec<(&str, &str, &str, bool)> = vec![
        ("thing of 20 characters", "thing", &twenty, true),
        ("thing with symbols", "thing", "Order 42, shipped!", true),
        ("thing of 21 characters", "thing", &twenty_one, false),
        ("thing with a line break", "thing", "two\nlines", false),
        ("empty thing", "thing", "", false),
        ("number with decimals", "number", "3.14", true),
        ("negative number", "number", "-1", false),
        (
            "number of 33 digits",
            "number",
            "123456789012345678901234567890123",
            false,
        ),
        ("letters", "letter", "Abc", true),
        ("letters with a digit", "letter", "ab1", false),
        ("symbols", "symbol", "!@#", true),
        ("six symbols", "symbol", "!!!!!!", false),
        ("a letter as a symbol", "symbol", "a", false),
        ("code with dashes", "character_string", "SN-2026-0001", true),
        ("Chinese in a code", "character_string", "订单1", false),
        ("time", "time", "15:01", true),
        ("time after a date", "time", "2026年12月2日 15:01", true),
        ("time range", "time", "15:01~16:00", true),
        ("hour 24", "time", "24:00", false),
        ("a date for a time", "time", "2026年12月2日", false),
        ("date in Chinese", "date", "2026年12月2日", true),
        ("date with dashes", "date", "2026-12-02", true),
        ("date with slashes", "date", "2026/12/02", true),
        ("date with dots", "date", "2026.12.02", true),
        ("year and month", "date", "2026-12", true),
        ("month and day", "date", "12-02", true),
        ("date with a time", "date", "2026-12-02 15:01", true),
        ("date range", "date", "2026年12月1日~2026年12月7日", true),
        ("month 13", "date", "2026-13-01", false),
        ("a date in words", "date", "明天", false),
        ("amount in yuan", "amount", "¥8.80", true),
        ("amount ending in 元", "amount", "¥100元", true),
        ("amount without a currency", "amount", "8.80", false),
        ("amount of 11 digits", "amount", "¥12345678901", false),
        ("phone number", "phone_number", "+86-0766-66888866", true),
        (
            "phone number of 18",
            "phone_number",
            "+86-0766-668888661",
            false,
        ),
        ("phone number in words", "phone_number", "call me", false),
        ("licence plate", "car_number", "粤A8Z888挂", true),
        ("plate of 9", "car_number", "粤A8Z8888挂", false),
        ("Chinese inside a plate", "car_number", "粤A中888", false),
        ("Chinese name", "name", "张三", true),
        ("latin name", "name", "Zhang San", true),
        (
            "11 Chinese characters",
            "name",
            "欧阳娜娜娜娜娜娜娜娜娜",
            false,
        ),
        ("name with digits", "name", "Agent 007", false),
        ("phrase", "phrase", "配送中", true),
        ("phrase of 6", "phrase", "六个中文字符", false),
        ("latin phrase", "phrase", "OK", false),
    ];
    for (case, kind, value, valid) in cases {
        let key = key_of(kind);
        let mut data = types_data();
        data.insert(key.clone(), json!({ "value": value }));
        let resp = send(&app, &admin, TYPES_TEMPLATE, &data).await;
        if valid {
            assert_eq!(
                resp.status(),
                202,
                "{case}: {}",
                resp.text().await.unwrap_or_default()
            );
            continue;
        }
        let error = misfit(resp).await;
        assert_eq!(detail_keys(&error), [key.as_str()], "{case}: {error}");
        let problem = error["details"][0]["problem"].as_str().expect("problem");
        assert!(
            problem.starts_with(&format!("not a valid {kind}: ")),
            "{case}: {problem}"
        );
        let message = error["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("data.{key}: {problem}")),
            "{case}: {message}"
        );
    }
}

#[actix_web::test]
async fn first_and_remark_on_a_category_template_are_refused_as_dropped_by_wechat() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    for key in ["first", "remark"] {
        let mut data = order_data();
        data.insert(key.into(), json!({"value": "Hello"}));
        let error = misfit(send(&app, &admin, ORDER_TEMPLATE, &data).await).await;
        assert_eq!(detail_keys(&error), [key]);
        assert!(
            error["details"][0]["problem"]
                .as_str()
                .is_some_and(|p| p.contains("since May 2023")),
            "{error}"
        );
    }
    // A legacy template that lists them still takes them (WeChat drops them silently).
    let legacy = json!({"first": {"value": "Hello"}, "k": {"value": "v"}});
    let resp = send(
        &app,
        &admin,
        DEFAULT_TEMPLATE,
        legacy.as_object().expect("object"),
    )
    .await;
    assert_eq!(resp.status(), 202);
}

#[actix_web::test]
async fn a_missing_keyword_and_a_const_keyword_are_named() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let mut data = order_data();
    data.remove("time3");
    let error = misfit(send(&app, &admin, ORDER_TEMPLATE, &data).await).await;
    assert_eq!(detail_keys(&error), ["time3"]);
    let problem = error["details"][0]["problem"].as_str().expect("problem");
    assert!(
        problem.contains("missing") && problem.contains("发货时间"),
        "{problem}"
    );

    let mut data = types_data();
    data.insert("const13".into(), json!({"value": "mine"}));
    let error = misfit(send(&app, &admin, TYPES_TEMPLATE, &data).await).await;
    assert_eq!(detail_keys(&error), ["const13"]);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("const")),
        "{error}"
    );
    assert_eq!(message_count(&app), 0);
}

#[actix_web::test]
async fn every_problem_of_a_request_is_listed_and_nothing_is_queued() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let mut data = order_data();
    data.insert("thing1".into(), json!({"value": "x".repeat(21)}));
    data.remove("time3");
    data.insert("phrase5".into(), json!({"value": "shipped"}));
    data.insert("first".into(), json!({"value": "Hello"}));
    data.insert("keyword9".into(), json!({"value": "?"}));

    let error = misfit(send(&app, &admin, ORDER_TEMPLATE, &data).await).await;

    assert_eq!(
        detail_keys(&error),
        ["thing1", "time3", "phrase5", "first", "keyword9"],
        "the template's order, then keys it lacks"
    );
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!(
            "data does not fit template {ORDER_TEMPLATE}: data.thing1: "
        )),
        "{message}"
    );
    assert_eq!(message.matches("; ").count(), 4, "{message}");
    assert!(
        message.contains("data.keyword9: not a keyword of the template (it has thing1, "),
        "{message}"
    );
    assert_eq!(message_count(&app), 0);
    assert!(app.wechat.sends().is_empty());
}

#[actix_web::test]
async fn a_colour_is_accepted_and_not_sent() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let mut data = order_data();
    data.insert(
        "thing1".into(),
        json!({"value": "无线耳机", "color": "#173177"}),
    );

    let resp = send(&app, &admin, ORDER_TEMPLATE, &data).await;

    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        app.wait_for_final(&admin.token, &id).await["status"],
        "sent"
    );
    assert_eq!(
        app.wechat.sends()[0].data["thing1"],
        json!({"value": "无线耳机"})
    );
}

#[actix_web::test]
async fn a_template_the_synced_list_lacks_is_refused_as_unknown() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let resp = send(&app, &admin, "TEMPLATE_NOPE", &order_data()).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_template", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TEMPLATE_NOPE")),
        "{body}"
    );
    assert!(body["error"].get("details").is_none(), "{body}");
    assert_eq!(message_count(&app), 0);
}

#[actix_web::test]
async fn until_the_first_sync_messages_are_queued_unchecked_and_health_says_so() {
    let app = spawn_app_prepared(|wechat| wechat.fail_template_list(Some(500)), |_| {}).await;
    let admin = app.admin("root").await;
    app.bind(&admin, "openid-root").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.wechat.template_list_requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the app never asked for the list"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let health: Value = app.get("/api/health").await.json().await.expect("json");
    assert_eq!(health["templates_synced"], false, "{health}");

    // Neither the template nor the data is known: queued, for WeChat to judge.
    let nonsense = json!({"nonsense": {"value": "x"}});
    let nonsense = nonsense.as_object().expect("object");
    assert_eq!(
        send(&app, &admin, "TEMPLATE_NOPE", nonsense).await.status(),
        202
    );
    assert_eq!(
        send(&app, &admin, ORDER_TEMPLATE, nonsense).await.status(),
        202
    );
    assert!(app.templates(&admin.token).await.is_empty());
    assert_error(
        app.sync_templates(&admin.token).await,
        502,
        "wechat_unavailable",
    )
    .await;

    app.wechat.fail_template_list(None);
    assert_eq!(app.sync_templates(&admin.token).await.status(), 200);
    let health: Value = app.get("/api/health").await.json().await.expect("json");
    assert_eq!(health["templates_synced"], true, "{health}");
    assert_error(
        send(&app, &admin, "TEMPLATE_NOPE", nonsense).await,
        400,
        "unknown_template",
    )
    .await;
    assert_error(
        send(&app, &admin, ORDER_TEMPLATE, nonsense).await,
        400,
        "invalid_template_data",
    )
    .await;
}

#[actix_web::test]
async fn a_send_refused_with_40037_marks_the_template_gone_and_later_messages_fail_fast() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    app.wechat.script_sends([SendReply::Errcode(40037)]);

    let resp = send(&app, &admin, ORDER_TEMPLATE, &order_data()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app.wait_for_final(&admin.token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["errcode"], 40037);

    let list = app.templates(&admin.token).await;
    assert!(
        find(&list, ORDER_TEMPLATE)["gone_at"].is_string(),
        "{list:?}"
    );
    assert_eq!(find(&list, TYPES_TEMPLATE)["gone_at"], Value::Null);
    let resp = send(&app, &admin, ORDER_TEMPLATE, &order_data()).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_template", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is gone")),
        "{body}"
    );
    assert_eq!(
        app.wechat.sends().len(),
        1,
        "the second message never reached WeChat"
    );
    assert_eq!(message_count(&app), 1);
}

#[actix_web::test]
async fn syncing_on_request_is_for_admins_and_answers_the_synced_list() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    let user = app.user("alice").await;
    assert_error(app.sync_templates(&user.token).await, 403, "forbidden").await;
    assert_error(
        app.post_empty("/api/templates/sync").await,
        401,
        "unauthorized",
    )
    .await;

    let mut list = default_templates();
    list.push(template(
        "TEMPLATE_NEW",
        "预约提醒",
        "预约时间：{{time1.DATA}}",
    ));
    app.wechat.set_templates(list);
    let requests = app.wechat.template_list_requests();
    let resp = app.sync_templates(&admin.token).await;

    assert_eq!(resp.status(), 200);
    let synced: Vec<Value> = resp.json().await.expect("json");
    assert_eq!(app.wechat.template_list_requests(), requests + 1);
    assert_eq!(
        find(&synced, "TEMPLATE_NEW")["keywords"],
        json!([{"key": "time1", "type": "time", "label": "预约时间"}])
    );
    assert_eq!(
        synced,
        app.templates(&user.token).await,
        "what GET /api/templates lists"
    );
    let data = json!({"time1": {"value": "09:30"}});
    let resp = send(
        &app,
        &admin,
        "TEMPLATE_NEW",
        data.as_object().expect("object"),
    )
    .await;
    assert_eq!(resp.status(), 202, "usable at once");
}

#[actix_web::test]
async fn without_wechat_there_is_nothing_to_sync() {
    let app = spawn_app_with(|c| c.wechat = None).await;
    let admin = app.admin("root").await;
    assert_error(
        app.sync_templates(&admin.token).await,
        503,
        "wechat_not_configured",
    )
    .await;
    assert!(app.templates(&admin.token).await.is_empty());
    let health: Value = app.get("/api/health").await.json().await.expect("json");
    assert_eq!(health["templates_synced"], false);
}

#[actix_web::test]
async fn a_template_that_leaves_the_list_is_gone_not_deleted_and_live_again_when_it_returns() {
    let app = spawn_app().await;
    let admin = synced_admin(&app).await;
    assert_eq!(
        send(&app, &admin, ORDER_TEMPLATE, &order_data())
            .await
            .status(),
        202
    );

    app.wechat.set_templates(list_of_all_but(ORDER_TEMPLATE));
    let synced: Vec<Value> = app
        .sync_templates(&admin.token)
        .await
        .json()
        .await
        .expect("json");

    assert!(
        find(&synced, ORDER_TEMPLATE)["gone_at"].is_string(),
        "kept, marked gone"
    );
    let stored: i64 = app.query(|c| templates::table.count().get_result(c));
    assert_eq!(stored, 5, "no row deleted");
    let referring: i64 = app.query(|c| {
        messages::table
            .filter(messages::template_id.eq(ORDER_TEMPLATE))
            .count()
            .get_result(c)
    });
    assert_eq!(referring, 1, "the message that names it is still there");
    assert_error(
        send(&app, &admin, ORDER_TEMPLATE, &order_data()).await,
        400,
        "unknown_template",
    )
    .await;

    // Back, with one keyword fewer: live again, and checked by its new content.
    let mut list = default_templates();
    for t in &mut list {
        if t["template_id"] == ORDER_TEMPLATE {
            t["content"] = json!(
                "商品名称：{{thing1.DATA}}\n订单编号：{{character_string2.DATA}}\n发货时间：{{time3.DATA}}\n订单金额：{{amount4.DATA}}"
            );
        }
    }
    app.wechat.set_templates(list);
    let synced: Vec<Value> = app
        .sync_templates(&admin.token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(find(&synced, ORDER_TEMPLATE)["gone_at"], Value::Null);
    let error = misfit(send(&app, &admin, ORDER_TEMPLATE, &order_data()).await).await;
    assert_eq!(detail_keys(&error), ["phrase5"]);
    let mut data = order_data();
    data.remove("phrase5");
    assert_eq!(
        send(&app, &admin, ORDER_TEMPLATE, &data).await.status(),
        202
    );
}

#[actix_web::test]
async fn the_list_is_synced_again_on_the_interval() {
    let app = spawn_app_with(|c| c.templates.sync_interval = Duration::from_secs(1)).await;
    let admin = synced_admin(&app).await;

    app.wechat.set_templates(list_of_all_but("TEMPLATE_X"));

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = app.templates(&admin.token).await;
        if find(&list, "TEMPLATE_X")["gone_at"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic sync saw the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = json!({"keyword1": {"value": "42"}});
    assert_error(
        send(
            &app,
            &admin,
            "TEMPLATE_X",
            data.as_object().expect("object"),
        )
        .await,
        400,
        "unknown_template",
    )
    .await;
}
