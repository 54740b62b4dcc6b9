//! The `deployment` table: the one row saying what this database serves (an official account's
//! app id, or `sandbox`). Written once, by the first process to start on the database; the rule
//! that every later process must match it lives in [`crate::deployment`].
use diesel::prelude::*;

use super::schema::deployment;

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// What the database serves, as stored.
    pub serves: String,
    /// True when this call wrote the row, false when it was there already.
    pub claimed_now: bool,
}

/// What the database serves, if a process has recorded it yet.
pub fn serves(conn: &mut PgConnection) -> QueryResult<Option<String>> {
    deployment::table
        .select(deployment::serves)
        .first(conn)
        .optional()
}

/// Records `serves` unless the database records something already, then reads what it records.
///
/// Race-safe: of processes claiming a fresh database at once, one insert wins and the others'
/// `ON CONFLICT DO NOTHING` waits for it to commit; the read is a statement of its own, so under
/// READ COMMITTED it sees the winner's row and every claimant reports the same answer.
pub fn claim(conn: &mut PgConnection, serves: &str) -> QueryResult<Claim> {
    conn.transaction(|conn| {
        let inserted = diesel::insert_into(deployment::table)
            .values(deployment::serves.eq(serves))
            .on_conflict(deployment::id)
            .do_nothing()
            .execute(conn)?;
        let stored = deployment::table
            .select(deployment::serves)
            .first::<String>(conn)?;
        Ok(Claim {
            serves: stored,
            claimed_now: inserted == 1,
        })
    })
}
