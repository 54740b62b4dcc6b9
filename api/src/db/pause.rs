//! The `send_pause` row (the whole account stops sending while WeChat says its daily quota is
//! used up) and the `quota_resets` made through this service.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int4, Nullable, Text, Timestamptz};

use super::schema::{quota_resets, send_pause};

/// A pause in force.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = send_pause, check_for_backend(diesel::pg::Pg))]
pub struct Pause {
    /// No message is claimed before this.
    pub paused_until: DateTime<Utc>,
    /// WeChat's errcode that caused it (45009).
    pub errcode: Option<i32>,
    /// WeChat's errmsg.
    pub errmsg: String,
    /// When it began.
    pub paused_at: DateTime<Utc>,
}

/// The pause in force now, if any.
pub fn current(conn: &mut PgConnection) -> QueryResult<Option<Pause>> {
    send_pause::table
        .filter(send_pause::paused_until.gt(diesel::dsl::now))
        .select(Pause::as_select())
        .first(conn)
        .optional()
}

/// Pauses every process's claims until `until`, unless a pause in force already lasts as long,
/// or the quota was reset after the refused send began (`send_started`): that refusal is
/// about the quota before the reset. Returns true when this call began the pause (none was
/// in force), so it is logged once.
pub fn set(
    conn: &mut PgConnection,
    until: DateTime<Utc>,
    errcode: Option<i32>,
    errmsg: &str,
    send_started: DateTime<Utc>,
) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let reset_since: i64 = quota_resets::table
            .filter(quota_resets::reset_at.gt(send_started))
            .count()
            .get_result(conn)?;
        if reset_since > 0 {
            return Ok(false);
        }
        let before = current(conn)?;
        diesel::sql_query(
            "INSERT INTO send_pause (id, paused_until, errcode, errmsg) VALUES (TRUE, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE
             SET paused_until = excluded.paused_until, errcode = excluded.errcode,
                 errmsg = excluded.errmsg, paused_at = now()
             WHERE send_pause.paused_until < excluded.paused_until",
        )
        .bind::<Timestamptz, _>(until)
        .bind::<Nullable<Int4>, _>(errcode)
        .bind::<Text, _>(errmsg)
        .execute(conn)?;
        Ok(before.is_none())
    })
}

/// Ends any pause and wakes every worker (on the queue's notification channel), so sending
/// resumes at once everywhere. Returns whether a pause was in force.
pub fn lift(conn: &mut PgConnection) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let was = current(conn)?.is_some();
        diesel::delete(send_pause::table).execute(conn)?;
        diesel::sql_query("SELECT pg_notify('wxbind_messages', '')").execute(conn)?;
        Ok(was)
    })
}

/// When the last quota reset through this service was made, if any.
pub fn last_reset(conn: &mut PgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    quota_resets::table
        .select(diesel::dsl::max(quota_resets::reset_at))
        .first(conn)
}

/// Records a quota reset made by `user_id`.
pub fn record_reset(conn: &mut PgConnection, user_id: i64) -> QueryResult<()> {
    diesel::insert_into(quota_resets::table)
        .values(quota_resets::reset_by.eq(user_id))
        .execute(conn)
        .map(drop)
}

/// Quota resets made through this service since `since`.
pub fn resets_since(conn: &mut PgConnection, since: DateTime<Utc>) -> QueryResult<i64> {
    quota_resets::table
        .filter(quota_resets::reset_at.ge(since))
        .count()
        .get_result(conn)
}
