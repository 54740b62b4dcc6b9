//! The `wechat_events` table: every server push, recorded before it is applied.
use diesel::prelude::*;

use super::schema::wechat_events;

/// A push to record.
#[derive(Insertable)]
#[diesel(table_name = wechat_events)]
pub struct NewEvent<'a> {
    pub dedup_key: &'a str,
    pub from_user: &'a str,
    pub msg_type: &'a str,
    pub event: Option<&'a str>,
    pub event_key: Option<&'a str>,
    pub create_time: i64,
    pub fields: &'a serde_json::Value,
}
// The key (and the fields, which repeat it) may be `bind_<state>`; see `wechat::events::Push`.
crate::telemetry::redacted_debug!(NewEvent<'a> {
    dedup_key: redacted,
    from_user,
    msg_type,
    event,
    event_key: redacted,
    create_time,
    fields: redacted
});

/// Records a push; false when its key was recorded before (a retry).
pub fn insert_new(conn: &mut PgConnection, event: &NewEvent<'_>) -> QueryResult<bool> {
    diesel::insert_into(wechat_events::table)
        .values(event)
        .on_conflict(wechat_events::dedup_key)
        .do_nothing()
        .execute(conn)
        .map(|n| n == 1)
}

/// The passive reply recorded for a push, if it got one.
pub fn reply_of(conn: &mut PgConnection, dedup_key: &str) -> QueryResult<Option<String>> {
    wechat_events::table
        .filter(wechat_events::dedup_key.eq(dedup_key))
        .select(wechat_events::reply)
        .first(conn)
        .optional()
        .map(Option::flatten)
}

/// Records the passive reply of a push.
pub fn set_reply(conn: &mut PgConnection, dedup_key: &str, reply: &str) -> QueryResult<usize> {
    diesel::update(wechat_events::table.filter(wechat_events::dedup_key.eq(dedup_key)))
        .set(wechat_events::reply.eq(reply))
        .execute(conn)
}

/// Pushes recorded so far (for tests and ops).
pub fn count(conn: &mut PgConnection) -> QueryResult<i64> {
    wechat_events::table.count().get_result(conn)
}

/// Deletes pushes received before `before`. A retry from WeChat comes within minutes, so old
/// records only matter for auditing.
pub fn purge_received_before(
    conn: &mut PgConnection,
    before: chrono::DateTime<chrono::Utc>,
) -> QueryResult<usize> {
    diesel::delete(wechat_events::table.filter(wechat_events::received_at.lt(before))).execute(conn)
}
