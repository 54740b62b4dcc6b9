//! Signed webhooks: what events there are, how a delivery is signed, which targets are
//! allowed, and the loop that delivers the outbox (`db::webhooks`) with retries.
//!
//! A delivery is a POST of `{id, type, created_at, data}` with `Wxbind-Webhook-Id` (the event
//! id, stable across retries), `Wxbind-Webhook-Timestamp` (unix seconds of this attempt) and
//! `Wxbind-Webhook-Signature: v1=<hex HMAC-SHA256 of "timestamp.body" under the secret>`.
//! 2xx is delivered; 410 disables the endpoint; anything else is retried with exponential
//! backoff until the event is [`crate::config::WebhookConfig::retry_window`] old.
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Semaphore, watch};
use url::Url;

use crate::config::WebhookConfig;
use crate::db::{self, PgPool, webhooks::AttemptResult, webhooks::Due};
use crate::error::ErrorChain;

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 9] = [
    "message.sent",
    "message.failed",
    "message.under_review",
    "message.delivered",
    "message.blocked",
    "binding.created",
    "binding.removed",
    "user.followed",
    "user.unfollowed",
];

/// The type of the ping `POST /api/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    #[expect(clippy::expect_used, reason = "HMAC takes keys of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new endpoint secret: `whsec_` and 32 letters and digits.
pub fn generate_secret() -> String {
    format!("whsec_{}", crate::domain::random_alphanumeric(32))
}

/// Whether a given secret is acceptable: 16-128 printable ASCII characters, no spaces.
pub fn valid_secret(secret: &str) -> bool {
    (16..=128).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, shared
/// (CGNAT), unspecified, multicast, broadcast, documentation or reserved, in either family
/// (IPv4 inside IPv6 judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0] == 0)
        }
    }
}

/// Why a webhook target is refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute http(s) URL with a host, or with credentials in it.
    #[error("url must be an absolute http(s) URL of at most 2048 bytes, without credentials")]
    Malformed,
    /// It is, or resolves to, an address that is not public.
    #[error(
        "url must not point at a private, loopback or link-local address (set WXBIND_WEBHOOK_ALLOW_PRIVATE=1 for local setups)"
    )]
    Private,
    /// Its host does not resolve.
    #[error("url's host does not resolve")]
    Unresolvable,
}

/// Checks a target's shape; with `allow_private` off, also that its host is, or resolves only
/// to, public addresses (deliveries check again as they connect, see [`GuardedResolver`]).
pub async fn check_target(raw: &str, allow_private: bool) -> Result<Url, TargetError> {
    let url = Url::parse(raw).map_err(|_| TargetError::Malformed)?;
    if raw.len() > 2048
        || !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(TargetError::Malformed);
    }
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Domain(host)) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host, port)),
        )
        .await
        .map_err(|_| TargetError::Unresolvable)?
        .map_err(|_| TargetError::Unresolvable)?
        .collect(),
        None => return Err(TargetError::Malformed),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable);
    }
    if addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(TargetError::Private);
    }
    Ok(url)
}

/// Resolves webhook hosts for the HTTP client and (unless `allow_private`) drops every address
/// that is not public, so a name that resolved to a public address when the endpoint was made
/// cannot be pointed at an internal one later (DNS rebinding). IPv4 literals never reach a
/// resolver (the delivery checks those itself); IPv6 literals do, in brackets, which the
/// default resolver cannot read.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Keep private addresses too (`WXBIND_WEBHOOK_ALLOW_PRIVATE=1`).
    pub allow_private: bool,
}

impl actix_tls::connect::Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> + 'a>>
    {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::lookup_host((host, port)),
                )
                .await
                .map_err(|_| "resolving the host timed out")??
                .collect(),
            };
            let addrs: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the host resolves to no public address".into());
            }
            Ok(addrs)
        })
    }
}

/// The HTTP client deliveries use: no redirects (a 3xx is an answer, not a new target), a
/// timeout, and the [`GuardedResolver`].
pub fn client(config: &WebhookConfig) -> awc::Client {
    let builder = awc::Client::builder()
        .timeout(config.timeout)
        .disable_redirects()
        .add_default_header(("User-Agent", "wxbind-webhooks/1"));
    let tcp =
        actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(GuardedResolver {
            allow_private: config.allow_private,
        }))
        .service();
    builder
        .connector(awc::Connector::new().connector(tcp).timeout(config.timeout))
        .finish()
}

/// Most response characters kept as a delivery's error.
const ERROR_CHARS: usize = 300;

