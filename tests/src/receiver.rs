//! A webhook receiver on loopback: records every POST it gets (headers and body) and answers
//! with the statuses a test scripts (200 once the script is used up).
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One delivery the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `Wxbind-Webhook-Id`.
    pub id: String,
    /// `Wxbind-Webhook-Timestamp`.
    pub timestamp: String,
    /// `Wxbind-Webhook-Signature`.
    pub signature: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// The body as JSON.
    pub json: Value,
    /// The status it was answered with.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// Whether the signature is `v1=` HMAC-SHA256 of `timestamp.body` under `secret`.
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(hex_sig) = self.signature.strip_prefix("v1=") else {
            return false;
        };
        let Ok(sig) = hex::decode(hex_sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        mac.verify_slice(&sig).is_ok()
    }

    /// The event type.
    pub fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<u16>,
    received: Vec<Received>,
}

struct Recorder(Arc<Mutex<State>>, Duration);

impl Respond for Recorder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut state = self.0.lock().expect("lock");
        let status = state.script.pop_front().unwrap_or(200);
        state.received.push(Received {
            id: header("wxbind-webhook-id"),
            timestamp: header("wxbind-webhook-timestamp"),
            signature: header("wxbind-webhook-signature"),
            body: req.body.clone(),
            json: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
            answered: status,
            at: std::time::Instant::now(),
        });
        ResponseTemplate::new(status).set_delay(self.1)
    }
}

/// The receiver.
pub struct Receiver {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Starts one on a random loopback port.
    pub async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// Starts one that answers each delivery only after `delay`.
    pub async fn start_slow(delay: Duration) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(method("POST"))
            .respond_with(Recorder(Arc::clone(&state), delay))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// The URL to register: `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.server.uri())
    }

    /// Answers the next deliveries with these statuses, in order.
    pub fn script(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("lock")
            .script
            .extend(statuses.iter().copied());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    /// Waits (10 s at most) until `done` holds for what was received, and returns it.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver never got {what}; it got {:?}",
                got.iter().map(|r| r.kind().to_owned()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
