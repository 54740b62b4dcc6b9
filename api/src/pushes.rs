//! What a verified WeChat server push does to the service: each push is recorded once (WeChat
//! retries a push it got no answer to), and only the first delivery is applied: follow state,
//! scan binding, template delivery reports. The caller runs this inside one transaction, so a
//! retried push changes nothing twice and a failed one changes nothing at all.
//!
//! Before that, the push's signed `(timestamp, nonce)` is claimed for its body: WeChat's
//! plaintext signature does not cover the body, so the same signed URL with another body is a
//! forgery, refused before anything is recorded.
use diesel::PgConnection;
use sha2::{Digest, Sha256};

use crate::binding::{self, BindError};
use crate::db::{self, DbError, events::NewEvent, push_nonces::Claim};
use crate::wechat::events::{Push, PushKind};

/// One signed request to the push endpoint: its `(timestamp, nonce)` and a digest of what it
/// carried. Owned, so it can move to the blocking pool.
#[derive(Debug, Clone)]
pub struct Signed {
    timestamp: i64,
    nonce: String,
    body_sha256: String,
}

impl Signed {
    /// A push: `timestamp` as verified (within the window), `nonce` as sent, the raw body.
    pub fn push(timestamp: i64, nonce: &str, body: &[u8]) -> Self {
        Self {
            timestamp,
            nonce: nonce.to_owned(),
            body_sha256: hex::encode(Sha256::digest(body)),
        }
    }

    /// A URL check. Its signature is exactly a plaintext push's, so claiming its pair keeps the
    /// check's URL from being reused to post a push (and a push's URL from answering a check).
    /// The marker is not XML, so no push body can digest to it.
    pub fn url_check(timestamp: i64, nonce: &str, echostr: &str) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"url-check\0");
        digest.update(echostr.as_bytes());
        Self {
            timestamp,
            nonce: nonce.to_owned(),
            body_sha256: hex::encode(digest.finalize()),
        }
    }
}

/// Why a verified push was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Its `(timestamp, nonce)` came before with another body: a signed URL replayed with a
    /// forged push.
    #[error("timestamp and nonce were used before with another body")]
    Replayed,
    /// Applying it failed in a way that must roll it back (see [`record_and_apply`]).
    #[error("applying the push failed")]
    Apply(#[from] BindError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AcceptError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Claims `signed`'s pair for its body: fine the first time and for the same body again (a
/// retry), [`AcceptError::Replayed`] for another body. Inside the caller's transaction.
pub fn claim(conn: &mut PgConnection, signed: &Signed) -> Result<(), AcceptError> {
    match db::push_nonces::claim(conn, signed.timestamp, &signed.nonce, &signed.body_sha256)? {
        Claim::New | Claim::SameBody => Ok(()),
        Claim::OtherBody => Err(AcceptError::Replayed),
    }
}

/// Claims the pair, then records and applies the push ([`record_and_apply`]). Run in one
/// transaction, so a refused or failed push leaves neither its pair nor its record behind, and
/// WeChat's retry (same pair, same body) gets the first delivery's reply.
pub fn accept(
    conn: &mut PgConnection,
    signed: &Signed,
    push: &Push,
) -> Result<Option<String>, AcceptError> {
    claim(conn, signed)?;
    Ok(record_and_apply(conn, push)?)
}

/// Records the push and, the first time only, applies it. Returns the passive reply text: the
/// same text for a retry as for the first delivery.
/// Scan binding can refuse in ways that must roll the push back (see `binding::bind_by_scan`),
/// hence its error type.
pub fn record_and_apply(conn: &mut PgConnection, push: &Push) -> Result<Option<String>, BindError> {
    let key = push.dedup_key();
    let fields = serde_json::to_value(&push.fields).unwrap_or_default();
    let new = NewEvent {
        dedup_key: &key,
        from_user: &push.from,
        msg_type: &push.msg_type,
        event: push.event.as_deref(),
        event_key: push.event_key.as_deref(),
        create_time: push.create_time,
        fields: &fields,
    };
    if !db::events::insert_new(conn, &new)? {
        // A retry: the same answer as the first time, and no second effect.
        return Ok(db::events::reply_of(conn, &key)?);
    }
    let reply = match push.kind() {
        PushKind::Subscribe { scene } => {
            db::followers::set(conn, &push.from, true, push.create_time)?;
            match scene {
                Some(scene) => binding::bind_by_scan(conn, &push.from, &scene)?,
                None => None,
            }
        }
        PushKind::Unsubscribe => {
            db::followers::set(conn, &push.from, false, push.create_time)?;
            None
        }
        PushKind::Scan { scene } => binding::bind_by_scan(conn, &push.from, &scene)?,
        PushKind::TemplateReport { msgid, delivery } => {
            if let Some(msgid) = msgid {
                if db::messages::set_delivery(conn, msgid, delivery)? == 0 {
                    // Possibly one WeChat held for review and then delivered itself.
                    let reported_at = chrono::DateTime::from_timestamp(push.create_time, 0)
                        .unwrap_or_else(chrono::Utc::now);
                    db::messages::set_delivery_unmatched(
                        conn,
                        &push.from,
                        msgid,
                        delivery,
                        reported_at,
                    )?;
                }
            }
            None
        }
        PushKind::Other => None,
    };
    if let Some(text) = &reply {
        db::events::set_reply(conn, &key, text)?;
    }
    Ok(reply)
}
