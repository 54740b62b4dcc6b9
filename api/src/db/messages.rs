//! The `messages` table, which is also the delivery queue: `queued` → `sending` (claimed under
//! a lease) → `sent` | `failed`. Every outcome write is fenced by the attempt number of the
//! claim, so a worker whose lease ran out cannot overwrite a newer claim's result.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Int8, Jsonb, Nullable, Text};
use uuid::Uuid;

use super::schema::messages;
use crate::domain::{Delivery, MessageStatus};

/// One message as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg))]
pub struct Message {
    pub id: Uuid,
    pub sender_id: i64,
    pub user_id: i64,
    pub template_id: String,
    pub url: Option<String>,
    pub data: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub status: MessageStatus,
    pub attempts: i32,
    pub msgid: Option<i64>,
    pub errcode: Option<i32>,
    pub errmsg: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivery: Option<Delivery>,
    /// `{"appid", "pagepath"}` of the mini-program page it opens.
    pub miniprogram: Option<serde_json::Value>,
    /// The broadcast it belongs to.
    pub broadcast_id: Option<Uuid>,
    /// Not sent before this time.
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours too.
    pub urgent: bool,
    /// Why wxbind itself ended it `failed` ([`FailReason`]).
    pub reason: Option<String>,
}

/// Why wxbind itself ended a message `failed`, as `messages.reason` stores it (WeChat's
/// refusals have errcode and errmsg instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The recipient had `WXBIND_MAX_MESSAGES_PER_USER_PER_DAY` messages that day already.
    FrequencyCap,
    /// Its broadcast was cancelled before it was sent.
    Cancelled,
}

impl FailReason {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FrequencyCap => "frequency_cap",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct QueuedRequest {
    pub id: Uuid,
    pub sender_id: i64,
    pub user_id: i64,
    pub template_id: String,
    pub url: Option<String>,
    pub data: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub miniprogram: Option<serde_json::Value>,
    /// Not before this time (held until then when it is in the future).
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours too.
    pub urgent: bool,
}

/// The fair-queueing ranks of an insert (CTEs after `v`, which has `sender_id`): `starts` has,
/// per sender, the rank after which its new messages go: the later of its last queued rank
/// and the rank at the head of the queue. Each is an index probe (`messages_fresh`,
/// `messages_fresh_by_sender`), so ranking costs the same however long the queue is.
pub(super) const RANKS: &str = "head AS (
             SELECT coalesce((SELECT q.fair_rank FROM messages q
                              WHERE q.status = 'queued' AND q.attempts = 0 AND NOT q.held
                              ORDER BY q.fair_rank LIMIT 1), 0) AS rank
         ), starts AS (
             SELECT d.sender_id,
                    greatest((SELECT rank FROM head),
                             coalesce((SELECT t.fair_rank FROM messages t
                                       WHERE t.sender_id = d.sender_id
                                         AND t.status = 'queued' AND t.attempts = 0
                                         AND NOT t.held
                                       ORDER BY t.fair_rank DESC LIMIT 1), 0)) AS start
             FROM (SELECT DISTINCT sender_id FROM v) d
         )";

