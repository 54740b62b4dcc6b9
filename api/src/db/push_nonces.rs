//! The `push_nonces` table: the signed `(timestamp, nonce)` of each server push inside the
//! replay window, with a digest of the body it came with. WeChat's plaintext signature does not
//! cover the body, so a pair may carry the first body recorded with it and no other.
use diesel::prelude::*;

use super::schema::push_nonces;

/// What the table already knew about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First seen now; recorded with this body.
    New,
    /// Seen before with the same body: a retry.
    SameBody,
    /// Seen before with another body: a replayed signature carrying a forged push.
    OtherBody,
}

/// Records `(timestamp, nonce)` with `body_sha256` unless it is recorded already, and says
/// which. Race-safe across instances: a concurrent claim of the same pair waits on the primary
/// key until the other transaction ends, then either inserts (it rolled back) or does nothing
/// and reads the committed row (read committed takes a new snapshot per statement). Run it in
/// the transaction that applies the push, so a failed apply frees the pair again.
pub fn claim(
    conn: &mut PgConnection,
    timestamp: i64,
    nonce: &str,
    body_sha256: &str,
) -> QueryResult<Claim> {
    let inserted = diesel::insert_into(push_nonces::table)
        .values((
            push_nonces::timestamp.eq(timestamp),
            push_nonces::nonce.eq(nonce),
            push_nonces::body_sha256.eq(body_sha256),
        ))
        .on_conflict((push_nonces::timestamp, push_nonces::nonce))
        .do_nothing()
        .execute(conn)?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let stored: String = push_nonces::table
        .find((timestamp, nonce))
        .select(push_nonces::body_sha256)
        .first(conn)?;
    Ok(if stored == body_sha256 {
        Claim::SameBody
    } else {
        Claim::OtherBody
    })
}

/// Deletes pairs whose timestamp is before `timestamp`: once out of the window their
/// signature no longer gets a push in, so there is nothing left to refuse.
pub fn purge_signed_before(conn: &mut PgConnection, timestamp: i64) -> QueryResult<usize> {
    diesel::delete(push_nonces::table.filter(push_nonces::timestamp.lt(timestamp))).execute(conn)
}
