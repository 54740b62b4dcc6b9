//! The `login_failures` table: one row per failed login, keyed by the client address and a
//! hash of the username tried. Every instance reads and writes the same rows, and times come
//! from the database's clock, so instances with skewed clocks still agree on the window.
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Interval, Text};

use super::schema::login_failures;

/// Failed logins from one address within the window.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct Recent {
    /// Those for the username being tried.
    #[diesel(sql_type = BigInt)]
    pub for_username: i64,
    /// Those for any username.
    #[diesel(sql_type = BigInt)]
    pub for_address: i64,
}

/// Both counts in one statement (one index range: the address's rows of the window). Run
/// before every password check, hence prepared.
const RECENT: &str = "SELECT count(*) FILTER (WHERE username_hash = $2) AS for_username, \
                             count(*) AS for_address \
                      FROM login_failures \
                      WHERE address = $1 AND failed_at > now() - $3";

/// The failures of `address` in the last `window`, all of them and those for `username_hash`.
pub fn recent(
    conn: &mut PgConnection,
    address: &str,
    username_hash: &str,
    window: Duration,
) -> QueryResult<Recent> {
    let micros = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    super::Prepared(
        diesel::sql_query(RECENT)
            .bind::<Text, _>(address)
            .bind::<Text, _>(username_hash)
            .bind::<Interval, _>(PgInterval::from_microseconds(micros)),
    )
    .get_result(conn)
}

/// Records one failed login, stamped with the database's time.
pub fn record(conn: &mut PgConnection, address: &str, username_hash: &str) -> QueryResult<()> {
    diesel::insert_into(login_failures::table)
        .values((
            login_failures::address.eq(address),
            login_failures::username_hash.eq(username_hash),
        ))
        .execute(conn)
        .map(drop)
}

/// Forgets the failures of one username from one address (after it logged in from there).
pub fn forget(conn: &mut PgConnection, address: &str, username_hash: &str) -> QueryResult<usize> {
    diesel::delete(
        login_failures::table
            .filter(login_failures::address.eq(address))
            .filter(login_failures::username_hash.eq(username_hash)),
    )
    .execute(conn)
}

/// Deletes failures recorded before `before`.
pub fn purge_before(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(login_failures::table.filter(login_failures::failed_at.lt(before))).execute(conn)
}
