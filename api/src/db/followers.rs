//! The `wechat_followers` table: who follows the official account, bound or not.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};

use super::schema::wechat_followers;

/// Follow state of one openid.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = wechat_followers, check_for_backend(diesel::pg::Pg))]
pub struct Follower {
    pub subscribed: bool,
    pub subscribed_at: Option<DateTime<Utc>>,
}

/// Sets the follow state from a push created at `event_time` (seconds); a push older than
/// the one that set the current state changes nothing (WeChat retries can arrive late).
pub fn set(
    conn: &mut PgConnection,
    openid: &str,
    subscribed: bool,
    event_time: i64,
) -> QueryResult<usize> {
    let at = DateTime::from_timestamp(event_time, 0).unwrap_or_else(Utc::now);
    diesel::sql_query(
        "INSERT INTO wechat_followers (openid, subscribed, subscribed_at, event_time)
         VALUES ($1, $2, CASE WHEN $2 THEN $3 END, $4)
         ON CONFLICT (openid) DO UPDATE
         SET subscribed = excluded.subscribed,
             subscribed_at = COALESCE(excluded.subscribed_at, wechat_followers.subscribed_at),
             event_time = excluded.event_time,
             updated_at = now()
         WHERE wechat_followers.event_time <= excluded.event_time",
    )
    .bind::<Text, _>(openid)
    .bind::<Bool, _>(subscribed)
    .bind::<Timestamptz, _>(at)
    .bind::<BigInt, _>(event_time)
    .execute(conn)
}

/// The follow state of `openid`, if any push told it.
pub fn find(conn: &mut PgConnection, openid: &str) -> QueryResult<Option<Follower>> {
    wechat_followers::table
        .find(openid)
        .select(Follower::as_select())
        .first(conn)
        .optional()
}
