//! Housekeeping: the purges that keep tables from growing without bound (finished messages
//! past `WXBIND_MESSAGE_RETENTION_DAYS`, bind states, sessions, push records, failed logins,
//! per-minute send counts), and the probe that reads the queue gauges. Tasks of their own on
//! timers, in every process that delivers; several processes doing them at once is harmless
//! (each delete is idempotent, each probe only reads).
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::db::{self, PgPool};
use crate::error::ErrorChain;

/// How often the purges run.
const EVERY: Duration = Duration::from_secs(600);
/// Bind states and sessions are kept this long past their expiry, so a late callback still
/// finds its state (and says "expired" rather than "unknown").
const EXPIRED_GRACE: TimeDelta = TimeDelta::days(1);
/// How long server-push records are kept (WeChat retries within minutes; the rest is audit).
const PUSH_RETENTION: TimeDelta = TimeDelta::days(30);
/// How far behind the clock a push nonce's signed timestamp must be before it is purged: past
/// the window no push with it gets in, and a second window covers instances whose clocks run
/// behind this one's (they still accept what this one already refuses).
const NONCE_RETENTION_SECS: i64 = 2 * crate::wechat::push::PUSH_WINDOW_SECS;
/// How long failed logins are kept: only the last minute counts (`auth::FAILURE_WINDOW`); the
/// hour after it is for an operator looking into an attack, and bounds the table under one.
const LOGIN_FAILURE_RETENTION: TimeDelta = TimeDelta::hours(1);

/// Finished messages deleted per statement: each batch is its own short transaction, so a
/// backlog of millions never holds long locks or a long-running transaction.
const MESSAGE_BATCH: i64 = 5_000;
/// Most finished messages deleted per round; the rest go in the next rounds.
const MESSAGES_PER_ROUND: usize = 1_000_000;

/// Runs the purges every ten minutes until `stop` turns true or its sender is dropped.
pub async fn run(pool: PgPool, retention: TimeDelta, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
        purge(&pool).await;
        purge_messages(&pool, Utc::now() - retention).await;
    }
}

/// How often the queue gauges are read.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Reads the queue gauges (depth by state, the oldest waiting messages' age, the pause) at
/// once and then every [`PROBE_EVERY`] until `stop` turns true or its sender is dropped. A
/// failed read leaves the gauges as they were; `wxbind_queue_probed_at_seconds` tells how old
/// they are.
pub async fn probe_queue(pool: PgPool, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        match db::run(&pool, db::messages::queue_stats).await {
            Ok(stats) => {
                failing = false;
                let age = |oldest: Option<DateTime<Utc>>| {
                    oldest
                        .and_then(|t| (stats.now - t).to_std().ok())
                        .unwrap_or_default()
                };
                crate::metrics::queue(&crate::metrics::QueueGauges {
                    waiting: stats.waiting,
                    retrying: stats.retrying,
                    sending: stats.sending,
                    oldest_waiting: age(stats.oldest_waiting),
                    oldest_retrying: age(stats.oldest_retrying),
                    paused: stats.paused,
                    read_at: stats.now.timestamp(),
                });
            }
            Err(e) => {
                // Once per streak: the claim loop already reports a database that is away.
                if !std::mem::replace(&mut failing, true) {
                    tracing::debug!(error = %ErrorChain(&e), "reading the queue gauges failed");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Deletes sent and failed messages created before `before`, in batches of
/// [`MESSAGE_BATCH`], at most [`MESSAGES_PER_ROUND`] a call. Returns how many.
pub async fn purge_messages(pool: &PgPool, before: DateTime<Utc>) -> usize {
    let mut total = 0;
    while total < MESSAGES_PER_ROUND {
        match db::run(pool, move |conn| {
            db::messages::purge_finished_batch(conn, before, MESSAGE_BATCH)
        })
        .await
        {
            Ok(n) => {
                total += n;
                if n < usize::try_from(MESSAGE_BATCH).unwrap_or(usize::MAX) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "purging old messages failed; retrying next round");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(rows = total, "purged messages past their retention");
    }
    total
}

/// How long the audit log keeps a row (deleted 10,000 a round, oldest first).
pub const AUDIT_RETENTION: TimeDelta = TimeDelta::days(365);

/// How long finished webhook deliveries are kept (`GET /api/webhooks/{id}/deliveries`).
pub const WEBHOOK_DELIVERY_RETENTION: TimeDelta = TimeDelta::days(7);

/// One round of purges, each its own unit of work; a failure is logged and retried next round.
pub async fn purge(pool: &PgPool) {
    let now = Utc::now();
    let states = db::run(pool, move |conn| {
        db::bind_states::purge_expired(conn, now - EXPIRED_GRACE)
    });
    let sessions = db::run(pool, move |conn| {
        db::sessions::purge_expired(conn, now - EXPIRED_GRACE)
    });
    let pushes = db::run(pool, move |conn| {
        db::events::purge_received_before(conn, now - PUSH_RETENTION)
    });
    let nonces = db::run(pool, move |conn| {
        db::push_nonces::purge_signed_before(conn, now.timestamp() - NONCE_RETENTION_SECS)
    });
    let login_failures = db::run(pool, move |conn| {
        db::login_failures::purge_before(conn, now - LOGIN_FAILURE_RETENTION)
    });
    let send_rate = db::run(pool, move |conn| {
        db::messages::purge_send_rate(conn, now - TimeDelta::minutes(2))
    });
    // Daily counts of days at least two days past (in any time zone, yesterday is over).
    let daily_sends = db::run(pool, move |conn| {
        db::messages::purge_daily_sends(conn, (now - TimeDelta::days(2)).date_naive())
    });
    // Finished webhook deliveries are shown for a week; a batch a round keeps it short.
    let deliveries = db::run(pool, move |conn| {
        db::webhooks::fail_abandoned_pings(conn)?;
        db::webhooks::purge_finished_batch(conn, now - WEBHOOK_DELIVERY_RETENTION, 10_000)
    });
    let audit = db::run(pool, move |conn| {
        db::audit_log::purge_before(conn, now - AUDIT_RETENTION, 10_000)
    });
    for (what, purged) in [
        ("bind states", states.await),
        ("sessions", sessions.await),
        ("push records", pushes.await),
        ("push nonces", nonces.await),
        ("login failures", login_failures.await),
        ("send counts", send_rate.await),
        ("daily send counts", daily_sends.await),
        ("webhook deliveries", deliveries.await),
        ("audit log rows", audit.await),
    ] {
        match purged {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, what, "purged expired rows"),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), what, "purging failed; retrying next round");
            }
        }
    }
}
