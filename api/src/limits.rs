//! Limits on what one sender may queue: a non-admin user at most
//! `WXBIND_USER_SENDS_PER_MINUTE` accepted messages per clock minute (counted in PostgreSQL,
//! so across instances), and every sender at most `WXBIND_MAX_QUEUED_PER_SENDER` messages
//! waiting for their first attempt. Beyond either, `429 too_many_requests` with `Retry-After`.
//!
//! The queue count comes from the fair-queueing ranks (a sender's waiting messages hold
//! consecutive ranks, so their number is the last rank minus the first plus one: two index
//! probes however long the queue), read at most once a second per sender and process; what
//! the process accepted since is added, so a sender is refused within about a second of
//! reaching the limit, on every instance.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{Timelike, Utc};

use crate::db::{self, DbError, PgPool};

/// How long a sender's queue count is trusted before it is read again.
const ESTIMATE_TTL: Duration = Duration::from_secs(1);
/// Most senders whose counts one process remembers; older entries are dropped first.
const MAX_TRACKED: usize = 10_000;
/// What a sender whose queue is full is told to wait: the queue drains at the account's pace.
const QUEUE_FULL_RETRY_SECS: u64 = 30;

/// A refusal, and how long the caller should wait.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Over a limit.
    #[error("{reason}")]
    Refused {
        /// Seconds until a retry can succeed.
        retry_after: u64,
        /// Which limit.
        reason: &'static str,
    },
    /// The count could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    read_at: Instant,
    queued: i64,
}

/// The limits of one process.
#[derive(Debug)]
pub struct SenderLimits {
    per_minute: u32,
    max_queued: i64,
    queued: Mutex<HashMap<i64, Estimate>>,
}

impl SenderLimits {
    /// Limits of `per_minute` accepted messages for non-admins and `max_queued` waiting ones
    /// for every sender.
    pub fn new(per_minute: u32, max_queued: i64) -> Self {
        Self {
            per_minute,
            max_queued,
            queued: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Estimate>> {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits one more message from `sender`, or says why not. A non-admin's admission counts
    /// against their minute (also when the request fails later, like an attempt would).
    pub async fn admit(&self, pool: &PgPool, sender: i64, admin: bool) -> Result<(), LimitError> {
        self.admit_many(pool, sender, admin, 1).await
    }

    /// Admits `n` more messages from `sender` at once (a broadcast), or says why not: refused
    /// when they would take the sender's waiting messages past `WXBIND_MAX_QUEUED_PER_SENDER`.
    pub async fn admit_many(
        &self,
        pool: &PgPool,
        sender: i64,
        admin: bool,
        n: i64,
    ) -> Result<(), LimitError> {
        let cap = self.max_queued;
        let cached = self
            .counts()
            .get(&sender)
            .copied()
            .filter(|e| e.read_at.elapsed() < ESTIMATE_TTL);
        let queued = match cached {
            Some(e) => e.queued,
            None => {
                let queued = db::run(pool, move |conn| {
                    db::messages::waiting_estimate(conn, sender, cap)
                })
                .await?;
                let mut counts = self.counts();
                if counts.len() >= MAX_TRACKED {
                    counts.retain(|_, e| e.read_at.elapsed() < ESTIMATE_TTL);
                }
                counts.insert(
                    sender,
                    Estimate {
                        read_at: Instant::now(),
                        queued,
                    },
                );
                queued
            }
        };
        if queued.saturating_add(n) > self.max_queued {
            crate::metrics::rate_limited(crate::metrics::Limit::QueueFull);
            return Err(LimitError::Refused {
                retry_after: QUEUE_FULL_RETRY_SECS,
                reason: "this sender has WXBIND_MAX_QUEUED_PER_SENDER messages waiting to be sent; retry once they drain",
            });
        }
        if !admin {
            let limit = i32::try_from(self.per_minute).unwrap_or(i32::MAX);
            let counted = db::run(pool, move |conn| {
                db::messages::count_send(conn, sender, limit)
            })
            .await?;
            if !counted {
                crate::metrics::rate_limited(crate::metrics::Limit::PerMinute);
                let now = Utc::now();
                return Err(LimitError::Refused {
                    retry_after: u64::from(60 - now.second()).max(1),
                    reason: "more messages this minute than WXBIND_USER_SENDS_PER_MINUTE allows; retry after Retry-After seconds",
                });
            }
        }
        Ok(())
    }

    /// Counts a message this process accepted, until the next read of the sender's queue.
    pub fn accepted(&self, sender: i64) {
        self.accepted_many(sender, 1);
    }

    /// Counts `n` messages this process accepted at once.
    pub fn accepted_many(&self, sender: i64, n: i64) {
        if let Some(e) = self.counts().get_mut(&sender) {
            e.queued += n;
        }
    }
}
