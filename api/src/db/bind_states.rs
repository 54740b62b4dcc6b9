//! The `bind_states` table: single-use, expiring OAuth `state` nonces (stored hashed).
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::bind_states;

/// Stores a new state for `user_id`, valid until `expires_at`.
pub fn insert(
    conn: &mut PgConnection,
    state_hash: &str,
    user_id: i64,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(bind_states::table)
        .values((
            bind_states::state_hash.eq(state_hash),
            bind_states::user_id.eq(user_id),
            bind_states::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// Marks the state used and returns its user, in one statement: of two concurrent callbacks
/// with the same state, exactly one gets the user.
pub fn consume(conn: &mut PgConnection, state_hash: &str) -> QueryResult<Option<i64>> {
    diesel::update(
        bind_states::table
            .find(state_hash)
            .filter(bind_states::used_at.is_null())
            .filter(bind_states::expires_at.gt(diesel::dsl::now)),
    )
    .set(bind_states::used_at.eq(diesel::dsl::now))
    .returning(bind_states::user_id)
    .get_result(conn)
    .optional()
}

/// Makes a consumed state usable again, after a failure that must leave nothing changed.
pub fn release(conn: &mut PgConnection, state_hash: &str) -> QueryResult<usize> {
    diesel::update(bind_states::table.find(state_hash))
        .set(bind_states::used_at.eq(None::<DateTime<Utc>>))
        .execute(conn)
}

/// Deletes states that expired before `before`.
pub fn purge_expired(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(bind_states::table.filter(bind_states::expires_at.lt(before))).execute(conn)
}
