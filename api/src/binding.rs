//! The binding rules, shared by both ways a WeChat account gets bound to a site account: the
//! OAuth callback (a bind link opened in WeChat) and scan binding (a parametric QR code whose
//! scene carries the state). A state is single-use and expires; an openid bound to someone
//! else is refused, never moved; a failure leaves the state usable, so the link can be retried.
//! Only the callback learns a unionid (from its code exchange); a scan brings none.
use chrono::{DateTime, TimeDelta, Utc};
use diesel::{Connection, PgConnection};

use crate::batch::BatchError;
use crate::db::{self, DbError};
use crate::domain::BindState;
use crate::state::AppState;
use crate::telemetry::redacted_debug;
use crate::wechat::{CallError, Connected, WechatError};

/// How long a bind link or QR code can be used.
pub const STATE_TTL: TimeDelta = TimeDelta::minutes(10);

/// The scene prefix of wxbind's bind QR codes; other scenes belong to someone else.
const SCENE_PREFIX: &str = "bind_";

/// The QR-code scene that carries `state`.
fn scene_of(state: &BindState) -> String {
    format!("{SCENE_PREFIX}{}", state.as_ref())
}

/// A fresh bind link.
pub struct BindLink {
    /// WeChat's OAuth2 authorize URL carrying the state.
    pub url: String,
    /// When the state expires.
    pub expires_at: DateTime<Utc>,
}
redacted_debug!(BindLink {
    url: redacted,
    expires_at
});

/// A fresh scan-to-follow-and-bind QR code.
pub struct BindQrcode {
    /// WeChat's ticket.
    pub ticket: String,
    /// The QR code image.
    pub qrcode_url: String,
    /// When the state expires.
    pub expires_at: DateTime<Utc>,
}
redacted_debug!(BindQrcode {
    ticket: redacted,
    qrcode_url: redacted,
    expires_at
});

/// Why a binding step failed; the HTTP edge maps each to its contract code.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The state is missing, malformed, unknown, expired or used.
    #[error("the bind state is invalid, expired or already used")]
    InvalidState,
    /// The user refused the authorization (no `code`).
    #[error("the WeChat user did not authorize the binding")]
    AuthorizationDenied,
    /// WeChat refused the OAuth code (invalid, used or expired).
    #[error("WeChat rejected the authorization code")]
    InvalidCode,
    /// WeChat answered for a virtual snapshot user.
    #[error("WeChat returned a snapshot user")]
    SnapshotUser,
    /// The openid is bound to another user.
    #[error("the WeChat account is bound to another user")]
    AlreadyBound,
    /// The user is bound to another openid: unbinding comes first, so that a glimpsed bind
    /// link can never move someone's notifications to another WeChat account.
    #[error("the account is bound to another WeChat account")]
    AccountBoundElsewhere,
    /// The user the state belonged to no longer exists.
    #[error("the user of this bind state no longer exists")]
    UserGone,
    /// WeChat failed or answered something unusable.
    #[error("WeChat failed")]
    Wechat(#[source] WechatError),
    /// A call that needed an access token failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Storing the new state failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for BindError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e.into())
    }
}

/// Stores a new state for `user_id` and returns the bind link that carries it.
pub async fn create_link(
    state: &AppState,
    wechat: &Connected,
    user_id: i64,
) -> Result<BindLink, BindError> {
    let nonce = BindState::generate();
    let expires_at = Utc::now() + STATE_TTL;
    state
        .bind_states
        .submit((nonce.hash(), user_id, expires_at))
        .await?;
    let url = wechat
        .account()
        .authorize_url(&state.config.callback_url(), nonce.as_ref());
    Ok(BindLink { url, expires_at })
}

/// Asks WeChat for a temporary QR code whose scene carries a new state for `user_id`, and
/// stores the state once WeChat made the code: a failure leaves nothing behind.
pub async fn create_qrcode(
    state: &AppState,
    wechat: &Connected,
    user_id: i64,
) -> Result<BindQrcode, BindError> {
    let nonce = BindState::generate();
    let scene = scene_of(&nonce);
    let lifetime = u32::try_from(STATE_TTL.num_seconds()).unwrap_or(600);
    let qr = wechat
        .with_token(|client, token| {
            let scene = &scene;
            async move { client.create_qrcode(token.secret(), scene, lifetime).await }
        })
        .await?;
    let expires_at = Utc::now() + STATE_TTL;
    state
        .bind_states
        .submit((nonce.hash(), user_id, expires_at))
        .await?;
    Ok(BindQrcode {
        qrcode_url: wechat.account().showqrcode_url(&qr.ticket),
        ticket: qr.ticket,
        expires_at,
    })
}

/// Completes a bind link opened in WeChat: consumes the state, exchanges the code for the
/// openid and binds it. On any failure after the state was consumed, the state is given
/// back, so the same link can be tried again.
pub async fn complete_oauth(
    state: &AppState,
    wechat: &Connected,
    raw_state: Option<&str>,
    code: Option<String>,
) -> Result<(), BindError> {
    let nonce = raw_state
        .and_then(|s| BindState::parse(s).ok())
        .ok_or(BindError::InvalidState)?;
    // A refusal leaves the link usable: the user may scan again and allow.
    let code = code
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or(BindError::AuthorizationDenied)?;

    let hash = nonce.hash();
    let h = hash.clone();
    // Consumed atomically: of two callbacks with one state (WeChat sometimes opens it twice),
    // exactly one goes on, and the other cannot undo its work.
    let user_id = db::run(&state.pool, move |conn| db::bind_states::consume(conn, &h))
        .await?
        .ok_or(BindError::InvalidState)?;
    tracing::Span::current().record("user.id", user_id);

    let result = exchange_and_bind(state, wechat, user_id, &code).await;
    if result.is_err() {
        // Nothing changed: give the state back so the same link can be retried.
        db::run(&state.pool, move |conn| {
            db::bind_states::release(conn, &hash)
        })
        .await?;
    }
    result
}

