//! The fault test of issue 12 ("Operations at scale"), with real processes: three `wxbind
//! serve` processes on one PostgreSQL cluster of the test's own, WeChat faked on loopback with
//! latency and injected answers (-1, 45011, 40001 after revoking the token, HTTP 500), and
//! clients posting messages with idempotency keys the whole time, retrying 503s and refused
//! connections with the same key, and looking their latest message up as they go. Three faults,
//! one after the other:
//!
//! 1. one process is killed with SIGKILL while it has sends in flight (and a replacement is
//!    started, as an orchestrator would);
//! 2. PostgreSQL is stopped with `pg_ctl -m immediate` (a crash: every connection cut, no
//!    checkpoint) and started again;
//! 3. one process is stopped with SIGTERM while it has sends in flight.
//!
//! Then it checks that every acknowledged message exists once per idempotency key, under the id
//! its client was given, and ends `sent`; that every send of a message, resends included,
//! carried that id as `client_msg_id` and the fake delivered each message once; that no client
//! saw a 500 (posting or looking up); that the processes neither killed nor stopped never
//! exited and answered `/api/ready` within 5 s of the database coming back; and that the
//! stopped one exited cleanly, its unfinished sends handed back.
//!
//! The cluster needs `initdb` and `pg_ctl` (`/usr/lib/postgresql/*/bin`, or on `PATH`); as root
//! they run as the `postgres` user. Without them the test fails when `CI` is set and is skipped
//! otherwise, saying why. `TEST_LOG=1` prints the processes' logs at the end; a failing run
//! prints their last lines anyway.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use rustix::process::{Pid, Signal};
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const APP_ID: &str = "wx00000000000000fa";
const APP_SECRET: &str = "faults-app-secret";
const JWT_SECRET: &str = "faults-test-jwt-secret-faults-test-jwt-secret";
const PASSWORD: &str = "faults-password-123";
const TEMPLATE: &str = "TEMPLATE_FAULTS";
const DATABASE: &str = "wxbind_faults";
/// The clients' accounts; each runs two senders.
const USERS: [&str; 4] = ["ann", "bob", "cyd", "dee"];
const SENDERS_PER_USER: usize = 2;
/// Pause between one sender's messages.
const PACE: Duration = Duration::from_millis(120);

/// How long the fake takes to accept a send, and a slow send (one in twenty).
const SEND_LATENCY: Duration = Duration::from_millis(250);
const SLOW_SEND_LATENCY: Duration = Duration::from_millis(2000);
/// How long it takes to refuse one.
const ERROR_LATENCY: Duration = Duration::from_millis(20);
/// The processes' tuning: short leases and drains, so the faults play out in seconds.
const LEASE_SECONDS: u64 = 4;
const SHUTDOWN_SECONDS: u64 = 1;
/// What the issue allows a surviving process to take to be ready after the database is back.
const READY_BUDGET: Duration = Duration::from_secs(5);
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(2);
/// Load between the faults.
const STEADY: Duration = Duration::from_secs(3);

/// A free port on loopback (free when asked; the process binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `cmd`, failing with its output unless it succeeds.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL cluster of this test's own in a temporary directory, on a free port, so the
/// test can crash and restart it. Stopped and deleted when dropped.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run the tools as the `postgres` user (the test runs as root, which PostgreSQL refuses).
    as_postgres: bool,
}

