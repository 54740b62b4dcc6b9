//! Load benchmark: the release `wxbind` binary as a child process, a fresh database, and a
//! fake WeChat on loopback. Measures `GET /api/bind-url` and `POST /api/messages` under 64
//! concurrent clients, end-to-end delivery of every queued message, token fetches and the
//! service's peak RSS. Prints a Markdown table. Not a test: numbers depend on the machine.
//!
//! `cargo build --release -p wxbind && cargo run --release -p wxbind-bench [-- MESSAGES CLIENTS]`
//!
//! `wxbind-bench login-flood [CLIENTS SECONDS MAX_LOGINS]` is the login flood of `login_flood`:
//! many concurrent logins with random usernames while health and message accepts are probed.
//! `wxbind-bench latency [SAMPLES CLIENTS]` and `wxbind-bench retention [ROWS]` are the
//! operations benchmarks of `ops`; `wxbind-bench broadcast [RECIPIENTS RUNS]` times broadcasts
//! to every bound user.
mod login_flood;
mod ops;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind_tests::{
    DEFAULT_TEMPLATE, FakeWechat, TEST_APP_ID, TEST_APP_SECRET, TEST_JWT_SECRET, TEST_PASSWORD,
    TestDb,
};

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "login-flood") {
        return login_flood::run(args.skip(1)).await;
    }
    if args.peek().is_some_and(|a| a == "latency") {
        return ops::latency(args.skip(1)).await;
    }
    if args.peek().is_some_and(|a| a == "retention") {
        return ops::retention(args.skip(1)).await;
    }
    if args.peek().is_some_and(|a| a == "broadcast") {
        return ops::broadcast(args.skip(1)).await;
    }
    let messages: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let bind_requests = messages;

    let postgres_cpu_before = postgres_cpu_seconds();
    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    let recipients = seed(&db, clients)?;

    let (service, base) = start_service(&db, &wechat, &[])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    wait_ready(&http, &base).await?;

    let login: Value = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "bench-admin", "password": TEST_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = Arc::new(
        login["access_token"]
            .as_str()
            .ok_or("login failed")?
            .to_owned(),
    );

    // Warm-up: connections, pool, the first token fetch.
    run_load(&http, &base, &token, 200, clients, |_| Request::BindUrl).await;

    let bind = run_load(&http, &base, &token, bind_requests, clients, |_| {
        Request::BindUrl
    })
    .await;

    let before_send = Instant::now();
    let recipients = Arc::new(recipients);
    let send = run_load(&http, &base, &token, messages, clients, move |i| {
        Request::Message(recipients[i % recipients.len()])
    })
    .await;
    let delivered_in = wait_delivered(&db, messages, Duration::from_secs(300)).await?;
    let delivery_window = delivered_in.saturating_duration_since(before_send);
    let peak_rss_kib = peak_rss_kib(service.0.id());
    let service_cpu = cpu_seconds(&format!("/proc/{}/stat", service.0.id()));
    let bench_cpu = cpu_seconds("/proc/self/stat");
    let postgres_cpu = postgres_cpu_seconds();
    let token_fetches = wechat.token_requests().len();
    drop(service);

    println!("| metric | value |");
    println!("| --- | --- |");
    println!("| clients | {clients} |");
    println!(
        "| GET /api/bind-url | {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {} |",
        bind.latencies.len(),
        bind.rate(),
        bind.pct(50.0),
        bind.pct(99.0),
        bind.errors
    );
    println!(
        "| POST /api/messages | {} requests, {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms, errors {} |",
        send.latencies.len(),
        send.rate(),
        send.pct(50.0),
        send.pct(99.0),
        send.errors
    );
    println!(
        "| delivered end to end | {messages} in {:.2} s = {:.0} msg/s (first POST to last `sent`) |",
        delivery_window.as_secs_f64(),
        messages as f64 / delivery_window.as_secs_f64()
    );
    println!(
        "| WeChat deliveries (dedup) | {} |",
        wechat.delivered_count()
    );
    println!("| token fetches | {token_fetches} |");
    println!(
        "| service peak RSS | {:.1} MiB |",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "| CPU seconds over the run | service {service_cpu:.1}, PostgreSQL {:.1}, load generator + fake WeChat {bench_cpu:.1} |",
        postgres_cpu - postgres_cpu_before
    );
    Ok(())
}

/// Starts the release service on a free loopback port against `db` and `wechat`, with `extra`
/// environment on top of the common one; returns it with its base URL.
fn start_service(
    db: &TestDb,
    wechat: &FakeWechat,
    extra: &[(&str, &str)],
) -> Result<(Service, String), Box<dyn std::error::Error>> {
    start_role("serve", db, wechat, extra)
}

