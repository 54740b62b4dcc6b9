//! The simulator's memory: test WeChat users, OAuth codes, access tokens, QR tickets, which
//! templates the account has and each user's inbox. One mutex guards it all; every operation
//! is short and never awaits.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::templates::{LIBRARY, SandboxTemplate};
use crate::domain::random_alphanumeric;

/// How long an OAuth code can be exchanged.
pub const CODE_TTL: TimeDelta = TimeDelta::minutes(5);
/// Lifetime of an access token.
pub const TOKEN_TTL_SECONDS: i64 = 7200;
/// How long the previous token keeps working after a new one is issued.
pub const TOKEN_OVERLAP: TimeDelta = TimeDelta::minutes(5);

/// A WeChat error as the simulator answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// WeChat's errcode.
    pub errcode: i64,
    /// WeChat's errmsg (the `rid:` suffix is added on the wire).
    pub errmsg: Cow<'static, str>,
}

const fn err(errcode: i64, errmsg: &'static str) -> SimError {
    SimError {
        errcode,
        errmsg: Cow::Borrowed(errmsg),
    }
}

/// A simulated WeChat user.
#[derive(Debug, Clone, Serialize)]
pub struct SimUser {
    /// Display name chosen on the consent page.
    pub name: String,
    /// Stable openid under the sandbox account.
    pub openid: String,
    /// Stable unionid: the sandbox account counts as linked to an Open Platform account.
    pub unionid: String,
    /// Whether the user follows the official account.
    pub following: bool,
}

/// A template message that reached a simulated phone.
#[derive(Debug, Clone, Serialize)]
pub struct InboxItem {
    /// Template id.
    pub template_id: String,
    /// Link of the message.
    pub url: Option<String>,
    /// `{appid, pagepath}`: the mini-program page it opens (preferred to `url`).
    pub miniprogram: Option<serde_json::Value>,
    /// Field name → `{value, color?}`.
    pub data: serde_json::Value,
    /// WeChat's msgid.
    pub msgid: i64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

struct Code {
    openid: String,
    scope: String,
    expires_at: DateTime<Utc>,
    used: bool,
}

struct Token {
    value: String,
    valid_until: DateTime<Utc>,
}

/// A temporary QR code.
#[derive(Clone)]
pub struct Ticket {
    /// The scene string it carries (`bind_<state>` for a bind QR code).
    pub scene: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}
crate::telemetry::redacted_debug!(Ticket {
    scene: redacted,
    expires_at
});

#[derive(Default)]
struct Inner {
    users: BTreeMap<String, SimUser>,
    codes: HashMap<String, Code>,
    oauth_tokens: HashMap<String, String>,
    tokens: Vec<Token>,
    inbox: HashMap<String, Vec<InboxItem>>,
    sent: HashMap<(String, String), i64>,
    tickets: HashMap<String, Ticket>,
    /// Library templates the account has deleted (as a category change does overnight).
    removed_templates: HashSet<String>,
    next_msgid: i64,
    /// Errcodes the next sends answer with, set by `POST /sandbox/api/faults`.
    send_faults: VecDeque<i64>,
    /// What review does with the next message it holds.
    next_verdict: Option<Verdict>,
    /// Messages held for review (40252), oldest first.
    held: Vec<Held>,
    /// Sends counted against today's quota, and the day (Beijing time) they were counted on.
    quota: (chrono::NaiveDate, i64),
    /// The quota is used up (by count, or a 45009 fault) until a reset or the next day.
    exhausted: bool,
    /// Quota resets made, with when.
    resets: Vec<DateTime<Utc>>,
}

/// The template-send quota of a simulated account per day (WeChat's default).
pub const DAILY_LIMIT: i64 = 100_000;
/// Most errcodes queued for the next sends.
pub const MAX_FAULTS: usize = 1000;
/// Quota resets WeChat allows a month.
pub const RESETS_PER_MONTH: usize = 10;

/// What review decides about a held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Not decided (yet): WeChat neither lists nor delivers it.
    Pending,
    /// Blocked: listed by `queryblocktmplmsg`, never delivered.
    Block,
    /// Approved: delivered by WeChat itself, with a late delivery report.
    Approve,
}

