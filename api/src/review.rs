//! Messages WeChat holds for review (errcode 40252). WeChat answers a held send with no msgid
//! and, if review approves, delivers the message itself: resending would deliver it twice. So a
//! held message is `under_review` until this reconciliation settles it. Every
//! `WXBIND_REVIEW_SECONDS` it asks `queryblocktmplmsg` which messages review blocked and
//! matches them to messages under review by recipient, template (or the id the 40252 answer
//! carried) and send time: a blocked one ends `failed` (errcode 40252, delivery `blocked`).
//! One still not listed `WXBIND_REVIEW_SETTLE_SECONDS` after its send (an hour; WeChat staff
//! say review takes about 30 minutes) passed review and ends `sent`, delivery unknown until a
//! late report says otherwise (`db::messages::set_delivery_unmatched`). Each key's list is
//! read on from a cursor past the records too old to match anything, so a long history costs
//! nothing. A group WeChat cannot be asked about waits; after a day it is settled as passed,
//! saying so. Every worker process runs the reconciliation: the updates are idempotent and a
//! record can settle one message only (a unique index), so at worst a round fails and the next
//! one settles what it could not.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::{self, DbError, PgPool, messages::UnderReview};
use crate::error::ErrorChain;
use crate::wechat::{CallError, Connected, types::BlockedMessage};

/// The errcode a held send is answered with, kept on a message review blocked.
pub const UNDER_REVIEW_ERRCODE: i32 = 40252;
/// Most messages under review one round looks at (the oldest first).
const ROUND_LIMIT: i64 = 10_000;
/// Records per `queryblocktmplmsg` page (WeChat's maximum).
const PAGE: u32 = 100;
/// Most pages read per query in one round; the rest waits for the next round.
const MAX_PAGES: usize = 100;
/// How far a blocked record's send time may be from the message's 40252 answer and still be
/// that message (the clocks of WeChat and this service, and the request's own time).
const MATCH_WINDOW: TimeDelta = TimeDelta::minutes(10);
/// How long a message stays under review while WeChat cannot be asked about it: after this
/// it is settled as passed (WeChat would have delivered it by now if review approved), with
/// an errmsg saying review could not be checked.
const GIVE_UP: TimeDelta = TimeDelta::hours(24);
/// The errmsg of a message settled without an answer from `queryblocktmplmsg`.
const UNCHECKED: &str = "WeChat could not be asked whether review blocked it; treated as passed";

/// Runs the reconciliation every `every` until `stop` turns true or its sender is dropped.
pub async fn run(
    pool: PgPool,
    wechat: std::rc::Rc<Connected>,
    every: Duration,
    settle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let settle = TimeDelta::from_std(settle).unwrap_or(TimeDelta::hours(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
        match reconcile(&pool, &wechat, settle).await {
            Ok(r) if r.blocked + r.passed > 0 => tracing::info!(
                blocked = r.blocked,
                passed = r.passed,
                still_under_review = r.waiting,
                "settled messages under review"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %ErrorChain(&e),
                "reconciling messages under review failed; retrying next round"
            ),
        }
    }
}

/// What one round settled.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    /// Ended `failed`, blocked by review.
    pub blocked: usize,
    /// Ended `sent`: not listed as blocked within the settle time.
    pub passed: usize,
    /// Still under review.
    pub waiting: usize,
}

