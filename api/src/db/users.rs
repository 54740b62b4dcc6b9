//! The `users` table: accounts, their password hashes and WeChat bindings.
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::followers::Follower;
use super::schema::{users, wechat_followers};
use crate::domain::Role;
use crate::telemetry::redacted_debug;

/// One account.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub openid: Option<String>,
    pub bound_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The WeChat user's unionid, when the binding's code exchange returned one.
    pub unionid: Option<String>,
}
// A hash is not the password, but it is what an offline guessing attack starts from.
redacted_debug!(User {
    id,
    username,
    password_hash: redacted,
    role,
    openid,
    bound_at,
    created_at,
    unionid
});

/// A new account.
#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}
redacted_debug!(NewUser<'a> {
    username,
    password_hash: redacted,
    role
});

/// Inserts an account; a taken username is a unique violation.
pub fn insert(conn: &mut PgConnection, new: &NewUser<'_>) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values(new)
        .returning(User::as_returning())
        .get_result(conn)
}

/// An account with the follow state of its openid, if WeChat has told one.
pub type Profile = (User, Option<Follower>);

/// The account with `id` and its follow state, in one query.
pub fn find_profile(conn: &mut PgConnection, id: i64) -> QueryResult<Option<Profile>> {
    users::table
        .left_join(
            wechat_followers::table.on(wechat_followers::openid.nullable().eq(users::openid)),
        )
        .filter(users::id.eq(id))
        .select((User::as_select(), Option::<Follower>::as_select()))
        .first(conn)
        .optional()
}

/// The account called `username` and its follow state, in one query.
pub fn find_profile_by_username(
    conn: &mut PgConnection,
    username: &str,
) -> QueryResult<Option<Profile>> {
    users::table
        .left_join(
            wechat_followers::table.on(wechat_followers::openid.nullable().eq(users::openid)),
        )
        .filter(users::username.eq(username))
        .select((User::as_select(), Option::<Follower>::as_select()))
        .first(conn)
        .optional()
}

/// The account bound to the WeChat user with `unionid` and its follow state, in one query.
pub fn find_profile_by_unionid(
    conn: &mut PgConnection,
    unionid: &str,
) -> QueryResult<Option<Profile>> {
    users::table
        .left_join(
            wechat_followers::table.on(wechat_followers::openid.nullable().eq(users::openid)),
        )
        .filter(users::unionid.eq(unionid))
        .select((User::as_select(), Option::<Follower>::as_select()))
        .first(conn)
        .optional()
}

/// The account with `id`, if any.
pub fn find(conn: &mut PgConnection, id: i64) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// The id of the account `openid` is bound to, if any.
pub fn find_by_openid(conn: &mut PgConnection, openid: &str) -> QueryResult<Option<i64>> {
    users::table
        .filter(users::openid.eq(openid))
        .select(users::id)
        .first(conn)
        .optional()
}

/// The account with `id`, its row locked until the transaction ends: binding decisions
/// read the current openid and must not race another binding of the same account.
pub fn find_for_update(conn: &mut PgConnection, id: i64) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// Binds `openid` (and `unionid`, if WeChat gave one) to an account that has no binding. The
/// unique indexes refuse an openid or unionid bound elsewhere.
pub fn bind_openid(
    conn: &mut PgConnection,
    id: i64,
    openid: &str,
    unionid: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(users::table.find(id).filter(users::openid.is_null()))
        .set((
            users::openid.eq(openid),
            users::bound_at.eq(diesel::dsl::now),
            users::unionid.eq(unionid),
        ))
        .execute(conn)
}

/// Records the unionid of a bound account that has none yet (bound by a scan, which brings
/// none). The unique index refuses a unionid bound elsewhere.
pub fn fill_unionid(conn: &mut PgConnection, id: i64, unionid: &str) -> QueryResult<usize> {
    diesel::update(users::table.find(id).filter(users::unionid.is_null()))
        .set(users::unionid.eq(unionid))
        .execute(conn)
}

/// Clears the account's binding, unionid included: it identifies the WeChat user, who is
/// no longer this account's.
pub fn unbind(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    diesel::update(users::table.find(id))
        .set((
            users::openid.eq(None::<String>),
            users::bound_at.eq(None::<DateTime<Utc>>),
            users::unionid.eq(None::<String>),
        ))
        .execute(conn)
}

/// True when the table holds any account at all.
pub fn any(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(users::table.select(users::id))).get_result(conn)
}

/// How many users are bound (the size of a broadcast to all of them).
pub fn count_bound(conn: &mut PgConnection) -> QueryResult<i64> {
    users::table
        .filter(users::openid.is_not_null())
        .count()
        .get_result(conn)
}