/// A message held for review.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// The record id `queryblocktmplmsg` pages by.
    pub id: i64,
    /// Recipient.
    pub openid: String,
    /// Template id.
    pub template_id: String,
    /// Field name → `{value}` (after WeChat dropped what it ignores).
    pub data: serde_json::Value,
    /// Link of the message.
    pub url: Option<String>,
    /// Mini-program page.
    pub miniprogram: Option<serde_json::Value>,
    /// What review decided.
    pub verdict: Verdict,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// The faults and review settings a script set, with what review holds.
#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    /// Errcodes the next sends answer with, in order.
    pub send_errcodes: Vec<i64>,
    /// What review does with the next message it holds (`null`: leaves it pending).
    pub review: Option<Verdict>,
    /// Messages held for review.
    pub held: Vec<Held>,
    /// Today's template-send quota.
    pub quota: QuotaState,
}

/// The simulated account's quota today.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QuotaState {
    /// Sends allowed a day.
    pub daily_limit: i64,
    /// Sends counted today.
    pub used: i64,
    /// Whether sends are refused with 45009.
    pub exhausted: bool,
    /// Resets made this month.
    pub resets_this_month: usize,
}

/// What a template send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Delivered (or a repeat of a delivered `client_msg_id`, `new` false).
    Delivered {
        /// WeChat's msgid.
        msgid: i64,
        /// False for a repeat that was not delivered again.
        new: bool,
    },
    /// Held for review (answered 40252); `approve` when review will deliver it.
    Held {
        /// The held record's id.
        id: i64,
        /// What review will do.
        verdict: Verdict,
    },
}

/// The Beijing-time date of `now` (WeChat's quota day).
fn quota_day(now: DateTime<Utc>) -> chrono::NaiveDate {
    (now + TimeDelta::hours(8)).date_naive()
}

/// The simulator's state, shared by every HTTP worker.
#[derive(Default)]
pub struct Sandbox {
    inner: Mutex<Inner>,
}

/// An openid in WeChat's shape (28 characters), stable for a name.
pub fn openid_for(name: &str) -> String {
    wechat_id("wxbind-sandbox", name)
}

/// A unionid in WeChat's shape (28 characters), stable for a name and unlike its openid.
pub fn unionid_for(name: &str) -> String {
    wechat_id("wxbind-sandbox-unionid", name)
}

/// 28 characters from WeChat's id alphabet, starting with `o`, derived from `salt` and `name`.
fn wechat_id(salt: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{salt}:{name}").as_bytes());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let tail: String = digest
        .iter()
        .take(27)
        .map(|b| char::from(alphabet[usize::from(*b) % 64]))
        .collect();
    format!("o{tail}")
}

