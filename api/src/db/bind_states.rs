//! The `bind_states` table: single-use, expiring OAuth `state` nonces (stored hashed).
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};

use super::schema::bind_states;

/// A state to store: its hash, its user and its expiry.
pub type NewState = (String, i64, DateTime<Utc>);

/// Most live (unused, unexpired) states a user may have; a new one revokes the oldest.
pub const MAX_LIVE_PER_USER: i64 = 5;

/// Stores many states with one statement (for the group-commit writer): all or none. Then
/// trims each of their users to the newest [`MAX_LIVE_PER_USER`] live states, so a QR code
/// glimpsed long ago stops working once the user has asked for five newer ones. The trim is
/// a statement of its own: should it fail, the states stay unreturned to their callers and
/// expire unused, and the next one trims.
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
    let mut users: Vec<i64> = states.iter().map(|s| s.1).collect();
    users.sort_unstable();
    users.dedup();
    super::Prepared(
        diesel::sql_query(
            "UPDATE bind_states b SET used_at = now()
             FROM (SELECT state_hash,
                          row_number() OVER (PARTITION BY user_id
                                             ORDER BY expires_at DESC, state_hash) AS newest
                   FROM bind_states
                   WHERE user_id = ANY($1) AND used_at IS NULL AND expires_at > now()) r
             WHERE b.state_hash = r.state_hash AND r.newest > $2
             RETURNING b.user_id",
        )
        .bind::<Array<BigInt>, _>(users)
        .bind::<BigInt, _>(MAX_LIVE_PER_USER),
    )
    .load::<Revoked>(conn)?;
    Ok(states.iter().map(|_| Ok(())).collect())
}

/// A row a revoking statement touched.
#[derive(QueryableByName)]
struct Revoked {
    #[diesel(sql_type = BigInt)]
    #[expect(
        dead_code,
        reason = "read by diesel; only the statement's effect matters"
    )]
    user_id: i64,
}

/// Revokes every live state of the user: after a successful binding no other bind link or
/// QR code of theirs may bind anything.
///
/// States consumed by a callback still in flight are expired too: such a flow gives its state
/// back when it fails ([`release`]), and a revoked state must not come back that way.
pub fn revoke_live(conn: &mut PgConnection, user_id: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE bind_states
         SET used_at = coalesce(used_at, now()), expires_at = least(expires_at, now())
         WHERE user_id = $1 AND expires_at > now()",
    )
    .bind::<BigInt, _>(user_id)
    .execute(conn)
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
/// A state revoked meanwhile (expired by [`revoke_live`]) stays dead.
pub fn release(conn: &mut PgConnection, state_hash: &str) -> QueryResult<usize> {
    diesel::update(
        bind_states::table
            .find(state_hash)
            .filter(bind_states::expires_at.gt(diesel::dsl::now)),
    )
    .set(bind_states::used_at.eq(None::<DateTime<Utc>>))
    .execute(conn)
}

/// Deletes states that expired before `before`.
pub fn purge_expired(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(bind_states::table.filter(bind_states::expires_at.lt(before))).execute(conn)
}