async fn exchange_and_bind(
    state: &AppState,
    wechat: &Connected,
    user_id: i64,
    code: &str,
) -> Result<(), BindError> {
    let token = wechat.client().exchange_code(code).await.map_err(|e| {
        if e.is_rejected_oauth_code() {
            BindError::InvalidCode
        } else {
            BindError::Wechat(e)
        }
    })?;
    if token.is_snapshotuser == Some(1) {
        return Err(BindError::SnapshotUser);
    }
    if token.openid.is_empty() || token.openid.len() > 128 {
        return Err(BindError::Wechat(WechatError::Decode(
            "openid missing or too long".into(),
        )));
    }
    // WeChat sends one only for accounts linked to an Open Platform account, and only with
    // snsapi_userinfo; an empty one is none.
    let unionid = token.unionid.filter(|u| !u.is_empty());
    if unionid.as_ref().is_some_and(|u| u.len() > 128) {
        return Err(BindError::Wechat(WechatError::Decode(
            "unionid too long".into(),
        )));
    }
    let openid = token.openid;
    db::run_with(&state.pool, move |conn| {
        conn.transaction(|conn| bind_openid(conn, user_id, &openid, unionid.as_deref()))
    })
    .await?;
    crate::metrics::bind();
    tracing::info!(user.id = user_id, "WeChat account bound");
    Ok(())
}

/// Binds `openid` (with its `unionid`, if known) to the user and returns the username, inside
/// the caller's transaction. An openid bound to someone else is refused, never moved; a user
/// bound to another openid is refused too (unbind first); the same openid again changes
/// nothing but a missing unionid. Success revokes the user's other live bind states.
fn bind_openid(
    conn: &mut PgConnection,
    user_id: i64,
    openid: &str,
    unionid: Option<&str>,
) -> Result<String, BindError> {
    if db::users::find_by_openid(conn, openid)?.is_some_and(|owner| owner != user_id) {
        return Err(BindError::AlreadyBound);
    }
    let user = db::users::find_for_update(conn, user_id)?.ok_or(BindError::UserGone)?;
    let written = match (user.openid.as_deref(), unionid) {
        // Bound by a scan, say, which brings no unionid: a bind link completes the record.
        (Some(current), Some(unionid)) if current == openid => {
            db::users::fill_unionid(conn, user_id, unionid)
        }
        (Some(current), None) if current == openid => Ok(0),
        (Some(_), _) => return Err(BindError::AccountBoundElsewhere),
        (None, _) => db::users::bind_openid(conn, user_id, openid, unionid),
    };
    match written {
        Ok(_) => {}
        // Lost a race with another binding of the same openid, or (which WeChat never
        // answers) the unionid is another account's: the same person bound twice.
        Err(e) if db::is_unique_violation(&e) => return Err(BindError::AlreadyBound),
        Err(e) => return Err(e.into()),
    }
    db::bind_states::revoke_live(conn, user_id)?;
    Ok(user.username)
}

/// Binds the scanner of a QR code to the account its scene names, with the OAuth callback's
/// rules, inside the caller's transaction. Returns the text to reply with in WeChat; `None`
/// for QR codes that are not wxbind's. An error rolls the caller's transaction back, so the
/// state stays usable and WeChat's retry of the push tries again.
pub fn bind_by_scan(
    conn: &mut PgConnection,
    openid: &str,
    scene: &str,
) -> Result<Option<String>, BindError> {
    let Some(raw) = scene.strip_prefix(SCENE_PREFIX) else {
        return Ok(None);
    };
    let Ok(nonce) = BindState::parse(raw) else {
        return Ok(Some(EXPIRED_REPLY.into()));
    };
    let hash = nonce.hash();
    let Some(user_id) = db::bind_states::consume(conn, &hash)? else {
        return Ok(Some(EXPIRED_REPLY.into()));
    };
    // A scan pushes only the openid, never a unionid: that takes a code exchange.
    match bind_openid(conn, user_id, openid, None) {
        Ok(username) => {
            tracing::info!(user.id = user_id, "WeChat account bound by QR scan");
            Ok(Some(format!(
                "绑定成功：此微信已绑定账号 {username}。\nBound to account {username}."
            )))
        }
        Err(BindError::AlreadyBound) => {
            db::bind_states::release(conn, &hash)?;
            Ok(Some(
                "未绑定：此微信已绑定其他账号。\nNot bound: this WeChat account is bound to another user."
                    .into(),
            ))
        }
        Err(BindError::AccountBoundElsewhere) => {
            db::bind_states::release(conn, &hash)?;
            Ok(Some(
                "未绑定：该网站账号已绑定其他微信，请先在网站上解绑。\nNot bound: that account is bound to another WeChat account; unbind it on the website first."
                    .into(),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Removes the user's binding (nothing to do when there is none).
pub async fn unbind(state: &AppState, user_id: i64) -> Result<(), DbError> {
    db::run(&state.pool, move |conn| db::users::unbind(conn, user_id)).await?;
    tracing::info!("WeChat binding removed");
    Ok(())
}

const EXPIRED_REPLY: &str = "未绑定：二维码已失效或已使用，请在网站上刷新后重新扫码。\nNot bound: this QR code has expired or was used; get a new one on the website.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scene_carries_the_state_behind_the_prefix() {
        let state = BindState::generate();
        let scene = scene_of(&state);
        assert_eq!(scene.strip_prefix(SCENE_PREFIX), Some(state.as_ref()));
        assert!(scene.len() <= 64, "WeChat's scene_str limit: {scene}");
    }
}
