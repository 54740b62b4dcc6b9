//! The `audit_log` table: one row per audited action (written through `audit::record`), read
//! newest first in pages by id.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text};

use super::schema::audit_log;

/// One audit row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

/// Inserts a row by user `actor_id`, with its username read in the same statement; returns
/// the rows written (0 when there is no such user).
pub fn insert_by_user(
    conn: &mut PgConnection,
    actor_id: i64,
    action: &str,
    target: Option<&str>,
    details: &serde_json::Value,
) -> QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO audit_log (actor_id, actor, action, target, details)
         SELECT id, username, $2, $3, $4 FROM users WHERE id = $1",
    )
    .bind::<BigInt, _>(actor_id)
    .bind::<Text, _>(action)
    .bind::<Nullable<Text>, _>(target)
    .bind::<Jsonb, _>(details)
    .execute(conn)
}

/// Inserts a row by an actor that is no user (the command line); returns the rows written.
pub fn insert_as(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    target: Option<&str>,
    details: &serde_json::Value,
) -> QueryResult<usize> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor.eq(actor),
            audit_log::action.eq(action),
            audit_log::target.eq(target),
            audit_log::details.eq(details),
        ))
        .execute(conn)
}

/// Which rows a page shows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this action (its stored name).
    pub action: Option<String>,
    /// Only this actor (the username recorded).
    pub actor: Option<String>,
    /// Only rows older than this id (the previous page's last).
    pub before: Option<i64>,
}

/// One page, newest first: at most `limit` rows.
pub fn page(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let mut q = audit_log::table.select(AuditRow::as_select()).into_boxed();
    if let Some(a) = &filter.action {
        q = q.filter(audit_log::action.eq(a.clone()));
    }
    if let Some(a) = &filter.actor {
        q = q.filter(audit_log::actor.eq(a.clone()));
    }
    if let Some(id) = filter.before {
        q = q.filter(audit_log::id.lt(id));
    }
    q.order(audit_log::id.desc()).limit(limit).load(conn)
}

/// Deletes up to `limit` rows recorded before `before`, oldest first. Returns how many.
pub fn purge_before(
    conn: &mut PgConnection,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        // The oldest rows by id (the primary key), then those among them old enough: an index
        // scan of `limit` rows whatever the table holds.
        "DELETE FROM audit_log WHERE id IN (
             SELECT id FROM (SELECT id, at FROM audit_log ORDER BY id LIMIT $2) o
             WHERE o.at < $1)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .execute(conn)
}
