//! `/api/wechat/events`: verified pushes, follow tracking, delivery reports, scan binding.
use diesel::prelude::*;
use serde_json::Value;
use wxbind::db::schema::{users, wechat_events, wechat_followers};
use wxbind::wechat::crypto::{MsgCrypt, signature};
use wxbind_tests::{
    SendReply, TEST_AES_KEY, TEST_APP_ID, TEST_PUSH_TOKEN, TestApp, TestDb, assert_error,
    fresh_nonce, now, plain_push_query, push_xml, spawn_app, spawn_app_with,
};

fn events_recorded(app: &TestApp) -> i64 {
    app.query(|c| wechat_events::table.count().get_result(c))
}

fn nonces_recorded(app: &TestApp) -> i64 {
    app.query(|c| wxbind::db::schema::push_nonces::table.count().get_result(c))
}

fn follower(app: &TestApp, openid: &str) -> Option<bool> {
    app.query(|c| {
        wechat_followers::table
            .find(openid)
            .select(wechat_followers::subscribed)
            .first(c)
            .optional()
    })
}

#[actix_web::test]
async fn url_check_echoes_echostr_only_when_signed() {
    let app = spawn_app().await;
    let ts = now();
    let sig = signature(&[TEST_PUSH_TOKEN, &ts.to_string(), "xxxxxx"]);

    let ok = app
        .get(&format!(
            "/api/wechat/events?signature={sig}&timestamp={ts}&nonce=xxxxxx&echostr=4963171262618234962"
        ))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("body"), "4963171262618234962");

    let bad = app
        .get(&format!("/api/wechat/events?signature=0000&timestamp={ts}&nonce=xxxxxx&echostr=4963171262618234962"))
        .await;
    let status = bad.status();
    let body = bad.text().await.expect("body");
    assert_eq!(status, 401);
    assert!(!body.contains("4963171262618234962"));
}

#[actix_web::test]
async fn subscribe_and_unsubscribe_set_the_follow_state_in_me() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    assert_eq!(
        app.me(&user.token).await["subscribed"],
        Value::Null,
        "unknown before any push"
    );

    let resp = app
        .push_plain(&push_xml("openid-alice", 1_700_000_100, "subscribe", ""))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "success");
    let after_follow = app.me(&user.token).await;
    assert_eq!(after_follow["subscribed"], true);
    assert!(after_follow["subscribed_at"].is_string());

    app.push_plain(&push_xml("openid-alice", 1_700_000_200, "unsubscribe", ""))
        .await;
    assert_eq!(app.me(&user.token).await["subscribed"], false);

    // A late retry of the older subscribe does not undo the newer unsubscribe.
    let late = push_xml("openid-alice", 1_700_000_150, "subscribe", "");
    app.push_plain(&late).await;
    assert_eq!(app.me(&user.token).await["subscribed"], false);
}

#[actix_web::test]
async fn follows_of_unbound_openids_are_kept_for_a_later_binding() {
    let app = spawn_app().await;
    app.push_plain(&push_xml("openid-later", 1_700_000_100, "subscribe", ""))
        .await;
    assert_eq!(follower(&app, "openid-later"), Some(true));

    let user = app.user("alice").await;
    app.bind(&user, "openid-later").await;

    assert_eq!(app.me(&user.token).await["subscribed"], true);
}

#[actix_web::test]
async fn the_same_push_three_times_has_one_effect() {
    let app = spawn_app().await;
    let xml = push_xml("openid-alice", 1_700_000_100, "subscribe", "");
    for _ in 0..3 {
        let resp = app.push_plain(&xml).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "success");
    }
    assert_eq!(events_recorded(&app), 1);
    let updated: i64 = app.query(|c| wechat_followers::table.count().get_result(c));
    assert_eq!(updated, 1);
}