/// [`start_service`] as `role` (`serve`, `api` or `worker`).
fn start_role(
    role: &str,
    db: &TestDb,
    wechat: &FakeWechat,
    extra: &[(&str, &str)],
) -> Result<(Service, String), Box<dyn std::error::Error>> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let bin = std::env::var("WXBIND_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/wxbind").to_owned()
    });
    let mut command = Command::new(&bin);
    command
        .arg(role)
        .env("DATABASE_URL", &db.url)
        .env("WXBIND_LISTEN", format!("127.0.0.1:{port}"))
        .env("WXBIND_PUBLIC_URL", &base)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("WECHAT_APP_ID", TEST_APP_ID)
        .env("WECHAT_APP_SECRET", TEST_APP_SECRET)
        .env("WECHAT_TEMPLATE_ID", DEFAULT_TEMPLATE)
        .env("WECHAT_API_BASE", wechat.uri())
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = command
        .spawn()
        .map_err(|e| format!("starting {bin}: {e} (build it: cargo build --release -p wxbind)"))?;
    Ok((Service(child), base))
}

#[derive(Clone, Copy)]
enum Request {
    BindUrl,
    Message(i64),
}

struct LoadResult {
    latencies: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let idx = ((p / 100.0) * (v.len().saturating_sub(1)) as f64).round() as usize;
        v.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

async fn run_load(
    http: &reqwest::Client,
    base: &str,
    token: &Arc<String>,
    total: usize,
    clients: usize,
    make: impl Fn(usize) -> Request + Send + Sync + 'static,
) -> LoadResult {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make = Arc::new(make);
    let start = Instant::now();
    let tasks = (0..clients).map(|_| {
        let (http, base, token, next, make) =
            (http.clone(), base.to_owned(), Arc::clone(token), Arc::clone(&next), Arc::clone(&make));
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let req = match make(i) {
                    Request::BindUrl => http.get(format!("{base}/api/bind-url")),
                    Request::Message(user_id) => http.post(format!("{base}/api/messages")).json(
                        &json!({"user_id": user_id, "data": {"keyword1": {"value": format!("bench {i}")}}}),
                    ),
                };
                let t = Instant::now();
                match req.bearer_auth(token.as_str()).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let mut result = LoadResult {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        errors: 0,
    };
    for r in futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
    {
        result.latencies.extend(r.0);
        result.errors += r.1;
    }
    result.elapsed = start.elapsed();
    result
}

/// Creates the admin who sends and `n` bound recipients.
fn seed(db: &TestDb, n: usize) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    use wxbind::db::schema::users;
    let hash = wxbind::auth::hash_password(TEST_PASSWORD)?;
    let mut conn = db.conn();
    diesel::insert_into(users::table)
        .values((
            users::username.eq("bench-admin"),
            users::password_hash.eq(&hash),
            users::role.eq(wxbind::domain::Role::Admin),
        ))
        .execute(&mut conn)?;
    let mut ids = Vec::new();
    for i in 0..n {
        let id: i64 = diesel::insert_into(users::table)
            .values((
                users::username.eq(format!("bench-user-{i}")),
                users::password_hash.eq(&hash),
                users::openid.eq(format!("bench-openid-{i}")),
                users::bound_at.eq(diesel::dsl::now),
            ))
            .returning(users::id)
            .get_result(&mut conn)?;
        ids.push(id);
    }
    Ok(ids)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/api/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("service did not become ready".into())
}

/// Waits until every message is `sent`; returns when that was first seen.
async fn wait_delivered(
    db: &TestDb,
    n: usize,
    limit: Duration,
) -> Result<Instant, Box<dyn std::error::Error>> {
    use wxbind::db::schema::messages;
    let mut conn = db.conn();
    let deadline = Instant::now() + limit;
    loop {
        let sent: i64 = messages::table
            .filter(messages::status.eq(wxbind::domain::MessageStatus::Sent))
            .count()
            .get_result(&mut conn)?;
        if sent as usize >= n {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("only {sent} of {n} messages sent").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// utime + stime of a `/proc/<pid>/stat` file, in seconds (USER_HZ = 100).
fn cpu_seconds(stat_path: &str) -> f64 {
    std::fs::read_to_string(stat_path)
        .ok()
        .and_then(|s| {
            // Fields after the ")" that closes the command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of every `postgres` process alive now (the service's pool keeps its
/// connections open until the service stops, so measure before stopping it).
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|e| cpu_seconds(&e.path().join("stat").to_string_lossy()))
        .sum()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
