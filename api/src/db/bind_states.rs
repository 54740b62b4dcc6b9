//! The `bind_states` table: single-use, expiring OAuth `state` nonces (stored hashed).
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};

use super::schema::bind_states;

/// A state to store: its hash, its user and its expiry.
pub type NewState = (String, i64, DateTime<Utc>);

/// Stores many states with one statement (for the group-commit writer): all or none.
pub fn insert_many(
    conn: &mut PgConnection,
    states: &[NewState],
) -> QueryResult<Vec<QueryResult<()>>> {
    diesel::sql_query(
        "INSERT INTO bind_states (state_hash, user_id, expires_at)
         SELECT * FROM unnest($1, $2, $3)",
    )
    .bind::<Array<Text>, _>(states.iter().map(|s| s.0.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(states.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(states.iter().map(|s| s.2).collect::<Vec<_>>())
    .execute(conn)?;
    Ok(states.iter().map(|_| Ok(())).collect())
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
