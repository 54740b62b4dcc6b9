//! Webhook endpoints and their outbox (`webhook_deliveries`). Events are written to the outbox
//! by the triggers of the tables whose changes they report (see the `backends` migration), in
//! the transaction of the change; this module claims due deliveries under a lease, in order per
//! endpoint and ordering key, and records each attempt's outcome fenced by its attempt number.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Jsonb, Nullable, Text, Timestamptz};
use uuid::Uuid;

use super::schema::{webhook_deliveries, webhooks};

/// An endpoint as listed (never its secret).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks, check_for_backend(diesel::pg::Pg))]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// Stores an endpoint.
pub fn create(
    conn: &mut PgConnection,
    id: Uuid,
    url: &str,
    events: &[String],
    secret: &str,
    created_by: i64,
) -> QueryResult<Webhook> {
    diesel::insert_into(webhooks::table)
        .values((
            webhooks::id.eq(id),
            webhooks::url.eq(url),
            webhooks::events.eq(events),
            webhooks::secret.eq(secret),
            webhooks::created_by.eq(created_by),
        ))
        .returning(Webhook::as_returning())
        .get_result(conn)
}

/// Every endpoint, newest first.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<Webhook>> {
    webhooks::table
        .select(Webhook::as_select())
        .order((webhooks::created_at.desc(), webhooks::id.desc()))
        .load(conn)
}

/// The endpoint with `id`.
pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Webhook>> {
    webhooks::table
        .find(id)
        .select(Webhook::as_select())
        .first(conn)
        .optional()
}

/// Deletes an endpoint and its outbox rows. Returns whether it existed.
pub fn delete(conn: &mut PgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::delete(webhooks::table.find(id))
        .execute(conn)
        .map(|n| n == 1)
}

/// A delivery claimed for an attempt, with its endpoint's URL and secret.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub webhook_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    /// The attempt number of this claim; outcome writes are fenced by it.
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub secret: String,
}

/// Deliveries of one endpoint in flight at once: one endpoint that answers slowly (or not at
/// all) holds at most this many of the delivery slots. Counted from the leases every process
/// committed, so instances claiming at the same instant may briefly exceed it together.
pub const PER_ENDPOINT: i64 = 4;

/// Claims up to `limit` due deliveries of enabled endpoints: each the oldest pending one of its
/// (endpoint, ordering key), so a message's events go out one at a time and in order (a later
/// event waits while an earlier one is in flight or backing off), and at most
/// [`PER_ENDPOINT`] in flight per endpoint. Test pings are never claimed: the request that
/// made one delivers it.
pub fn claim_due(conn: &mut PgConnection, limit: i64, lease_ms: i64) -> QueryResult<Vec<Due>> {
    super::Prepared(
        diesel::sql_query(
            "WITH due AS (
                 SELECT c.id FROM webhooks w
                 CROSS JOIN LATERAL (
                     SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
                     WHERE d.webhook_id = w.id
                       AND d.state = 'pending' AND d.next_attempt_at <= now()
                       AND (d.lease_until IS NULL OR d.lease_until <= now())
                       AND d.event_type <> 'webhook.test'
                       AND NOT EXISTS (
                           SELECT 1 FROM webhook_deliveries e
                           WHERE e.webhook_id = d.webhook_id
                             AND e.ordering_key = d.ordering_key
                             AND e.state = 'pending' AND e.id < d.id)
                     ORDER BY d.next_attempt_at
                     LIMIT greatest(0, $3 - (
                         SELECT count(*) FROM webhook_deliveries l
                         WHERE l.webhook_id = w.id AND l.state = 'pending'
                           AND l.lease_until > now()))
                     FOR UPDATE OF d SKIP LOCKED
                 ) c
                 WHERE w.disabled_at IS NULL
                 ORDER BY c.next_attempt_at
                 LIMIT $1
             )
             UPDATE webhook_deliveries w
             SET attempts = w.attempts + 1,
                 lease_until = now() + $2 * interval '1 millisecond',
                 last_attempt_at = now()
             FROM due, webhooks h
             WHERE w.id = due.id AND h.id = w.webhook_id AND h.disabled_at IS NULL
             RETURNING w.id, w.webhook_id, w.event_id, w.payload, w.attempts, w.created_at,
                       h.url, h.secret",
        )
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(lease_ms)
        .bind::<BigInt, _>(PER_ENDPOINT),
    )
    .load(conn)
}

