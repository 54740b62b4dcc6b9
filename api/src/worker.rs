//! The delivery loop: claims due messages from the `messages` queue under a lease, sends them
//! with bounded concurrency and records each outcome. Every claimed message ends `sent`,
//! `failed` or back in the queue with a retry time; a crashed claim is taken again when its
//! lease runs out, and WeChat's `client_msg_id` deduplication keeps that from sending twice.
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use diesel::Connection;
use rand::Rng;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::config::DeliveryConfig;
use crate::db::{self, PgPool, messages::Claimed, messages::FailReason};
use crate::error::ErrorChain;
use crate::metrics::{self, ErrcodeClass, SendOutcome};
use crate::templates::Registry;
use crate::wechat::types::{SendAccepted, TemplateSend};
use crate::wechat::{Account, CallError, Connected, ErrorClass, TokenError, WechatError};

/// Everything the worker shares with the rest of the process.
#[derive(Clone)]
pub struct WorkerDeps {
    /// The database pool.
    pub pool: PgPool,
    /// The official account (and its process-wide access-token cache).
    pub account: Arc<Account>,
    /// The template registry, told when WeChat no longer knows a template.
    pub templates: Arc<Registry>,
    /// Woken whenever a message is queued.
    pub wake: Arc<Notify>,
    /// Tuning.
    pub config: DeliveryConfig,
    /// Webhook deliveries, which run on the same thread.
    pub webhooks: crate::config::WebhookConfig,
}

/// How often scheduled messages that came due are released into the queue (before a claim),
/// and how many at most each time.
const RELEASE_EVERY: Duration = Duration::from_millis(200);
const RELEASE_BATCH: i64 = 10_000;

/// Longest pause between claims while the database fails: the worker retries sooner at
/// first and backs off to this, logging the trouble once per step rather than per attempt.
const MAX_CLAIM_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the delivery loop on a thread of its own (with its own actix runtime, which awc
/// needs) at the configured nice value, so background delivery never competes with request
/// handling on equal terms for the CPU; the blocking threads it starts for database calls
/// inherit that priority. The receiver resolves when the loop has stopped.
pub fn spawn(
    deps: WorkerDeps,
    stop: watch::Receiver<bool>,
) -> std::io::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("wxbind-delivery".into())
        .spawn(move || {
            lower_thread_priority(deps.config.nice);
            let wechat = Connected::new(Arc::clone(&deps.account));
            actix_web::rt::System::new().block_on(run(deps, wechat, stop));
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// The channel the `messages` table's insert trigger notifies (see its migration).
const QUEUE_CHANNEL: &str = "wxbind_messages";
/// How often the listener looks for notifications: libpq exposes no socket to wait on through
/// diesel, and a non-blocking read every few milliseconds keeps a wake-up well within 50 ms.
const LISTEN_POLL: Duration = Duration::from_millis(5);

/// Starts the thread that turns PostgreSQL notifications of queued messages (from any
/// process, an API-only one included) into wake-ups of this process's worker. It holds one
/// connection of its own, outside the pool, and reconnects with back-off; polling stays the
/// fallback while it is down. It ends when `stop` turns true or its sender is dropped.
pub fn spawn_listener(
    database_url: &str,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let url = db::with_client_timeouts(database_url);
    let stopped = move || *stop.borrow() || stop.has_changed().is_err();
    std::thread::Builder::new()
        .name("wxbind-listen".into())
        .spawn(move || {
            let mut failures = Backoff::new(Duration::from_millis(200), MAX_CLAIM_BACKOFF);
            'connect: while !stopped() {
                let listening = PgConnection::establish(&url)
                    .map_err(|e| e.to_string())
                    .and_then(|mut conn| {
                        diesel::sql_query(format!("LISTEN {QUEUE_CHANNEL}"))
                            .execute(&mut conn)
                            .map(|_| conn)
                            .map_err(|e| e.to_string())
                    });
                let mut conn = match listening {
                    Ok(conn) => conn,
                    Err(e) => {
                        let (delay, log) = failures.next();
                        if log {
                            tracing::warn!(error = %e, "queue listener cannot connect; polling meanwhile");
                        }
                        std::thread::sleep(delay);
                        continue;
                    }
                };
                failures.reset();
                // Whatever was queued while this was not listening.
                wake.notify_one();
                while !stopped() {
                    let mut woken = false;
                    for note in conn.notifications_iter() {
                        match note {
                            Ok(_) => woken = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "queue listener lost its connection");
                                continue 'connect;
                            }
                        }
                    }
                    if woken {
                        wake.notify_one();
                    }
                    std::thread::sleep(LISTEN_POLL);
                }
            }
        })
        .map(drop)
}

