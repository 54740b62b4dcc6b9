//! The `api_keys` table and the deployment's key secret.
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::{api_key_secret, api_keys, users};

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub prefix: String,
    pub user_id: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The deployment's secret for key hashes, made on first use.
pub fn secret(conn: &mut PgConnection) -> QueryResult<Vec<u8>> {
    let bytes: [u8; 32] = rand::random();
    diesel::insert_into(api_key_secret::table)
        .values(api_key_secret::secret.eq(bytes.to_vec()))
        .on_conflict_do_nothing()
        .execute(conn)?;
    api_key_secret::table
        .select(api_key_secret::secret)
        .first(conn)
}

/// What creating a key did.
#[derive(Debug)]
pub enum Created {
    /// The key, stored.
    Key(ApiKey),
    /// A key of that name exists (revoked ones included: names are not reused).
    NameTaken,
}

/// Stores a key (its hash) with a service principal of its own.
pub fn create(
    conn: &mut PgConnection,
    name: &str,
    scope: &str,
    key_hash: &str,
    prefix: &str,
) -> QueryResult<Created> {
    conn.transaction(|conn| {
        let taken: i64 = api_keys::table
            .filter(api_keys::name.eq(name))
            .count()
            .get_result(conn)?;
        if taken > 0 {
            return Ok(Created::NameTaken);
        }
        let role = if scope == "admin" { "admin" } else { "user" };
        // Two creates of one name at once: the second fails on the unique name below.
        let user_id: i64 = diesel::insert_into(users::table)
            .values((
                users::username.eq(format!("key:{name}")),
                // Not a password hash: nothing can log in as a key's principal.
                users::password_hash.eq("!api-key"),
                users::role.eq(role),
            ))
            .returning(users::id)
            .get_result(conn)?;
        diesel::insert_into(api_keys::table)
            .values((
                api_keys::name.eq(name),
                api_keys::scope.eq(scope),
                api_keys::key_hash.eq(key_hash),
                api_keys::prefix.eq(prefix),
                api_keys::user_id.eq(user_id),
            ))
            .returning(ApiKey::as_returning())
            .get_result(conn)
            .map(Created::Key)
    })
}

/// Every key, newest first.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<ApiKey>> {
    api_keys::table
        .order(api_keys::id.desc())
        .select(ApiKey::as_select())
        .load(conn)
}

/// Every live key: `(id, key_hash, user_id, scope)`.
pub fn live(conn: &mut PgConnection) -> QueryResult<Vec<(i64, String, i64, String)>> {
    api_keys::table
        .filter(api_keys::revoked_at.is_null())
        .select((
            api_keys::id,
            api_keys::key_hash,
            api_keys::user_id,
            api_keys::scope,
        ))
        .load(conn)
}

/// The live (not revoked) key with this hash.
pub fn find_live(conn: &mut PgConnection, key_hash: &str) -> QueryResult<Option<ApiKey>> {
    api_keys::table
        .filter(api_keys::key_hash.eq(key_hash))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKey::as_select())
        .first(conn)
        .optional()
}

/// Revokes the key named `name`; false when there is no live key of that name.
pub fn revoke(conn: &mut PgConnection, name: &str) -> QueryResult<bool> {
    diesel::update(
        api_keys::table
            .filter(api_keys::name.eq(name))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .map(|n| n == 1)
}

/// Records a use of key `id`.
pub fn touch(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .map(drop)
}