/// One round: asks WeChat about every group of messages under review and settles what it
/// can. A group whose query fails is left as it is (nothing is settled on a guess).
pub async fn reconcile(
    pool: &PgPool,
    wechat: &Connected,
    settle: TimeDelta,
) -> Result<Round, DbError> {
    let held = db::run(pool, |conn| db::messages::under_review(conn, ROUND_LIMIT)).await?;
    if held.is_empty() {
        return Ok(Round::default());
    }
    // WeChat's documentation leaves open whether `tmpl_msg_id` names the template or an id of
    // the held message: ask by the id the 40252 answer carried where there was one, else by
    // the template.
    let mut groups: BTreeMap<String, Vec<UnderReview>> = BTreeMap::new();
    for m in held {
        let key = m
            .review_ref
            .clone()
            .unwrap_or_else(|| m.template_id.clone());
        groups.entry(key).or_default().push(m);
    }
    let now = Utc::now();
    let (mut blocked, mut passed, mut unchecked, mut waiting) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    // A record listed under two keys (the template and a held message's id) settles one
    // message only.
    let mut seen: HashSet<i64> = HashSet::new();
    for (key, messages) in groups {
        let from = {
            let key = key.clone();
            db::run(pool, move |conn| db::messages::review_cursor(conn, &key)).await?
        };
        let records = match blocked_records(wechat, &key, from).await {
            Ok(r) => r,
            Err(e) => {
                let stuck: Vec<Uuid> = messages
                    .iter()
                    .filter(|m| now - m.sent_at >= GIVE_UP)
                    .map(|m| m.id)
                    .collect();
                tracing::warn!(
                    error = %ErrorChain(&e),
                    waiting = messages.len() - stuck.len(),
                    given_up = stuck.len(),
                    "queryblocktmplmsg failed; the group waits"
                );
                waiting += messages.len() - stuck.len();
                unchecked.extend(stuck);
                continue;
            }
        };
        // Records too old to match any message under review (or any later one) are not read
        // again: the next round starts after them.
        let oldest = messages.iter().map(|m| m.sent_at).min().unwrap_or(now);
        let horizon = (oldest - MATCH_WINDOW).timestamp();
        let mut sorted: Vec<&BlockedMessage> = records.iter().collect();
        sorted.sort_by_key(|r| r.id);
        let done_to = sorted
            .iter()
            .take_while(|r| r.send_timestamp < horizon)
            .last()
            .map(|r| r.id);
        if let Some(id) = done_to {
            let key = key.clone();
            db::run(pool, move |conn| {
                db::messages::advance_review_cursor(conn, &key, id)
            })
            .await?;
        }
        // A record that settled a message in an earlier round is not matched again.
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        let used: HashSet<i64> = db::run(pool, move |conn| {
            db::messages::used_review_records(conn, &ids)
        })
        .await?
        .into_iter()
        .collect();
        let fresh: Vec<BlockedMessage> = records
            .into_iter()
            .filter(|r| !used.contains(&r.id) && seen.insert(r.id))
            .collect();
        let hit = match_blocked(&messages, &fresh);
        for m in &messages {
            if let Some(record) = hit.get(&m.id) {
                blocked.push((m.id, *record));
            } else if now - m.sent_at >= settle {
                passed.push(m.id);
            } else {
                waiting += 1;
            }
        }
    }
    let (blocked_n, passed_n) = db::run(pool, move |conn| {
        Ok((
            db::messages::settle_blocked(
                conn,
                &blocked,
                UNDER_REVIEW_ERRCODE,
                "blocked by WeChat's content review",
            )?,
            db::messages::settle_passed(conn, &passed, None)?
                + db::messages::settle_passed(conn, &unchecked, Some(UNCHECKED))?,
        ))
    })
    .await?;
    Ok(Round {
        blocked: blocked_n,
        passed: passed_n,
        waiting,
    })
}

/// Every record WeChat lists as blocked for `key` after record `from`, page by page.
async fn blocked_records(
    wechat: &Connected,
    key: &str,
    from: i64,
) -> Result<Vec<BlockedMessage>, CallError> {
    let mut all = Vec::new();
    let mut largest = from;
    for _ in 0..MAX_PAGES {
        let page = wechat
            .with_token(|client, token| async move {
                client
                    .query_blocked(token.secret(), key, largest, PAGE)
                    .await
            })
            .await?;
        let next = page.iter().map(|r| r.id).max().unwrap_or(largest);
        let full = page.len() >= PAGE as usize;
        all.extend(page);
        if !full || next <= largest {
            break;
        }
        largest = next;
    }
    Ok(all)
}

/// The messages the records are about, with the record each took: same recipient, send time
/// within the window, each record taken by the message closest in time that no other record
/// took.
fn match_blocked(messages: &[UnderReview], records: &[BlockedMessage]) -> HashMap<Uuid, i64> {
    let mut taken = HashMap::new();
    for r in records {
        let Some(sent) = DateTime::from_timestamp(r.send_timestamp, 0) else {
            continue;
        };
        let best = messages
            .iter()
            .filter(|m| m.openid.as_deref() == Some(r.openid.as_str()))
            .filter(|m| !taken.contains_key(&m.id))
            .map(|m| (m, (m.sent_at - sent).abs()))
            .filter(|(_, gap)| *gap <= MATCH_WINDOW)
            .min_by_key(|(_, gap)| *gap);
        if let Some((m, _)) = best {
            taken.insert(m.id, r.id);
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(openid: &str, sent_at: i64) -> UnderReview {
        UnderReview {
            id: Uuid::new_v4(),
            template_id: "T".into(),
            review_ref: None,
            openid: Some(openid.into()),
            sent_at: DateTime::from_timestamp(sent_at, 0).expect("time"),
        }
    }

    fn record(id: i64, openid: &str, send_timestamp: i64) -> BlockedMessage {
        BlockedMessage {
            id,
            tmpl_msg_id: "T".into(),
            openid: openid.into(),
            send_timestamp,
        }
    }

    #[test]
    fn a_record_takes_the_closest_message_of_its_recipient_once() {
        let t = 1_780_000_000;
        let (a1, a2, b) = (held("a", t), held("a", t + 300), held("b", t));
        let messages = vec![a1.clone(), a2.clone(), b.clone()];
        let hit = match_blocked(&messages, &[record(1, "a", t + 290)]);
        assert_eq!(hit, HashMap::from([(a2.id, 1)]));
        // Two records for the same recipient take two messages.
        let hit = match_blocked(&messages, &[record(1, "a", t), record(2, "a", t + 5)]);
        assert_eq!(hit, HashMap::from([(a1.id, 1), (a2.id, 2)]));
        // Outside the window, or another recipient: nothing.
        assert!(match_blocked(&messages, &[record(1, "a", t + 3600)]).is_empty());
        assert!(match_blocked(&messages, &[record(1, "c", t)]).is_empty());
    }
}