impl Sandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The user called `name`, created (not following) if new.
    pub fn user(&self, name: &str) -> SimUser {
        let mut inner = self.lock();
        inner
            .users
            .entry(name.to_owned())
            .or_insert_with(|| SimUser {
                name: name.to_owned(),
                openid: openid_for(name),
                unionid: unionid_for(name),
                following: false,
            })
            .clone()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<SimUser> {
        self.lock().users.values().cloned().collect()
    }

    /// Sets whether `name` follows the account; `None` when there is no such user.
    pub fn set_following(&self, name: &str, following: bool) -> Option<SimUser> {
        let mut inner = self.lock();
        let user = inner.users.get_mut(name)?;
        user.following = following;
        Some(user.clone())
    }

    /// The inbox of `openid`, oldest first.
    pub fn inbox(&self, openid: &str) -> Vec<InboxItem> {
        self.lock().inbox.get(openid).cloned().unwrap_or_default()
    }

    /// Issues a single-use OAuth code for `openid`.
    pub fn issue_code(&self, openid: &str, scope: &str) -> String {
        let code = random_alphanumeric(32);
        self.lock().codes.insert(
            code.clone(),
            Code {
                openid: openid.to_owned(),
                scope: scope.to_owned(),
                expires_at: Utc::now() + CODE_TTL,
                used: false,
            },
        );
        code
    }

    /// Exchanges a code: `(oauth access token, openid, scope, unionid)`. Like WeChat for an
    /// account linked to an Open Platform account, the unionid comes with `snsapi_userinfo`
    /// only.
    pub fn exchange_code(
        &self,
        code: &str,
    ) -> Result<(String, String, String, Option<String>), SimError> {
        let mut inner = self.lock();
        let entry = inner
            .codes
            .get_mut(code)
            .ok_or(err(40029, "invalid code"))?;
        if entry.used {
            return Err(err(40163, "code been used"));
        }
        if entry.expires_at <= Utc::now() {
            return Err(err(42003, "code expired"));
        }
        entry.used = true;
        let (openid, scope) = (entry.openid.clone(), entry.scope.clone());
        let unionid = inner
            .users
            .values()
            .find(|u| u.openid == openid)
            .filter(|_| scope == "snsapi_userinfo")
            .map(|u| u.unionid.clone());
        let token = random_alphanumeric(40);
        inner.oauth_tokens.insert(token.clone(), openid.clone());
        Ok((token, openid, scope, unionid))
    }

    /// The openid an OAuth (user) access token was issued for.
    pub fn oauth_token_owner(&self, token: &str) -> Option<String> {
        self.lock().oauth_tokens.get(token).cloned()
    }

    /// The user with `openid`.
    pub fn user_by_openid(&self, openid: &str) -> Option<SimUser> {
        self.lock()
            .users
            .values()
            .find(|u| u.openid == openid)
            .cloned()
    }

    /// `cgi-bin/stable_token`: the current token while valid, a new one when forced or
    /// when none is valid.
    pub fn stable_token(&self, force_refresh: bool) -> (String, i64) {
        let mut inner = self.lock();
        let now = Utc::now();
        if !force_refresh {
            if let Some(t) = inner.tokens.last().filter(|t| t.valid_until > now) {
                return (t.value.clone(), (t.valid_until - now).num_seconds());
            }
        }
        new_token(&mut inner, now)
    }

    /// `cgi-bin/token`: always a new token; the previous one keeps working for five minutes.
    pub fn classic_token(&self) -> (String, i64) {
        let mut inner = self.lock();
        new_token(&mut inner, Utc::now())
    }

    /// Checks an access token: 40001 unless it is current, or the previous one within the
    /// overlap.
    pub fn check_token(&self, token: &str) -> Result<(), SimError> {
        let inner = self.lock();
        let now = Utc::now();
        if inner
            .tokens
            .iter()
            .any(|t| t.value == token && t.valid_until > now)
        {
            Ok(())
        } else {
            Err(err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            ))
        }
    }

    /// The account's templates: the library, less the ones removed.
    pub fn templates(&self) -> Vec<SandboxTemplate> {
        let inner = self.lock();
        LIBRARY
            .iter()
            .filter(|t| !inner.removed_templates.contains(t.template_id))
            .copied()
            .collect()
    }

    /// Deletes a library template from the account (`listed = false`) or adds it back;
    /// `false` when the library has no such template.
    pub fn set_template_listed(&self, template_id: &str, listed: bool) -> bool {
        if SandboxTemplate::find(template_id).is_none() {
            return false;
        }
        let mut inner = self.lock();
        if listed {
            inner.removed_templates.remove(template_id);
        } else {
            inner.removed_templates.insert(template_id.to_owned());
        }
        true
    }

    /// Delivers a template message to a following user, once per `client_msg_id`, as WeChat
    /// does: 40037 for a template the account does not have, 47003 for `data` that breaks
    /// its keywords, 43004 for a user who does not follow, 45009 once the day's quota is used
    /// up. A fault set by a script answers first; 40252 holds the message for review.
    pub fn send_template(
        &self,
        touser: &str,
        template_id: &str,
        url: Option<String>,
        miniprogram: Option<serde_json::Value>,
        data: serde_json::Value,
        client_msg_id: Option<&str>,
    ) -> Result<SendResult, SimError> {
        let mut inner = self.lock();
        let user = inner
            .users
            .values()
            .find(|u| u.openid == touser)
            .ok_or(err(40003, "invalid openid"))?;
        let template = SandboxTemplate::find(template_id)
            .filter(|t| !inner.removed_templates.contains(t.template_id))
            .ok_or(err(40037, "invalid template_id"))?;
        let fields = data.as_object().cloned().unwrap_or_default();
        let data = template.accept(&fields).map_err(|key| SimError {
            errcode: 47003,
            errmsg: format!("argument invalid! data.{key}.value invalid").into(),
        })?;
        if !user.following {
            return Err(err(43004, "require subscribe"));
        }
        if let Some(id) = client_msg_id {
            if let Some(msgid) = inner.sent.get(&(touser.to_owned(), id.to_owned())) {
                return Ok(SendResult::Delivered {
                    msgid: *msgid,
                    new: false,
                });
            }
        }
        let now = Utc::now();
        let today = quota_day(now);
        if inner.quota.0 != today {
            inner.quota = (today, 0);
            inner.exhausted = false;
        }
        let fault = inner.send_faults.pop_front();
        if fault == Some(45009) {
            inner.exhausted = true;
        }
        if inner.exhausted || inner.quota.1 >= DAILY_LIMIT {
            inner.exhausted = true;
            return Err(err(45009, "reach max api daily quota limit"));
        }
        match fault {
            Some(40252) => {
                inner.quota.1 += 1;
                inner.next_msgid += 1;
                let id = inner.next_msgid;
                let verdict = inner.next_verdict.take().unwrap_or(Verdict::Pending);
                inner.held.push(Held {
                    id,
                    openid: touser.to_owned(),
                    template_id: template_id.to_owned(),
                    data,
                    url,
                    miniprogram,
                    verdict,
                    sent_at: now,
                });
                return Ok(SendResult::Held { id, verdict });
            }
            Some(errcode) => {
                return Err(SimError {
                    errcode,
                    errmsg: "fault set by the sandbox".into(),
                });
            }
            None => {}
        }
        inner.quota.1 += 1;
        let msgid = deliver(&mut inner, touser, template_id, url, miniprogram, data);
        if let Some(id) = client_msg_id {
            inner.sent.insert((touser.to_owned(), id.to_owned()), msgid);
        }
        Ok(SendResult::Delivered { msgid, new: true })
    }

    /// Review approves a held message: it reaches the phone under a msgid of its own, which
    /// the late delivery report carries. `None` when there is no such pending-approval message.
    pub fn approve_held(&self, id: i64) -> Option<(String, i64)> {
        let mut inner = self.lock();
        let pos = inner
            .held
            .iter()
            .position(|h| h.id == id && h.verdict == Verdict::Approve)?;
        let h = inner.held.remove(pos);
        let msgid = deliver(
            &mut inner,
            &h.openid,
            &h.template_id,
            h.url,
            h.miniprogram,
            h.data,
        );
        Some((h.openid, msgid))
    }

    /// Sets the faults: errcodes for the next sends (appended, at most [`MAX_FAULTS`] queued
    /// in all) and what review does with the next message it holds. `clear` first drops what
    /// is queued. False when the errcodes would not fit.
    pub fn set_faults(
        &self,
        clear: bool,
        send_errcodes: Vec<i64>,
        review: Option<Verdict>,
    ) -> bool {
        let mut inner = self.lock();
        if clear {
            inner.send_faults.clear();
            inner.next_verdict = None;
        }
        if inner.send_faults.len() + send_errcodes.len() > MAX_FAULTS {
            return false;
        }
        inner.send_faults.extend(send_errcodes);
        if review.is_some() {
            inner.next_verdict = review;
        }
        true
    }

    /// The faults, what review holds and the quota.
    pub fn faults(&self) -> Faults {
        let inner = self.lock();
        Faults {
            send_errcodes: inner.send_faults.iter().copied().collect(),
            review: inner.next_verdict,
            held: inner.held.clone(),
            quota: quota_state(&inner, Utc::now()),
        }
    }

    /// Messages review blocked for `template_id` (the sandbox's `tmpl_msg_id`) with a record
    /// id above `largest_id`, at most `limit`.
    pub fn blocked(&self, template_id: &str, largest_id: i64, limit: usize) -> Vec<Held> {
        self.lock()
            .held
            .iter()
            .filter(|h| h.verdict == Verdict::Block && h.template_id == template_id)
            .filter(|h| h.id > largest_id)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Messages held for review for `openid`, oldest first.
    pub fn held_for(&self, openid: &str) -> Vec<Held> {
        self.lock()
            .held
            .iter()
            .filter(|h| h.openid == openid)
            .cloned()
            .collect()
    }

    /// The quota today.
    pub fn quota(&self) -> QuotaState {
        quota_state(&self.lock(), Utc::now())
    }

    /// Resets today's quota (`clear_quota`): 48006 after 10 resets in a month.
    pub fn clear_quota(&self) -> Result<(), SimError> {
        let mut inner = self.lock();
        let now = Utc::now();
        if month_resets(&inner, now) >= RESETS_PER_MONTH {
            return Err(err(
                48006,
                "forbid to clear quota because of reaching the limit",
            ));
        }
        inner.resets.push(now);
        inner.quota = (quota_day(now), 0);
        inner.exhausted = false;
        Ok(())
    }

    /// Creates a temporary QR ticket for `scene`.
    pub fn create_ticket(&self, scene: &str, expire_seconds: i64) -> (String, Ticket) {
        let ticket = format!("gQ{}", random_alphanumeric(62));
        let t = Ticket {
            scene: scene.to_owned(),
            expires_at: Utc::now() + TimeDelta::seconds(expire_seconds),
        };
        self.lock().tickets.insert(ticket.clone(), t.clone());
        (ticket, t)
    }

    /// The QR ticket, if it exists.
    pub fn ticket(&self, ticket: &str) -> Option<Ticket> {
        self.lock().tickets.get(ticket).cloned()
    }
}

