//! Broadcasts: one request, one message per recipient, all queued by one statement in one
//! transaction with the broadcast's row (so a broadcast is queued whole or not at all).
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz};
use uuid::Uuid;

use super::messages::{FailReason, RANKS};
use super::schema::broadcasts;

/// A broadcast as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = broadcasts, check_for_backend(diesel::pg::Pg))]
pub struct Broadcast {
    pub id: Uuid,
    pub sender_id: i64,
    pub template_id: String,
    pub idempotency_key: Option<String>,
    pub all_bound: bool,
    pub total: i32,
    pub queued: i32,
    /// Reason → count of recipients left out.
    pub skipped: serde_json::Value,
    pub send_at: Option<DateTime<Utc>>,
    pub urgent: bool,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// Who a broadcast goes to.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// These users (duplicates count once).
    Users(Vec<i64>),
    /// Every bound user.
    AllBound,
}

/// A broadcast to queue.
#[derive(Debug, Clone)]
pub struct NewBroadcast {
    pub id: Uuid,
    pub sender_id: i64,
    pub template_id: String,
    pub url: Option<String>,
    pub miniprogram: Option<serde_json::Value>,
    /// Every recipient's data.
    pub data: serde_json::Value,
    /// Per-recipient keys over `data`: (user id, keys).
    pub overrides: Vec<(i64, serde_json::Value)>,
    pub recipients: Recipients,
    pub idempotency_key: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub urgent: bool,
}

/// What queueing a broadcast did.
#[derive(Debug)]
pub enum Created {
    /// Queued now.
    New(Broadcast),
    /// The sender queued this idempotency key before; here is that broadcast.
    Existing(Broadcast),
}

#[derive(QueryableByName)]
struct Tally {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    queued: i64,
    #[diesel(sql_type = BigInt)]
    user_not_found: i64,
    #[diesel(sql_type = BigInt)]
    not_bound: i64,
    #[diesel(sql_type = BigInt)]
    not_following: i64,
}

/// The unit of work of a broadcast may take this long (a 100,000-recipient insert on a busy
/// machine takes seconds, and the pool wait counts too); its statements get
/// [`STATEMENT_TIMEOUT`], less, so a statement is cancelled (and its transaction rolled back)
/// before the caller stops waiting, never committed after the caller was told it failed.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The statement timeout of a broadcast's transaction.
const STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '45s'";

/// Queues `new`: its row and one message per recipient that is bound and not known to have
/// unfollowed, in one transaction; the others are counted as skipped by reason.
pub fn create(conn: &mut PgConnection, new: &NewBroadcast) -> QueryResult<Created> {
    conn.transaction(|conn| {
        diesel::sql_query(STATEMENT_TIMEOUT).execute(conn)?;
        let inserted: Option<Broadcast> = diesel::insert_into(broadcasts::table)
            .values((
                broadcasts::id.eq(new.id),
                broadcasts::sender_id.eq(new.sender_id),
                broadcasts::template_id.eq(&new.template_id),
                broadcasts::idempotency_key.eq(new.idempotency_key.as_deref()),
                broadcasts::all_bound.eq(matches!(new.recipients, Recipients::AllBound)),
                broadcasts::total.eq(0),
                broadcasts::queued.eq(0),
                broadcasts::send_at.eq(new.send_at),
                broadcasts::urgent.eq(new.urgent),
            ))
            .on_conflict_do_nothing()
            .returning(Broadcast::as_returning())
            .get_result(conn)
            .optional()?;
        if inserted.is_none() {
            // ON CONFLICT waited for a concurrent insert of the key to commit.
            let existing = broadcasts::table
                .filter(broadcasts::sender_id.eq(new.sender_id))
                .filter(broadcasts::idempotency_key.eq(new.idempotency_key.as_deref()))
                .select(Broadcast::as_select())
                .first(conn)?;
            return Ok(Created::Existing(existing));
        }
        let tally = queue_messages(conn, new)?;
        let skipped = serde_json::json!({
            "user_not_found": tally.user_not_found,
            "not_bound": tally.not_bound,
            "not_following": tally.not_following,
        });
        let row = diesel::update(broadcasts::table.find(new.id))
            .set((
                broadcasts::total.eq(i32::try_from(tally.total).unwrap_or(i32::MAX)),
                broadcasts::queued.eq(i32::try_from(tally.queued).unwrap_or(i32::MAX)),
                broadcasts::skipped.eq(skipped),
            ))
            .returning(Broadcast::as_returning())
            .get_result(conn)?;
        crate::audit::record(
            conn,
            crate::audit::Actor::User(new.sender_id),
            crate::audit::Action::BroadcastCreated,
            Some(&new.id.to_string()),
            serde_json::json!({
                "template_id": new.template_id,
                "all_bound": matches!(new.recipients, Recipients::AllBound),
                "total": tally.total,
                "queued": tally.queued,
                "send_at": new.send_at,
            }),
        )?;
        if tally.queued > 0 {
            diesel::sql_query("SELECT pg_notify('wxbind_messages', '')").execute(conn)?;
        }
        Ok(Created::New(row))
    })
}