#[actix_web::test]
async fn delivery_reports_set_the_message_delivery() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    for (status, expected) in [
        ("success", "delivered"),
        ("failed:user block", "blocked"),
        ("failed: system failed", "failed"),
    ] {
        let id = app.send_simple(&user).await;
        let sent = app.wait_for_final(&user.token, &id).await;
        assert_eq!(sent["delivery"], "unknown");
        let msgid = sent["msgid"].as_i64().expect("msgid");

        let extra = format!("<MsgID>{msgid}</MsgID><Status><![CDATA[{status}]]></Status>");
        let resp = app
            .push_plain(&push_xml(
                "openid-alice",
                1_700_000_100,
                "TEMPLATESENDJOBFINISH",
                &extra,
            ))
            .await;
        assert_eq!(resp.status(), 200);

        let got: Value = app
            .get_as(&user.token, &format!("/api/messages/{id}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(got["delivery"], expected, "{status}");
    }
}

#[actix_web::test]
async fn a_send_refused_with_43004_marks_the_user_as_not_following() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    app.bind(&user, "openid-alice").await;
    app.push_plain(&push_xml("openid-alice", 1_700_000_100, "subscribe", ""))
        .await;
    app.wechat.script_sends([SendReply::Errcode(43004)]);

    let id = app.send_simple(&user).await;
    assert_eq!(app.wait_for_final(&user.token, &id).await["errcode"], 43004);

    assert_eq!(app.me(&user.token).await["subscribed"], false);
}

#[actix_web::test]
async fn bad_pushes_are_refused_and_change_nothing() {
    // Compatible mode, so the plaintext cases below reach the checks they are about.
    let app = spawn_app_with(|c| {
        if let Some(p) = wxbind_tests::push_config(c) {
            p.aes_key = Some(secrecy::SecretString::from(TEST_AES_KEY.to_owned()));
            p.compat = true;
        }
    })
    .await;
    let xml = push_xml("openid-alice", 1_700_000_100, "subscribe", "");
    let ours = MsgCrypt::new(TEST_AES_KEY, None, TEST_APP_ID).expect("crypt");

    // Wrong plaintext signature.
    let resp = app
        .http
        .post(app.url("/api/wechat/events?signature=deadbeef&timestamp=1&nonce=2"))
        .body(xml.clone())
        .send()
        .await
        .expect("request");
    assert_error(resp, 401, "invalid_signature").await;

    // Encrypted for another appid.
    let theirs = MsgCrypt::new(TEST_AES_KEY, None, "wxsomeoneelse").expect("crypt");
    assert_error(
        app.push_encrypted(&theirs, &xml).await,
        400,
        "invalid_request",
    )
    .await;

    // Tampered ciphertext, correctly signed (so only decryption can catch it).
    let sealed = ours.encrypt(&xml);
    let mut bytes: Vec<char> = sealed.chars().collect();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = bytes.into_iter().collect();
    let ts = now();
    let msg_signature = signature(&[TEST_PUSH_TOKEN, &ts.to_string(), "2", &tampered]);
    let resp = app
        .http
        .post(app.url(&format!(
            "/api/wechat/events?timestamp={ts}&nonce=2&encrypt_type=aes&msg_signature={msg_signature}"
        )))
        .body(format!(
            "<xml><Encrypt><![CDATA[{tampered}]]></Encrypt></xml>"
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);

    // A DTD with an external entity.
    let xxe = format!(
        "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        xml.replace("openid-alice", "&x;")
    );
    assert_error(app.push_plain(&xxe).await, 400, "invalid_request").await;
    // Malformed XML.
    assert_error(
        app.push_plain("<xml><ToUserName>").await,
        400,
        "invalid_request",
    )
    .await;
    // 10 MB.
    let huge = format!(
        "<xml><Content>{}</Content></xml>",
        "x".repeat(10 * 1024 * 1024)
    );
    assert_error(app.push_plain(&huge).await, 413, "payload_too_large").await;

    assert_eq!(events_recorded(&app), 0, "nothing recorded");
    assert_eq!(follower(&app, "openid-alice"), None, "nothing applied");

    // And the genuine article goes through.
    let resp = app.push_encrypted(&ours, &xml).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(follower(&app, "openid-alice"), Some(true));
}

async fn bind_qrcode_scene(app: &TestApp, token: &str) -> String {
    let resp = app.get_as(token, "/api/bind-qrcode").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let ticket = body["ticket"].as_str().expect("ticket");
    let qrcode_url = body["qrcode_url"].as_str().expect("qrcode_url");
    let encoded: String = url::form_urlencoded::byte_serialize(ticket.as_bytes()).collect();
    assert_eq!(
        qrcode_url,
        format!("{}/cgi-bin/showqrcode?ticket={encoded}", app.wechat.uri())
    );
    assert!(body["expires_at"].is_string());
    app.wechat.qr_scenes().last().expect("scene").clone()
}

fn reply_content(xml: &str) -> String {
    let fields = wxbind::wechat::events::parse_fields(xml).expect("reply XML");
    assert_eq!(fields["MsgType"], "text");
    fields["Content"].clone()
}

#[actix_web::test]
async fn scanning_a_bind_qrcode_binds_and_replies() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let scene = bind_qrcode_scene(&app, &user.token).await;
    let scan = push_xml(
        "openid-scanner",
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey><Ticket><![CDATA[T]]></Ticket>"),
    );

    let resp = app.push_plain(&scan).await;

    assert_eq!(resp.status(), 200);
    let reply = resp.text().await.expect("body");
    assert!(
        reply.contains("<ToUserName><![CDATA[openid-scanner]]></ToUserName>"),
        "{reply}"
    );
    assert!(reply_content(&reply).contains("alice"), "{reply}");
    assert_eq!(app.me(&user.token).await["wechat_bound"], true);

    // WeChat's retry gets the same reply and changes nothing.
    let again = app.push_plain(&scan).await.text().await.expect("body");
    assert_eq!(reply_content(&again), reply_content(&reply));
    // The scene is single-use: a second scan (a new push) does not bind again.
    let second = push_xml(
        "openid-other",
        1_700_000_200,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );
    let text = reply_content(&app.push_plain(&second).await.text().await.expect("body"));
    assert!(text.contains("expired"), "{text}");
    let bound: Option<String> =
        app.query(|c| users::table.find(user.id).select(users::openid).first(c));
    assert_eq!(bound.as_deref(), Some("openid-scanner"));
}