/// Puts a message in the phone's inbox under a new msgid.
fn deliver(
    inner: &mut Inner,
    touser: &str,
    template_id: &str,
    url: Option<String>,
    miniprogram: Option<serde_json::Value>,
    data: serde_json::Value,
) -> i64 {
    inner.next_msgid += 1;
    let msgid = 3_000_000_000 + inner.next_msgid;
    inner
        .inbox
        .entry(touser.to_owned())
        .or_default()
        .push(InboxItem {
            template_id: template_id.to_owned(),
            url,
            miniprogram,
            data,
            msgid,
            received_at: Utc::now(),
        });
    msgid
}

fn quota_state(inner: &Inner, now: DateTime<Utc>) -> QuotaState {
    let today = inner.quota.0 == quota_day(now);
    QuotaState {
        daily_limit: DAILY_LIMIT,
        // Once WeChat refuses for the quota it reports the quota used up.
        used: match (today, inner.exhausted) {
            (false, _) => 0,
            (true, true) => DAILY_LIMIT,
            (true, false) => inner.quota.1,
        },
        exhausted: today && inner.exhausted,
        resets_this_month: month_resets(inner, now),
    }
}

/// Resets made in the month (Beijing time) of `now`.
fn month_resets(inner: &Inner, now: DateTime<Utc>) -> usize {
    use chrono::Datelike;
    let month = |t: DateTime<Utc>| {
        let d = quota_day(t);
        (d.year(), d.month())
    };
    inner
        .resets
        .iter()
        .filter(|r| month(**r) == month(now))
        .count()
}

