//! The login flood: many concurrent logins with random usernames, each from another address
//! (an `X-Forwarded-For` entry through the loopback proxy the service is told to trust), which
//! is the worst case for password verification: no address and no username ever reaches its
//! failure limit, so every login the service admits costs an argon2id check. Meanwhile
//! `GET /api/health` and `POST /api/messages` are probed every 20 ms, and a real user logs in
//! every 250 ms from an address of its own. Reports the probes' latencies, the flood's outcomes
//! and the service's peak RSS.
//!
//! `wxbind-bench login-flood [CLIENTS=500] [SECONDS=10] [MAX_LOGINS=1000000] [one-address]`
//! Bounded in time and in count; everything on loopback. `one-address` sends the whole flood
//! from one address instead (the failure limits then answer nearly all of it with 429).
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wxbind_tests::{FakeWechat, TEST_PASSWORD, TestDb};

use crate::{cpu_seconds, postgres_cpu_seconds, seed, start_service, wait_ready};

/// How often each probe runs.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// How long the probes run before the flood, for comparison.
const BASELINE: Duration = Duration::from_secs(3);
/// How often the real user logs in.
const REAL_LOGIN_EVERY: Duration = Duration::from_millis(250);
/// A probe slower than this misses the target.
const PROBE_TARGET: Duration = Duration::from_millis(200);
/// The real user's address (TEST-NET-1; the flood uses 10/8).
const REAL_USER_ADDRESS: &str = "192.0.2.1";

/// Counts of the flood's answers, and the latencies of the two that matter.
#[derive(Default)]
struct Outcomes {
    ok: usize,
    unauthorized: usize,
    throttled: usize,
    busy: usize,
    other: usize,
    errors: usize,
    unauthorized_latency: Vec<Duration>,
    busy_latency: Vec<Duration>,
}

impl Outcomes {
    fn merge(&mut self, o: Outcomes) {
        self.ok += o.ok;
        self.unauthorized += o.unauthorized;
        self.throttled += o.throttled;
        self.busy += o.busy;
        self.other += o.other;
        self.errors += o.errors;
        self.unauthorized_latency.extend(o.unauthorized_latency);
        self.busy_latency.extend(o.busy_latency);
    }

    fn total(&self) -> usize {
        self.ok + self.unauthorized + self.throttled + self.busy + self.other + self.errors
    }
}

/// One probe's record: latencies of every answer, and how many were not a success.
#[derive(Default)]
struct Probe {
    latencies: Vec<Duration>,
    failed: usize,
}

/// Health, message accepts and the real user's logins, as [`run_probes`] recorded them.
type Probes = (Probe, Probe, Probe);

/// Runs the flood; `args` are what follows `login-flood` on the command line.
pub async fn run(mut args: impl Iterator<Item = String>) -> Result<(), Box<dyn Error>> {
    let clients: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let max_logins: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let one_address = args.next().is_some_and(|a| a == "one-address");

    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    let recipient = *seed(&db, 1)?.first().ok_or("no recipient seeded")?;
    let (service, base) = start_service(&db, &wechat, &[("WXBIND_TRUSTED_PROXIES", "127.0.0.1")])?;
    let pid = service.0.id();
    // For start-up and the admin's token; the probes and the flood each have clients of their own.
    let probe_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_ready(&probe_http, &base).await?;
    let login: Value = login_request(
        &probe_http,
        &base,
        REAL_USER_ADDRESS,
        "bench-admin",
        TEST_PASSWORD,
    )
    .send()
    .await?
    .json()
    .await?;
    let token: Arc<str> = login["access_token"]
        .as_str()
        .ok_or("the admin's login failed")?
        .into();
    // The same probes for a few seconds without the flood: what this machine gives them now.
    let quiet = Arc::new(AtomicBool::new(true));
    let baseline = spawn_probes(&quiet, &base, &token, recipient)?;
    tokio::time::sleep(BASELINE).await;
    quiet.store(false, Relaxed);
    let (mut quiet_health, mut quiet_messages, _) =
        baseline.join().map_err(|_| "the probe thread panicked")??;

    let rss_before = status_kib(pid, "VmRSS:");
    let postgres_cpu_before = postgres_cpu_seconds();
    let service_cpu_before = cpu_seconds(&format!("/proc/{pid}/stat"));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let flood_http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(10))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let flood = (0..clients).map(|_| {
        let (http, base, next) = (flood_http.clone(), base.clone(), Arc::clone(&next));
        tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= max_logins || Instant::now() >= deadline {
                    return outcomes;
                }
                let username = format!("flood-{:016x}", mix(i as u64 ^ salt));
                let address = if one_address {
                    "10.0.0.1".to_owned()
                } else {
                    flood_address(i)
                };
                let t = Instant::now();
                let sent = login_request(&http, &base, &address, &username, "not-the-password")
                    .send()
                    .await;
                let Ok(resp) = sent else {
                    outcomes.errors += 1;
                    continue;
                };
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                let latency = t.elapsed();
                match status {
                    200 => outcomes.ok += 1,
                    401 => {
                        outcomes.unauthorized += 1;
                        outcomes.unauthorized_latency.push(latency);
                    }
                    429 => outcomes.throttled += 1,
                    503 => {
                        outcomes.busy += 1;
                        outcomes.busy_latency.push(latency);
                    }
                    _ => outcomes.other += 1,
                }
            }
        })
    });
    // The probes run while the flood does, and stop with it.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = Arc::clone(&flooding);
        async move {
            let outcomes = futures_util::future::join_all(flood).await;
            flooding.store(false, Relaxed);
            (outcomes, started.elapsed())
        }
    };

    let probes = spawn_probes(&flooding, &base, &token, recipient)?;
    let (flood, elapsed) = flood.await;
    let (health, messages, real_user) =
        probes.join().map_err(|_| "the probe thread panicked")??;
    let mut outcomes = Outcomes::default();
    for o in flood {
        outcomes.merge(o?);
    }

    let rss_peak = status_kib(pid, "VmHWM:");
    let service_cpu = cpu_seconds(&format!("/proc/{pid}/stat")) - service_cpu_before;
    let postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before;
    drop(service);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| flood | {clients} concurrent clients for {:.1} s, each login a random username from {} |",
        elapsed.as_secs_f64(),
        if one_address {
            "one address"
        } else {
            "an address of its own"
        }
    );
    println!(
        "| flood logins | {} ({:.0}/s): 200 {}, 401 {}, 429 {}, 503 {}, other {}, transport errors {} |",
        outcomes.total(),
        outcomes.total() as f64 / elapsed.as_secs_f64(),
        outcomes.ok,
        outcomes.unauthorized,
        outcomes.throttled,
        outcomes.busy,
        outcomes.other,
        outcomes.errors
    );
    println!(
        "| flood latency | 401 (checked): {}; 503 (refused): {} |",
        summary(&mut outcomes.unauthorized_latency),
        summary(&mut outcomes.busy_latency)
    );
    println!(
        "| probes without the flood ({} s before it) | health {}; messages {} |",
        BASELINE.as_secs(),
        summary(&mut quiet_health.latencies),
        summary(&mut quiet_messages.latencies)
    );
    for (name, mut p) in [
        ("GET /api/health every 20 ms", health),
        ("POST /api/messages every 20 ms", messages),
    ] {
        let over = p.latencies.iter().filter(|l| **l > PROBE_TARGET).count();
        println!(
            "| {name} | {} probes: {}; over 200 ms {over}, failed {} |",
            p.latencies.len(),
            summary(&mut p.latencies),
            p.failed
        );
    }
    let mut real_user = real_user;
    println!(
        "| the real user's logins every 250 ms | {} logins: 200 {}, other {}; {} |",
        real_user.latencies.len(),
        real_user.latencies.len() - real_user.failed,
        real_user.failed,
        summary(&mut real_user.latencies)
    );
    println!(
        "| service RSS | {:.1} MiB before the flood, peak {:.1} MiB |",
        mib(rss_before),
        mib(rss_peak)
    );
    println!(
        "| CPU seconds over the flood | service {service_cpu:.1}, PostgreSQL {postgres_cpu:.1} |"
    );
    Ok(())
}