#[actix_web::test]
async fn subscribing_by_scanning_follows_and_binds_in_one_step() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let scene = bind_qrcode_scene(&app, &user.token).await;
    let subscribe = push_xml(
        "openid-new",
        1_700_000_100,
        "subscribe",
        &format!("<EventKey><![CDATA[qrscene_{scene}]]></EventKey><Ticket><![CDATA[T]]></Ticket>"),
    );

    let reply = app.push_plain(&subscribe).await.text().await.expect("body");

    assert!(reply_content(&reply).contains("alice"));
    let profile = app.me(&user.token).await;
    assert_eq!(profile["wechat_bound"], true);
    assert_eq!(profile["subscribed"], true);
}

#[actix_web::test]
async fn an_expired_scene_binds_nothing() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let scene = bind_qrcode_scene(&app, &user.token).await;
    app.query(|c| {
        diesel::update(wxbind::db::schema::bind_states::table)
            .set(
                wxbind::db::schema::bind_states::expires_at
                    .eq(chrono::Utc::now() - chrono::TimeDelta::seconds(1)),
            )
            .execute(c)
    });
    let scan = push_xml(
        "openid-scanner",
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );

    let reply = app.push_plain(&scan).await.text().await.expect("body");

    assert!(reply_content(&reply).contains("expired"));
    assert_eq!(app.me(&user.token).await["wechat_bound"], false);
}

#[actix_web::test]
async fn scanning_with_a_wechat_bound_elsewhere_is_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.bind(&alice, "openid-shared").await;
    let scene = bind_qrcode_scene(&app, &bob.token).await;
    let scan = push_xml(
        "openid-shared",
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );

    let reply = app.push_plain(&scan).await.text().await.expect("body");

    assert!(reply_content(&reply).contains("another user"), "{reply}");
    assert_eq!(app.me(&bob.token).await["wechat_bound"], false);
    assert_eq!(app.me(&alice.token).await["wechat_bound"], true);
}

#[actix_web::test]
async fn scans_of_other_qr_codes_are_recorded_without_a_reply() {
    let app = spawn_app().await;
    let scan = push_xml(
        "openid-x",
        1_700_000_100,
        "SCAN",
        "<EventKey><![CDATA[promo_2026]]></EventKey>",
    );
    let resp = app.push_plain(&scan).await;
    assert_eq!(resp.text().await.expect("body"), "success");
    assert_eq!(events_recorded(&app), 1);
}

#[actix_web::test]
async fn safe_mode_replies_are_encrypted_and_signed() {
    let app = spawn_app_with(|c| {
        if let Some(p) = wxbind_tests::push_config(c) {
            p.aes_key = Some(secrecy::SecretString::from(TEST_AES_KEY.to_owned()));
        }
    })
    .await;
    let crypt = MsgCrypt::new(TEST_AES_KEY, None, TEST_APP_ID).expect("crypt");
    let user = app.user("alice").await;
    let scene = bind_qrcode_scene(&app, &user.token).await;
    let scan = push_xml(
        "openid-scanner",
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );

    let reply = app
        .push_encrypted(&crypt, &scan)
        .await
        .text()
        .await
        .expect("body");

    let envelope = wxbind::wechat::events::parse_fields(&reply).expect("envelope");
    let sealed = &envelope["Encrypt"];
    assert_eq!(
        envelope["MsgSignature"],
        signature(&[
            TEST_PUSH_TOKEN,
            &envelope["TimeStamp"],
            &envelope["Nonce"],
            sealed
        ])
    );
    let inner = crypt.decrypt(sealed).expect("decrypts with our key");
    assert!(reply_content(&inner).contains("alice"));
}