fn new_token(inner: &mut Inner, now: DateTime<Utc>) -> (String, i64) {
    // Older tokens die; the last one lives on for the overlap.
    for t in &mut inner.tokens {
        t.valid_until = t.valid_until.min(now + TOKEN_OVERLAP);
    }
    inner.tokens.retain(|t| t.valid_until > now);
    let value = random_alphanumeric(96);
    inner.tokens.push(Token {
        value: value.clone(),
        valid_until: now + TimeDelta::seconds(TOKEN_TTL_SECONDS),
    });
    (value, TOKEN_TTL_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tickets_debug_hides_its_scene() {
        let (_, t) = Sandbox::default().create_ticket("bind_SECRETSTATE", 600);
        let debug = format!("{t:?}");
        assert!(!debug.contains("SECRETSTATE"), "{debug}");
    }

    #[test]
    fn codes_are_single_use() {
        let s = Sandbox::default();
        let u = s.user("alice");
        let code = s.issue_code(&u.openid, "snsapi_userinfo");
        let first = s.exchange_code(&code).expect("first");
        assert_eq!(first.1, u.openid);
        assert_eq!(
            first.3,
            Some(unionid_for("alice")),
            "snsapi_userinfo has one"
        );
        let base = s.issue_code(&u.openid, "snsapi_base");
        assert_eq!(
            s.exchange_code(&base).expect("base").3,
            None,
            "snsapi_base has none"
        );
        assert_eq!(s.exchange_code(&code).expect_err("reuse").errcode, 40163);
        assert_eq!(s.exchange_code("nope").expect_err("unknown").errcode, 40029);
    }

    #[test]
    fn a_classic_fetch_keeps_the_previous_token_for_the_overlap_only() {
        let s = Sandbox::default();
        let (first, _) = s.stable_token(false);
        assert_eq!(s.stable_token(false).0, first, "stable while valid");
        let (second, _) = s.classic_token();
        assert_ne!(first, second);
        assert!(
            s.check_token(&first).is_ok(),
            "previous token works during the overlap"
        );
        assert!(s.check_token(&second).is_ok());
        let (third, _) = s.classic_token();
        assert!(s.check_token(&third).is_ok());
        assert!(s.check_token("made-up").is_err());
    }

    #[test]
    fn sends_need_a_follower_and_dedupe_on_client_msg_id() {
        let s = Sandbox::default();
        let u = s.user("alice");
        let data = serde_json::json!({"keyword1": {"value": "v"}});
        let t = "SANDBOX_TEMPLATE_LEGACY";
        let e = s
            .send_template(&u.openid, t, None, None, data.clone(), Some("m1"))
            .expect_err("not following");
        assert_eq!(e.errcode, 43004);
        s.set_following("alice", true);
        let a = s
            .send_template(&u.openid, t, None, None, data.clone(), Some("m1"))
            .expect("sent");
        let b = s
            .send_template(&u.openid, t, None, None, data.clone(), Some("m1"))
            .expect("dedup");
        let (
            SendResult::Delivered {
                msgid: a,
                new: true,
            },
            SendResult::Delivered {
                msgid: b,
                new: false,
            },
        ) = (a, b)
        else {
            panic!("a repeat is not delivered again");
        };
        assert_eq!(a, b, "a repeat gets the same msgid");
        assert_eq!(s.inbox(&u.openid).len(), 1);
        assert_eq!(
            s.send_template("ounknown", t, None, None, data.clone(), None)
                .expect_err("unknown")
                .errcode,
            40003
        );
    }

    #[test]
    fn sends_need_a_template_of_the_account_and_data_that_fits_it() {
        let s = Sandbox::default();
        let u = s.user("alice");
        s.set_following("alice", true);
        let t = "SANDBOX_TEMPLATE_LEGACY";
        let ok = serde_json::json!({"keyword1": {"value": "v"}});
        let send = |template: &str, data: &serde_json::Value| {
            s.send_template(&u.openid, template, None, None, data.clone(), None)
        };
        assert_eq!(send("T", &ok).expect_err("unknown").errcode, 40037);
        let bad = serde_json::json!({"keyword9": {"value": "v"}});
        let e = send(t, &bad).expect_err("misfit");
        assert_eq!(e.errcode, 47003);
        assert!(e.errmsg.contains("data.keyword9.value"), "{e:?}");
        assert!(s.set_template_listed(t, false));
        assert_eq!(send(t, &ok).expect_err("removed").errcode, 40037);
        assert!(s.templates().iter().all(|l| l.template_id != t));
        assert!(s.set_template_listed(t, true));
        assert!(send(t, &ok).is_ok());
        assert!(!s.set_template_listed("NOT_IN_THE_LIBRARY", false));
    }

    #[test]
    fn faults_answer_the_next_sends_and_review_holds_what_40252_answers() {
        let s = Sandbox::default();
        let u = s.user("alice");
        s.set_following("alice", true);
        let t = "SANDBOX_TEMPLATE_LEGACY";
        let data = serde_json::json!({"keyword1": {"value": "v"}});
        let send = |id: &str| s.send_template(&u.openid, t, None, None, data.clone(), Some(id));
        assert!(s.set_faults(false, vec![-1, 40252, 40252], Some(Verdict::Block)));
        assert_eq!(send("m1").expect_err("fault").errcode, -1);
        let Ok(SendResult::Held {
            id: blocked,
            verdict: Verdict::Block,
        }) = send("m2")
        else {
            panic!("held and blocked");
        };
        // The verdict applies to the next held message only.
        let Ok(SendResult::Held {
            verdict: Verdict::Pending,
            ..
        }) = send("m3")
        else {
            panic!("held and pending");
        };
        assert!(matches!(
            send("m4"),
            Ok(SendResult::Delivered { new: true, .. })
        ));
        let listed = s.blocked(t, 0, 100);
        assert_eq!(listed.iter().map(|h| h.id).collect::<Vec<_>>(), [blocked]);
        assert!(
            s.blocked(t, blocked, 100).is_empty(),
            "pages after the largest id"
        );
        assert_eq!(
            s.inbox(&u.openid).len(),
            1,
            "held messages are not in the inbox"
        );

        assert!(s.set_faults(false, vec![40252], Some(Verdict::Approve)));
        let Ok(SendResult::Held {
            id,
            verdict: Verdict::Approve,
        }) = send("m5")
        else {
            panic!("held for approval");
        };
        let (openid, msgid) = s.approve_held(id).expect("approved");
        assert_eq!(openid, u.openid);
        assert!(s.inbox(&u.openid).iter().any(|m| m.msgid == msgid));
        assert!(s.approve_held(id).is_none(), "once");
    }

    #[test]
    fn a_used_up_quota_refuses_every_send_until_a_reset_and_resets_are_limited() {
        let s = Sandbox::default();
        let u = s.user("alice");
        s.set_following("alice", true);
        let t = "SANDBOX_TEMPLATE_LEGACY";
        let data = serde_json::json!({"keyword1": {"value": "v"}});
        let send = |id: &str| s.send_template(&u.openid, t, None, None, data.clone(), Some(id));
        assert!(send("m1").is_ok());
        assert!(s.set_faults(false, vec![45009], None));
        assert_eq!(send("m2").expect_err("quota").errcode, 45009);
        assert_eq!(send("m3").expect_err("still").errcode, 45009);
        assert!(s.quota().exhausted);
        assert_eq!(s.quota().used, DAILY_LIMIT, "reported as used up");
        assert!(
            !s.set_faults(false, vec![-1; MAX_FAULTS + 1], None),
            "bounded"
        );
        assert!(s.set_faults(true, vec![-1], None));
        assert_eq!(s.faults().send_errcodes, [-1], "cleared first");
        assert!(s.set_faults(true, vec![], None));
        for _ in 0..RESETS_PER_MONTH {
            s.clear_quota().expect("reset");
        }
        assert!(send("m4").is_ok());
        assert_eq!(s.clear_quota().expect_err("limit").errcode, 48006);
        assert_eq!(s.quota().resets_this_month, RESETS_PER_MONTH);
    }

    #[test]
    fn openids_look_like_wechats() {
        let o = openid_for("alice");
        assert_eq!(o.len(), 28);
        assert!(o.starts_with('o'));
        assert_eq!(o, openid_for("alice"));
        assert_ne!(o, openid_for("bob"));
        let u = unionid_for("alice");
        assert_eq!((u.len(), u.starts_with('o')), (28, true));
        assert_ne!(u, o, "a unionid is not the openid");
        assert_eq!(u, unionid_for("alice"));
    }
}
