//! WeChat's daily send quota. When a send is refused with 45009 (the day's quota is used up)
//! the whole account stops sending until the quota resets at midnight Beijing time, or until
//! an admin resets it (`clear_quota`, 10 times a month): queued messages wait without spending
//! their attempts. The pause lives in PostgreSQL (`send_pause`), so every process honours it,
//! and the claim itself checks it, so no process sends while it is in force.
use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, TimeZone, Utc};

use diesel::Connection;

use crate::audit::{self, Action, Actor};
use crate::db::{self, DbError, PgPool};
use crate::wechat::{CallError, Connected, types::Quota};

/// Beijing time, where WeChat's quota day begins (China keeps no daylight saving time).
const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// Quota resets WeChat allows an account each month.
pub const RESETS_PER_MONTH: i64 = 10;

/// When the quota day that contains `now` began.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&BEIJING);
    let midnight = local.date_naive().and_time(NaiveTime::MIN);
    BEIJING
        .from_local_datetime(&midnight)
        .single()
        .map_or(now, |d| d.with_timezone(&Utc))
}

/// When the quota next resets by itself: the coming midnight, Beijing time.
pub fn next_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    day_start(now) + chrono::TimeDelta::days(1)
}

/// When the current month began, Beijing time (resets are counted per month).
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&BEIJING);
    let first = local
        .date_naive()
        .with_day(1)
        .unwrap_or_else(|| local.date_naive())
        .and_time(NaiveTime::MIN);
    BEIJING
        .from_local_datetime(&first)
        .single()
        .map_or(now, |d| d.with_timezone(&Utc))
}

/// The account's quota as WeChat and this service see it.
#[derive(Debug, Clone)]
pub struct Status {
    /// WeChat's figures for template sends today, or why WeChat did not give them (the
    /// service's own figures are shown all the same: they matter most when WeChat fails).
    pub wechat: Result<Quota, String>,
    /// Until when sending is paused, if it is.
    pub paused_until: Option<DateTime<Utc>>,
    /// Messages WeChat took today (Beijing time) by this service's own count.
    pub sent_today: i64,
}

/// What went wrong asking for or resetting the quota.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// WeChat (or the token) failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// WeChat allows no more resets this month (48006).
    #[error("WeChat allows {RESETS_PER_MONTH} quota resets a month; none is left")]
    ResetLimit,
}

/// WeChat's figures for template sends today (`openapi/quota/get`).
async fn wechat_quota(wechat: &Connected) -> Result<Quota, CallError> {
    wechat
        .with_token(|client, token| async move { client.get_send_quota(token.secret()).await })
        .await
}

/// WeChat's figures with the pause and this service's own count of today's sends.
pub async fn status(pool: &PgPool, wechat: &Connected) -> Result<Status, QuotaError> {
    let quota = wechat_quota(wechat).await.map_err(|e| {
        tracing::warn!(error = %crate::error::ErrorChain(&e), "WeChat did not report the quota");
        match e {
            CallError::Wechat(w) => w.to_string(),
            CallError::Token(_) => "no access token could be had".to_owned(),
        }
    });
    let since = day_start(Utc::now());
    let (pause, sent_today) = db::run(pool, move |conn| {
        Ok((
            db::pause::current(conn)?,
            db::messages::taken_since(conn, since)?,
        ))
    })
    .await?;
    Ok(Status {
        wechat: quota,
        paused_until: pause.map(|p| p.paused_until),
        sent_today,
    })
}

/// What a reset did.
#[derive(Debug, Clone, Copy)]
pub struct Reset {
    /// Whether sending had been paused (it resumes now).
    pub was_paused: bool,
    /// Resets made through this service this month, this one included.
    pub resets_this_month: i64,
}