/// An app with the test EncodingAESKey: safe mode, or compatible mode with `compat`.
async fn spawn_aes_app(compat: bool) -> TestApp {
    spawn_app_with(|c| {
        if let Some(p) = wxbind_tests::push_config(c) {
            p.aes_key = Some(secrecy::SecretString::from(TEST_AES_KEY.to_owned()));
            p.compat = compat;
        }
    })
    .await
}

/// The users an openid is bound to (0 or 1).
fn bound_to(app: &TestApp, openid: &str) -> i64 {
    let openid = openid.to_owned();
    app.query(move |c| {
        users::table
            .filter(users::openid.eq(openid))
            .count()
            .get_result(c)
    })
}

/// The attack this boundary is about: a SCAN from the victim's openid whose scene is a state
/// of the attacker's own bind link. Accepted, it binds the victim's WeChat to the attacker.
async fn forged_scan(app: &TestApp, attacker: &wxbind_tests::TestUser, victim: &str) -> String {
    let (_, state) = app.bind_url(attacker).await;
    push_xml(
        victim,
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[bind_{state}]]></EventKey><Ticket><![CDATA[T]]></Ticket>"),
    )
}

#[actix_web::test]
async fn plaintext_push_is_refused_when_an_aes_key_is_set() {
    let app = spawn_aes_app(false).await;
    let mallory = app.user("mallory").await;
    let scan = forged_scan(&app, &mallory, "openid-victim").await;

    // Correctly signed: a plaintext signature covers the token, timestamp and nonce only.
    assert_error(app.push_plain(&scan).await, 401, "invalid_signature").await;
    // Nor a safe-mode URL missing `encrypt_type` or `msg_signature`, or with a wrong one.
    let crypt = MsgCrypt::new(TEST_AES_KEY, None, TEST_APP_ID).expect("crypt");
    let ts = now().to_string();
    let sealed = crypt.encrypt(&scan);
    let body = format!("<xml><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>");
    let msg_signature = signature(&[TEST_PUSH_TOKEN, &ts, "3", &sealed]);
    let plain_signature = signature(&[TEST_PUSH_TOKEN, &ts, "3"]);
    for query in [
        format!("signature={plain_signature}&timestamp={ts}&nonce=3&msg_signature={msg_signature}"),
        format!("signature={plain_signature}&timestamp={ts}&nonce=3&encrypt_type=aes"),
        format!(
            "signature={plain_signature}&timestamp={ts}&nonce=3&encrypt_type=aes&msg_signature={plain_signature}"
        ),
    ] {
        assert_error(app.post_push(&query, &body).await, 401, "invalid_signature").await;
    }

    assert_eq!(events_recorded(&app), 0, "nothing recorded");
    assert_eq!(nonces_recorded(&app), 0, "no nonce claimed");
    assert_eq!(
        bound_to(&app, "openid-victim"),
        0,
        "the victim is not bound"
    );
    assert_eq!(app.me(&mallory.token).await["wechat_bound"], false);
    // What WeChat sends in safe mode (the victim really scanning) is still accepted.
    let resp = app.push_encrypted(&crypt, &scan).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(bound_to(&app, "openid-victim"), 1);
}

#[actix_web::test]
async fn plaintext_push_is_accepted_when_the_push_mode_is_compat() {
    let app = spawn_aes_app(true).await;
    let crypt = MsgCrypt::new(TEST_AES_KEY, None, TEST_APP_ID).expect("crypt");

    let resp = app
        .push_plain(&push_xml("openid-alice", 1_700_000_100, "subscribe", ""))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "success");
    assert_eq!(follower(&app, "openid-alice"), Some(true));

    let resp = app
        .push_encrypted(
            &crypt,
            &push_xml("openid-bob", 1_700_000_100, "subscribe", ""),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(follower(&app, "openid-bob"), Some(true));
}

