//! The audit log of admin and key actions: sends to others, broadcasts, retries, key and
//! webhook changes, template syncs and quota resets. [`record`] writes one row on the caller's
//! connection, so the row goes in the same transaction as the change it records (an audited
//! change is never committed without its row); [`Actor::of`] decides from the caller whether
//! an action is audited at all. `GET /api/audit` reads the log (`routes::audit`).
use diesel::pg::PgConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::AuthUser;
use crate::db::audit_log;

/// What was done. The wire and stored names are fixed: operators filter and alert on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Action {
    /// An admin or a key sent a message to another user (`target`: the message id).
    #[serde(rename = "message.sent_to_other")]
    MessageSentToOther,
    /// A failed message was queued again (`target`: the message id).
    #[serde(rename = "message.retried")]
    MessageRetried,
    /// A broadcast was made (`target`: the broadcast id).
    #[serde(rename = "broadcast.created")]
    BroadcastCreated,
    /// A broadcast was cancelled (`target`: the broadcast id).
    #[serde(rename = "broadcast.cancelled")]
    BroadcastCancelled,
    /// An API key was made (`target`: its name).
    #[serde(rename = "key.created")]
    KeyCreated,
    /// An API key was revoked (`target`: its name).
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// A webhook was added (`target`: its id).
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    /// A webhook was removed (`target`: its id).
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
    /// A test delivery was sent to a webhook (`target`: its id).
    #[serde(rename = "webhook.tested")]
    WebhookTested,
    /// The template list was read from WeChat on request.
    #[serde(rename = "templates.synced")]
    TemplatesSynced,
    /// The day's quota was reset at WeChat.
    #[serde(rename = "quota.reset")]
    QuotaReset,
}

impl Action {
    /// Every action, in the order the README lists them.
    pub const ALL: [Self; 11] = [
        Self::MessageSentToOther,
        Self::MessageRetried,
        Self::BroadcastCreated,
        Self::BroadcastCancelled,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::WebhookCreated,
        Self::WebhookDeleted,
        Self::WebhookTested,
        Self::TemplatesSynced,
        Self::QuotaReset,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageSentToOther => "message.sent_to_other",
            Self::MessageRetried => "message.retried",
            Self::BroadcastCreated => "broadcast.created",
            Self::BroadcastCancelled => "broadcast.cancelled",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookDeleted => "webhook.deleted",
            Self::WebhookTested => "webhook.tested",
            Self::TemplatesSynced => "templates.synced",
            Self::QuotaReset => "quota.reset",
        }
    }

    /// The stored name back; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }
}

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An account or an API key's service principal (a `users` row): recorded by id and by
    /// its username at the time (`key:<name>` for a key).
    User(i64),
    /// The command line (`wxbind key …`): whoever runs it holds the database already.
    Cli,
}

/// The `actor` of rows the command line writes.
pub const CLI_ACTOR: &str = "cli";

impl Actor {
    /// The actor to record for `auth`, or `None` when what it does is not audited: only
    /// admins (users and keys) and API keys are. A plain user's own actions (sending to
    /// themselves, binding) are theirs, not an operator's.
    pub fn of(auth: &AuthUser) -> Option<Self> {
        must_audit(auth).then_some(Self::User(auth.id))
    }
}

/// Whether `auth`'s actions are audited: admins (users and keys with scope `admin`) and every
/// API key.
pub fn must_audit(auth: &AuthUser) -> bool {
    auth.is_admin() || auth.key.is_some()
}

/// Member names whose values are never stored in `details`, at any depth: a key, a webhook
/// secret or a password written there would be readable by every admin for as long as the
/// log is kept.
const SECRET_NAMES: [&str; 6] = [
    "key",
    "secret",
    "password",
    "token",
    "access_token",
    "authorization",
];

/// What replaces a secret's value.
const REDACTED: &str = "[redacted]";

/// `details` with the value of every member named like a secret replaced by `[redacted]`.
/// Callers never put secrets there; this keeps a slip from storing one.
pub fn redact(mut details: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (name, value) in map.iter_mut() {
                    if SECRET_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
                        *value = Value::String(REDACTED.to_owned());
                    } else {
                        walk(value);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut details);
    details
}

/// Writes one audit row on `conn`: call it inside the transaction of the change it records.
/// A [`Actor::User`] is recorded with its username, read in the same statement; an actor id
/// with no user fails with `NotFound`, which rolls the change back rather than commit it
/// unrecorded. `details` (an object; `{}` when there is nothing to add) never holds secrets:
/// members named like one are redacted ([`redact`]).
pub fn record(
    conn: &mut PgConnection,
    actor: Actor,
    action: Action,
    target: Option<&str>,
    details: Value,
) -> QueryResult<()> {
    let details = redact(details);
    let written = match actor {
        Actor::User(id) => audit_log::insert_by_user(conn, id, action.as_str(), target, &details)?,
        Actor::Cli => audit_log::insert_as(conn, CLI_ACTOR, action.as_str(), target, &details)?,
    };
    if written == 1 {
        Ok(())
    } else {
        Err(diesel::result::Error::NotFound)
    }
}

/// [`record`] for `auth` when its actions are audited ([`must_audit`]); nothing otherwise.
pub fn record_for(
    conn: &mut PgConnection,
    auth: &AuthUser,
    action: Action,
    target: Option<&str>,
    details: Value,
) -> QueryResult<()> {
    match Actor::of(auth) {
        Some(actor) => record(conn, actor, action, target, details),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Role;
    use crate::keys::Scope;

    #[test]
    fn names_are_fixed_and_round_trip_through_serde_and_parse() {
        for a in Action::ALL {
            let wire = serde_json::to_value(a).expect("serializes");
            assert_eq!(wire, a.as_str(), "{a:?}");
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::from_value::<Action>(wire).expect("deserializes"),
                a
            );
            assert!(
                a.as_str()
                    .split_once('.')
                    .is_some_and(|(area, verb)| !area.is_empty() && !verb.is_empty()),
                "{a:?}"
            );
        }
        assert_eq!(Action::QuotaReset.as_str(), "quota.reset");
        assert_eq!(Action::MessageSentToOther.as_str(), "message.sent_to_other");
        assert_eq!(Action::parse("quota_reset"), None);
    }

    #[test]
    fn only_admins_and_keys_are_audited() {
        let caller = |role, key| AuthUser { id: 7, role, key };
        for (auth, audited) in [
            (caller(Role::User, None), false),
            (caller(Role::Admin, None), true),
            (caller(Role::User, Some(Scope::Send)), true),
            (caller(Role::Admin, Some(Scope::Admin)), true),
        ] {
            assert_eq!(must_audit(&auth), audited, "{auth:?}");
            assert_eq!(
                Actor::of(&auth),
                audited.then_some(Actor::User(7)),
                "{auth:?}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_at_any_depth_and_nothing_else() {
        let details = json!({
            "scope": "admin",
            "Secret": "whsec_fake",
            "webhook": {"url": "https://hooks.example.com/x", "secret": "s3"},
            "keys": [{"key": "wxk_fake"}, {"name": "deploy"}],
            "events": ["message.sent"],
        });
        assert_eq!(
            redact(details),
            json!({
                "scope": "admin",
                "Secret": "[redacted]",
                "webhook": {"url": "https://hooks.example.com/x", "secret": "[redacted]"},
                "keys": [{"key": "[redacted]"}, {"name": "deploy"}],
                "events": ["message.sent"],
            })
        );
    }
}