/// Queues many messages with one statement: each bound recipient's row is inserted, and only
/// the rest (idempotent repeats, unknown or unbound recipients) are resolved one by one.
///
/// Run it outside a transaction: the statement commits on its own (one round trip, all rows
/// or none), and each request resolved afterwards stands alone, so `Err` means nothing was
/// written and an inner error concerns only its own request.
pub fn enqueue_many(
    conn: &mut PgConnection,
    batch: &[QueuedRequest],
) -> QueryResult<Vec<QueryResult<Queued>>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH v AS (
             SELECT *, coalesce(send_at > now(), false) AS held
             FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) WITH ORDINALITY
                 AS v (id, sender_id, user_id, template_id, url, data, idempotency_key,
                       miniprogram, send_at, urgent, ord)
         ), {RANKS}, ins AS (
         INSERT INTO messages
             (id, sender_id, user_id, template_id, url, data, idempotency_key, miniprogram,
              send_at, urgent, held, next_attempt_at, fair_rank)
         SELECT v.id, v.sender_id, v.user_id, v.template_id, v.url, v.data, v.idempotency_key,
                v.miniprogram, v.send_at, v.urgent, v.held,
                CASE WHEN v.held THEN v.send_at ELSE now() END,
                CASE WHEN v.held THEN 0 ELSE
                    t.start + row_number() OVER (PARTITION BY v.sender_id, v.held ORDER BY v.ord)
                END
         FROM v
         JOIN starts t ON t.sender_id = v.sender_id
         JOIN users u ON u.id = v.user_id AND u.openid IS NOT NULL
         JOIN users s ON s.id = v.sender_id
         ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING *
         ), audit AS (
             -- Only admins and keys may send to others: each such send is audited with it.
             INSERT INTO audit_log (actor_id, actor, action, target, details)
             SELECT i.sender_id, s.username, 'message.sent_to_other', i.id::text,
                    jsonb_build_object('user_id', i.user_id, 'template_id', i.template_id)
             FROM ins i JOIN users s ON s.id = i.sender_id
             WHERE i.sender_id <> i.user_id
         )
         SELECT * FROM ins"
        )
    });
    let insert = diesel::sql_query(SQL.as_str())
        .bind::<Array<diesel::sql_types::Uuid>, _>(batch.iter().map(|m| m.id).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(batch.iter().map(|m| m.sender_id).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(batch.iter().map(|m| m.user_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            batch
                .iter()
                .map(|m| m.template_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            batch.iter().map(|m| m.url.as_deref()).collect::<Vec<_>>(),
        )
        .bind::<Array<Jsonb>, _>(batch.iter().map(|m| &m.data).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            batch
                .iter()
                .map(|m| m.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Jsonb>>, _>(
            batch
                .iter()
                .map(|m| m.miniprogram.as_ref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<diesel::sql_types::Timestamptz>>, _>(
            batch.iter().map(|m| m.send_at).collect::<Vec<_>>(),
        )
        .bind::<Array<Bool>, _>(batch.iter().map(|m| m.urgent).collect::<Vec<_>>());
    let inserted: Vec<Message> = super::Prepared(insert).load(conn)?;
    let mut by_id: std::collections::HashMap<Uuid, Message> =
        inserted.into_iter().map(|m| (m.id, m)).collect();
    Ok(batch
        .iter()
        .map(|m| match by_id.remove(&m.id) {
            Some(row) => Ok(Queued::Created(row)),
            None => enqueue(conn, m),
        })
        .collect())
}

/// What queueing a message did.
#[derive(Debug)]
pub enum Queued {
    /// A new row was inserted.
    Created(Message),
    /// The sender already queued this idempotency key; here is that message.
    Existing(Message),
    /// The recipient does not exist.
    NoRecipient,
    /// The recipient has no WeChat binding.
    NotBound,
    /// The sender's account no longer exists.
    NoSender,
}

/// Queues `new` in one statement when the recipient exists and is bound (the common case);
/// otherwise finds out why not, or returns the message already queued under the same
/// idempotency key.
pub fn enqueue(conn: &mut PgConnection, new: &QueuedRequest) -> QueryResult<Queued> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH v AS (SELECT $2::BIGINT AS sender_id,
                           coalesce($9::TIMESTAMPTZ > now(), false) AS held), {RANKS}, ins AS (
         INSERT INTO messages
             (id, sender_id, user_id, template_id, url, data, idempotency_key, miniprogram,
              send_at, urgent, held, next_attempt_at, fair_rank)
         SELECT $1, s.id, u.id, $4, $5, $6, $7, $8, $9, $10, v.held,
                CASE WHEN v.held THEN $9 ELSE now() END,
                CASE WHEN v.held THEN 0 ELSE t.start + 1 END
         FROM users u, users s, starts t, v
         WHERE u.id = $3 AND u.openid IS NOT NULL AND s.id = $2 AND t.sender_id = s.id
         ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING *
         ), audit AS (
             -- Only admins and keys may send to others: each such send is audited with it.
             INSERT INTO audit_log (actor_id, actor, action, target, details)
             SELECT i.sender_id, s.username, 'message.sent_to_other', i.id::text,
                    jsonb_build_object('user_id', i.user_id, 'template_id', i.template_id)
             FROM ins i JOIN users s ON s.id = i.sender_id
             WHERE i.sender_id <> i.user_id
         )
         SELECT * FROM ins"
        )
    });
    let inserted: Option<Message> = diesel::sql_query(SQL.as_str())
        .bind::<diesel::sql_types::Uuid, _>(new.id)
        .bind::<BigInt, _>(new.sender_id)
        .bind::<BigInt, _>(new.user_id)
        .bind::<Text, _>(&new.template_id)
        .bind::<Nullable<Text>, _>(new.url.as_deref())
        .bind::<Jsonb, _>(&new.data)
        .bind::<Nullable<Text>, _>(new.idempotency_key.as_deref())
        .bind::<Nullable<Jsonb>, _>(new.miniprogram.as_ref())
        .bind::<Nullable<diesel::sql_types::Timestamptz>, _>(new.send_at)
        .bind::<Bool, _>(new.urgent)
        .get_result(conn)
        .optional()?;
    if let Some(m) = inserted {
        return Ok(Queued::Created(m));
    }
    // ON CONFLICT waited for any concurrent insert of the key to commit, so it is visible.
    if let Some(key) = &new.idempotency_key {
        let existing = messages::table
            .filter(messages::sender_id.eq(new.sender_id))
            .filter(messages::idempotency_key.eq(key))
            .select(Message::as_select())
            .first(conn)
            .optional()?;
        if let Some(m) = existing {
            return Ok(Queued::Existing(m));
        }
    }
    let openid: Option<Option<String>> = super::schema::users::table
        .find(new.user_id)
        .select(super::schema::users::openid)
        .first(conn)
        .optional()?;
    Ok(match openid {
        None => Queued::NoRecipient,
        Some(None) => Queued::NotBound,
        Some(Some(_)) => {
            let sender_exists = super::users::find(conn, new.sender_id)?.is_some();
            if !sender_exists {
                return Ok(Queued::NoSender);
            }
            // Bound after all (a binding raced this call): one more try inserts it.
            return enqueue(conn, new);
        }
    })
}

/// The message with `id`, if any.
pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<Message>> {
    messages::table
        .find(id)
        .select(Message::as_select())
        .first(conn)
        .optional()
}

/// A message claimed for delivery, with the recipient's current openid.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = Int8)]
    pub user_id: i64,
    #[diesel(sql_type = Text)]
    pub template_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub url: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub data: serde_json::Value,
    /// The attempt number of this claim; outcome writes are fenced by it.
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub openid: Option<String>,
    /// `{"appid", "pagepath"}` of the mini-program page it opens.
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub miniprogram: Option<serde_json::Value>,
    /// When it was queued (for the enqueue-to-send latency).
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due messages: those whose lease ran out first, then queued ones that
/// are due, oldest first, skipping rows another worker is claiming right now. The query lives
/// in the `claim_due_messages` database function, which pins an index-ordered plan so a claim
/// costs the same however long the queue is (see its migration).
///
/// During quiet hours (`quiet`) only urgent messages are claimed, besides expired leases.
pub fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease_ms: i64,
    quiet: bool,
) -> QueryResult<Vec<Claimed>> {
    super::Prepared(
        diesel::sql_query("SELECT * FROM claim_due_messages($1, $2, $3)")
            .bind::<BigInt, _>(limit)
            .bind::<BigInt, _>(lease_ms)
            .bind::<Bool, _>(quiet),
    )
    .load(conn)
}

/// Releases up to `limit` held (scheduled) messages that came due into the queue, ranked as
/// if queued now. Returns how many.
pub fn release_held(conn: &mut PgConnection, limit: i64) -> QueryResult<i64> {
    let row: Count = super::Prepared(
        diesel::sql_query("SELECT release_held_messages($1) AS n").bind::<BigInt, _>(limit),
    )
    .get_result(conn)?;
    Ok(row.n)
}

#[derive(QueryableByName)]
struct DailyCount {
    #[diesel(sql_type = BigInt)]
    first: i64,
    #[diesel(sql_type = BigInt)]
    counted: i64,
}

/// Counts message `id` against its recipient's messages of `day`, once per message (whatever
/// its attempt), unless `cap` are counted already; every process shares the count. Returns
/// false only when the day's count is full.
pub fn count_daily_send(
    conn: &mut PgConnection,
    id: Uuid,
    user_id: i64,
    day: chrono::NaiveDate,
    cap: i32,
) -> QueryResult<bool> {
    let row: DailyCount = diesel::sql_query(
        // The message is marked only when it got a slot: one refused stays unmarked, so a
        // retaken attempt is refused again rather than sent past the cap.
        "WITH m AS (
             SELECT 1 FROM messages WHERE id = $4 AND counted_day IS NULL
         ), slot AS (
             INSERT INTO user_day_sends (user_id, day, sends)
             SELECT $1, $2, 1 WHERE EXISTS (SELECT 1 FROM m)
             ON CONFLICT (user_id, day) DO UPDATE SET sends = user_day_sends.sends + 1
             WHERE user_day_sends.sends < $3
             RETURNING 1
         ), mark AS (
             UPDATE messages SET counted_day = $2
             WHERE id = $4 AND EXISTS (SELECT 1 FROM slot)
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM m) AS first,
                (SELECT count(*) FROM mark) AS counted",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<diesel::sql_types::Date, _>(day)
    .bind::<Int4, _>(cap)
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result(conn)?;
    // Counted before (`first` 0), or counted now.
    Ok(row.first == 0 || row.counted == 1)
}

/// Deletes daily send counts of days before `before`.
pub fn purge_daily_sends(conn: &mut PgConnection, before: chrono::NaiveDate) -> QueryResult<usize> {
    diesel::sql_query("DELETE FROM user_day_sends WHERE day < $1")
        .bind::<diesel::sql_types::Date, _>(before)
        .execute(conn)
}

/// The row as this claim left it: still `sending` and still at this claim's attempt number.
/// `hand_back_unspent` lowers the attempt number again, but only from `sending` at this
/// claim's number, which only this claim's holder can write: a stale holder still matches
/// nothing.
fn still_claimed(
    id: Uuid,
    attempt: i32,
) -> Box<dyn BoxableExpression<messages::table, diesel::pg::Pg, SqlType = Bool>> {
    Box::new(
        messages::id
            .eq(id)
            .and(messages::attempts.eq(attempt))
            .and(messages::status.eq(MessageStatus::Sending)),
    )
}

/// The id of a row a statement touched.
#[derive(QueryableByName)]
struct MessageId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    #[expect(dead_code, reason = "read by diesel; callers count the rows")]
    id: Uuid,
}

/// Records many successful sends in one statement: `(id, attempt, msgid)` each. Returns how
/// many claims were still held (the others were lost to a newer claim).
pub fn mark_sent_batch(conn: &mut PgConnection, sent: &[(Uuid, i32, i64)]) -> QueryResult<usize> {
    let ids: Vec<Uuid> = sent.iter().map(|s| s.0).collect();
    let attempts: Vec<i32> = sent.iter().map(|s| s.1).collect();
    let msgids: Vec<i64> = sent.iter().map(|s| s.2).collect();
    let update = diesel::sql_query(
        "UPDATE messages m
         SET status = $4, msgid = v.msgid, sent_at = now(), lease_until = NULL,
             errcode = NULL, errmsg = NULL
         FROM unnest($1, $2, $3) AS v (id, attempt, msgid)
         WHERE m.id = v.id AND m.attempts = v.attempt AND m.status = $5
         RETURNING m.id",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Int4>, _>(attempts)
    .bind::<Array<BigInt>, _>(msgids)
    .bind::<Text, _>(MessageStatus::Sent)
    .bind::<Text, _>(MessageStatus::Sending);
    let held: Vec<MessageId> = super::Prepared(update).load(conn)?;
    Ok(held.len())
}

/// Makes claims this worker holds claimable again at once, fenced by their attempt: a
/// stopping worker hands back what it could not finish instead of leaving other workers to
/// wait out the lease. Returns how many were still held.
pub fn release_leases(conn: &mut PgConnection, claims: &[(Uuid, i32)]) -> QueryResult<usize> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
    let attempts: Vec<i32> = claims.iter().map(|c| c.1).collect();
    diesel::sql_query(
        "UPDATE messages m SET lease_until = now()
         FROM unnest($1, $2) AS v (id, attempt)
         WHERE m.id = v.id AND m.attempts = v.attempt AND m.status = $3",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Int4>, _>(attempts)
    .bind::<Text, _>(MessageStatus::Sending)
    .execute(conn)
}

/// Records WeChat's delivery report for the message with `msgid`.
pub fn set_delivery(conn: &mut PgConnection, msgid: i64, delivery: Delivery) -> QueryResult<usize> {
    diesel::update(messages::table.filter(messages::msgid.eq(msgid)))
        .set(messages::delivery.eq(delivery))
        .execute(conn)
}

/// Records a final failure. Returns false when the claim was lost.
pub fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    errcode: Option<i32>,
    errmsg: &str,
    reason: Option<FailReason>,
) -> QueryResult<bool> {
    diesel::update(messages::table.filter(still_claimed(id, attempt)))
        .set((
            messages::status.eq(MessageStatus::Failed),
            messages::lease_until.eq(None::<DateTime<Utc>>),
            messages::errcode.eq(errcode),
            messages::errmsg.eq(errmsg),
            messages::reason.eq(reason.map(FailReason::as_str)),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// Puts the message back in the queue, due at `next_attempt_at`, keeping the last error.
/// Returns false when the claim was lost.
pub fn reschedule(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    next_attempt_at: DateTime<Utc>,
    errcode: Option<i32>,
    errmsg: &str,
) -> QueryResult<bool> {
    diesel::update(messages::table.filter(still_claimed(id, attempt)))
        .set((
            messages::status.eq(MessageStatus::Queued),
            messages::next_attempt_at.eq(next_attempt_at),
            messages::lease_until.eq(None::<DateTime<Utc>>),
            messages::errcode.eq(errcode),
            messages::errmsg.eq(errmsg),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// What WeChat's 40252 answer said, as stored with the held message.
#[derive(Debug, Clone)]
pub struct Held<'a> {
    /// 40252.
    pub errcode: i32,
    /// WeChat's errmsg.
    pub errmsg: &'a str,
    /// An id the answer carried for the held message (`tmpl_msg_id`), if any.
    pub review_ref: Option<&'a str>,
    /// A msgid the answer carried, if any: a late delivery report then matches it exactly.
    pub msgid: Option<i64>,
    /// The openid it was sent to.
    pub openid: &'a str,
}

/// Records that WeChat holds the message for review (40252): neither retried nor failed.
/// `sent_at` is now (the reconciliation measures its hour from it). Returns false when the
/// claim was lost.
pub fn mark_under_review(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    held: &Held<'_>,
) -> QueryResult<bool> {
    diesel::update(messages::table.filter(still_claimed(id, attempt)))
        .set((
            messages::status.eq(MessageStatus::UnderReview),
            messages::lease_until.eq(None::<DateTime<Utc>>),
            messages::sent_at.eq(diesel::dsl::now),
            messages::errcode.eq(Some(held.errcode)),
            messages::errmsg.eq(held.errmsg),
            messages::review_ref.eq(held.review_ref),
            messages::msgid.eq(held.msgid),
            messages::review_openid.eq(held.openid),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// Puts a claimed message back in the queue, due now, without spending its attempt: the send
/// was refused for the whole account (its daily quota), not for this message. Returns false
/// when the claim was lost.
pub fn hand_back_unspent(
    conn: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    errcode: Option<i32>,
    errmsg: &str,
) -> QueryResult<bool> {
    diesel::update(messages::table.filter(still_claimed(id, attempt)))
        .set((
            messages::status.eq(MessageStatus::Queued),
            messages::attempts.eq(messages::attempts - 1),
            messages::next_attempt_at.eq(diesel::dsl::now),
            messages::lease_until.eq(None::<DateTime<Utc>>),
            messages::errcode.eq(errcode),
            messages::errmsg.eq(errmsg),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// A message under review, as the reconciliation matches it to WeChat's blocked list.
#[derive(Debug, Clone, QueryableByName)]
pub struct UnderReview {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub template_id: String,
    /// The id WeChat's 40252 answer carried, if any.
    #[diesel(sql_type = Nullable<Text>)]
    pub review_ref: Option<String>,
    /// The openid it was sent to.
    #[diesel(sql_type = Nullable<Text>)]
    pub openid: Option<String>,
    /// When WeChat answered 40252.
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub sent_at: DateTime<Utc>,
}

/// Messages under review, oldest first, at most `limit`.
pub fn under_review(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<UnderReview>> {
    diesel::sql_query(
        "SELECT m.id, m.template_id, m.review_ref, m.review_openid AS openid, m.sent_at
         FROM messages m
         WHERE m.status = $1
         ORDER BY m.sent_at
         LIMIT $2",
    )
    .bind::<Text, _>(MessageStatus::UnderReview)
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Ends messages under review that WeChat's review blocked: `failed` with errcode 40252 and
/// delivery `blocked`, each with the id of the record it was matched to (`(message, record)`).
/// Returns how many were still under review.
pub fn settle_blocked(
    conn: &mut PgConnection,
    matched: &[(Uuid, i64)],
    errcode: i32,
    errmsg: &str,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE messages m
         SET status = $3, errcode = $4, errmsg = $5, delivery = $6, review_record_id = v.record
         FROM unnest($1, $2) AS v (id, record)
         WHERE m.id = v.id AND m.status = $7
           AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.review_record_id = v.record)",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(matched.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(matched.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind::<Text, _>(MessageStatus::Failed)
    .bind::<Int4, _>(errcode)
    .bind::<Text, _>(errmsg)
    .bind::<Text, _>(Delivery::Blocked)
    .bind::<Text, _>(MessageStatus::UnderReview)
    .execute(conn)
}

/// Which of these `queryblocktmplmsg` record ids already settled a message.
pub fn used_review_records(conn: &mut PgConnection, records: &[i64]) -> QueryResult<Vec<i64>> {
    messages::table
        .filter(messages::review_record_id.eq_any(records))
        .select(messages::review_record_id.assume_not_null())
        .load(conn)
}

/// Ends messages under review that review let through (not listed as blocked an hour after
/// their send): `sent`, delivery as WeChat reported it, or unknown. `note` is kept as the
/// errmsg (why it was settled without an answer), or none. Returns how many.
pub fn settle_passed(
    conn: &mut PgConnection,
    ids: &[Uuid],
    note: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .filter(messages::id.eq_any(ids))
            .filter(messages::status.eq(MessageStatus::UnderReview)),
    )
    .set((
        messages::status.eq(MessageStatus::Sent),
        messages::errcode.eq(None::<i32>),
        messages::errmsg.eq(note),
    ))
    .execute(conn)
}

/// The record id a `queryblocktmplmsg` key is read on from (0: from the start).
pub fn review_cursor(conn: &mut PgConnection, key: &str) -> QueryResult<i64> {
    use super::schema::review_cursors;
    review_cursors::table
        .find(key)
        .select(review_cursors::largest_id)
        .first(conn)
        .optional()
        .map(Option::unwrap_or_default)
}

/// Moves a key's cursor forward to `largest_id` (never back).
pub fn advance_review_cursor(
    conn: &mut PgConnection,
    key: &str,
    largest_id: i64,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO review_cursors (key, largest_id) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET largest_id = excluded.largest_id, updated_at = now()
         WHERE review_cursors.largest_id < excluded.largest_id",
    )
    .bind::<Text, _>(key)
    .bind::<BigInt, _>(largest_id)
    .execute(conn)
    .map(drop)
}

/// A delivery report whose msgid matches no message: WeChat reports messages it held for
/// review and then delivered itself, under a msgid the service never learnt. The report goes
/// to the message held for `openid` when exactly one is under review (else, when none is, to
/// the one that passed review with its delivery still unknown), sent before the report was
/// made (`reported_at`, give or take a minute of clock skew), in the last two days. While the
/// recipient has a message in flight the report may be that one's, whose msgid is not
/// recorded yet: nothing is matched. Returns whether a message took it.
pub fn set_delivery_unmatched(
    conn: &mut PgConnection,
    openid: &str,
    msgid: i64,
    delivery: Delivery,
    reported_at: DateTime<Utc>,
) -> QueryResult<bool> {
    use super::schema::users;
    let recipient = users::table
        .filter(users::openid.eq(openid))
        .select(users::id)
        .single_value();
    let in_flight: i64 = messages::table
        .filter(messages::user_id.nullable().eq(recipient))
        .filter(messages::status.eq(MessageStatus::Sending))
        .count()
        .get_result(conn)?;
    if in_flight > 0 {
        return Ok(false);
    }
    let candidates = |status: MessageStatus| {
        messages::table
            .filter(messages::review_openid.eq(openid))
            .filter(messages::msgid.is_null())
            .filter(messages::delivery.is_null())
            .filter(messages::status.eq(status))
            .filter(messages::sent_at.gt(Utc::now() - chrono::TimeDelta::days(2)))
            .filter(messages::sent_at.le(reported_at + chrono::TimeDelta::minutes(1)))
            .select(messages::id)
            .limit(2)
            .for_update()
    };
    let mut found: Vec<Uuid> = candidates(MessageStatus::UnderReview).load(conn)?;
    if found.is_empty() {
        found = candidates(MessageStatus::Sent).load(conn)?;
    }
    let [id] = found[..] else {
        return Ok(false);
    };
    diesel::update(messages::table.find(id))
        .set((
            messages::status.eq(MessageStatus::Sent),
            messages::msgid.eq(Some(msgid)),
            messages::delivery.eq(Some(delivery)),
            messages::errcode.eq(None::<i32>),
            messages::errmsg.eq(None::<String>),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// A number a statement computed (`AS n`).
#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many messages WeChat took (sent, under review, or blocked by review) since `since`:
/// finished ones queued at most two days earlier (the retention index) plus those under
/// review.
pub fn taken_since(conn: &mut PgConnection, since: DateTime<Utc>) -> QueryResult<i64> {
    let row: Count = diesel::sql_query(
        "SELECT (SELECT count(*) FROM messages
                 WHERE status IN ('sent', 'failed') AND created_at >= $1 - interval '2 days'
                   AND sent_at >= $1)
              + (SELECT count(*) FROM messages WHERE status = 'under_review' AND sent_at >= $1)
             AS n",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .get_result(conn)?;
    Ok(row.n)
}

/// How many messages of `sender` wait for their first attempt, from their fair-queueing ranks
/// (consecutive per sender): the last minus the first plus one. Exact but for messages queued
/// by two processes at the same instant (which may share a rank) and handed-back ones.
///
/// Held (scheduled) messages count too, up to `cap` of them (`messages_held_by_sender`).
pub fn waiting_estimate(conn: &mut PgConnection, sender: i64, cap: i64) -> QueryResult<i64> {
    let row: Count = diesel::sql_query(
        "SELECT (SELECT coalesce(max(fair_rank) - min(fair_rank) + 1, 0) FROM messages
                 WHERE sender_id = $1 AND status = 'queued' AND attempts = 0 AND NOT held)
              + (SELECT count(*) FROM (SELECT 1 FROM messages
                 WHERE sender_id = $1 AND status = 'queued' AND held LIMIT $2) h) AS n",
    )
    .bind::<BigInt, _>(sender)
    .bind::<BigInt, _>(cap)
    .get_result(conn)?;
    Ok(row.n)
}

/// Counts one accepted message against `sender`'s clock minute, unless `limit` are counted
/// already. Returns whether it was counted.
pub fn count_send(conn: &mut PgConnection, sender: i64, limit: i32) -> QueryResult<bool> {
    diesel::sql_query(
        "INSERT INTO send_rate (sender_id, window_start, sends)
         VALUES ($1, date_trunc('minute', now()), 1)
         ON CONFLICT (sender_id, window_start) DO UPDATE SET sends = send_rate.sends + 1
         WHERE send_rate.sends < $2",
    )
    .bind::<BigInt, _>(sender)
    .bind::<Int4, _>(limit)
    .execute(conn)
    .map(|n| n == 1)
}

/// Deletes per-minute send counts of minutes before `before`.
pub fn purge_send_rate(conn: &mut PgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    use super::schema::send_rate;
    diesel::delete(send_rate::table.filter(send_rate::window_start.lt(before))).execute(conn)
}

/// Deletes at most `batch` finished (`sent` or `failed`) messages created before `before`,
/// oldest first, in one short statement. Returns how many.
pub fn purge_finished_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM messages WHERE id IN (
             SELECT id FROM messages
             WHERE status IN ('sent', 'failed') AND created_at < $1
             ORDER BY created_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(before)
    .bind::<BigInt, _>(batch)
    .execute(conn)
}

/// What the message log is filtered by.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this sender's (a key's own).
    pub sender_id: Option<i64>,
    /// Only this status.
    pub status: Option<MessageStatus>,
    /// Only to this recipient.
    pub user_id: Option<i64>,
    /// Only with this template.
    pub template_id: Option<String>,
    /// Queued at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Queued before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only messages of this broadcast.
    pub broadcast_id: Option<Uuid>,
    /// After this `(created_at, id)` in newest-first order (the previous page's last).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// One page of the log, newest first: at most `limit` messages.
pub fn log_page(
    conn: &mut PgConnection,
    filter: &LogFilter,
    limit: i64,
) -> QueryResult<Vec<Message>> {
    let mut q = messages::table.select(Message::as_select()).into_boxed();
    if let Some(s) = filter.sender_id {
        q = q.filter(messages::sender_id.eq(s));
    }
    if let Some(b) = filter.broadcast_id {
        q = q.filter(messages::broadcast_id.eq(b));
    }
    if let Some(s) = filter.status {
        q = q.filter(messages::status.eq(s));
    }
    if let Some(u) = filter.user_id {
        q = q.filter(messages::user_id.eq(u));
    }
    if let Some(t) = &filter.template_id {
        q = q.filter(messages::template_id.eq(t.clone()));
    }
    if let Some(t) = filter.created_after {
        q = q.filter(messages::created_at.ge(t));
    }
    if let Some(t) = filter.created_before {
        q = q.filter(messages::created_at.lt(t));
    }
    if let Some((at, id)) = filter.after {
        // The first condition bounds the index scan; the second breaks ties on `created_at`.
        q = q.filter(messages::created_at.le(at)).filter(
            messages::created_at
                .lt(at)
                .or(messages::created_at.eq(at).and(messages::id.lt(id))),
        );
    }
    // A filter no index serves (a rare status, an unknown template) walks the log's index: a
    // page gets 3 seconds, not the pool's 10, so such requests cannot hold every connection.
    conn.transaction(|conn| {
        diesel::sql_query("SET LOCAL statement_timeout = '3s'").execute(conn)?;
        q.order((messages::created_at.desc(), messages::id.desc()))
            .limit(limit)
            .load(conn)
    })
}

/// One step of a message's history as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::message_events, check_for_backend(diesel::pg::Pg))]
pub struct HistoryRow {
    pub at: DateTime<Utc>,
    pub event: String,
    pub attempt: i32,
    pub errcode: Option<i32>,
    pub errmsg: Option<String>,
}

/// A message's history after it was queued, oldest first (at most 1,000 steps).
pub fn history(conn: &mut PgConnection, id: Uuid) -> QueryResult<Vec<HistoryRow>> {
    use super::schema::message_events;
    message_events::table
        .filter(message_events::message_id.eq(id))
        .order(message_events::id)
        .limit(1000)
        .select(HistoryRow::as_select())
        .load(conn)
}

/// What retrying a message found.
#[derive(Debug)]
pub enum Retried {
    /// Queued again.
    Queued(Box<Message>),
    /// It cannot be retried: it is not `failed` (its status), or review blocked it.
    NotFailed(&'static str),
    /// Its recipient is no longer bound.
    NotBound,
    /// No such message.
    Missing,
}

/// Queues a failed message again with a fresh attempt budget, at the head of the fair queue,
/// keeping its id (WeChat's `client_msg_id`), and wakes the workers.
pub fn retry_failed(conn: &mut PgConnection, id: Uuid) -> QueryResult<Retried> {
    conn.transaction(|conn| {
        let Some(current) = find(conn, id)? else {
            return Ok(Retried::Missing);
        };
        if current.status != MessageStatus::Failed {
            return Ok(Retried::NotFailed(current.status.as_str()));
        }
        if current.delivery == Some(Delivery::Blocked) && current.errcode == Some(40252) {
            // WeChat's review refused this content; sending it again asks for the same verdict.
            return Ok(Retried::NotFailed("blocked by WeChat's content review"));
        }
        let bound: Option<Option<String>> = super::schema::users::table
            .find(current.user_id)
            .select(super::schema::users::openid)
            .first(conn)
            .optional()?;
        if !matches!(bound, Some(Some(_))) {
            return Ok(Retried::NotBound);
        }
        let row: Option<Message> = diesel::sql_query(
            "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = now(),
                 lease_until = NULL, errcode = NULL, errmsg = NULL, delivery = NULL,
                 review_record_id = NULL, sent_at = NULL, msgid = NULL, review_ref = NULL,
                 review_openid = NULL, reason = NULL, held = false, counted_day = NULL,
                 fair_rank = coalesce((SELECT min(q.fair_rank) FROM messages q
                                       WHERE q.status = 'queued' AND q.attempts = 0
                                         AND NOT q.held), 0)
             WHERE id = $1 AND status = 'failed'
             RETURNING *",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .get_result(conn)
        .optional()?;
        let Some(m) = row else {
            return Ok(Retried::Missing);
        };
        diesel::sql_query("SELECT pg_notify('wxbind_messages', '')").execute(conn)?;
        Ok(Retried::Queued(Box::new(m)))
    })
}

/// Most rows each count of [`queue_stats`] reads: past it the count stops, so the probe costs
/// the same however deep the queue is.
pub const QUEUE_COUNT_CAP: i64 = 100_000;

/// What the queue gauges show, read in one statement.
#[derive(Debug, Clone, QueryableByName)]
pub struct QueueStats {
    /// Messages waiting for their first attempt (at most [`QUEUE_COUNT_CAP`]).
    #[diesel(sql_type = BigInt)]
    pub waiting: i64,
    /// Queued messages after a failed attempt (at most [`QUEUE_COUNT_CAP`]).
    #[diesel(sql_type = BigInt)]
    pub retrying: i64,
    /// Claimed messages (at most [`QUEUE_COUNT_CAP`]).
    #[diesel(sql_type = BigInt)]
    pub sending: i64,
    /// The oldest `created_at` at the head of the first-attempt queue.
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    pub oldest_waiting: Option<DateTime<Utc>>,
    /// The oldest `created_at` among the retries due first.
    #[diesel(sql_type = Nullable<diesel::sql_types::Timestamptz>)]
    pub oldest_retrying: Option<DateTime<Utc>>,
    /// Whether sending is paused for the quota.
    #[diesel(sql_type = Bool)]
    pub paused: bool,
    /// The database's clock, which the ages are measured against.
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub now: DateTime<Utc>,
}

/// Queue depth by state, the age of the oldest waiting messages and the pause, on the queue's
/// partial indexes only (`messages_fresh`, `messages_retry`, `messages_leased`).
///
/// The oldest first attempt is looked for among the first 10,000 in claim order: a sender's
/// waiting messages hold consecutive ranks from about the head's, so each sender's oldest is
/// there unless thousands of senders wait at once. The oldest retry is looked for among the
/// 1,000 due first.
pub fn queue_stats(conn: &mut PgConnection) -> QueryResult<QueueStats> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT
             (SELECT count(*) FROM (SELECT 1 FROM messages
                  WHERE status = 'queued' AND attempts = 0 AND NOT held
                  LIMIT {QUEUE_COUNT_CAP}) w) AS waiting,
             (SELECT count(*) FROM (SELECT 1 FROM messages
                  WHERE status = 'queued' AND attempts > 0 LIMIT {QUEUE_COUNT_CAP}) r) AS retrying,
             (SELECT count(*) FROM (SELECT 1 FROM messages
                  WHERE status = 'sending' LIMIT {QUEUE_COUNT_CAP}) s) AS sending,
             (SELECT min(created_at) FROM (SELECT created_at FROM messages
                  WHERE status = 'queued' AND attempts = 0 AND NOT held
                  ORDER BY fair_rank LIMIT 10000) h) AS oldest_waiting,
             (SELECT min(created_at) FROM (SELECT created_at FROM messages
                  WHERE status = 'queued' AND attempts > 0
                  ORDER BY next_attempt_at LIMIT 1000) d) AS oldest_retrying,
             EXISTS (SELECT 1 FROM send_pause WHERE paused_until > now()) AS paused,
             now() AS now"
        )
    });
    diesel::sql_query(SQL.as_str()).get_result(conn)
}