#[actix_web::test]
async fn push_is_refused_when_its_timestamp_is_more_than_300_seconds_off() {
    let app = spawn_app().await;
    let xml = push_xml("openid-alice", 1_700_000_100, "subscribe", "");

    // 301 s old, and 302 s ahead (one more: the server reads its clock after ours).
    for offset in [-301, 302] {
        let query = plain_push_query(now() + offset, &fresh_nonce());
        assert_error(app.post_push(&query, &xml).await, 401, "invalid_signature").await;
    }
    assert_eq!(events_recorded(&app), 0, "nothing recorded");
    assert_eq!(nonces_recorded(&app), 0, "no nonce claimed");
    assert_eq!(follower(&app, "openid-alice"), None, "nothing applied");

    // 299 s old is inside the window (a second to spare for the request's own time).
    let resp = app
        .post_push(&plain_push_query(now() - 299, &fresh_nonce()), &xml)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(events_recorded(&app), 1);
    assert_eq!(follower(&app, "openid-alice"), Some(true));
}

#[actix_web::test]
async fn url_check_is_refused_when_its_timestamp_is_more_than_300_seconds_old() {
    let app = spawn_app().await;
    let check = |ts: i64| {
        let sig = signature(&[TEST_PUSH_TOKEN, &ts.to_string(), "n1"]);
        format!("/api/wechat/events?signature={sig}&timestamp={ts}&nonce=n1&echostr=e1")
    };

    assert_error(app.get(&check(now() - 301)).await, 401, "invalid_signature").await;
    assert_eq!(app.get(&check(now() - 299)).await.status(), 200);
}

#[actix_web::test]
async fn forged_scan_is_refused_when_a_signed_url_is_replayed_with_another_body() {
    let app = spawn_app().await;
    let mallory = app.user("mallory").await;
    // The victim follows; the push's signed URL is seen (a log, a proxy, a referrer).
    let seen = plain_push_query(now(), &fresh_nonce());
    let genuine = push_xml("openid-victim", 1_700_000_050, "subscribe", "");
    assert_eq!(app.post_push(&seen, &genuine).await.status(), 200);

    let forged = forged_scan(&app, &mallory, "openid-victim").await;
    assert_error(
        app.post_push(&seen, &forged).await,
        401,
        "invalid_signature",
    )
    .await;

    assert_eq!(
        events_recorded(&app),
        1,
        "only the genuine push is recorded"
    );
    assert_eq!(nonces_recorded(&app), 1, "under its one nonce");
    assert_eq!(
        bound_to(&app, "openid-victim"),
        0,
        "the victim is not bound"
    );
    assert_eq!(app.me(&mallory.token).await["wechat_bound"], false);
    // The same XML under a signature of its own would bind: the replay check is what held.
    let resp = app.push_plain(&forged).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.me(&mallory.token).await["wechat_bound"], true);
}

#[actix_web::test]
async fn push_gets_the_same_reply_when_retried_with_the_same_url_and_body() {
    let app = spawn_app().await;
    let user = app.user("alice").await;
    let scene = bind_qrcode_scene(&app, &user.token).await;
    let scan = push_xml(
        "openid-scanner",
        1_700_000_100,
        "SCAN",
        &format!("<EventKey><![CDATA[{scene}]]></EventKey>"),
    );
    let query = plain_push_query(now(), &fresh_nonce());

    let first = app.post_push(&query, &scan).await;
    assert_eq!(first.status(), 200);
    let first = first.text().await.expect("body");
    let retry = app.post_push(&query, &scan).await;
    assert_eq!(retry.status(), 200);
    let retry = retry.text().await.expect("body");

    // The same reply; only its CreateTime is the time of answering.
    let fields = |xml: &str| {
        let mut f = wxbind::wechat::events::parse_fields(xml).expect("reply XML");
        f.remove("CreateTime");
        f
    };
    assert_eq!(fields(&retry), fields(&first));
    assert!(reply_content(&first).contains("alice"), "{first}");
    assert_eq!(events_recorded(&app), 1, "applied once");
    assert_eq!(bound_to(&app, "openid-scanner"), 1);

    // A push answered `success` is answered `success` again.
    let subscribe = push_xml("openid-scanner", 1_700_000_200, "subscribe", "");
    let query = plain_push_query(now(), &fresh_nonce());
    for _ in 0..2 {
        let resp = app.post_push(&query, &subscribe).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "success");
    }
    assert_eq!(events_recorded(&app), 2);
}

