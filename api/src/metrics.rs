//! Process counters for ops, served in the Prometheus text format at `/api/metrics`.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters of this process.
#[derive(Debug, Default)]
pub struct Metrics {
    messages_accepted: AtomicU64,
    messages_sent: AtomicU64,
    messages_failed: AtomicU64,
    messages_retried: AtomicU64,
    messages_under_review: AtomicU64,
    send_pauses: AtomicU64,
    token_fetches: AtomicU64,
    binds: AtomicU64,
    logins_failed: AtomicU64,
    logins_busy: AtomicU64,
    logins_throttled: AtomicU64,
}

impl Metrics {
    /// A message was queued.
    pub fn message_accepted(&self) {
        self.messages_accepted.fetch_add(1, Relaxed);
    }
    /// A message was delivered to WeChat.
    pub fn message_sent(&self) {
        self.messages_sent.fetch_add(1, Relaxed);
    }
    /// A message ended `failed`.
    pub fn message_failed(&self) {
        self.messages_failed.fetch_add(1, Relaxed);
    }
    /// A send attempt failed transiently and was rescheduled.
    pub fn message_retried(&self) {
        self.messages_retried.fetch_add(1, Relaxed);
    }
    /// WeChat held a message for review (40252).
    pub fn message_under_review(&self) {
        self.messages_under_review.fetch_add(1, Relaxed);
    }
    /// This process paused the account's sending: WeChat said the daily quota is used up.
    pub fn send_paused(&self) {
        self.send_pauses.fetch_add(1, Relaxed);
    }
    /// An access token was fetched from WeChat.
    pub fn token_fetch(&self) {
        self.token_fetches.fetch_add(1, Relaxed);
    }
    /// An account was bound.
    pub fn bind(&self) {
        self.binds.fetch_add(1, Relaxed);
    }
    /// A login failed.
    pub fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Relaxed);
    }
    /// A login was refused with `busy`: no verification slot within the wait.
    pub fn login_busy(&self) {
        self.logins_busy.fetch_add(1, Relaxed);
    }
    /// A login was refused with `too_many_attempts`.
    pub fn login_throttled(&self) {
        self.logins_throttled.fetch_add(1, Relaxed);
    }

    /// Access-token fetches so far.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Relaxed)
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let rows = [
            (
                "wxbind_messages_accepted_total",
                "Messages queued.",
                &self.messages_accepted,
            ),
            (
                "wxbind_messages_sent_total",
                "Messages delivered to WeChat.",
                &self.messages_sent,
            ),
            (
                "wxbind_messages_failed_total",
                "Messages that ended failed.",
                &self.messages_failed,
            ),
            (
                "wxbind_messages_retried_total",
                "Send attempts rescheduled after a transient failure.",
                &self.messages_retried,
            ),
            (
                "wxbind_messages_under_review_total",
                "Sends WeChat held for content review (errcode 40252).",
                &self.messages_under_review,
            ),
            (
                "wxbind_send_pauses_total",
                "Times sending was paused for the account because WeChat's daily quota was used up (45009).",
                &self.send_pauses,
            ),
            (
                "wxbind_wechat_token_fetches_total",
                "Access tokens fetched from WeChat.",
                &self.token_fetches,
            ),
            (
                "wxbind_bindings_total",
                "WeChat accounts bound.",
                &self.binds,
            ),
            (
                "wxbind_logins_failed_total",
                "Failed logins.",
                &self.logins_failed,
            ),
            (
                "wxbind_logins_busy_total",
                "Logins refused with busy (password verification at capacity).",
                &self.logins_busy,
            ),
            (
                "wxbind_logins_throttled_total",
                "Logins refused with too_many_attempts (too many failures from the address).",
                &self.logins_throttled,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        out
    }
}