fn queue_messages(conn: &mut PgConnection, new: &NewBroadcast) -> QueryResult<Tally> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH v AS (SELECT $1::BIGINT AS sender_id), {RANKS},
             r AS (
                 SELECT DISTINCT x AS user_id FROM unnest($2::BIGINT[]) AS x WHERE NOT $3
                 UNION ALL
                 SELECT u.id FROM users u WHERE $3 AND u.openid IS NOT NULL
             ), j AS (
                 SELECT r.user_id, u.id IS NOT NULL AS known, u.openid, f.subscribed
                 FROM r
                 LEFT JOIN users u ON u.id = r.user_id
                 LEFT JOIN wechat_followers f ON f.openid = u.openid
             ), o AS (
                 SELECT * FROM unnest($4::BIGINT[], $5::JSONB[]) AS o (user_id, data)
             ), ins AS (
                 INSERT INTO messages
                     (id, sender_id, user_id, template_id, url, data, miniprogram, send_at,
                      urgent, held, next_attempt_at, fair_rank, broadcast_id)
                 SELECT gen_random_uuid(), $1, j.user_id, $6, $7, $8 || coalesce(o.data, '{{}}'),
                        $9, $10, $11, h.held,
                        CASE WHEN h.held THEN $10 ELSE now() END,
                        CASE WHEN h.held THEN 0
                             ELSE (SELECT start FROM starts)
                                  + row_number() OVER (ORDER BY j.user_id) END,
                        $12
                 FROM j
                 CROSS JOIN (SELECT coalesce($10 > now(), false) AS held) h
                 LEFT JOIN o ON o.user_id = j.user_id
                 WHERE j.openid IS NOT NULL AND coalesce(j.subscribed, true)
                 RETURNING 1
             )
             SELECT count(*) AS total,
                    (SELECT count(*) FROM ins) AS queued,
                    count(*) FILTER (WHERE NOT j.known) AS user_not_found,
                    count(*) FILTER (WHERE j.known AND j.openid IS NULL) AS not_bound,
                    count(*) FILTER (WHERE j.openid IS NOT NULL AND j.subscribed = false)
                        AS not_following
             FROM j"
        )
    });
    let (users, all) = match &new.recipients {
        Recipients::Users(ids) => (ids.as_slice(), false),
        Recipients::AllBound => (&[][..], true),
    };
    let override_users: Vec<i64> = new.overrides.iter().map(|(u, _)| *u).collect();
    let override_data: Vec<&serde_json::Value> = new.overrides.iter().map(|(_, d)| d).collect();
    diesel::sql_query(SQL.as_str())
        .bind::<BigInt, _>(new.sender_id)
        .bind::<Array<BigInt>, _>(users)
        .bind::<Bool, _>(all)
        .bind::<Array<BigInt>, _>(override_users)
        .bind::<Array<Jsonb>, _>(override_data)
        .bind::<Text, _>(&new.template_id)
        .bind::<Nullable<Text>, _>(new.url.as_deref())
        .bind::<Jsonb, _>(&new.data)
        .bind::<Nullable<Jsonb>, _>(new.miniprogram.as_ref())
        .bind::<Nullable<Timestamptz>, _>(new.send_at)
        .bind::<Bool, _>(new.urgent)
        .bind::<diesel::sql_types::Uuid, _>(new.id)
        .get_result(conn)
}

/// The broadcast with `id`.
pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Broadcast>> {
    broadcasts::table
        .find(id)
        .select(Broadcast::as_select())
        .first(conn)
        .optional()
}

/// How many of a broadcast's messages are in each (status, delivery).
#[derive(Debug, Clone, QueryableByName)]
pub struct StatusCount {
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub delivery: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Counts a broadcast's messages by status and delivery report.
pub fn counts(conn: &mut PgConnection, id: Uuid) -> QueryResult<Vec<StatusCount>> {
    diesel::sql_query(
        "SELECT status, coalesce(delivery, 'unknown') AS delivery, count(*) AS n
         FROM messages WHERE broadcast_id = $1 GROUP BY 1, 2",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(conn)
}

/// Cancels what of a broadcast has not been claimed for sending: those messages end `failed`
/// with reason `cancelled`. Returns how many.
pub fn cancel(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    conn.transaction(|conn| {
        diesel::sql_query(STATEMENT_TIMEOUT).execute(conn)?;
        diesel::update(broadcasts::table.find(id))
            .filter(broadcasts::cancelled_at.is_null())
            .set(broadcasts::cancelled_at.eq(diesel::dsl::now))
            .execute(conn)?;
        // In batches: each statement (and its trigger's history and outbox rows) stays well
        // inside the statement timeout however large the broadcast.
        let mut cancelled = 0;
        loop {
            let n = diesel::sql_query(
                "UPDATE messages
                 SET status = 'failed', reason = $2, lease_until = NULL,
                     errmsg = 'the broadcast was cancelled before this message was sent'
                 WHERE id IN (SELECT id FROM messages
                              WHERE broadcast_id = $1 AND status = 'queued'
                              LIMIT 5000 FOR UPDATE SKIP LOCKED)",
            )
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Text, _>(FailReason::Cancelled.as_str())
            .execute(conn)?;
            cancelled += n;
            if n < 5000 {
                return Ok(cancelled);
            }
        }
    })
}