#[actix_web::test]
async fn push_is_refused_when_it_reuses_a_url_checks_signature() {
    let app = spawn_app().await;
    let (ts, nonce) = (now(), fresh_nonce());
    let sig = signature(&[TEST_PUSH_TOKEN, &ts.to_string(), &nonce]);
    let check =
        format!("/api/wechat/events?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=e1");
    assert_eq!(app.get(&check).await.status(), 200);
    assert_eq!(
        app.get(&check).await.status(),
        200,
        "WeChat may check twice"
    );

    // The URL check's signature is exactly a plaintext push's.
    let xml = push_xml("openid-alice", 1_700_000_100, "subscribe", "");
    let query = plain_push_query(ts, &nonce);
    assert_error(app.post_push(&query, &xml).await, 401, "invalid_signature").await;
    assert_eq!(events_recorded(&app), 0, "nothing recorded");
    assert_eq!(nonces_recorded(&app), 1, "the URL check's only");

    // And a push's URL does not answer a URL check.
    let (ts, nonce) = (now(), fresh_nonce());
    assert_eq!(
        app.post_push(&plain_push_query(ts, &nonce), &xml)
            .await
            .status(),
        200
    );
    let sig = signature(&[TEST_PUSH_TOKEN, &ts.to_string(), &nonce]);
    assert_error(
        app.get(&format!(
            "/api/wechat/events?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=e1"
        ))
        .await,
        401,
        "invalid_signature",
    )
    .await;
}

#[actix_web::test]
async fn push_retry_is_applied_when_the_first_delivery_failed() {
    let app = spawn_app().await;
    // Make applying a follow fail, as a database error would.
    app.query(|c| {
        diesel::sql_query(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$",
        )
        .execute(c)?;
        diesel::sql_query(
            "CREATE TRIGGER refuse BEFORE INSERT ON wechat_followers \
             FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        .execute(c)
    });
    let xml = push_xml("openid-alice", 1_700_000_100, "subscribe", "");
    let query = plain_push_query(now(), &fresh_nonce());
    assert_error(app.post_push(&query, &xml).await, 500, "internal").await;
    assert_eq!(events_recorded(&app), 0, "rolled back");
    assert_eq!(nonces_recorded(&app), 0, "the nonce with it");

    app.query(|c| diesel::sql_query("DROP TRIGGER refuse ON wechat_followers").execute(c));
    // WeChat's retry of the failed delivery goes through.
    assert_eq!(app.post_push(&query, &xml).await.status(), 200);
    assert_eq!(follower(&app, "openid-alice"), Some(true));
}

#[test]
fn nonce_claim_waits_for_a_concurrent_claim_when_two_instances_race() {
    use diesel::result::Error::RollbackTransaction;
    use std::sync::mpsc;
    use wxbind::db::push_nonces::{Claim, claim};

    let db = TestDb::create();
    for commit in [true, false] {
        let nonce = fresh_nonce();
        let (held_tx, held_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let mut first_conn = db.conn();
        let first_nonce = nonce.clone();
        let first = std::thread::spawn(move || {
            first_conn.transaction(|c| {
                assert_eq!(claim(c, 1_700_000_000, &first_nonce, "aa")?, Claim::New);
                held_tx.send(()).expect("signal");
                end_rx.recv().expect("end");
                if commit {
                    Ok(())
                } else {
                    Err(RollbackTransaction)
                }
            })
        });
        held_rx.recv().expect("first claimed");
        let mut second_conn = db.conn();
        let second =
            std::thread::spawn(move || claim(&mut second_conn, 1_700_000_000, &nonce, "bb"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !second.is_finished(),
            "the second claim waits for the first"
        );
        end_tx.send(()).expect("end");
        let _ = first.join().expect("first thread");
        let got = second.join().expect("second thread").expect("claim");
        // Committed: the other body is a replay. Rolled back: the pair is free.
        let expected = if commit { Claim::OtherBody } else { Claim::New };
        assert_eq!(got, expected, "commit={commit}");
    }
}

#[actix_web::test]
async fn housekeeping_purges_push_nonces_when_their_timestamp_is_out_of_the_window() {
    use wxbind::db::push_nonces::{Claim, claim};
    use wxbind::db::schema::push_nonces;

    let db = TestDb::create();
    let mut conn = db.conn();
    // Kept for two windows: one for the rule, one for instances with slower clocks.
    for ts in [now() - 700, now() - 500, now()] {
        assert_eq!(claim(&mut conn, ts, "n", "aa").expect("claim"), Claim::New);
    }

    wxbind::housekeeping::purge(&wxbind::db::build_pool(&db.url, 2)).await;

    let mut left: Vec<i64> = push_nonces::table
        .select(push_nonces::timestamp)
        .load(&mut conn)
        .expect("query");
    left.sort_unstable();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0] >= now() - 600, "{left:?}");
}
