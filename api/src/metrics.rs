//! The service's metrics, recorded through the `metrics` facade into the Prometheus exporter's
//! recorder and rendered as Prometheus text at `GET /api/metrics` (by actix, on the service's
//! own listener: the exporter's HTTP listener is not used).
//!
//! The recorder is process-wide and installed once ([`install`]); a process that runs several
//! applications (the tests) shares one set of series. Every label value comes from a fixed set
//! defined here, so the number of series is bounded: never a user id, openid, template id or
//! raw errcode.
//!
//! This module is a leaf: callers map their own types (WeChat errors, push kinds) onto the
//! label enums below.
use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages queued (`POST /api/messages` answered 202).
pub const MESSAGES_ACCEPTED: &str = "wxbind_messages_accepted_total";
/// What became of claimed messages, by `outcome` and `errcode_class`.
pub const SENDS: &str = "wxbind_sends_total";
/// Times this process paused the account's sending for the quota (45009).
pub const SEND_PAUSES: &str = "wxbind_send_pauses_total";
/// Whether the account's sending is paused now (1) or not (0).
pub const SEND_PAUSED: &str = "wxbind_send_paused";
/// Claim queries, by `result`.
pub const CLAIMS: &str = "wxbind_claims_total";
/// Messages claimed.
pub const CLAIMED_MESSAGES: &str = "wxbind_claimed_messages_total";
/// From a message's creation to WeChat's accepting it.
pub const ENQUEUE_TO_SEND: &str = "wxbind_enqueue_to_send_seconds";
/// WeChat calls, by `endpoint` and `result`.
pub const WECHAT_REQUESTS: &str = "wxbind_wechat_requests_total";
/// How long WeChat calls took, by `endpoint`.
pub const WECHAT_REQUEST_DURATION: &str = "wxbind_wechat_request_duration_seconds";
/// Access-token fetches, by `result`.
pub const TOKEN_FETCHES: &str = "wxbind_wechat_token_fetches_total";
/// Messages waiting, by `state`.
pub const QUEUE_DEPTH: &str = "wxbind_queue_depth";
/// Age of the oldest waiting message, by `state`.
pub const QUEUE_OLDEST_AGE: &str = "wxbind_queue_oldest_age_seconds";
/// When the queue gauges were last read.
pub const QUEUE_PROBED_AT: &str = "wxbind_queue_probed_at_seconds";
/// WeChat accounts bound.
pub const BINDINGS: &str = "wxbind_bindings_total";
/// Logins, by `outcome`.
pub const LOGINS: &str = "wxbind_logins_total";
/// Requests refused by a limit, by `code` and `reason`.
pub const RATE_LIMITED: &str = "wxbind_rate_limited_total";
/// Server pushes accepted, by `type`.
pub const PUSHES: &str = "wxbind_pushes_total";
/// Server pushes refused, by `reason`.
pub const PUSHES_REJECTED: &str = "wxbind_pushes_rejected_total";

/// Buckets of the WeChat call latency: WeChat answers in tens of milliseconds, and a call
/// gives up at `WECHAT_TIMEOUT_MS` (10 s by default).
const WECHAT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the enqueue-to-send latency: well under a second when the queue is healthy,
/// minutes through retries, up to a day through a quota pause.
const ENQUEUE_TO_SEND_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// How often histogram samples are folded into their buckets when nobody scrapes (rendering
/// does it too); keeps memory flat between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder, once: later calls (another application in the same
/// process) reuse it. Describes every metric and registers the fixed label sets at zero, so a
/// series exists (and `rate()` works) before its first event.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_err() {
            // Only when something other than this module installed one first: its events go
            // there, and this handle renders the descriptions alone.
            tracing::warn!(
                "another metrics recorder is installed; /api/metrics will not show its series"
            );
        }
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("wxbind-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            // Rendering folds samples too: without the thread, memory grows only between scrapes.
            tracing::warn!(error = %e, "could not start the metrics upkeep thread");
        }
        describe();
        register_zeroes();
        handle
    })
}

