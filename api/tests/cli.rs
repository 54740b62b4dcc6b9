//! The real `wxbind` binary against a throwaway database: the first command records what the
//! database serves, and a process with another identity exits non-zero with one line saying
//! what the database belongs to. (The library-level cases are in `tests/api/deployment.rs`;
//! this checks the wiring in `main.rs`, which only this package's tests can run.)
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;

const APP_ID: &str = "wx00000000000000c3";
const JWT_SECRET: &str = "cli-test-jwt-secret-cli-test-jwt-secret";

/// The server to test against, as in the black-box harness.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&gssencmode=disable".into()
    })
}

/// A database name nobody uses; the binary creates it (as `wxbind` does on a first start) and
/// the guard drops it.
struct ThrowawayDb {
    url: String,
    name: String,
}

impl ThrowawayDb {
    fn new() -> Self {
        let name = format!("wxbind_cli_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            name,
        }
    }

    fn serves(&self) -> Option<String> {
        let mut conn = PgConnection::establish(&self.url).expect("connect");
        diesel::sql_query("SELECT serves FROM deployment")
            .load::<Serves>(&mut conn)
            .expect("read deployment")
            .pop()
            .map(|row| row.serves)
    }
}

#[derive(QueryableByName)]
struct Serves {
    #[diesel(sql_type = diesel::sql_types::Text)]
    serves: String,
}

impl Drop for ThrowawayDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&admin_url()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// Runs `wxbind args…` with only `vars` (and the database) in its environment, from a
/// directory without a `.env`, feeding `stdin`; kills it after 60 s, so a check that fails to
/// refuse `serve` fails the test instead of hanging it.
fn wxbind(db: &ThrowawayDb, vars: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("wxbind-cli-{}", db.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxbind"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("WXBIND_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .envs(vars.iter().copied())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wxbind");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wxbind {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

const REAL: &[(&str, &str)] = &[
    ("WECHAT_APP_ID", APP_ID),
    ("WECHAT_APP_SECRET", "the-app-secret"),
    ("JWT_SECRET", JWT_SECRET),
];

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_sandbox_process_is_refused_by_a_real_accounts_database_in_one_line() {
    let db = ThrowawayDb::new();
    let migrated = wxbind(&db, REAL, &["migrate"], "");
    assert!(migrated.status.success(), "{migrated:?}");
    assert_eq!(db.serves().as_deref(), Some(APP_ID));

    let expected = format!(
        "wxbind: this database serves the official account {APP_ID}; this process runs in \
         sandbox mode. Point DATABASE_URL at another database, or set \
         WECHAT_APP_ID/WECHAT_APP_SECRET for {APP_ID}"
    );
    // No credentials: what a replica whose secret injection failed would start with.
    for (args, stdin) in [
        (&["serve"][..], ""),
        (&["migrate"][..], ""),
        (&["user", "add", "mallory"][..], "a-long-password\n"),
    ] {
        let refused = wxbind(&db, &[], args, stdin);
        assert!(!refused.status.success(), "{args:?}: {refused:?}");
        assert_eq!(
            stderr_lines(&refused),
            std::slice::from_ref(&expected),
            "{args:?}"
        );
    }
    assert_eq!(db.serves().as_deref(), Some(APP_ID));

    // The account it serves still gets in.
    let added = wxbind(&db, REAL, &["user", "add", "alice"], "a-long-password\n");
    assert!(added.status.success(), "{added:?}");
}
