//! The `sessions` table: browser refresh sessions, keyed by a hash of the session key.
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::sessions;

/// The state of an unexpired session.
pub fn load(conn: &mut PgConnection, key_hash: &str) -> QueryResult<Option<serde_json::Value>> {
    sessions::table
        .find(key_hash)
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select(sessions::state)
        .first(conn)
        .optional()
}

/// Stores a new session.
pub fn insert(
    conn: &mut PgConnection,
    key_hash: &str,
    state: &serde_json::Value,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::key_hash.eq(key_hash),
            sessions::state.eq(state),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// Replaces a session's state and expiry; false when it no longer exists.
pub fn update(
    conn: &mut PgConnection,
    key_hash: &str,
    state: Option<&serde_json::Value>,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    let target = sessions::table.find(key_hash);
    let n = match state {
        Some(state) => diesel::update(target)
            .set((
                sessions::state.eq(state),
                sessions::expires_at.eq(expires_at),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set(sessions::expires_at.eq(expires_at))
            .execute(conn)?,
    };
    Ok(n == 1)
}

/// Moves a live session to a new key with a new state and expiry, in one statement; false
/// when the old key no longer names a live session (logged out or expired meanwhile), in which
/// case nothing is written.
pub fn rotate(
    conn: &mut PgConnection,
    old_hash: &str,
    new_hash: &str,
    state: &serde_json::Value,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(
        sessions::table
            .find(old_hash)
            .filter(sessions::expires_at.gt(diesel::dsl::now)),
    )
    .set((
        sessions::key_hash.eq(new_hash),
        sessions::state.eq(state),
        sessions::expires_at.eq(expires_at),
    ))
    .execute(conn)
    .map(|n| n == 1)
}

/// Deletes a session (logout).
pub fn delete(conn: &mut PgConnection, key_hash: &str) -> QueryResult<usize> {
    diesel::delete(sessions::table.find(key_hash)).execute(conn)
}

/// Deletes sessions that expired before `before`.
pub fn purge_expired(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::expires_at.lt(before))).execute(conn)
}