fn builder() -> PrometheusBuilder {
    let with = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
    };
    // Both bucket lists are non-empty constants, the only way this can fail.
    with(
        PrometheusBuilder::new(),
        WECHAT_REQUEST_DURATION,
        WECHAT_BUCKETS,
    )
    .and_then(|b| with(b, ENQUEUE_TO_SEND, ENQUEUE_TO_SEND_BUCKETS))
    .unwrap_or_else(|_| unreachable!("histogram buckets are non-empty constants"))
}

/// The Prometheus exposition of this process's metrics.
pub fn render() -> String {
    install().render()
}

fn describe() {
    describe_counter!(
        MESSAGES_ACCEPTED,
        "Messages queued (POST /api/messages answered 202)."
    );
    describe_counter!(
        SENDS,
        "What became of claimed messages: outcome sent, failed, retried, under_review (WeChat holds it for review, 40252) or quota_paused (45009: handed back, sending paused); errcode_class token_invalid, transient, permanent or none."
    );
    describe_counter!(
        SEND_PAUSES,
        "Times this process paused the account's sending because WeChat's daily quota was used up (45009)."
    );
    describe_gauge!(
        SEND_PAUSED,
        "1 while the account's sending is paused for WeChat's daily quota, else 0 (read with the queue gauges)."
    );
    describe_counter!(
        CLAIMS,
        "Claim queries of the delivery worker, by result (ok, error)."
    );
    describe_counter!(CLAIMED_MESSAGES, "Messages claimed by the delivery worker.");
    describe_histogram!(
        ENQUEUE_TO_SEND,
        ::metrics::Unit::Seconds,
        "Seconds from a message's creation to WeChat accepting it."
    );
    describe_counter!(
        WECHAT_REQUESTS,
        "Calls to WeChat by endpoint and result (ok, errcode, http_status, timeout, unreachable, bad_answer)."
    );
    describe_histogram!(
        WECHAT_REQUEST_DURATION,
        ::metrics::Unit::Seconds,
        "Seconds a call to WeChat took, by endpoint."
    );
    describe_counter!(
        TOKEN_FETCHES,
        "Access tokens fetched from WeChat, by result (ok, error)."
    );
    // The cap is `db::messages::QUEUE_COUNT_CAP`.
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages in the queue by state: waiting (first attempt), retrying (after a failed attempt), sending (claimed). Counted up to 100000 each."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        ::metrics::Unit::Seconds,
        "Age of the oldest message at the head of the queue, by state (waiting, retrying); 0 when none."
    );
    describe_gauge!(
        QUEUE_PROBED_AT,
        ::metrics::Unit::Seconds,
        "Unix time the queue gauges were last read from the database."
    );
    describe_counter!(BINDINGS, "WeChat accounts bound.");
    describe_counter!(LOGINS, "Logins by outcome (ok, invalid, throttled, busy).");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a limit: code too_many_requests (reason per_minute, queue_full) or too_many_attempts (reason login_failures)."
    );
    describe_counter!(
        PUSHES,
        "WeChat server pushes accepted, retries included, by type (subscribe, unsubscribe, scan, template_report, other)."
    );
    describe_counter!(
        PUSHES_REJECTED,
        "WeChat server pushes refused, by reason (bad_signature, plaintext_refused, outside_window, malformed, replayed, too_large)."
    );
}

