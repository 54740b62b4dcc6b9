//! What a database serves: the first process records it (an app id, or `sandbox`), every later
//! process must match it, and the sandbox's demo accounts never touch an account it did not
//! make. Each test calls what `wxbind serve`, `migrate` and `user add` call on start
//! (`deployment::enforce`, then `sandbox::ensure_demo_accounts` in sandbox mode).
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use diesel::prelude::*;
use serde_json::Value;
use wxbind::config::Config;
use wxbind::db::schema::{deployment, users};
use wxbind::deployment::{DeploymentError, Serves, enforce};
use wxbind::domain::Role;
use wxbind::sandbox::{DemoAccount, ensure_demo_accounts};
use wxbind_tests::{DEMO_PASSWORD, TEST_JWT_SECRET, TEST_PASSWORD, TestDb, spawn_app_with};

const APP_A: &str = "wx00000000000000a1";
const APP_B: &str = "wx00000000000000b2";

/// A configuration as `wxbind` reads it from the environment `vars`, on `db`.
fn config(db: &TestDb, vars: &[(&str, &str)]) -> Config {
    let mut env: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    env.insert("DATABASE_URL", db.url.clone());
    Config::from_lookup(|key| env.get(key).cloned()).expect("a valid configuration")
}

/// A process with the credentials of `app_id`.
fn account(db: &TestDb, app_id: &str) -> Config {
    config(
        db,
        &[
            ("WECHAT_APP_ID", app_id),
            ("WECHAT_APP_SECRET", "the-app-secret"),
            ("JWT_SECRET", TEST_JWT_SECRET),
        ],
    )
}

/// A process without credentials: sandbox mode, as a failed secret injection would start.
fn sandbox(db: &TestDb) -> Config {
    let c = config(db, &[]);
    assert!(c.sandbox.enabled, "no credentials means sandbox mode");
    c
}

fn recorded(db: &TestDb) -> Option<String> {
    deployment::table
        .select(deployment::serves)
        .first(&mut db.conn())
        .optional()
        .expect("read deployment")
}

/// An account made the way `wxbind user add` makes one (not a demo account).
fn add_user(db: &TestDb, name: &str, role: Role) -> String {
    let hash = wxbind::auth::hash_password(TEST_PASSWORD).expect("hash");
    wxbind::db::users::insert(
        &mut db.conn(),
        &wxbind::db::users::NewUser {
            username: name,
            password_hash: &hash,
            role,
        },
    )
    .expect("insert user");
    hash
}

/// `(password_hash, role, demo)` of every account, by username.
fn accounts(db: &TestDb) -> Vec<(String, String, Role, bool)> {
    users::table
        .select((
            users::username,
            users::password_hash,
            users::role,
            users::demo,
        ))
        .order(users::username)
        .load(&mut db.conn())
        .expect("read users")
}

#[test]
fn the_first_process_records_its_app_id_and_the_same_account_starts_again() {
    let db = TestDb::create();
    assert_eq!(recorded(&db), None, "a fresh database serves nothing yet");

    let first = enforce(&mut db.conn(), &account(&db, APP_A)).expect("first start");
    let again = enforce(&mut db.conn(), &account(&db, APP_A)).expect("restart");

    assert_eq!(first, Some(Serves::Account(APP_A.into())));
    assert_eq!(again, first);
    assert_eq!(recorded(&db).as_deref(), Some(APP_A));
}

#[test]
fn the_first_sandbox_process_records_sandbox() {
    let db = TestDb::create();

    let first = enforce(&mut db.conn(), &sandbox(&db)).expect("first start");
    let again = enforce(&mut db.conn(), &sandbox(&db)).expect("restart");

    assert_eq!(first, Some(Serves::Sandbox));
    assert_eq!(again, first);
    // The mode, not the simulator's own app id, is what the database records.
    assert_eq!(recorded(&db).as_deref(), Some("sandbox"));
}