impl Cluster {
    /// Creates the cluster, or says why it cannot.
    fn create() -> Result<Self, String> {
        let bin = postgres_bin().ok_or(
            "no initdb and pg_ctl in /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)",
        )?;
        let as_postgres = rustix::process::geteuid().is_root();
        let dir = std::env::temp_dir().join(format!("wxbind-faults-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let id = |flag: &str| -> Result<u32, String> {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .map_err(|e| format!("id {flag} postgres: {e}"))?;
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .map_err(|_| "running as root needs a postgres user to run initdb as".into())
            };
            std::os::unix::fs::chown(&cluster.dir, Some(id("-u")?), Some(id("-g")?))
                .map_err(|e| format!("chown {} to postgres: {e}", cluster.dir.display()))?;
        }
        run(
            cluster
                .tool("initdb")
                .arg("-D")
                .arg(cluster.data())
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync"),
            "initdb",
        )?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `bin/name`, as the `postgres` user when the test runs as root.
    fn tool(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) {
        // TCP on loopback only. `fsync=off` spares the shared disk: a killed server loses
        // nothing by it (committed WAL is in the kernel's page cache either way); only an
        // operating-system crash would.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "pg_ctl start",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the server as a crash would: every backend killed, no checkpoint.
    fn crash(&self) -> Result<(), String> {
        run(
            self.tool("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl -m immediate stop",
        )
    }

    /// A URL of `database` on this cluster.
    fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable&gssencmode=disable",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.crash();
        if std::thread::panicking() {
            print_tail(&self.dir.join("postgres.log"), 30);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, or the directory on `PATH`
/// that has it.
fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_tools(d)))
}

// ---------------------------------------------------------------------------------------------
// The fake WeChat

/// What the fake answered to one template send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Accepted with this msgid, after this long.
    Sent { msgid: i64, latency: Duration },
    /// 40001 for a token other than the current one.
    StaleToken,
    /// The token was revoked and 40001 answered (as WeChat does when another fetch replaced it).
    Revoked,
    /// This errcode.
    Errcode(i64),
    /// HTTP 500.
    Http500,
}

/// One template send the fake received.
#[derive(Debug, Clone)]
struct Send {
    /// Which process sent it (the path prefix of its `WECHAT_API_BASE`).
    process: String,
    client_msg_id: String,
    touser: String,
    /// `data.keyword1.value`: the message's idempotency key.
    key: String,
    at: Instant,
    reply: Reply,
}

#[derive(Default)]
struct FakeState {
    token: Option<String>,
    tokens_issued: u32,
    sends: Vec<Send>,
    /// `(touser, client_msg_id)` → msgid of every message WeChat accepted: one per message
    /// however often it is sent, as WeChat deduplicates on `client_msg_id`.
    delivered: HashMap<(String, String), i64>,
    next_msgid: i64,
    used_codes: HashSet<String>,
    unexpected: Vec<String>,
}

/// WeChat's API on loopback, speaking its JSON. Each process gets its own base
/// (`/p1`, `/p2`, …) so every request says who made it.
struct FakeWechat {
    server: MockServer,
    state: Arc<Mutex<FakeState>>,
}

fn errcode(code: i64, msg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "errcode": code,
        "errmsg": format!("{msg} rid: 6560f1b2-4a7e3c1d-0badc0de"),
    }))
}

fn stale_token() -> ResponseTemplate {
    errcode(
        40001,
        "invalid credential, access_token is invalid or not latest",
    )
}

fn query(req: &Request, key: &str) -> String {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The process a request came from: the first segment of its path.
fn process_of(req: &Request) -> String {
    req.url
        .path_segments()
        .and_then(|mut s| s.next())
        .unwrap_or_default()
        .to_owned()
}

impl FakeWechat {
    async fn start() -> Self {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let state = Arc::new(Mutex::new(FakeState {
            next_msgid: 3_000_000_000,
            ..FakeState::default()
        }));
        let s = Arc::clone(&state);
        Mock::given(method("POST"))
            .and(path_regex(r"^/p\d+/cgi-bin/stable_token$"))
            .respond_with(move |req: &Request| {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                if body["grant_type"] != "client_credential" || body["appid"] != APP_ID {
                    return errcode(40013, "invalid appid");
                }
                if body["secret"] != APP_SECRET {
                    return errcode(40125, "invalid appsecret");
                }
                let force = body["force_refresh"].as_bool().unwrap_or(false);
                issue_token(&mut lock(&s), force)
            })
            .mount(&server)
            .await;
        let s = Arc::clone(&state);
        Mock::given(method("GET"))
            .and(path_regex(r"^/p\d+/cgi-bin/token$"))
            .respond_with(move |req: &Request| {
                if query(req, "grant_type") != "client_credential" || query(req, "appid") != APP_ID
                {
                    return errcode(40013, "invalid appid");
                }
                if query(req, "secret") != APP_SECRET {
                    return errcode(40125, "invalid appsecret");
                }
                issue_token(&mut lock(&s), true)
            })
            .mount(&server)
            .await;
        let s = Arc::clone(&state);
        Mock::given(method("POST"))
            .and(path_regex(r"^/p\d+/cgi-bin/message/template/send$"))
            .respond_with(move |req: &Request| template_send(&mut lock(&s), req))
            .mount(&server)
            .await;
        let s = Arc::clone(&state);
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/p\d+/cgi-bin/template/get_all_private_template$",
            ))
            .respond_with(move |req: &Request| {
                if lock(&s).token.as_deref() != Some(query(req, "access_token").as_str()) {
                    return stale_token();
                }
                ResponseTemplate::new(200).set_body_json(json!({"template_list": [{
                    "template_id": TEMPLATE,
                    "title": "订单状态更新",
                    "primary_industry": "IT科技",
                    "deputy_industry": "互联网|电子商务",
                    "content": "详情：{{keyword1.DATA}}\n{{remark.DATA}}",
                    "example": "详情：订单 42 已发货",
                }]}))
            })
            .mount(&server)
            .await;
        let s = Arc::clone(&state);
        Mock::given(method("GET"))
            .and(path_regex(r"^/p\d+/sns/oauth2/access_token$"))
            .respond_with(move |req: &Request| {
                if query(req, "appid") != APP_ID || query(req, "secret") != APP_SECRET {
                    return errcode(40125, "invalid appsecret");
                }
                let code = query(req, "code");
                let Some(openid) = code.strip_prefix("code-").map(str::to_owned) else {
                    return errcode(40029, "invalid code");
                };
                if !lock(&s).used_codes.insert(code) {
                    return errcode(40163, "code been used");
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "access_token": "OAUTH_ACCESS_TOKEN",
                    "expires_in": 7200,
                    "refresh_token": "OAUTH_REFRESH_TOKEN",
                    "openid": openid,
                    "scope": "snsapi_base",
                }))
            })
            .mount(&server)
            .await;
        let s = Arc::clone(&state);
        Mock::given(wiremock::matchers::any())
            .respond_with(move |req: &Request| {
                lock(&s)
                    .unexpected
                    .push(format!("{} {}", req.method, req.url.path()));
                ResponseTemplate::new(404)
            })
            .with_priority(10)
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// `WECHAT_API_BASE` of the process called `process`.
    fn base(&self, process: &str) -> String {
        format!("{}/{process}", self.server.uri())
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// Messages `process` has sent whose acceptance is still on its way back (with a margin,
    /// so none of them can have been recorded yet): they are in flight.
    fn in_flight(&self, process: &str) -> Vec<Send> {
        let now = Instant::now();
        self.state()
            .sends
            .iter()
            .filter(|s| s.process == process)
            .filter(|s| match s.reply {
                Reply::Sent { latency, .. } => s.at + latency > now + Duration::from_millis(50),
                _ => false,
            })
            .cloned()
            .collect()
    }
}

