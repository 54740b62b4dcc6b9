//! Throwaway databases: each test gets `wxbind_test_<uuid>`, cloned from a migrated template
//! (built once per migration set, under an advisory lock so parallel test processes agree),
//! and dropped `WITH (FORCE)` when the test ends.
use std::sync::OnceLock;

use diesel::prelude::*;
use diesel::sql_types::Text;
use sha2::{Digest, Sha256};

/// The server tests run against; `TEST_DATABASE_URL` overrides it.
///
/// Without TLS: on loopback it protects nothing, and with it a test process could crash as it
/// exits. Each test's app is dropped while its pools may still be opening connections to the
/// database just dropped with it, and OpenSSL's exit-time cleanup then frees what those
/// threads' libpq handshakes are using (a SIGSEGV in libcrypto after every test passed). The
/// same for GSSAPI encryption, which libpq tries first: Kerberos' exit-time cleanup aborted a
/// run whose tests had all passed (`k5_mutex_lock` assertion).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&gssencmode=disable".into()
    })
}

/// One test's database.
pub struct TestDb {
    /// Connection URL of this database.
    pub url: String,
    name: String,
}

impl TestDb {
    /// A fresh, migrated database.
    pub fn create() -> Self {
        let template = template();
        let name = format!("wxbind_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&admin_url());
        let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
        // Cloning fails while another session is briefly connected to the template.
        let mut tries = 0;
        while let Err(e) = diesel::sql_query(&sql).execute(&mut admin) {
            tries += 1;
            assert!(tries < 50, "creating {name}: {e}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self {
            url: with_database(&admin_url(), &name),
            name,
        }
    }

    /// A new connection to this database.
    pub fn conn(&self) -> PgConnection {
        connect(&self.url)
    }
}

impl Drop for TestDb {
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

fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test PostgreSQL at {url}: {e}\n\
             Start one (see README) or set TEST_DATABASE_URL"
        )
    })
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("TEST_DATABASE_URL is a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

/// The migrated template of the current migration set, created if missing.
fn template() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let name = format!("wxbind_tmpl_{}", migrations_fingerprint());
        let mut admin = connect(&admin_url());
        diesel::sql_query("SELECT pg_advisory_lock(hashtext('wxbind.test.template'))::text")
            .execute(&mut admin)
            .expect("lock");
        let exists = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists",
        )
        .bind::<Text, _>(&name)
        .get_result::<Exists>(&mut admin)
        .expect("query")
        .exists;
        if !exists {
            // Build under another name and rename, so a crash never leaves a half-made template.
            let building = format!("{name}_building");
            for sql in [
                format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                format!("CREATE DATABASE {building}"),
            ] {
                diesel::sql_query(sql)
                    .execute(&mut admin)
                    .expect("create template");
            }
            {
                let mut conn = connect(&with_database(&admin_url(), &building));
                wxbind::db::run_migrations(&mut conn).expect("migrate template");
            }
            diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
                .execute(&mut admin)
                .expect("rename template");
        } else {
            // The name follows the files on disk, the migrations follow what this binary
            // embedded: a binary built before a migration was added could have made this
            // template without it. Applying what is pending makes either order safe.
            let mut conn = connect(&with_database(&admin_url(), &name));
            wxbind::db::run_migrations(&mut conn).expect("migrate template");
        }
        diesel::sql_query("SELECT pg_advisory_unlock(hashtext('wxbind.test.template'))::text")
            .execute(&mut admin)
            .expect("unlock");
        name
    })
}

/// A short hash of every migration file, so a changed migration gets a new template.
fn migrations_fingerprint() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<_> = walk(&dir);
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        let relative = f.strip_prefix(&dir).unwrap_or(&f);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&f).expect("read migration"));
    }
    hex::encode(&hasher.finalize()[..8])
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("migrations dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