#[test]
fn a_sandbox_start_on_a_real_accounts_database_is_refused_in_one_line_and_touches_nothing() {
    let db = TestDb::create();
    enforce(&mut db.conn(), &account(&db, APP_A)).expect("the real service's first start");
    let admin_hash = add_user(&db, "admin", Role::Admin);
    let before = accounts(&db);

    let refused = enforce(&mut db.conn(), &sandbox(&db)).expect_err("a sandbox on real data");

    assert!(
        matches!(&refused, DeploymentError::Mismatch { database, process }
            if *database == Serves::Account(APP_A.into()) && *process == Serves::Sandbox),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "this database serves the official account wx00000000000000a1; this process runs in \
         sandbox mode. Point DATABASE_URL at another database, or set \
         WECHAT_APP_ID/WECHAT_APP_SECRET for wx00000000000000a1"
    );
    // Even called without the check, seeding refuses a database that is not the sandbox's.
    let seeding = ensure_demo_accounts(&mut db.conn(), DEMO_PASSWORD).expect_err("not a sandbox");
    assert!(seeding.to_string().contains(APP_A), "{seeding}");

    assert_eq!(
        accounts(&db),
        before,
        "no demo account, the admin as it was"
    );
    assert_eq!(before[0].1, admin_hash);
    assert_eq!(before[0].2, Role::Admin);
    assert_eq!(recorded(&db).as_deref(), Some(APP_A));
}

#[test]
fn another_official_account_is_refused() {
    let db = TestDb::create();
    enforce(&mut db.conn(), &account(&db, APP_A)).expect("first start");

    let refused = enforce(&mut db.conn(), &account(&db, APP_B)).expect_err("another account");

    assert_eq!(
        refused.to_string(),
        "this database serves the official account wx00000000000000a1; this process runs for \
         the official account wx00000000000000b2. Point DATABASE_URL at another database, or set \
         WECHAT_APP_ID/WECHAT_APP_SECRET for wx00000000000000a1"
    );
    assert_eq!(recorded(&db).as_deref(), Some(APP_A));
}