fn lock(state: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Like `stable_token`: the current token while it is valid, unless forced.
fn issue_token(s: &mut FakeState, force: bool) -> ResponseTemplate {
    let token = match (&s.token, force) {
        (Some(t), false) => t.clone(),
        _ => {
            s.tokens_issued += 1;
            let t = format!("FAULTS_ACCESS_TOKEN_{}", s.tokens_issued);
            s.token = Some(t.clone());
            t
        }
    };
    ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "expires_in": 7200}))
}

/// A template send: a stale token gets 40001; of the others, by arrival, three in ten get a
/// transient failure (-1, 45011, HTTP 500), one in forty a revoked token, one in twenty is
/// accepted slowly and the rest are accepted after [`SEND_LATENCY`].
fn template_send(s: &mut FakeState, req: &Request) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let touser = body["touser"].as_str().unwrap_or_default().to_owned();
    let client_msg_id = body["client_msg_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = body["data"]["keyword1"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let valid_token = s.token.as_deref() == Some(query(req, "access_token").as_str());
    let n = s.sends.len() % 40;
    let reply = if !valid_token {
        Reply::StaleToken
    } else if touser.is_empty() || client_msg_id.is_empty() || body["template_id"] != TEMPLATE {
        Reply::Errcode(47003)
    } else {
        match n {
            3 | 13 | 23 | 33 => Reply::Errcode(-1),
            6 | 26 => Reply::Errcode(45011),
            9 | 19 | 29 | 39 => Reply::Http500,
            16 => Reply::Revoked,
            _ => {
                let next = s.next_msgid;
                let msgid = *s
                    .delivered
                    .entry((touser.clone(), client_msg_id.clone()))
                    .or_insert(next);
                if msgid == next {
                    s.next_msgid += 1;
                }
                let latency = if n % 20 == 11 {
                    SLOW_SEND_LATENCY
                } else {
                    SEND_LATENCY
                };
                Reply::Sent { msgid, latency }
            }
        }
    };
    s.sends.push(Send {
        process: process_of(req),
        client_msg_id,
        touser,
        key,
        at: Instant::now(),
        reply,
    });
    match reply {
        Reply::Sent { msgid, latency } => ResponseTemplate::new(200)
            .set_body_json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
            .set_delay(latency),
        Reply::StaleToken => stale_token().set_delay(ERROR_LATENCY),
        Reply::Revoked => {
            s.token = None;
            stale_token().set_delay(ERROR_LATENCY)
        }
        Reply::Errcode(-1) => errcode(-1, "system error").set_delay(ERROR_LATENCY),
        Reply::Errcode(45011) => errcode(
            45011,
            "api minute-quota reach limit  mustslower  retry next minute",
        )
        .set_delay(ERROR_LATENCY),
        Reply::Errcode(c) => errcode(c, "argument invalid!").set_delay(ERROR_LATENCY),
        Reply::Http500 => ResponseTemplate::new(500).set_delay(ERROR_LATENCY),
    }
}

