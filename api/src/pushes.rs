//! What a verified WeChat server push does to the service: each push is recorded once (WeChat
//! retries a push it got no answer to), and only the first delivery is applied: follow state,
//! scan binding, template delivery reports. The caller runs this inside one transaction, so a
//! retried push changes nothing twice and a failed one changes nothing at all.
use diesel::PgConnection;

use crate::binding::{self, BindError};
use crate::db::{self, events::NewEvent};
use crate::wechat::events::{Push, PushKind};

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
                db::messages::set_delivery(conn, msgid, delivery)?;
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