#[test]
fn a_real_account_is_refused_on_a_sandbox_database() {
    let db = TestDb::create();
    enforce(&mut db.conn(), &sandbox(&db)).expect("sandbox first");

    let refused = enforce(&mut db.conn(), &account(&db, APP_A)).expect_err("demo data");

    let line = refused.to_string();
    assert!(
        line.starts_with(
            "this database serves the sandbox; this process runs for the official account \
             wx00000000000000a1. Point DATABASE_URL at another database"
        ),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    assert_eq!(recorded(&db).as_deref(), Some("sandbox"));
}

/// A database with accounts and no record predates the record; it may be real data, so the
/// sandbox does not claim it (and makes no demo account in it). Its own account still can.
#[test]
fn the_sandbox_never_claims_a_database_that_already_holds_accounts() {
    let db = TestDb::create();
    add_user(&db, "admin", Role::Admin);
    let before = accounts(&db);

    let refused = enforce(&mut db.conn(), &sandbox(&db)).expect_err("accounts, no record");
    let seeding = ensure_demo_accounts(&mut db.conn(), DEMO_PASSWORD).expect_err("unclaimed");

    assert!(
        matches!(refused, DeploymentError::UnclaimedWithAccounts),
        "{refused:?}"
    );
    assert!(!refused.to_string().contains('\n'));
    assert!(seeding.to_string().contains("nothing yet"), "{seeding}");
    assert_eq!(accounts(&db), before);
    assert_eq!(recorded(&db), None);

    let claimed = enforce(&mut db.conn(), &account(&db, APP_A)).expect("the real account");
    assert_eq!(claimed, Some(Serves::Account(APP_A.into())));
}

#[test]
fn processes_starting_together_on_a_fresh_database_agree_on_one_owner() {
    let db = Arc::new(TestDb::create());
    let configs = [account(&db, APP_A), account(&db, APP_B), sandbox(&db)];
    let barrier = Arc::new(Barrier::new(configs.len()));
    let handles: Vec<_> = configs
        .into_iter()
        .map(|c| {
            let (db, barrier) = (Arc::clone(&db), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut conn = db.conn();
                barrier.wait();
                enforce(&mut conn, &c)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();

    let owner = recorded(&db).expect("someone claimed it");
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        winners[0].as_ref().map(Serves::as_stored),
        Some(owner.as_str())
    );
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(refused, DeploymentError::Mismatch { database, .. }
                if database.as_stored() == owner),
            "{refused:?}"
        );
    }
}

#[test]
fn a_process_without_an_official_account_claims_nothing() {
    let db = TestDb::create();
    let off = config(&db, &[("WXBIND_SANDBOX", "off")]);

    assert_eq!(enforce(&mut db.conn(), &off).expect("fresh"), None);
    assert_eq!(recorded(&db), None, "nothing claimed");

    enforce(&mut db.conn(), &account(&db, APP_A)).expect("the account claims it");
    assert_eq!(
        enforce(&mut db.conn(), &off).expect("claimed"),
        Some(Serves::Account(APP_A.into()))
    );
}

#[test]
fn demo_accounts_are_marked_and_never_overwrite_an_account_of_the_same_name() {
    let db = TestDb::create();
    enforce(&mut db.conn(), &sandbox(&db)).expect("a sandbox database");
    // `wxbind user add admin` in the sandbox, before the first `serve`.
    let admin_hash = add_user(&db, "admin", Role::User);

    let first = ensure_demo_accounts(&mut db.conn(), DEMO_PASSWORD).expect("seed");
    let after_first = accounts(&db);
    let second = ensure_demo_accounts(&mut db.conn(), "another-start-password").expect("seed");
    let after_second = accounts(&db);

    assert_eq!(
        first,
        [
            ("demo", DemoAccount::Created),
            ("admin", DemoAccount::NotDemo)
        ]
    );
    assert_eq!(
        second,
        [
            ("demo", DemoAccount::PasswordReset),
            ("admin", DemoAccount::NotDemo)
        ]
    );
    for rows in [&after_first, &after_second] {
        let [admin, demo] = rows.as_slice() else {
            panic!("two accounts: {rows:?}");
        };
        assert_eq!(
            (admin.0.as_str(), admin.1.as_str(), admin.2, admin.3),
            ("admin", admin_hash.as_str(), Role::User, false),
            "the admin someone made is left exactly as it was"
        );
        assert_eq!(
            (demo.0.as_str(), demo.2, demo.3),
            ("demo", Role::User, true)
        );
    }
    // The sandbox's own account gets each start's password, so the banner stays true.
    assert!(wxbind::auth::verify_password(
        DEMO_PASSWORD,
        &after_first[1].1
    ));
    assert!(wxbind::auth::verify_password(
        "another-start-password",
        &after_second[1].1
    ));
}

#[test]
fn demo_accounts_of_a_sandbox_start_are_marked_with_their_roles() {
    let db = TestDb::create();
    enforce(&mut db.conn(), &sandbox(&db)).expect("a sandbox database");

    ensure_demo_accounts(&mut db.conn(), DEMO_PASSWORD).expect("seed");

    let rows: Vec<_> = accounts(&db)
        .into_iter()
        .map(|(name, _, role, demo)| (name, role, demo))
        .collect();
    assert_eq!(
        rows,
        [
            ("admin".to_owned(), Role::Admin, true),
            ("demo".to_owned(), Role::User, true)
        ]
    );
}

#[actix_web::test]
async fn in_the_sandbox_demo_accounts_log_in_and_an_existing_admin_keeps_its_password() {
    let app = spawn_app_with(|c| c.enable_sandbox()).await;
    enforce(&mut app.db.conn(), &app.config).expect("a sandbox database");
    app.insert_user("admin", false);

    let seeded = wxbind_tests::seed_sandbox(&app);

    assert_eq!(seeded[1], ("admin", DemoAccount::NotDemo));
    let demo = app.post_login("demo", DEMO_PASSWORD).await;
    assert_eq!(demo.status(), 200);
    let body: Value = demo.json().await.expect("json");
    assert_eq!(body["user"]["role"], "user");
    assert_eq!(app.post_login("admin", DEMO_PASSWORD).await.status(), 401);
    let admin = app.post_login("admin", TEST_PASSWORD).await;
    assert_eq!(admin.status(), 200);
    let body: Value = admin.json().await.expect("json");
    assert_eq!(
        body["user"]["role"], "user",
        "its role was not raised either"
    );
}