/// `POST /api/login` for `username`, as if from `client` (the service trusts the loopback
/// proxy this pretends to be).
fn login_request(
    http: &reqwest::Client,
    base: &str,
    client: &str,
    username: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{base}/api/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"username": username, "password": password}))
}

/// Starts [`run_probes`] on a thread and runtime of its own: on the flood's runtime each answer
/// would wait behind hundreds of ready flood tasks, and that wait is the load generator's, not
/// the service's.
fn spawn_probes(
    running: &Arc<AtomicBool>,
    base: &str,
    token: &Arc<str>,
    recipient: i64,
) -> std::io::Result<std::thread::JoinHandle<Result<Probes, String>>> {
    let (running, base, token) = (Arc::clone(running), base.to_owned(), Arc::clone(token));
    std::thread::Builder::new()
        .name("probes".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("probe runtime: {e}"))?;
            Ok(runtime.block_on(run_probes(&running, &base, &token, recipient)))
        })
}

/// Probes health and message accepts every 20 ms, and logs the real user in every 250 ms,
/// while `flooding`.
async fn run_probes(flooding: &AtomicBool, base: &str, token: &str, recipient: i64) -> Probes {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let health = probe(flooding, PROBE_EVERY, || {
        http.get(format!("{base}/api/health"))
    });
    let messages = probe(flooding, PROBE_EVERY, || {
        http.post(format!("{base}/api/messages"))
            .bearer_auth(token)
            .json(&json!({"user_id": recipient, "data": {"keyword1": {"value": "probe"}}}))
    });
    let real_user = probe(flooding, REAL_LOGIN_EVERY, || {
        login_request(&http, base, REAL_USER_ADDRESS, "bench-admin", TEST_PASSWORD)
    });
    futures_util::future::join3(health, messages, real_user).await
}

/// Sends `request()` every `every` while `flooding`, one at a time, and records each answer.
async fn probe(
    flooding: &AtomicBool,
    every: Duration,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Probe {
    let mut record = Probe::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !flooding.load(Relaxed) {
            return record;
        }
        let t = Instant::now();
        let ok = match request().send().await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                ok && resp.bytes().await.is_ok()
            }
            Err(_) => false,
        };
        record.latencies.push(t.elapsed());
        if !ok {
            record.failed += 1;
        }
    }
}

/// Another address for every flood login: 10.x.y.z, distinct for the first 2^24.
fn flood_address(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// splitmix64: spreads a counter over 64 bits, so the usernames look random.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// "p50 … ms, p99 … ms, max … ms" of `latencies` (sorted in place).
fn summary(latencies: &mut [Duration]) -> String {
    if latencies.is_empty() {
        return "none".into();
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        let idx = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        latencies[idx].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(50.0),
        at(99.0),
        at(100.0)
    )
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