// ---------------------------------------------------------------------------------------------
// wxbind processes

/// What every process of the deployment is configured with.
struct Deployment {
    database_url: String,
    fake: FakeWechat,
    /// Working directory (no `.env`) and logs.
    dir: PathBuf,
}

impl Deployment {
    /// `wxbind args…` configured as `process`, with only this deployment's environment.
    fn command(&self, process: &str, port: u16, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxbind"));
        let public = format!("http://127.0.0.1:{port}");
        cmd.args(args)
            .env_clear()
            .current_dir(&self.dir)
            .env("DATABASE_URL", &self.database_url)
            .env("WXBIND_LISTEN", format!("127.0.0.1:{port}"))
            .env("WXBIND_PUBLIC_URL", &public)
            .env("WECHAT_APP_ID", APP_ID)
            .env("WECHAT_APP_SECRET", APP_SECRET)
            .env("JWT_SECRET", JWT_SECRET)
            .env("WECHAT_API_BASE", self.fake.base(process))
            .env("WECHAT_OAUTH_BASE", self.fake.base(process))
            .env("WECHAT_MP_BASE", self.fake.base(process))
            .env("WECHAT_TEMPLATE_ID", TEMPLATE)
            .env("WECHAT_TIMEOUT_MS", "3000")
            .env("WXBIND_HTTP_WORKERS", "2")
            .env("WXBIND_DB_POOL_SIZE", "6")
            .env("WXBIND_DELIVERY_CONCURRENCY", "16")
            .env("WXBIND_DELIVERY_NICE", "0")
            .env("WXBIND_MAX_ATTEMPTS", "40")
            .env("WXBIND_RETRY_BASE_MS", "100")
            .env("WXBIND_RETRY_MAX_MS", "800")
            .env("WXBIND_LEASE_SECONDS", LEASE_SECONDS.to_string())
            .env("WXBIND_POLL_INTERVAL_MS", "200")
            .env("WXBIND_SHUTDOWN_SECONDS", SHUTDOWN_SECONDS.to_string())
            // Four users send to themselves about a thousand messages in half a minute: the
            // per-user limit would refuse most of them, and refusals are not what is tested.
            .env("WXBIND_USER_SENDS_PER_MINUTE", "1000000")
            .env("RUST_LOG", "info");
        cmd
    }