/// Registers every counter's expected label sets, so each series is there at zero.
fn register_zeroes() {
    for c in [MESSAGES_ACCEPTED, SEND_PAUSES, CLAIMED_MESSAGES, BINDINGS] {
        counter!(c).increment(0);
    }
    for (outcome, class) in [
        (SendOutcome::Sent, ErrcodeClass::None),
        (SendOutcome::Failed, ErrcodeClass::Permanent),
        (SendOutcome::Retried, ErrcodeClass::Transient),
        (SendOutcome::UnderReview, ErrcodeClass::None),
        (SendOutcome::QuotaPaused, ErrcodeClass::Transient),
    ] {
        counter!(SENDS, "outcome" => outcome.label(), "errcode_class" => class.label())
            .increment(0);
    }
    for result in ["ok", "error"] {
        counter!(CLAIMS, "result" => result).increment(0);
        counter!(TOKEN_FETCHES, "result" => result).increment(0);
    }
    for outcome in Login::ALL {
        counter!(LOGINS, "outcome" => outcome.label()).increment(0);
    }
    for limit in Limit::ALL {
        let (code, reason) = limit.labels();
        counter!(RATE_LIMITED, "code" => code, "reason" => reason).increment(0);
    }
    for kind in PushType::ALL {
        counter!(PUSHES, "type" => kind.label()).increment(0);
    }
    for reason in PushRejection::ALL {
        counter!(PUSHES_REJECTED, "reason" => reason.label()).increment(0);
    }
    // Histograms render their buckets from registration on, at zero.
    let _ = histogram!(ENQUEUE_TO_SEND);
    for endpoint in Endpoint::ALL {
        let _ = histogram!(WECHAT_REQUEST_DURATION, "endpoint" => endpoint.label());
    }
}

/// What became of a claimed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// WeChat accepted it.
    Sent,
    /// It ended `failed`.
    Failed,
    /// The attempt failed transiently; it was rescheduled.
    Retried,
    /// WeChat holds it for review (40252).
    UnderReview,
    /// The daily quota is used up (45009): handed back, sending paused.
    QuotaPaused,
}

impl SendOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Retried => "retried",
            Self::UnderReview => "under_review",
            Self::QuotaPaused => "quota_paused",
        }
    }
}

/// The class of the WeChat error behind an outcome (`wechat::ErrorClass`, or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrcodeClass {
    /// WeChat refused the access token.
    TokenInvalid,
    /// Busy, rate-limited, unreachable: worth retrying.
    Transient,
    /// Retrying will not help.
    Permanent,
    /// No WeChat error decided it.
    None,
}

impl ErrcodeClass {
    fn label(self) -> &'static str {
        match self {
            Self::TokenInvalid => "token_invalid",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::None => "none",
        }
    }
}

/// One claimed message's outcome.
pub fn send(outcome: SendOutcome, class: ErrcodeClass) {
    counter!(SENDS, "outcome" => outcome.label(), "errcode_class" => class.label()).increment(1);
}

/// WeChat accepted a message `waited` after it was created.
pub fn send_latency(waited: Duration) {
    histogram!(ENQUEUE_TO_SEND).record(waited.as_secs_f64());
}

/// This process paused the account's sending (45009).
pub fn send_paused() {
    counter!(SEND_PAUSES).increment(1);
}

/// A claim query: `Some(rows)` claimed, or `None` when it failed.
pub fn claim(claimed: Option<usize>) {
    match claimed {
        Some(rows) => {
            counter!(CLAIMS, "result" => "ok").increment(1);
            counter!(CLAIMED_MESSAGES).increment(u64::try_from(rows).unwrap_or(u64::MAX));
        }
        None => counter!(CLAIMS, "result" => "error").increment(1),
    }
}

/// A WeChat API the service calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A template message send.
    TemplateSend,
    /// The access-token fetch.
    StableToken,
    /// The OAuth code exchange.
    OauthCode,
    /// The template list.
    TemplateList,
    /// A parametric QR code.
    Qrcode,
    /// Today's send quota.
    QuotaGet,
    /// The quota reset.
    ClearQuota,
    /// The list of messages review blocked.
    QueryBlocked,
}