/// Two resets this close together are one: the second answers with the first's result
/// instead of spending another of the month's ten (two admins, or a double click).
const RESET_DEBOUNCE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Serializes this process's resets, so a double click waits for the first and sees it.
static RESETTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resets the quota at WeChat (`clear_quota`) and lifts the pause, waking every worker; the
/// reset is recorded, and audited as `by`'s (`quota.reset`), in one transaction. A reset
/// within ten seconds of the last one, with no pause since, calls WeChat no more and is not
/// audited again: it changed nothing.
pub async fn reset(pool: &PgPool, wechat: &Connected, by: i64) -> Result<Reset, QuotaError> {
    let _one_at_a_time = RESETTING.lock().await;
    let since = month_start(Utc::now());
    let (last, paused, resets_this_month) = db::run(pool, move |conn| {
        Ok((
            db::pause::last_reset(conn)?,
            db::pause::current(conn)?,
            db::pause::resets_since(conn, since)?,
        ))
    })
    .await?;
    if paused.is_none() && last.is_some_and(|t| Utc::now() - t < RESET_DEBOUNCE) {
        return Ok(Reset {
            was_paused: false,
            resets_this_month,
        });
    }
    let cleared = wechat
        .with_token(|client, token| async move { client.clear_quota(token.secret()).await })
        .await;
    match cleared {
        Err(CallError::Wechat(e)) if e.is_quota_reset_limit() => {
            return Err(QuotaError::ResetLimit);
        }
        other => other?,
    }
    let (was_paused, resets_this_month) = db::run(pool, move |conn| {
        conn.transaction(|conn| {
            db::pause::record_reset(conn, by)?;
            let was = db::pause::lift(conn)?;
            let resets = db::pause::resets_since(conn, since)?;
            let details = serde_json::json!({ "was_paused": was, "resets_this_month": resets });
            audit::record(conn, Actor::User(by), Action::QuotaReset, None, details)?;
            Ok((was, resets))
        })
    })
    .await?;
    tracing::info!(
        user.id = by,
        was_paused,
        resets_this_month,
        "daily quota reset at WeChat"
    );
    Ok(Reset {
        was_paused,
        resets_this_month,
    })
}

/// While sending is paused, asks WeChat every `every` whether the quota is available again
/// (it was reset in WeChat's console or by another tool, or the 45009 came just after the day
/// turned) and lifts the pause if so. Runs until `stop` turns true or its sender is dropped.
pub async fn watch(
    pool: PgPool,
    wechat: std::rc::Rc<Connected>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let settle = chrono::TimeDelta::from_std(every).unwrap_or(chrono::TimeDelta::minutes(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
        let pause = match db::run(&pool, db::pause::current).await {
            Ok(Some(p)) if Utc::now() - p.paused_at >= settle => p,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %crate::error::ErrorChain(&e), "reading the send pause failed");
                continue;
            }
        };
        let quota = wechat_quota(&wechat).await;
        match quota {
            Ok(q) if q.remain > 0 => {
                if let Ok(true) = db::run(&pool, db::pause::lift).await {
                    tracing::info!(
                        remain = q.remain,
                        paused_since = %pause.paused_at,
                        "WeChat reports quota again; sending resumes"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %crate::error::ErrorChain(&e), "asking WeChat for the quota failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_quota_day_turns_at_midnight_beijing_time() {
        // 15:59 UTC is 23:59 in Beijing: the reset is a minute away.
        assert_eq!(
            next_reset(at("2026-12-01T15:59:00Z")),
            at("2026-12-01T16:00:00Z")
        );
        // 16:00 UTC is midnight: a new day began, the next reset is a day away.
        assert_eq!(
            next_reset(at("2026-12-01T16:00:00Z")),
            at("2026-12-02T16:00:00Z")
        );
        assert_eq!(
            day_start(at("2026-12-02T03:00:00Z")),
            at("2026-12-01T16:00:00Z")
        );
    }

    #[test]
    fn months_are_counted_in_beijing_time() {
        // 1 January 00:30 in Beijing is still 31 December in UTC.
        assert_eq!(
            month_start(at("2026-12-31T16:30:00Z")),
            at("2026-12-31T16:00:00Z")
        );
        assert_eq!(
            month_start(at("2026-12-15T00:00:00Z")),
            at("2026-11-30T16:00:00Z")
        );
    }
}