/// Ends test pings whose request went away before it recorded the answer.
pub fn fail_abandoned_pings(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE webhook_deliveries
         SET state = 'failed', finished_at = now(), lease_until = NULL,
             last_error = coalesce(last_error, 'the request that sent the ping went away')
         WHERE event_type = 'webhook.test' AND state = 'pending' AND lease_until < now()",
    )
    .execute(conn)
}

/// What one attempt got back.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Why it did not count as delivered (none when it did).
    pub error: Option<String>,
}

/// Records an attempt: `next` is when to try again (`None` ends the delivery, `delivered`
/// without an error, else `failed`). Returns false when the claim was lost.
pub fn record(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
    result: &AttemptResult,
    next: Option<DateTime<Utc>>,
) -> QueryResult<bool> {
    let state = match (&result.error, next) {
        (None, _) => "delivered",
        (Some(_), Some(_)) => "pending",
        (Some(_), None) => "failed",
    };
    diesel::sql_query(
        "UPDATE webhook_deliveries
         SET state = $3, last_status = $4, last_error = $5, lease_until = NULL,
             next_attempt_at = coalesce($6, next_attempt_at),
             finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
         WHERE id = $1 AND attempts = $2 AND state = 'pending'",
    )
    .bind::<BigInt, _>(id)
    .bind::<Int4, _>(attempt)
    .bind::<Text, _>(state)
    .bind::<Nullable<Int4>, _>(result.status.map(i32::from))
    .bind::<Nullable<Text>, _>(result.error.as_deref())
    .bind::<Nullable<Timestamptz>, _>(next)
    .execute(conn)
    .map(|n| n == 1)
}

/// Disables an endpoint (it answered 410 Gone) and fails what it still had pending.
pub fn disable(conn: &mut PgConnection, webhook_id: Uuid, reason: &str) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::update(webhooks::table.find(webhook_id))
            .filter(webhooks::disabled_at.is_null())
            .set((
                webhooks::disabled_at.eq(diesel::dsl::now),
                webhooks::disabled_reason.eq(reason),
            ))
            .execute(conn)?;
        diesel::sql_query(
            "UPDATE webhook_deliveries
             SET state = 'failed', finished_at = now(), lease_until = NULL,
                 last_error = coalesce(last_error || '; ', '') || $2
             WHERE webhook_id = $1 AND state = 'pending'",
        )
        .bind::<diesel::sql_types::Uuid, _>(webhook_id)
        .bind::<Text, _>(format!("not delivered: {reason}"))
        .execute(conn)?;
        Ok(())
    })
}

/// Queues a `webhook.test` event for one endpoint, claimed at once by the caller (attempt 1,
/// leased for `lease_ms`) so no worker takes it too.
pub fn insert_test(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    event_id: Uuid,
    payload: &serde_json::Value,
    lease_ms: i64,
) -> QueryResult<Due> {
    diesel::sql_query(
        "WITH d AS (
             INSERT INTO webhook_deliveries
                 (webhook_id, event_id, event_type, ordering_key, payload, attempts,
                  lease_until, last_attempt_at)
             VALUES ($1, $2, 'webhook.test', 'test:' || $2, $3, 1,
                     now() + $4 * interval '1 millisecond', now())
             RETURNING *
         )
         SELECT d.id, d.webhook_id, d.event_id, d.payload, d.attempts, d.created_at,
                h.url, h.secret
         FROM d JOIN webhooks h ON h.id = d.webhook_id",
    )
    .bind::<diesel::sql_types::Uuid, _>(webhook_id)
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .bind::<Jsonb, _>(payload)
    .bind::<BigInt, _>(lease_ms)
    .get_result(conn)
}

/// A delivery as listed.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries, check_for_backend(diesel::pg::Pg))]
pub struct Delivery {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An endpoint's deliveries, newest first, after the delivery id `before` when given.
pub fn deliveries(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Delivery>> {
    let mut q = webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook_id))
        .select(Delivery::as_select())
        .into_boxed();
    if let Some(before) = before {
        q = q.filter(webhook_deliveries::id.lt(before));
    }
    q.order(webhook_deliveries::id.desc())
        .limit(limit)
        .load(conn)
}

/// Deletes up to `limit` finished deliveries that finished before `before`.
pub fn purge_finished_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM webhook_deliveries WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE state <> 'pending' AND finished_at < $1
             ORDER BY finished_at LIMIT $2)",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .execute(conn)
}