impl Endpoint {
    const ALL: [Self; 8] = [
        Self::TemplateSend,
        Self::StableToken,
        Self::OauthCode,
        Self::TemplateList,
        Self::Qrcode,
        Self::QuotaGet,
        Self::ClearQuota,
        Self::QueryBlocked,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::TemplateSend => "template_send",
            Self::StableToken => "stable_token",
            Self::OauthCode => "oauth_code",
            Self::TemplateList => "template_list",
            Self::Qrcode => "qrcode",
            Self::QuotaGet => "quota_get",
            Self::ClearQuota => "clear_quota",
            Self::QueryBlocked => "query_blocked",
        }
    }
}

/// How a WeChat call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// An answer without an error (a send held for review included).
    Ok,
    /// A non-zero errcode.
    Errcode,
    /// A non-2xx HTTP status.
    HttpStatus,
    /// No answer in time.
    Timeout,
    /// No connection.
    Unreachable,
    /// An answer that is not what WeChat documents.
    BadAnswer,
}

impl CallResult {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Errcode => "errcode",
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::BadAnswer => "bad_answer",
        }
    }
}

/// A call to `endpoint` took `took` and ended with `result`.
pub fn wechat_call(endpoint: Endpoint, took: Duration, result: CallResult) {
    let endpoint = endpoint.label();
    histogram!(WECHAT_REQUEST_DURATION, "endpoint" => endpoint).record(took.as_secs_f64());
    counter!(WECHAT_REQUESTS, "endpoint" => endpoint, "result" => result.label()).increment(1);
}

/// An access-token fetch from WeChat succeeded or failed.
pub fn token_fetch(ok: bool) {
    counter!(TOKEN_FETCHES, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// What the queue probe read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueGauges {
    /// Messages waiting for their first attempt.
    pub waiting: i64,
    /// Queued messages after a failed attempt.
    pub retrying: i64,
    /// Claimed messages.
    pub sending: i64,
    /// Age of the oldest waiting message at the head of the queue.
    pub oldest_waiting: Duration,
    /// Age of the oldest retrying message among those due first.
    pub oldest_retrying: Duration,
    /// Whether sending is paused.
    pub paused: bool,
    /// When it was read, in seconds since the epoch.
    pub read_at: i64,
}

/// Sets the queue gauges.
pub fn queue(g: &QueueGauges) {
    gauge!(QUEUE_DEPTH, "state" => "waiting").set(g.waiting as f64);
    gauge!(QUEUE_DEPTH, "state" => "retrying").set(g.retrying as f64);
    gauge!(QUEUE_DEPTH, "state" => "sending").set(g.sending as f64);
    gauge!(QUEUE_OLDEST_AGE, "state" => "waiting").set(g.oldest_waiting.as_secs_f64());
    gauge!(QUEUE_OLDEST_AGE, "state" => "retrying").set(g.oldest_retrying.as_secs_f64());
    gauge!(SEND_PAUSED).set(if g.paused { 1.0 } else { 0.0 });
    gauge!(QUEUE_PROBED_AT).set(g.read_at as f64);
}

/// A message was queued.
pub fn message_accepted() {
    counter!(MESSAGES_ACCEPTED).increment(1);
}

/// An account was bound.
pub fn bind() {
    counter!(BINDINGS).increment(1);
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Logged in.
    Ok,
    /// `invalid_credentials`.
    Invalid,
    /// `too_many_attempts`.
    Throttled,
    /// `busy`: no verification slot within the wait.
    Busy,
}

impl Login {
    const ALL: [Self; 4] = [Self::Ok, Self::Invalid, Self::Throttled, Self::Busy];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Throttled => "throttled",
            Self::Busy => "busy",
        }
    }
}

/// A login ended with `outcome`.
pub fn login(outcome: Login) {
    counter!(LOGINS, "outcome" => outcome.label()).increment(1);
    if outcome == Login::Throttled {
        rate_limited(Limit::LoginFailures);
    }
}

/// A limit that refuses requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `too_many_requests`: a non-admin's `WXBIND_USER_SENDS_PER_MINUTE`.
    PerMinute,
    /// `too_many_requests`: a sender's `WXBIND_MAX_QUEUED_PER_SENDER`.
    QueueFull,
    /// `too_many_attempts`: failed logins from one address.
    LoginFailures,
}

