//! The `wechat_tokens` table: the global access token, shared across processes.
use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::schema::wechat_tokens;
use crate::telemetry::redacted_debug;

/// A stored token.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = wechat_tokens, check_for_backend(diesel::pg::Pg))]
pub struct StoredToken {
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
}
redacted_debug!(StoredToken {
    access_token: redacted,
    expires_at
});

/// The stored token of `app_id`, if any.
pub fn find(conn: &mut PgConnection, app_id: &str) -> QueryResult<Option<StoredToken>> {
    wechat_tokens::table
        .find(app_id)
        .select(StoredToken::as_select())
        .first(conn)
        .optional()
}

/// Replaces the stored token of `app_id`.
pub fn upsert(
    conn: &mut PgConnection,
    app_id: &str,
    access_token: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(wechat_tokens::table)
        .values((
            wechat_tokens::app_id.eq(app_id),
            wechat_tokens::access_token.eq(access_token),
            wechat_tokens::expires_at.eq(expires_at),
        ))
        .on_conflict(wechat_tokens::app_id)
        .do_update()
        .set((
            wechat_tokens::access_token.eq(access_token),
            wechat_tokens::expires_at.eq(expires_at),
            wechat_tokens::fetched_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(drop)
}

/// Transaction-level advisory lock serialising token refreshes of one app id across
/// processes, waiting at most `wait`. Held while the refresh talks to WeChat and released
/// when the transaction ends, whichever way it ends: a connection dropped mid-refresh is
/// discarded by the pool (diesel reports a connection with an open transaction as broken),
/// and closing it releases the lock, so a cancelled request can never leave it held.
pub fn lock_for_transaction(
    conn: &mut PgConnection,
    app_id: &str,
    wait: std::time::Duration,
) -> QueryResult<()> {
    // SET LOCAL takes no parameters; the value is a number this code formats.
    let ms = wait.as_millis().max(1);
    conn.batch_execute(&format!(
        "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
    ))?;
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('wxbind.token.' || $1))::text")
        .bind::<Text, _>(app_id)
        .execute(conn)
        .map(drop)
}