/// Raises the calling thread's nice value by `nice` steps (lowering its CPU priority, as
/// `nice -n` does), capped at 19; needs no privilege.
fn lower_thread_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    // On Linux the nice value belongs to each thread: this leaves the rest of the process alone.
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let tid = Some(rustix::thread::gettid());
        let result = getpriority_process(tid)
            .and_then(|current| setpriority_process(tid, (current + i32::from(nice)).min(19)));
        if let Err(e) = result {
            tracing::warn!(
                nice,
                error = %std::io::Error::from(e),
                "could not lower the delivery thread's priority; delivering at normal priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::debug!(nice, "thread priorities are only set on Linux");
}

/// Runs the delivery loop on the current (actix) thread until `stop` turns true or its sender
/// is dropped.
pub async fn run(deps: WorkerDeps, wechat: Connected, mut stop: watch::Receiver<bool>) {
    let concurrency = deps.config.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let claim_at = u32::try_from(concurrency.div_ceil(2)).unwrap_or(1);
    let wechat = Rc::new(wechat);
    // Successful sends are recorded in batches: one statement and one commit for many rows.
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    let recorder = actix_web::rt::spawn(record_sent(deps.pool.clone(), sent_rx));
    let review = actix_web::rt::spawn(crate::review::run(
        deps.pool.clone(),
        Rc::clone(&wechat),
        deps.config.review_interval,
        deps.config.review_settle,
        stop.clone(),
    ));
    let quota = actix_web::rt::spawn(crate::quota::watch(
        deps.pool.clone(),
        Rc::clone(&wechat),
        deps.config.quota_check,
        stop.clone(),
    ));
    let webhooks = actix_web::rt::spawn(crate::webhooks::run(
        deps.pool.clone(),
        deps.webhooks.clone(),
        stop.clone(),
    ));
    let deps = Rc::new(deps);
    let lease_ms = i64::try_from(deps.config.lease.as_millis()).unwrap_or(i64::MAX);
    // Claimed messages whose outcome is not recorded yet: on a stop that outlasts the drain,
    // their leases are handed back so another process takes them at once.
    let in_flight: InFlight = Rc::default();
    let mut claim_failures = Backoff::new(deps.config.poll_interval, MAX_CLAIM_BACKOFF);
    let mut last_release = std::time::Instant::now() - RELEASE_EVERY;
    tracing::info!(concurrency, "delivery worker started");

    loop {
        // Stop when told to, or when whoever could tell us is gone (the application was
        // dropped): the loop runs on a thread of its own and would otherwise spin on forever.
        if *stop.borrow() || stop.has_changed().is_err() {
            break;
        }
        // Claim only what can be sent now, so no lease runs down while a row waits for a
        // slot; and wait for half the slots, so a busy queue is claimed in batches rather
        // than a round trip per freed slot.
        let free = match Arc::clone(&slots).acquire_many_owned(claim_at).await {
            Ok(permits) => {
                drop(permits);
                slots.available_permits()
            }
            Err(_) => break,
        };
        let limit = i64::try_from(free).unwrap_or(1);
        let quiet = deps.config.schedule.is_quiet(Utc::now());
        let release = last_release.elapsed() >= RELEASE_EVERY;
        if release {
            last_release = std::time::Instant::now();
        }
        let claimed = db::run(&deps.pool, move |conn| {
            if release {
                db::messages::release_held(conn, RELEASE_BATCH)?;
            }
            db::messages::claim_due(conn, limit, lease_ms, quiet)
        })
        .await;
        metrics::claim(claimed.as_ref().ok().map(Vec::len));
        let claimed = match claimed {
            Ok(c) => {
                if let Some(failures) = claim_failures.reset() {
                    tracing::info!(failures, "claiming messages works again");
                }
                c
            }
            Err(e) => {
                let (delay, log) = claim_failures.next();
                if log {
                    tracing::warn!(
                        error = %ErrorChain(&e),
                        retry_in_ms = delay.as_millis() as u64,
                        "claiming messages failed; backing off"
                    );
                }
                sleep_or_stop(delay, &mut stop).await;
                continue;
            }
        };
        let full_batch = claimed.len() as i64 == limit;
        for message in claimed {
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                break;
            };
            let (deps, wechat, sent_tx) = (Rc::clone(&deps), Rc::clone(&wechat), sent_tx.clone());
            let in_flight = Rc::clone(&in_flight);
            in_flight.borrow_mut().insert(message.id, message.attempts);
            actix_web::rt::spawn(async move {
                let id = message.id;
                deliver(&deps, &wechat, &sent_tx, message).await;
                in_flight.borrow_mut().remove(&id);
                drop(slot);
            });
        }

        if !full_batch {
            tokio::select! {
                () = deps.wake.notified() => {}
                () = tokio::time::sleep(deps.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    review.abort();
    quota.abort();
    // Deliveries in flight end with this thread; their leases run out and they are sent again
    // (at least once, with the same event id).
    webhooks.abort();
    if !*stop.borrow() {
        // The application was dropped rather than stopped: nobody waits for a drain, and work
        // left behind is retaken after its lease like a crash's.
        return;
    }
    // Claiming has stopped. Let sends in flight record their outcome for up to the shutdown
    // budget; hand the rest back, so another process need not wait out their leases.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(deps.config.shutdown, slots.acquire_many(all))
        .await
        .is_ok();
    drop(sent_tx);
    if drained {
        let _ = recorder.await;
    } else {
        let left: Vec<(Uuid, i32)> = in_flight.borrow().iter().map(|(id, a)| (*id, *a)).collect();
        let count = left.len();
        match db::run(&deps.pool, move |conn| {
            db::messages::release_leases(conn, &left)
        })
        .await
        {
            Ok(released) => tracing::warn!(
                in_flight = count,
                released,
                "stopped with sends still in flight; their leases were handed back"
            ),
            Err(e) => tracing::error!(
                error = %ErrorChain(&e),
                in_flight = count,
                "handing back leases failed; they will expire"
            ),
        }
        // Outcomes already reported get a moment to be written; the sends still running end
        // with this thread's runtime.
        let _ = tokio::time::timeout(Duration::from_secs(2), recorder).await;
    }
    tracing::info!("delivery worker stopped");
}

/// Messages claimed by this worker and not yet recorded: id and attempt of the claim.
type InFlight = Rc<std::cell::RefCell<std::collections::HashMap<Uuid, i32>>>;

/// Exponential back-off for a failing loop: the delay doubles up to a cap, and a failure is
/// worth a log line only when the delay grew (once per step, not once per attempt).
struct Backoff {
    base: Duration,
    max: Duration,
    current: Option<Duration>,
    failures: u32,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: None,
            failures: 0,
        }
    }

    /// The delay before the next try, and whether this failure should be logged.
    fn next(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let (delay, grew) = match self.current {
            None => (self.base, true),
            Some(d) if d < self.max => ((d * 2).min(self.max), true),
            Some(d) => (d, false),
        };
        self.current = Some(delay);
        (delay, grew)
    }

    /// Back to normal; the number of failures in the streak that ended, if there was one.
    fn reset(&mut self) -> Option<u32> {
        self.current = None;
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}

/// What became of one attempt.
enum Outcome {
    Sent(i64),
    Failed {
        errcode: Option<i32>,
        errmsg: String,
        /// The class of the WeChat error behind it.
        class: ErrcodeClass,
        /// WeChat said the recipient does not follow the account (any more).
        not_following: bool,
        /// WeChat said it does not know the template (any more).
        template_gone: bool,
        /// Why wxbind itself failed it, when it did.
        reason: Option<FailReason>,
    },
    Retry {
        errcode: Option<i32>,
        errmsg: String,
        /// The class of the WeChat error behind it.
        class: ErrcodeClass,
    },
    /// WeChat holds it for review: never resent, settled by `review`.
    UnderReview {
        errcode: i32,
        errmsg: String,
        review_ref: Option<String>,
        msgid: Option<i64>,
    },
    /// The account's daily quota is used up: sending pauses for everyone, and the message goes
    /// back to the queue without spending its attempt.
    QuotaExhausted {
        errcode: Option<i32>,
        errmsg: String,
        /// When the refused send began: a quota reset after it makes the refusal stale.
        started: chrono::DateTime<Utc>,
    },
}

#[tracing::instrument(skip_all, fields(message.id = %m.id, attempt = m.attempts))]
async fn deliver(deps: &WorkerDeps, wechat: &Connected, sent: &SentSender, m: Claimed) {
    let outcome = match &m.openid {
        None => Outcome::Failed {
            errcode: None,
            errmsg: "the recipient is no longer bound to WeChat".into(),
            class: ErrcodeClass::None,
            not_following: false,
            template_gone: false,
            reason: None,
        },
        Some(_) if m.attempts > i32::try_from(deps.config.max_attempts).unwrap_or(i32::MAX) => {
            Outcome::Failed {
                errcode: None,
                errmsg: format!("gave up after {} attempts", deps.config.max_attempts),
                class: ErrcodeClass::None,
                not_following: false,
                template_gone: false,
                reason: None,
            }
        }
        Some(openid) => match over_daily_cap(deps, &m).await {
            Some(capped) => capped,
            None => attempt(wechat, &m, openid, Utc::now()).await,
        },
    };
    let outcome = match outcome {
        Outcome::Retry {
            errcode,
            errmsg,
            class,
        } if m.attempts >= i32::try_from(deps.config.max_attempts).unwrap_or(i32::MAX) => {
            Outcome::Failed {
                errcode,
                errmsg: format!("gave up after {} attempts: {errmsg}", m.attempts),
                class,
                not_following: false,
                template_gone: false,
                reason: None,
            }
        }
        other => other,
    };
    record(deps, sent, &m, outcome).await;
}

/// With `WXBIND_MAX_MESSAGES_PER_USER_PER_DAY`, counts a message once against its recipient's
/// day (in the account's time zone, shared by every process; a message counted before is not
/// counted again, whatever its attempt) and fails it with `frequency_cap` when the day's count
/// is full; `None` means send it.
async fn over_daily_cap(deps: &WorkerDeps, m: &Claimed) -> Option<Outcome> {
    let cap = deps.config.schedule.max_per_user_per_day?;
    let day = deps.config.schedule.day(Utc::now());
    let limit = i32::try_from(cap).unwrap_or(i32::MAX);
    let (id, user_id) = (m.id, m.user_id);
    match db::run(&deps.pool, move |conn| {
        db::messages::count_daily_send(conn, id, user_id, day, limit)
    })
    .await
    {
        Ok(true) => None,
        Ok(false) => Some(Outcome::Failed {
            errcode: None,
            errmsg: format!(
                "the recipient was sent {cap} messages today already (WXBIND_MAX_MESSAGES_PER_USER_PER_DAY)"
            ),
            class: ErrcodeClass::None,
            not_following: false,
            template_gone: false,
            reason: Some(FailReason::FrequencyCap),
        }),
        Err(e) => {
            // The cause is for the log; the message's history is shown to its recipient.
            tracing::warn!(error = %ErrorChain(&e), "counting the recipient's messages today failed");
            Some(Outcome::Retry {
                errcode: None,
                errmsg: "counting the recipient's messages today failed; retrying".into(),
                class: ErrcodeClass::Transient,
            })
        }
    }
}

/// One send, with at most one immediate retry after a token refresh.
async fn attempt(
    wechat: &Connected,
    m: &Claimed,
    openid: &str,
    started: chrono::DateTime<Utc>,
) -> Outcome {
    let client_msg_id = m.id.to_string();
    let body = TemplateSend {
        touser: openid,
        template_id: &m.template_id,
        url: m.url.as_deref(),
        miniprogram: m.miniprogram.as_ref(),
        data: &m.data,
        client_msg_id: &client_msg_id,
    };
    let body = &body;
    let sent = wechat
        .with_token(|client, token| async move { client.send_template(token.secret(), body).await })
        .await;
    match sent {
        Ok(SendAccepted::Sent(msgid)) => Outcome::Sent(msgid),
        Ok(SendAccepted::UnderReview {
            errcode,
            errmsg,
            review_ref,
            msgid,
        }) => Outcome::UnderReview {
            errcode: i32::try_from(errcode).unwrap_or(crate::review::UNDER_REVIEW_ERRCODE),
            errmsg,
            review_ref,
            msgid,
        },
        // No token to send with: WeChat or the token store is in trouble, not the message.
        Err(CallError::Token(e)) => Outcome::Retry {
            errcode: None,
            errmsg: ErrorChain(&e).to_string(),
            class: match &e {
                TokenError::Wechat(w) => errcode_class(w),
                TokenError::Store(_) => ErrcodeClass::Transient,
            },
        },
        Err(CallError::Wechat(e)) => classify(&e, started),
    }
}

fn classify(e: &WechatError, started: chrono::DateTime<Utc>) -> Outcome {
    let errcode = e.errcode().and_then(|c| i32::try_from(c).ok());
    let errmsg = match e {
        WechatError::Api { errmsg, .. } => errmsg.clone(),
        other => other.to_string(),
    };
    if e.is_quota_exhausted() {
        Outcome::QuotaExhausted {
            errcode,
            errmsg,
            started,
        }
    } else if e.is_retryable() {
        Outcome::Retry {
            errcode,
            errmsg,
            class: errcode_class(e),
        }
    } else {
        Outcome::Failed {
            errcode,
            errmsg,
            class: errcode_class(e),
            not_following: e.is_not_following(),
            template_gone: e.is_unknown_template(),
            reason: None,
        }
    }
}

/// The metrics' name for the class of `e`.
fn errcode_class(e: &WechatError) -> ErrcodeClass {
    match e.class() {
        ErrorClass::TokenInvalid => ErrcodeClass::TokenInvalid,
        ErrorClass::Transient => ErrcodeClass::Transient,
        ErrorClass::Permanent => ErrcodeClass::Permanent,
    }
}

/// Exponential backoff with "equal jitter": half the step fixed, half random.
pub fn backoff(config: &DeliveryConfig, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let step = config
        .retry_base
        .saturating_mul(2u32.saturating_pow(exp))
        .min(config.retry_max);
    let half = step / 2;
    let jitter_ms = rand::rng().random_range(0..=u64::try_from(half.as_millis()).unwrap_or(0));
    half + Duration::from_millis(jitter_ms)
}

type SentSender = mpsc::UnboundedSender<(Uuid, i32, i64)>;

/// Most outcomes written by one statement.
const SENT_BATCH: usize = 512;

/// Writes successful sends in batches until every sender is gone. A batch that cannot be
/// written leaves its rows `sending`; their leases run out and WeChat's `client_msg_id`
/// deduplication absorbs the re-send.
async fn record_sent(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(Uuid, i32, i64)>) {
    let mut batch = Vec::with_capacity(SENT_BATCH);
    while rx.recv_many(&mut batch, SENT_BATCH).await > 0 {
        let rows = std::mem::replace(&mut batch, Vec::with_capacity(SENT_BATCH));
        let n = rows.len();
        match db::run(&pool, move |conn| {
            db::messages::mark_sent_batch(conn, &rows)
        })
        .await
        {
            Ok(held) if held < n => {
                tracing::warn!(
                    lost = n - held,
                    "claims lost before their outcome was recorded"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(
                error = %ErrorChain(&e),
                count = n,
                "recording sent messages failed"
            ),
        }
    }
}

async fn record(deps: &WorkerDeps, sent: &SentSender, m: &Claimed, outcome: Outcome) {
    let (id, attempt) = (m.id, m.attempts);
    let result = match outcome {
        Outcome::Sent(msgid) => {
            metrics::send(SendOutcome::Sent, ErrcodeClass::None);
            metrics::send_latency((Utc::now() - m.created_at).to_std().unwrap_or_default());
            tracing::debug!(msgid, "message sent");
            if sent.send((id, attempt, msgid)).is_err() {
                tracing::error!("outcome recorder is gone; the lease will expire");
            }
            return;
        }
        Outcome::Failed {
            errcode,
            errmsg,
            class,
            not_following,
            template_gone,
            reason,
        } => {
            metrics::send(SendOutcome::Failed, class);
            tracing::warn!(errcode, errmsg = %errmsg, "message failed");
            let unfollowed = m.openid.clone().filter(|_| not_following);
            let gone = template_gone.then(|| m.template_id.clone());
            let recorded = db::run(&deps.pool, move |conn| {
                conn.transaction(|conn| {
                    if let Some(openid) = &unfollowed {
                        db::followers::set(conn, openid, false, Utc::now().timestamp())?;
                    }
                    let gone_at = match &gone {
                        Some(template_id) => db::templates::mark_gone(conn, template_id)?,
                        None => None,
                    };
                    let held =
                        db::messages::mark_failed(conn, id, attempt, errcode, &errmsg, reason)?;
                    Ok((held, gone_at))
                })
            })
            .await;
            if let (true, Ok((_, gone_at))) = (template_gone, &recorded) {
                // Later messages with it are refused at POST time instead of queued to fail.
                // `None`: the table had it gone already (another process), this process not.
                deps.templates
                    .mark_gone(&m.template_id, gone_at.unwrap_or_else(Utc::now));
                tracing::warn!(template.id = %m.template_id, "WeChat no longer knows the template; marked gone");
            }
            recorded.map(|(held, _)| held)
        }
        Outcome::UnderReview {
            errcode,
            errmsg,
            review_ref,
            msgid,
        } => {
            metrics::send(SendOutcome::UnderReview, ErrcodeClass::None);
            tracing::info!(errcode, errmsg = %errmsg, "WeChat holds the message for review; it will not be resent");
            let openid = m.openid.clone().unwrap_or_default();
            db::run(&deps.pool, move |conn| {
                let held = db::messages::Held {
                    errcode,
                    errmsg: &errmsg,
                    review_ref: review_ref.as_deref(),
                    msgid,
                    openid: &openid,
                };
                db::messages::mark_under_review(conn, id, attempt, &held)
            })
            .await
        }
        Outcome::QuotaExhausted {
            errcode,
            errmsg,
            started,
        } => {
            metrics::send(SendOutcome::QuotaPaused, ErrcodeClass::Transient);
            let until = crate::quota::next_reset(Utc::now());
            let recorded = db::run(&deps.pool, move |conn| {
                conn.transaction(|conn| {
                    let began = db::pause::set(conn, until, errcode, &errmsg, started)?;
                    let held =
                        db::messages::hand_back_unspent(conn, id, attempt, errcode, &errmsg)?;
                    Ok((began, held))
                })
            })
            .await;
            if let Ok((true, _)) = recorded {
                metrics::send_paused();
                tracing::warn!(
                    errcode,
                    paused_until = %until,
                    "WeChat's daily quota is used up; sending is paused for the account until it resets"
                );
            }
            recorded.map(|(_, held)| held)
        }
        Outcome::Retry {
            errcode,
            errmsg,
            class,
        } => {
            metrics::send(SendOutcome::Retried, class);
            let delay = backoff(&deps.config, attempt);
            tracing::info!(errcode, errmsg = %errmsg, retry_in_ms = delay.as_millis() as u64, "send failed; will retry");
            let at = Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(60));
            db::run(&deps.pool, move |conn| {
                db::messages::reschedule(conn, id, attempt, at, errcode, &errmsg)
            })
            .await
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("claim lost before the outcome was recorded; a newer claim owns it")
        }
        // The lease will run out and the message will be claimed again.
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), "recording the outcome failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_thread_ends_when_its_application_is_dropped() {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Nothing listens there: every claim fails and the loop goes round again.
        let pool = db::build_pool("postgres://nobody@127.0.0.1:1/nothing", 1);
        let wechat = crate::config::WechatConfig {
            app_id: "wxtest".into(),
            app_secret: secrecy::SecretString::from("test-secret".to_owned()),
            api_base: url::Url::parse("http://127.0.0.1:1").expect("url"),
            oauth_base: url::Url::parse("http://127.0.0.1:1").expect("url"),
            mp_base: url::Url::parse("http://127.0.0.1:1").expect("url"),
            timeout: Duration::from_millis(100),
            default_template_id: None,
            push: None,
        };
        let account = Account::new(&wechat, pool.clone()).expect("account");
        let deps = WorkerDeps {
            pool,
            account: Arc::new(account),
            templates: Arc::new(Registry::default()),
            wake: Arc::new(Notify::new()),
            config: DeliveryConfig {
                poll_interval: Duration::from_millis(10),
                nice: 0,
                ..DeliveryConfig::default()
            },
            webhooks: crate::config::WebhookConfig::default(),
        };
        let mut done = spawn(deps, stop_rx).expect("thread");
        drop(stop_tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match done.try_recv() {
                Ok(()) => break,
                Err(oneshot::error::TryRecvError::Empty) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the worker kept running"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("the worker thread died: {e}"),
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_priority_affects_only_the_calling_thread() {
        let own = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = own().expect("getpriority");
        let lowered = std::thread::spawn(move || {
            lower_thread_priority(5);
            own().expect("getpriority")
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(
            own().expect("getpriority"),
            before,
            "the calling thread is untouched"
        );
    }

    #[test]
    fn claim_backoff_doubles_to_its_cap_and_logs_once_per_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let steps: Vec<_> = (0..5).map(|_| b.next()).collect();
        let ms: Vec<_> = steps.iter().map(|(d, _)| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 400, 400]);
        let logged: Vec<_> = steps.iter().map(|(_, l)| *l).collect();
        assert_eq!(logged, [true, true, true, false, false]);
        assert_eq!(b.reset(), Some(5));
        assert_eq!(b.reset(), None);
        assert_eq!(b.next().0.as_millis(), 100);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let c = DeliveryConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..DeliveryConfig::default()
        };
        for attempt in 1..40 {
            let d = backoff(&c, attempt);
            assert!(d <= Duration::from_millis(1000), "attempt {attempt}: {d:?}");
        }
        let first = backoff(&c, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let fifth = backoff(&c, 5);
        assert!(fifth >= Duration::from_millis(500));
    }
}