impl Limit {
    const ALL: [Self; 3] = [Self::PerMinute, Self::QueueFull, Self::LoginFailures];

    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::PerMinute => ("too_many_requests", "per_minute"),
            Self::QueueFull => ("too_many_requests", "queue_full"),
            Self::LoginFailures => ("too_many_attempts", "login_failures"),
        }
    }
}

/// A request was refused by `limit`.
pub fn rate_limited(limit: Limit) {
    let (code, reason) = limit.labels();
    counter!(RATE_LIMITED, "code" => code, "reason" => reason).increment(1);
}

/// What a server push was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    /// Follow.
    Subscribe,
    /// Unfollow.
    Unsubscribe,
    /// A follower scanned a parametric QR code.
    Scan,
    /// A template message's delivery report.
    TemplateReport,
    /// Anything else.
    Other,
}

impl PushType {
    const ALL: [Self; 5] = [
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Scan,
        Self::TemplateReport,
        Self::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Scan => "scan",
            Self::TemplateReport => "template_report",
            Self::Other => "other",
        }
    }
}

/// A server push was accepted.
pub fn push(kind: PushType) {
    counter!(PUSHES, "type" => kind.label()).increment(1);
}

/// Why a server push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRejection {
    /// The signature does not verify.
    BadSignature,
    /// Plaintext where safe mode is required.
    PlaintextRefused,
    /// The timestamp is too far from this server's clock.
    OutsideWindow,
    /// Malformed, undecryptable or for another appid.
    Malformed,
    /// A signed `(timestamp, nonce)` seen before with another body.
    Replayed,
    /// Over the size limit.
    TooLarge,
}

impl PushRejection {
    const ALL: [Self; 6] = [
        Self::BadSignature,
        Self::PlaintextRefused,
        Self::OutsideWindow,
        Self::Malformed,
        Self::Replayed,
        Self::TooLarge,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::PlaintextRefused => "plaintext_refused",
            Self::OutsideWindow => "outside_window",
            Self::Malformed => "malformed",
            Self::Replayed => "replayed",
            Self::TooLarge => "too_large",
        }
    }
}

/// A server push was refused.
pub fn push_rejected(reason: PushRejection) {
    counter!(PUSHES_REJECTED, "reason" => reason.label()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_series_with_bounded_labels() {
        install();
        // A second install reuses the first.
        assert!(std::ptr::eq(install(), install()));
        wechat_call(
            Endpoint::TemplateSend,
            Duration::from_millis(30),
            CallResult::Ok,
        );
        send(SendOutcome::Sent, ErrcodeClass::None);
        send_latency(Duration::from_millis(700));
        queue(&QueueGauges {
            waiting: 3,
            retrying: 1,
            sending: 2,
            oldest_waiting: Duration::from_secs(4),
            oldest_retrying: Duration::ZERO,
            paused: false,
            read_at: 1_780_000_000,
        });
        let text = render();
        for line in [
            "# TYPE wxbind_sends_total counter",
            "wxbind_sends_total{outcome=\"failed\",errcode_class=\"permanent\"} 0",
            "wxbind_wechat_request_duration_seconds_bucket{endpoint=\"template_send\",le=\"0.05\"}",
            "# TYPE wxbind_wechat_request_duration_seconds histogram",
            "wxbind_enqueue_to_send_seconds_bucket{le=\"1\"}",
            "wxbind_enqueue_to_send_seconds_bucket{le=\"+Inf\"}",
            "wxbind_queue_depth{state=\"waiting\"} 3",
            "wxbind_send_paused 0",
            "wxbind_logins_total{outcome=\"busy\"} 0",
            "wxbind_rate_limited_total{code=\"too_many_requests\",reason=\"queue_full\"} 0",
            "wxbind_pushes_total{type=\"template_report\"} 0",
            "# HELP wxbind_claims_total",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