/// One POST of `payload` to `url`, signed with `secret` now.
pub async fn post(
    client: &awc::Client,
    config: &WebhookConfig,
    url: &str,
    secret: &str,
    payload: &serde_json::Value,
) -> AttemptResult {
    if !config.allow_private {
        // IP literals skip the resolver; names are guarded there.
        let literal = Url::parse(url).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        if literal.is_some_and(|ip| !is_public(ip)) {
            return AttemptResult {
                status: None,
                error: Some(TargetError::Private.to_string()),
            };
        }
    }
    let body = match serde_json::to_vec(payload) {
        Ok(b) => b,
        Err(e) => {
            return AttemptResult {
                status: None,
                error: Some(format!("the event could not be encoded: {e}")),
            };
        }
    };
    let timestamp = Utc::now().timestamp();
    let event_id = payload
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let sent = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Wxbind-Webhook-Id", event_id))
        .insert_header(("Wxbind-Webhook-Timestamp", timestamp.to_string()))
        .insert_header(("Wxbind-Webhook-Signature", sign(secret, timestamp, &body)))
        .send_body(body)
        .await;
    match sent {
        Ok(mut response) => {
            let status = response.status();
            // Drain a little of the body so the connection can be reused; its content is the
            // receiver's business.
            let _ = tokio::time::timeout(Duration::from_secs(1), response.body().limit(64 * 1024))
                .await;
            AttemptResult {
                status: Some(status.as_u16()),
                error: (!status.is_success()).then(|| format!("answered {status}")),
            }
        }
        Err(e) => AttemptResult {
            status: None,
            error: Some(truncate(&e.to_string())),
        },
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(ERROR_CHARS).collect()
}

/// The delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, at most an hour, with
/// equal jitter.
pub fn backoff(config: &WebhookConfig, attempt: i32) -> Duration {
    use rand::Rng;
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let step = config
        .retry_base
        .saturating_mul(2u32.saturating_pow(exp))
        .min(Duration::from_secs(3600));
    let half = step / 2;
    let jitter = rand::rng().random_range(0..=u64::try_from(half.as_millis()).unwrap_or(0));
    half + Duration::from_millis(jitter)
}

/// How long a claimed delivery is leased: well past the request timeout.
pub fn lease(config: &WebhookConfig) -> Duration {
    config.timeout * 3 + Duration::from_secs(5)
}

/// Delivers one claimed delivery and records the outcome.
async fn deliver(pool: &PgPool, client: &awc::Client, config: &WebhookConfig, due: Due) {
    let result = post(client, config, &due.url, &due.secret, &due.payload).await;
    settle(pool, config, &due, result).await;
}

/// Records `result` of `due`'s attempt: done on 2xx, the endpoint disabled on 410, otherwise
/// retried while the event is younger than the retry window.
pub async fn settle(pool: &PgPool, config: &WebhookConfig, due: &Due, result: AttemptResult) {
    let gone = result.status == Some(410);
    let age = (Utc::now() - due.created_at).to_std().unwrap_or_default();
    let next = match &result.error {
        None => None,
        Some(_) if gone => None,
        Some(_) => {
            let delay = backoff(config, due.attempts);
            (age + delay < config.retry_window)
                .then(|| Utc::now() + chrono::TimeDelta::from_std(delay).unwrap_or_default())
        }
    };
    let (id, attempt, webhook_id) = (due.id, due.attempts, due.webhook_id);
    let outcome = result.clone();
    let recorded = db::run(pool, move |conn| {
        let held = db::webhooks::record(conn, id, attempt, &outcome, next)?;
        if gone {
            db::webhooks::disable(conn, webhook_id, "the endpoint answered 410 Gone")?;
        }
        Ok(held)
    })
    .await;
    match recorded {
        Ok(_) if gone => {
            tracing::warn!(webhook.id = %webhook_id, "webhook endpoint answered 410 Gone; disabled");
        }
        Ok(_) if result.error.is_some() && next.is_none() => tracing::warn!(
            webhook.id = %webhook_id,
            event.id = %due.event_id,
            attempts = attempt,
            "webhook event not delivered within the retry window; failed"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(
            error = %ErrorChain(&e),
            webhook.id = %webhook_id,
            "recording a webhook delivery failed; its lease will expire and it will be sent again"
        ),
    }
}

/// Delivers the outbox until `stop` turns true (or its sender is gone): claims due deliveries
/// while slots are free, each in a task of its own on the current (actix) thread.
pub async fn run(pool: PgPool, config: WebhookConfig, mut stop: watch::Receiver<bool>) {
    let client = Rc::new(client(&config));
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let lease_ms = i64::try_from(lease(&config).as_millis()).unwrap_or(i64::MAX);
    let config = Rc::new(config);
    loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            break;
        }
        let free = slots.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let limit = i64::try_from(free).unwrap_or(1);
            match db::run(&pool, move |conn| {
                db::webhooks::claim_due(conn, limit, lease_ms)
            })
            .await
            {
                Ok(batch) => {
                    claimed_all = batch.len() == free;
                    for due in batch {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            break;
                        };
                        let (pool, client, config) =
                            (pool.clone(), Rc::clone(&client), Rc::clone(&config));
                        actix_web::rt::spawn(async move {
                            deliver(&pool, &client, &config, due).await;
                            drop(slot);
                        });
                    }
                }
                Err(e) => tracing::warn!(
                    error = %ErrorChain(&e),
                    "claiming webhook deliveries failed; trying again"
                ),
            }
        }
        if !claimed_all {
            tokio::select! {
                () = tokio::time::sleep(config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign("secret", 1_700_000_000, br#"{"a":1}"#),
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            let ip: IpAddr = private.parse().expect("ip");
            assert!(!is_public(ip), "{private}");
        }
        for public in [
            "8.8.8.8",
            "203.0.114.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().expect("ip");
            assert!(is_public(ip), "{public}");
        }
    }

    #[actix_web::test]
    async fn targets_must_be_http_urls_on_public_addresses() {
        for bad in [
            "ftp://example.com/x",
            "not a url",
            "http://user:pw@example.com/",
            "https://",
        ] {
            assert!(
                matches!(check_target(bad, false).await, Err(TargetError::Malformed)),
                "{bad}"
            );
        }
        for private in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/hook",
        ] {
            assert!(
                matches!(
                    check_target(private, false).await,
                    Err(TargetError::Private)
                ),
                "{private}"
            );
            assert!(check_target(private, true).await.is_ok(), "{private}");
        }
        assert!(
            check_target("https://203.0.114.9/hook", false)
                .await
                .is_ok()
        );
    }

    #[test]
    fn secrets_are_long_printable_and_generated_ones_fit() {
        assert!(valid_secret(&generate_secret()));
        assert!(!valid_secret("short"));
        assert!(!valid_secret("has a space in it, sadly"));
    }
}
