//! Operations benchmarks.
//!
//! `latency [SAMPLES CLIENTS]`: an API-only process and a worker-only process on one database;
//! the time from a client's `POST /api/messages` to the fake WeChat receiving the send, for
//! probe messages one at a time, first idle, then while `CLIENTS` clients queue messages as
//! fast as they can (another sender, so fair claims apply).
//!
//! `retention [ROWS]`: `ROWS` finished messages past the retention, deleted by housekeeping's
//! batched purge while clients queue messages; the purge's rate and the accept latency
//! during it against a baseline without it.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{Value, json};
use wxbind_tests::{FakeWechat, TEST_PASSWORD, TestDb};

use super::{LoadResult, Request, run_load, seed, start_role, wait_ready};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn login(http: &reqwest::Client, base: &str, username: &str) -> Res<String> {
    let login: Value = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": username, "password": TEST_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    Ok(login["access_token"]
        .as_str()
        .ok_or("login failed")?
        .to_owned())
}

fn add_admin(db: &TestDb, name: &str) -> Res<()> {
    use wxbind::db::schema::users;
    let hash = wxbind::auth::hash_password(TEST_PASSWORD)?;
    diesel::insert_into(users::table)
        .values((
            users::username.eq(name),
            users::password_hash.eq(&hash),
            users::role.eq(wxbind::domain::Role::Admin),
        ))
        .execute(&mut db.conn())?;
    Ok(())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort_unstable();
    let idx = ((p / 100.0) * (v.len().saturating_sub(1)) as f64).round() as usize;
    v.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Sends `n` probes one after another (20 ms apart) and returns each one's enqueue-to-send time.
async fn probe(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    recipient: i64,
    wechat: &FakeWechat,
    n: usize,
) -> Res<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let resp: Value = http
            .post(format!("{base}/api/messages"))
            .bearer_auth(token)
            .json(&json!({"user_id": recipient, "data": {"keyword1": {"value": format!("probe {i}")}}}))
            .send()
            .await?
            .json()
            .await?;
        let id = resp["id"].as_str().ok_or("probe not queued")?.to_owned();
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(s) = wechat.sends().iter().find(|s| s.client_msg_id == id) {
                out.push(s.received_at.saturating_duration_since(started));
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("probe {id} was not sent within a minute").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

/// `latency [SAMPLES CLIENTS]`.
pub async fn latency(mut args: impl Iterator<Item = String>) -> Res<()> {
    let samples: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let clients: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    let recipients = seed(&db, clients.max(1))?;
    add_admin(&db, "bench-probe")?;
    // The API process never delivers; only the worker's notification wake-up (or its poll,
    // a second apart) brings a message to WeChat.
    let (api, base) = start_role("api", &db, &wechat, &[])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients + 1)
        .build()?;
    wait_ready(&http, &base).await?;
    let (worker, worker_base) = start_role("worker", &db, &wechat, &[])?;
    wait_ready(&http, &worker_base).await?;
    let load_token = Arc::new(login(&http, &base, "bench-admin").await?);
    let probe_token = login(&http, &base, "bench-probe").await?;
    let recipient = recipients[0];

    // Warm-up: token fetch, connections.
    probe(&http, &base, &probe_token, recipient, &wechat, 10).await?;
    let mut idle = probe(&http, &base, &probe_token, recipient, &wechat, samples).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(accept_load(
        http.clone(),
        base.clone(),
        Arc::clone(&load_token),
        Arc::new(recipients),
        clients,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut busy = probe(&http, &base, &probe_token, recipient, &wechat, samples).await?;
    stop.store(true, Ordering::Relaxed);
    let load = load.await?;
    drop(worker);
    drop(api);

    println!("| enqueue → WeChat, API and worker in separate processes | p50 | p99 | samples |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| idle | {:.1} ms | {:.1} ms | {} |",
        pct(&mut idle, 50.0),
        pct(&mut idle, 99.0),
        idle.len()
    );
    println!(
        "| while {clients} clients queue {:.0} messages/s (another sender) | {:.1} ms | {:.1} ms | {} |",
        load.rate(),
        pct(&mut busy, 50.0),
        pct(&mut busy, 99.0),
        busy.len()
    );
    Ok(())
}

/// Accept latencies of `clients` clients queueing messages until `stop`.
async fn accept_load(
    http: reqwest::Client,
    base: String,
    token: Arc<String>,
    recipients: Arc<Vec<i64>>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> LoadResult {
    let mut total = LoadResult {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        errors: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let r = Arc::clone(&recipients);
        let part = run_load(&http, &base, &token, 500, clients, move |i| {
            Request::Message(r[i % r.len()])
        })
        .await;
        total.latencies.extend(part.latencies);
        total.elapsed += part.elapsed;
        total.errors += part.errors;
    }
    total
}

/// `retention [ROWS]`.
pub async fn retention(mut args: impl Iterator<Item = String>) -> Res<()> {
    let rows: i64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let clients = 16;
    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    let recipients = Arc::new(seed(&db, clients)?);
    let (service, base) = start_role("serve", &db, &wechat, &[])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    wait_ready(&http, &base).await?;
    let seeded = Instant::now();
    diesel::sql_query(
        "INSERT INTO messages (id, sender_id, user_id, template_id, data, status, created_at,
                               attempts, sent_at, msgid)
         SELECT gen_random_uuid(), $2, $2, 'TEMPLATE_DEFAULT',
                '{\"keyword1\": {\"value\": \"old\"}}'::jsonb,
                CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'sent' END,
                now() - interval '100 days' + g * interval '1 millisecond', 1,
                now() - interval '100 days', g
         FROM generate_series(1, $1) g",
    )
    .bind::<diesel::sql_types::BigInt, _>(rows)
    .bind::<diesel::sql_types::BigInt, _>(recipients[0])
    .execute(&mut db.conn())?;
    diesel::sql_query("VACUUM ANALYZE messages").execute(&mut db.conn())?;
    let seed_time = seeded.elapsed();
    let token = Arc::new(login(&http, &base, "bench-admin").await?);

    // Baseline: accepts for 5 s without the purge.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = tokio::spawn(accept_load(
        http.clone(),
        base.clone(),
        Arc::clone(&token),
        Arc::clone(&recipients),
        clients,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut baseline = baseline.await?;

    // The purge, with the same load alongside.
    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(accept_load(
        http.clone(),
        base.clone(),
        Arc::clone(&token),
        Arc::clone(&recipients),
        clients,
        Arc::clone(&stop),
    ));
    let pool = wxbind::db::build_pool(&db.url, 2);
    let started = Instant::now();
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(90);
    let mut purged = 0;
    let mut slowest = Duration::ZERO;
    loop {
        // One batch at a time, as housekeeping does, timing each.
        let t = Instant::now();
        let n = wxbind::db::run(&pool, move |conn| {
            wxbind::db::messages::purge_finished_batch(conn, cutoff, 5_000)
        })
        .await?;
        slowest = slowest.max(t.elapsed());
        purged += n;
        if n < 5_000 {
            break;
        }
    }
    let purge_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut during = during.await?;
    drop(service);

    println!(
        "| retention purge of {rows} finished messages (seeded in {:.1} s) | value |",
        seed_time.as_secs_f64()
    );
    println!("| --- | --- |");
    println!(
        "| purged | {purged} rows in {:.1} s = {:.0} rows/s; slowest batch of 5,000 {:.0} ms |",
        purge_time.as_secs_f64(),
        purged as f64 / purge_time.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    let show = |r: &mut LoadResult| {
        let max = r.latencies.iter().max().copied().unwrap_or_default();
        format!(
            "{:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms, errors {}",
            r.rate(),
            r.pct(50.0),
            r.pct(99.0),
            max.as_secs_f64() * 1000.0,
            r.errors
        )
    };
    println!(
        "| POST /api/messages, {clients} clients, no purge | {} |",
        show(&mut baseline)
    );
    println!(
        "| POST /api/messages, {clients} clients, during the purge | {} |",
        show(&mut during)
    );
    Ok(())
}

/// `broadcast [RECIPIENTS RUNS]`: `RECIPIENTS` bound users (seeded by SQL), then `RUNS`
/// broadcasts `{"all_bound": true}` one after another, each timed from the POST to its 202
/// (every message queued); then how long the worker takes to deliver all of them to the fake
/// WeChat.
pub async fn broadcast(mut args: impl Iterator<Item = String>) -> Res<()> {
    let recipients: i64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let db = TestDb::create();
    let wechat = FakeWechat::start().await;
    seed(&db, 1)?;
    let seeded = Instant::now();
    diesel::sql_query(
        "INSERT INTO users (username, password_hash, role, openid, bound_at)
         SELECT 'fan-' || g, 'x', 'user', 'openid-fan-' || g, now()
         FROM generate_series(1, $1) g",
    )
    .bind::<diesel::sql_types::BigInt, _>(recipients)
    .execute(&mut db.conn())?;
    diesel::sql_query("VACUUM ANALYZE users").execute(&mut db.conn())?;
    let seed_time = seeded.elapsed();
    // Every run's messages wait at once: let the sender have them all.
    let (service, base) = start_role(
        "serve",
        &db,
        &wechat,
        &[("WXBIND_MAX_QUEUED_PER_SENDER", "10000000")],
    )?;
    let http = reqwest::Client::builder().build()?;
    wait_ready(&http, &base).await?;
    let token = login(&http, &base, "bench-admin").await?;
    let mut accepted = Vec::new();
    let mut queued = 0;
    let started = Instant::now();
    for run in 0..runs {
        let t = Instant::now();
        let resp = http
            .post(format!("{base}/api/broadcasts"))
            .bearer_auth(&token)
            .json(&json!({
                "data": {"keyword1": {"value": format!("broadcast {run}")}},
                "recipients": {"all_bound": true},
            }))
            .send()
            .await?;
        let took = t.elapsed();
        let status = resp.status();
        let body: Value = resp.json().await?;
        if status != 202 {
            return Err(format!("broadcast answered {status}: {body}").into());
        }
        queued += body["counts"]["queued"].as_i64().unwrap_or(0)
            + body["counts"]["sending"].as_i64().unwrap_or(0)
            + body["counts"]["sent"].as_i64().unwrap_or(0);
        accepted.push(took);
    }
    let total = usize::try_from(queued).unwrap_or(0);
    let delivered = super::wait_delivered(&db, total, Duration::from_secs(900)).await?;
    let delivery = delivered.saturating_duration_since(started);
    drop(service);
    accepted.sort();
    let median = accepted[accepted.len() / 2];
    println!(
        "| broadcast to {recipients} bound users (seeded in {:.1} s) | value |",
        seed_time.as_secs_f64()
    );
    println!("| --- | --- |");
    println!(
        "| accepted (POST to 202, all messages queued) | median {:.2} s of {runs}: {} |",
        median.as_secs_f64(),
        accepted
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| delivered | {total} messages in {:.1} s = {:.0} msg/s (first POST to last `sent`) |",
        delivery.as_secs_f64(),
        total as f64 / delivery.as_secs_f64()
    );
    Ok(())
}