    /// `wxbind user add name` (which also creates and migrates the database).
    fn add_user(&self, name: &str) {
        let mut child = self
            .command("p0", free_port(), &["user", "add", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wxbind user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("password on stdin");
        let out = child.wait_with_output().expect("wxbind user add");
        assert!(
            out.status.success(),
            "wxbind user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `wxbind serve` as `name` on a free port, in a process group of its own.
    fn spawn(&self, name: &'static str) -> Service {
        let port = free_port();
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command(name, port, &["serve"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("run wxbind serve");
        Service {
            name,
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
            exit: None,
        }
    }
}

/// One `wxbind serve` process; killed with its process group when dropped.
struct Service {
    name: &'static str,
    base: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Service {
    fn pid(&self) -> Pid {
        Pid::from_child(&self.child)
    }

    /// Whether it is still running; remembers how it ended.
    fn running(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("wait for wxbind");
        }
        self.exit.is_none()
    }

    /// SIGKILL to the whole process group, and reap it.
    fn kill(&mut self) {
        let _ = rustix::process::kill_process_group(self.pid(), Signal::KILL);
        self.exit = Some(self.child.wait().expect("wait for wxbind"));
    }

    /// SIGTERM, as an orchestrator stops a process.
    fn terminate(&self) {
        rustix::process::kill_process(self.pid(), Signal::TERM).expect("SIGTERM");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
        if std::env::var_os("TEST_LOG").is_some() {
            print_tail(&self.log, usize::MAX);
        } else if std::thread::panicking() {
            print_tail(&self.log, 40);
        }
    }
}

fn print_tail(path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    eprintln!(
        "----- {} (its last {} lines)",
        path.display(),
        lines.min(all.len())
    );
    for line in &all[all.len().saturating_sub(lines)..] {
        eprintln!("{line}");
    }
}

/// Polls `GET /api/ready` until it answers 200; how long that took, or `None` after `within`.
async fn wait_ready(http: &reqwest::Client, base: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        let ready = http
            .get(format!("{base}/api/ready"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Everything the clients saw.
#[derive(Default)]
struct Seen {
    /// Responses to `POST /api/messages` by status.
    statuses: BTreeMap<u16, u64>,
    /// Responses to `GET /api/messages/{id}` (a client following its message) by status.
    follow_statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (refused, reset, timed out).
    no_response: u64,
    /// Idempotency key → the message id its acknowledgement (200 or 202) carried.
    acked: HashMap<String, String>,
    /// Each user's latest acknowledged message.
    latest: HashMap<String, String>,
    /// Responses no client should ever get (a 500, an unexpected 4xx), with their bodies.
    wrong: Vec<String>,
}

/// The processes the "load balancer" sends to.
type Targets = Arc<Mutex<Vec<String>>>;

/// One sender: posts messages with fresh idempotency keys until `stop`, each until it is
/// acknowledged, retrying a 503 or a lost request with the same key at the next process.
async fn sender(
    http: reqwest::Client,
    user: String,
    token: String,
    lane: usize,
    targets: Targets,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut turn = lane;
    let mut seq = 0;
    let record = |f: &mut dyn FnMut(&mut Seen)| {
        f(&mut seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    };
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("{user}-{lane}-{seq:05}");
        let body = json!({"data": {"keyword1": {"value": key}}, "idempotency_key": key});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "message {key} was not acknowledged within 60 s"
            );
            turn += 1;
            let target = {
                let t = targets
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                t[turn % t.len()].clone()
            };
            let sent = http
                .post(format!("{target}/api/messages"))
                .bearer_auth(&token)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(_) => {
                    record(&mut |s| s.no_response += 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            record(&mut |s| *s.statuses.entry(status).or_default() += 1);
            match status {
                200 | 202 => {
                    let message: Value = serde_json::from_str(&text).expect("message JSON");
                    let id = message["id"].as_str().expect("message id").to_owned();
                    record(&mut |s| {
                        s.acked.insert(key.clone(), id.clone());
                        s.latest.insert(user.clone(), id.clone());
                    });
                    break;
                }
                503 => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {
                    record(&mut |s| {
                        s.wrong
                            .push(format!("{status} from {target} for {key}: {text}"))
                    });
                    if status >= 500 {
                        // Keep the message's fate checkable: retry it like a 503.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// A client following its messages' outcome until `stop`: `GET /api/messages/{id}` of the
/// user's latest acknowledged message every 50 ms, at the next process each time. 200 and 503
/// are what it may get; a request without an answer (the process went away) is no answer.
async fn follower(
    http: reqwest::Client,
    user: String,
    token: String,
    targets: Targets,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let seen = |f: &mut dyn FnMut(&mut Seen)| {
        f(&mut seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    };
    let mut turn = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut latest = None;
        seen(&mut |s| latest = s.latest.get(&user).cloned());
        let Some(id) = latest else { continue };
        turn += 1;
        let target = {
            let t = targets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            t[turn % t.len()].clone()
        };
        let Ok(response) = http
            .get(format!("{target}/api/messages/{id}"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            continue;
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        seen(&mut |s| {
            *s.follow_statuses.entry(status).or_default() += 1;
            if !matches!(status, 200 | 503) {
                s.wrong
                    .push(format!("{status} from {target} for GET of {id}: {text}"));
            }
        });
    }
}

/// Logs `user` in over HTTP and binds the WeChat user `openid` to it through the OAuth flow
/// (bind link, WeChat's code, callback); returns its access token.
async fn login_and_bind(http: &reqwest::Client, base: &str, user: &str, openid: &str) -> String {
    let login = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200, "login of {user}");
    let token = login.json::<Value>().await.expect("login JSON")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let link: Value = http
        .get(format!("{base}/api/bind-url"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("bind-url")
        .json()
        .await
        .expect("bind-url JSON");
    let url = url::Url::parse(link["url"].as_str().expect("bind url")).expect("bind url");
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let callback = http
        .get(format!("{base}/api/callback"))
        .query(&[("code", format!("code-{openid}")), ("state", state)])
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 200, "binding {user}");
    token
}

// ---------------------------------------------------------------------------------------------
// The database, as the test reads it at the end

#[derive(QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    idempotency_key: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    msgid: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    openid: Option<String>,
}

fn messages(url: &str) -> Vec<Row> {
    let mut conn = PgConnection::establish(url).expect("connect to the test cluster");
    diesel::sql_query(
        "SELECT m.id::text AS id, m.idempotency_key, m.status, m.msgid, u.openid \
         FROM messages m JOIN users u ON u.id = m.user_id",
    )
    .load(&mut conn)
    .expect("read messages")
}

// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn acknowledged_messages_survive_sigkill_a_database_crash_and_sigterm() {
    let started = Instant::now();
    // Declared first, so it is dropped last: after every process is gone.
    let cluster = match Cluster::create() {
        Ok(c) => Arc::new(c),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("the fault test needs a PostgreSQL cluster of its own: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the fault test (it fails instead when CI is set): {reason}");
            return;
        }
    };
    cluster.start();
    let dep = Deployment {
        database_url: cluster.url(DATABASE),
        fake: FakeWechat::start().await,
        dir: cluster.dir.join("wxbind"),
    };
    std::fs::create_dir(&dep.dir).expect("work dir");
    for user in USERS {
        dep.add_user(user);
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let mut p1 = dep.spawn("p1");
    let mut p2 = dep.spawn("p2");
    let mut p3 = dep.spawn("p3");
    for p in [&p1, &p2, &p3] {
        assert!(
            wait_ready(&http, &p.base, Duration::from_secs(30))
                .await
                .is_some(),
            "{} never became ready",
            p.name
        );
    }
    let mut tokens = Vec::new();
    for user in USERS {
        let openid = format!("o{user}FaultsOpenid0000000000");
        tokens.push((user, login_and_bind(&http, &p1.base, user, &openid).await));
    }
    println!("set-up took {:.1?}", started.elapsed());

    // The load: clients post throughout, to whichever processes are in rotation.
    let targets: Targets = Arc::new(Mutex::new(vec![
        p1.base.clone(),
        p2.base.clone(),
        p3.base.clone(),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut senders = Vec::new();
    for (user, token) in &tokens {
        senders.push(actix_web::rt::spawn(follower(
            http.clone(),
            (*user).to_owned(),
            token.clone(),
            Arc::clone(&targets),
            Arc::clone(&stop),
            Arc::clone(&seen),
        )));
        for lane in 0..SENDERS_PER_USER {
            senders.push(actix_web::rt::spawn(sender(
                http.clone(),
                (*user).to_owned(),
                token.clone(),
                lane,
                Arc::clone(&targets),
                Arc::clone(&stop),
                Arc::clone(&seen),
            )));
        }
    }
    let acked = || seen.lock().map(|s| s.acked.len()).unwrap_or_default();
    tokio::time::sleep(STEADY).await;
    assert!(acked() > 0, "no message was acknowledged under steady load");

    // 1. SIGKILL p3 while WeChat is answering sends of its.
    let in_flight = wait_for_in_flight(&dep.fake, "p3", false).await;
    let killed_at = Instant::now();
    p3.kill();
    targets.lock().expect("targets").retain(|t| *t != p3.base);
    println!(
        "SIGKILL p3 with {} sends in flight, {} messages acknowledged so far",
        in_flight.len(),
        acked()
    );
    // Its replacement comes up while the leases p3 held run out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut p4 = dep.spawn("p4");
    assert!(
        wait_ready(&http, &p4.base, Duration::from_secs(30))
            .await
            .is_some(),
        "p4 never became ready"
    );
    targets.lock().expect("targets").push(p4.base.clone());
    tokio::time::sleep(STEADY).await;
    assert!(p1.running() && p2.running() && p4.running());

    // 2. The database crashes and comes back.
    let before_crash = acked();
    let crash_in_flight: usize = ["p1", "p2", "p4"]
        .iter()
        .map(|p| dep.fake.in_flight(p).len())
        .sum();
    let crashing = Arc::clone(&cluster);
    actix_web::rt::task::spawn_blocking(move || crashing.crash())
        .await
        .expect("pg_ctl thread")
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "PostgreSQL stopped -m immediate with {crash_in_flight} sends in flight, \
         {before_crash} messages acknowledged so far"
    );
    tokio::time::sleep(OUTAGE).await;
    let starting = Arc::clone(&cluster);
    actix_web::rt::task::spawn_blocking(move || starting.start())
        .await
        .expect("pg_ctl thread");
    let mut readiness = Vec::new();
    {
        let waits = [&p1, &p2, &p4].map(|p| {
            let http = http.clone();
            async move {
                (
                    p.name,
                    wait_ready(&http, &p.base, READY_BUDGET + Duration::from_secs(25)).await,
                )
            }
        });
        for (name, took) in futures_util::future::join_all(waits).await {
            println!(
                "{name} ready {} after PostgreSQL accepted connections again",
                took.map_or("never (30 s)".to_owned(), |d| format!("{d:.2?}"))
            );
            readiness.push((name, took));
        }
    }
    assert!(p1.running() && p2.running() && p4.running());
    tokio::time::sleep(STEADY).await;
    assert!(
        acked() > before_crash,
        "no message was acknowledged after the database came back"
    );

    // 3. SIGTERM p4 while it has sends in flight, a slow one if it comes soon.
    let term_in_flight = wait_for_in_flight(&dep.fake, "p4", true).await;
    targets.lock().expect("targets").retain(|t| *t != p4.base);
    let terminated_at = Instant::now();
    p4.terminate();
    while p4.running() && terminated_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_in = terminated_at.elapsed();
    println!(
        "SIGTERM p4 with {} sends in flight; it exited ({:?}) after {stopped_in:.2?}",
        term_in_flight.len(),
        p4.exit
    );
    tokio::time::sleep(STEADY).await;

    // The clients stop; every acknowledged message must end `sent`.
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("a sender panicked");
    }
    let load_ended = Instant::now();
    let url = cluster.url(DATABASE);
    let rows = loop {
        let rows = messages(&url);
        if rows.iter().all(|r| r.status == "sent") || load_ended.elapsed() > Duration::from_secs(60)
        {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "the queue drained {:.1?} after the load ended",
        load_ended.elapsed()
    );

    // What everyone saw.
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    let fake = dep.fake.state();
    let mut resent = 0;
    let mut sends_of: HashMap<&str, Vec<&Send>> = HashMap::new();
    for s in &fake.sends {
        sends_of.entry(s.key.as_str()).or_default().push(s);
    }
    for sends in sends_of.values() {
        if sends.len() > 1 {
            resent += 1;
        }
    }
    let mut replies: BTreeMap<String, usize> = BTreeMap::new();
    for s in &fake.sends {
        let kind = match s.reply {
            Reply::Sent { .. } => "accepted".to_owned(),
            Reply::StaleToken => "40001 stale token".to_owned(),
            Reply::Revoked => "40001 revoked".to_owned(),
            Reply::Errcode(c) => c.to_string(),
            Reply::Http500 => "HTTP 500".to_owned(),
        };
        *replies.entry(kind).or_default() += 1;
    }
    println!(
        "clients: {} messages acknowledged; responses {:?} to posts and {:?} to lookups; {} \
         posts without a response",
        seen.acked.len(),
        seen.statuses,
        seen.follow_statuses,
        seen.no_response
    );
    println!(
        "fake WeChat: {} sends ({replies:?}), {} messages delivered, {resent} sent more than \
         once, {} access tokens issued",
        fake.sends.len(),
        fake.delivered.len(),
        fake.tokens_issued
    );

    // No client saw a 500 (or anything but 200, 202 and 503).
    assert!(
        seen.wrong.is_empty(),
        "clients got wrong answers:\n{}",
        seen.wrong.join("\n")
    );
    // Every acknowledged message exists once per idempotency key, under the acknowledged id,
    // and ends `sent`; nothing else was queued.
    let mut by_key: HashMap<&str, Vec<&Row>> = HashMap::new();
    for r in &rows {
        let key = r
            .idempotency_key
            .as_deref()
            .expect("every message has a key");
        by_key.entry(key).or_default().push(r);
    }
    for (key, id) in &seen.acked {
        let found = by_key
            .get(key.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "messages with key {key}: {found:?}");
        assert_eq!(
            &found[0].id, id,
            "key {key} was acknowledged with another id"
        );
        assert_eq!(found[0].status, "sent", "message {key}: {:?}", found[0]);
    }
    assert_eq!(
        rows.len(),
        seen.acked.len(),
        "the database holds messages no client had acknowledged"
    );
    // Every send of a message, resends included, carried its id as `client_msg_id`, and
    // WeChat delivered each message once, with the msgid the database recorded.
    let ids: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    for s in &fake.sends {
        let row = ids
            .get(s.client_msg_id.as_str())
            .unwrap_or_else(|| panic!("a send with an unknown client_msg_id: {s:?}"));
        assert_eq!(
            row.idempotency_key.as_deref(),
            Some(s.key.as_str()),
            "a send of {} carried the client_msg_id of another message: {s:?}",
            s.key
        );
        assert_eq!(
            row.openid.as_deref(),
            Some(s.touser.as_str()),
            "recipient of {s:?}"
        );
    }
    assert_eq!(fake.delivered.len(), rows.len(), "messages delivered");
    for r in &rows {
        let openid = r.openid.clone().expect("recipients stay bound");
        let delivered = fake.delivered.get(&(openid, r.id.clone()));
        assert!(delivered.is_some(), "message {r:?} never reached WeChat");
        assert_eq!(r.msgid, delivered.copied(), "msgid of {r:?}");
    }
    assert!(
        resent > 0,
        "no message was ever sent twice: the faults did nothing"
    );
    // What p3 had in flight when it was killed was sent again, by another process, with the
    // same client_msg_id.
    for lost in &in_flight {
        let again = fake.sends.iter().any(|s| {
            s.client_msg_id == lost.client_msg_id && s.process != "p3" && s.at > killed_at
        });
        assert!(
            again,
            "{lost:?}, in flight at the SIGKILL, was never sent again"
        );
    }
    // What p4 still had in flight when its drain ran out was handed back and sent again by
    // another process, sooner than the lease would have allowed: a slow send caught as it
    // started was claimed at most moments before, so its lease ran until about `at + lease`.
    let drain_end = terminated_at + Duration::from_secs(SHUTDOWN_SECONDS);
    for held in &term_in_flight {
        let Reply::Sent { latency, .. } = held.reply else {
            continue;
        };
        if held.at + latency < drain_end + Duration::from_millis(500) {
            continue; // answered within the drain: p4 recorded it itself
        }
        let again = fake
            .sends
            .iter()
            .filter(|s| s.client_msg_id == held.client_msg_id && s.process != "p4")
            .map(|s| s.at)
            .filter(|at| *at > terminated_at)
            .min();
        let again = again
            .unwrap_or_else(|| panic!("{held:?}, in flight at the SIGTERM, was never sent again"));
        println!(
            "a send p4 had in flight at the SIGTERM was sent again {:.2?} after the signal",
            again - terminated_at
        );
        assert!(
            again < held.at + Duration::from_secs(LEASE_SECONDS) - Duration::from_millis(500),
            "{held:?} was sent again only at {:?} after the SIGTERM: its lease was not handed back",
            again - terminated_at
        );
    }
    // The processes neither killed nor stopped never exited, and every process up at the
    // database restart was ready within the budget.
    assert!(p1.running(), "p1 exited: {:?}", p1.exit);
    assert!(p2.running(), "p2 exited: {:?}", p2.exit);
    for (name, took) in &readiness {
        assert!(
            took.is_some_and(|d| d <= READY_BUDGET),
            "{name} was not ready within {READY_BUDGET:?} of the database: {took:?}"
        );
    }
    // SIGTERM: a clean exit within the drain budget and the HTTP drain.
    assert!(
        p4.exit.is_some_and(|s| s.success()),
        "p4 did not exit cleanly on SIGTERM: {:?}",
        p4.exit
    );
    assert!(
        stopped_in < Duration::from_secs(SHUTDOWN_SECONDS + 10),
        "p4 took {stopped_in:?} to stop"
    );
    for p in [&p1, &p2, &p3, &p4] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "{} panicked: see {}",
            p.name,
            p.log.display()
        );
    }
    assert!(
        fake.unexpected.is_empty(),
        "unexpected calls to WeChat: {:?}",
        fake.unexpected
    );
    println!("the fault test took {:.1?}", started.elapsed());
}

/// Waits (10 s at most) until WeChat is answering sends of `process` and returns them. With
/// `slow`, waits up to 5 s for a slow send that has just begun, which outlasts the drain.
async fn wait_for_in_flight(fake: &FakeWechat, process: &str, slow: bool) -> Vec<Send> {
    let start = Instant::now();
    loop {
        let sends = fake.in_flight(process);
        let has_slow = sends.iter().any(|s| {
            matches!(s.reply, Reply::Sent { latency, .. } if latency == SLOW_SEND_LATENCY)
                && s.at.elapsed() < Duration::from_millis(200)
        });
        let waited = start.elapsed();
        if !sends.is_empty() && (!slow || has_slow || waited > Duration::from_secs(5)) {
            return sends;
        }
        assert!(
            waited < Duration::from_secs(10),
            "{process} sent nothing for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
