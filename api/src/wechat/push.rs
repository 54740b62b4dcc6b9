//! Server-push security, both ends of the wire: opening a push WeChat sent (signature,
//! safe-mode decryption, the appid inside) and sealing the passive reply, plus signing a push
//! and reading its reply the way WeChat does, for the sandbox. One module holds the envelope
//! rules, so the service and its simulator cannot disagree about them.
//!
//! The rules that make a push hard to forge live here too: with a key configured only safe
//! mode is accepted (unless `WECHAT_PUSH_MODE=compat`), because plaintext mode's `signature`
//! never covers the body; and a push (or URL check) whose timestamp is more than
//! [`PUSH_WINDOW_SECS`] from this server's clock is refused, so a signed URL seen once is only
//! worth anything for minutes. Within the window, `pushes` and `db::push_nonces` see to it that
//! a signed `(timestamp, nonce)` carries one body only.
use secrecy::{ExposeSecret, SecretString};

use super::crypto::{self, CryptoError, MsgCrypt};
use super::events::{self, Push};
use super::{PushConfig, PushMode};
use crate::telemetry::redacted_debug;

/// How far (in seconds, either way) a push's `timestamp` may be from this server's clock.
/// WeChat signs with the time it sends and retries within seconds; five minutes leaves room
/// for clock drift and slow networks and is the lifetime of a leaked signed URL.
pub const PUSH_WINDOW_SECS: i64 = 300;

/// What verifying a push needs: the token, the mode and, in safe and compatible mode, the keys.
pub struct PushSecurity {
    token: SecretString,
    mode: PushMode,
    crypt: Option<MsgCrypt>,
}

/// The query parameters WeChat adds to a push.
#[derive(Clone, Copy)]
pub struct PushParams<'a> {
    /// sha1 of the sorted token, timestamp and nonce.
    pub signature: Option<&'a str>,
    /// Seconds since the epoch, as sent.
    pub timestamp: &'a str,
    /// Random number, as sent.
    pub nonce: &'a str,
    /// `aes` in safe and compatible mode.
    pub encrypt_type: Option<&'a str>,
    /// Safe mode: sha1 of the sorted token, timestamp, nonce and `Encrypt`.
    pub msg_signature: Option<&'a str>,
}
redacted_debug!(PushParams<'a> {
    signature: redacted,
    timestamp,
    nonce: redacted,
    encrypt_type,
    msg_signature: redacted
});

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The signature (or safe mode's `msg_signature`) does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A plaintext push to a server in safe mode: its signature would not cover the body.
    #[error("plaintext push refused: this server accepts safe-mode pushes only")]
    PlaintextRefused,
    /// The timestamp is not a number or is too far from this server's clock.
    #[error("timestamp {0:?} is not within {PUSH_WINDOW_SECS} seconds of this server's clock")]
    OutsideWindow(String),
    /// Malformed XML, undecryptable, for another appid, or a mode this server cannot open.
    #[error("{0}")]
    Malformed(String),
}

/// A verified push, and how it arrived (a reply goes back the same way).
#[derive(Debug, Clone)]
pub struct Opened {
    /// The push.
    pub push: Push,
    /// Whether it came in safe mode.
    pub encrypted: bool,
    /// The signed timestamp, within the window of the `now` it was opened at.
    pub timestamp: i64,
}

/// A push signed the way WeChat signs it: the query parameters to add and the body.
pub struct SignedPush {
    /// `signature`, `timestamp`, `nonce` and, in safe mode, `encrypt_type` and `msg_signature`.
    pub query: Vec<(&'static str, String)>,
    /// The XML body (the safe-mode envelope when encrypted).
    pub body: String,
}

/// A message encrypted and signed for safe mode.
struct Sealed {
    encrypt: String,
    msg_signature: String,
}

impl PushSecurity {
    /// From the configured token and keys for `app_id`.
    pub fn new(config: &PushConfig, app_id: &str) -> Result<Self, CryptoError> {
        let crypt = config
            .aes_key
            .as_ref()
            .map(|key| {
                MsgCrypt::new(
                    key.expose_secret(),
                    config.aes_key_previous.as_ref().map(|k| k.expose_secret()),
                    app_id,
                )
            })
            .transpose()?;
        Ok(Self {
            token: config.token.clone(),
            mode: config.mode(),
            crypt,
        })
    }

    fn token(&self) -> &str {
        self.token.expose_secret()
    }

    /// The server-URL check at `now` (seconds since the epoch): the signed timestamp when
    /// `signature` signs `timestamp` and `nonce` and the timestamp is within the window.
    /// WeChat sends its current time here as well, and the URL check's signature is exactly a
    /// plaintext push's, so it gets the same window.
    pub fn verify_url(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        now: i64,
    ) -> Result<i64, PushError> {
        if !crypto::signature_matches(signature, &[self.token(), timestamp, nonce]) {
            return Err(PushError::BadSignature);
        }
        within_window(timestamp, now)
    }

    /// Verifies a push at `now` (seconds since the epoch) and, in safe mode, decrypts it, then
    /// parses it. The mode is checked first (a plaintext push to a safe-mode server is refused
    /// however well it is signed), then the signature, then the timestamp, so a refusal for
    /// the time is about an authentic push (a clock to fix, or a replay); nothing stale is
    /// decrypted.
    pub fn open(&self, params: &PushParams<'_>, body: &str, now: i64) -> Result<Opened, PushError> {
        let encrypted = params.encrypt_type == Some("aes");
        let (xml, timestamp) = if encrypted {
            let crypt = self.crypt.as_ref().ok_or_else(|| {
                PushError::Malformed(
                    "safe mode push, but WECHAT_ENCODING_AES_KEY is unset".to_owned(),
                )
            })?;
            let envelope = events::parse_fields(body).map_err(malformed)?;
            let sealed = envelope
                .get("Encrypt")
                .ok_or_else(|| PushError::Malformed("Encrypt element missing".to_owned()))?;
            let sig = params.msg_signature.unwrap_or_default();
            if !crypto::signature_matches(
                sig,
                &[self.token(), params.timestamp, params.nonce, sealed],
            ) {
                return Err(PushError::BadSignature);
            }
            let timestamp = within_window(params.timestamp, now)?;
            (crypt.decrypt(sealed).map_err(malformed)?, timestamp)
        } else {
            if self.mode == PushMode::Safe {
                return Err(PushError::PlaintextRefused);
            }
            let sig = params.signature.unwrap_or_default();
            if !crypto::signature_matches(sig, &[self.token(), params.timestamp, params.nonce]) {
                return Err(PushError::BadSignature);
            }
            (body.to_owned(), within_window(params.timestamp, now)?)
        };
        let push = events::parse_fields(&xml)
            .and_then(Push::from_fields)
            .map_err(malformed)?;
        Ok(Opened {
            push,
            encrypted,
            timestamp,
        })
    }

    /// The passive text reply to `opened`, sealed when the push came in safe mode.
    pub fn reply(&self, opened: &Opened, text: &str, now: i64) -> String {
        let reply = events::text_reply(&opened.push, text, now);
        match (&self.crypt, opened.encrypted) {
            (Some(crypt), true) => {
                let (timestamp, nonce) = (now.to_string(), crate::domain::random_alphanumeric(10));
                let sealed = self.seal(crypt, &reply, &timestamp, &nonce);
                format!(
                    "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce>{}</Nonce></xml>",
                    events::cdata(&sealed.encrypt),
                    events::cdata(&sealed.msg_signature),
                    events::cdata(&nonce)
                )
            }
            _ => reply,
        }
    }

    /// Signs `xml` as WeChat signs a push to `to_user`'s server (sealed in safe mode).
    pub fn sign_push(&self, xml: &str, to_user: &str, now: i64) -> SignedPush {
        let (timestamp, nonce) = (now.to_string(), crate::domain::random_alphanumeric(9));
        let signature = crypto::signature(&[self.token(), &timestamp, &nonce]);
        let mut query = vec![("signature", signature)];
        let body = match &self.crypt {
            Some(crypt) => {
                let sealed = self.seal(crypt, xml, &timestamp, &nonce);
                query.push(("encrypt_type", "aes".to_owned()));
                query.push(("msg_signature", sealed.msg_signature));
                format!(
                    "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt></xml>",
                    events::cdata(to_user),
                    events::cdata(&sealed.encrypt)
                )
            }
            None => xml.to_owned(),
        };
        query.push(("timestamp", timestamp));
        query.push(("nonce", nonce));
        SignedPush { query, body }
    }

    /// Reads a server's answer to a push as WeChat does: `None` for `success` (or nothing),
    /// else the passive reply's text content, decrypted in safe mode.
    pub fn read_reply(&self, reply: &str) -> Result<Option<String>, PushError> {
        if reply.trim() == "success" || reply.trim().is_empty() {
            return Ok(None);
        }
        let fields = events::parse_fields(reply).map_err(malformed)?;
        let inner = match (fields.get("Encrypt"), &self.crypt) {
            (Some(sealed), Some(crypt)) => crypt.decrypt(sealed).map_err(malformed)?,
            _ => reply.to_owned(),
        };
        let content = events::parse_fields(&inner).map_err(malformed)?;
        Ok(content.get("Content").cloned())
    }

    fn seal(&self, crypt: &MsgCrypt, xml: &str, timestamp: &str, nonce: &str) -> Sealed {
        let encrypt = crypt.encrypt(xml);
        let msg_signature = crypto::signature(&[self.token(), timestamp, nonce, &encrypt]);
        Sealed {
            encrypt,
            msg_signature,
        }
    }
}

/// The signed `timestamp` when it is within [`PUSH_WINDOW_SECS`] of `now`, either way (a
/// server whose clock runs behind WeChat's sees pushes from its future).
fn within_window(timestamp: &str, now: i64) -> Result<i64, PushError> {
    // Digits only, no sign or leading zero: the signature covers the text, and the nonce claim
    // must not see one signed value under two spellings.
    let canonical = !timestamp.is_empty()
        && timestamp.len() <= 19
        && timestamp.bytes().all(|b| b.is_ascii_digit())
        && !timestamp.starts_with('0');
    match timestamp.parse::<i64>() {
        Ok(t) if canonical && t.abs_diff(now) <= PUSH_WINDOW_SECS.unsigned_abs() => Ok(t),
        _ => Err(PushError::OutsideWindow(timestamp.to_owned())),
    }
}

fn malformed(e: impl std::fmt::Display) -> PushError {
    PushError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const EVENT: &str = "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[bind_x]]></EventKey></xml>";

    const SENT: i64 = 1_700_000_000;

    fn security(aes: bool) -> PushSecurity {
        security_in(if aes {
            PushMode::Safe
        } else {
            PushMode::Plaintext
        })
    }

    fn security_in(mode: PushMode) -> PushSecurity {
        PushSecurity::new(
            &PushConfig {
                token: SecretString::from("testtoken".to_owned()),
                aes_key: (mode != PushMode::Plaintext).then(|| SecretString::from(KEY.to_owned())),
                aes_key_previous: None,
                compat: mode == PushMode::Compat,
            },
            "wxtestappid",
        )
        .expect("valid keys")
    }

    fn params(signed: &SignedPush) -> Vec<(&'static str, &str)> {
        signed.query.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// Opens `signed` one second after it was sent.
    fn open(s: &PushSecurity, signed: &SignedPush) -> Result<Opened, PushError> {
        open_at(s, signed, SENT + 1)
    }

    fn open_at(s: &PushSecurity, signed: &SignedPush, now: i64) -> Result<Opened, PushError> {
        let q = params(signed);
        let get = |k: &str| q.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        s.open(
            &PushParams {
                signature: get("signature"),
                timestamp: get("timestamp").unwrap_or_default(),
                nonce: get("nonce").unwrap_or_default(),
                encrypt_type: get("encrypt_type"),
                msg_signature: get("msg_signature"),
            },
            &signed.body,
            now,
        )
    }

    #[test]
    fn what_the_wechat_side_signs_the_service_side_opens_in_both_modes() {
        for aes in [false, true] {
            let s = security(aes);
            let signed = s.sign_push(EVENT, "gh_test", SENT);
            let opened = open(&s, &signed).expect("opens");
            assert_eq!(opened.encrypted, aes);
            assert_eq!(opened.push.from, "oUser");
            assert_eq!(opened.timestamp, SENT);
            let reply = s.reply(&opened, "hello", SENT + 1);
            assert_eq!(
                s.read_reply(&reply).expect("reads").as_deref(),
                Some("hello")
            );
            assert_eq!(aes, reply.contains("<Encrypt>"), "sealed only in safe mode");
        }
    }

    #[test]
    fn a_tampered_push_is_refused() {
        let s = security(true);
        let mut signed = s.sign_push(EVENT, "gh_test", SENT);
        signed.body = signed
            .body
            .replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A");
        assert!(matches!(open(&s, &signed), Err(PushError::BadSignature)));
        let plain = security(false);
        let mut signed = plain.sign_push(EVENT, "gh_test", SENT);
        signed.query.retain(|(k, _)| *k != "signature");
        assert!(matches!(
            open(&plain, &signed),
            Err(PushError::BadSignature)
        ));
    }

    #[test]
    fn safe_mode_without_a_key_is_malformed_not_accepted() {
        let sealed = security(true).sign_push(EVENT, "gh_test", SENT);
        assert!(matches!(
            open(&security(false), &sealed),
            Err(PushError::Malformed(_))
        ));
    }

    #[test]
    fn open_is_refused_when_a_plaintext_push_reaches_a_safe_mode_server() {
        // Signed with the right token, as anyone who saw one signed URL can: the body is theirs.
        let plaintext = security_in(PushMode::Plaintext).sign_push(EVENT, "gh_test", SENT);
        assert!(matches!(
            open(&security_in(PushMode::Safe), &plaintext),
            Err(PushError::PlaintextRefused)
        ));
        // Safe mode's own push without `encrypt_type` is plaintext too, and refused as such.
        let mut stripped = security_in(PushMode::Safe).sign_push(EVENT, "gh_test", SENT);
        stripped.query.retain(|(k, _)| *k != "encrypt_type");
        assert!(matches!(
            open(&security_in(PushMode::Safe), &stripped),
            Err(PushError::PlaintextRefused)
        ));
    }

    #[test]
    fn open_is_refused_when_a_safe_mode_push_has_no_msg_signature() {
        for mode in [PushMode::Safe, PushMode::Compat] {
            let s = security_in(mode);
            let mut signed = s.sign_push(EVENT, "gh_test", SENT);
            signed.query.retain(|(k, _)| *k != "msg_signature");
            assert!(
                matches!(open(&s, &signed), Err(PushError::BadSignature)),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn open_accepts_both_modes_when_the_mode_is_compat() {
        let compat = security_in(PushMode::Compat);
        let plaintext = security_in(PushMode::Plaintext).sign_push(EVENT, "gh_test", SENT);
        let opened = open(&compat, &plaintext).expect("plaintext accepted in compat mode");
        assert!(!opened.encrypted, "so the reply goes back in plaintext");
        let sealed = compat.sign_push(EVENT, "gh_test", SENT);
        assert!(
            open(&compat, &sealed)
                .expect("safe mode accepted")
                .encrypted
        );
        // A bad plaintext signature is still a bad signature.
        let mut forged = security_in(PushMode::Plaintext).sign_push(EVENT, "gh_test", SENT);
        forged.query.retain(|(k, _)| *k != "signature");
        assert!(matches!(
            open(&compat, &forged),
            Err(PushError::BadSignature)
        ));
    }

    #[test]
    fn open_is_refused_when_the_timestamp_is_more_than_300_seconds_off() {
        for mode in [PushMode::Plaintext, PushMode::Compat, PushMode::Safe] {
            let s = security_in(mode);
            let signed = s.sign_push(EVENT, "gh_test", SENT);
            for now in [SENT + 301, SENT - 301, i64::MIN, i64::MAX] {
                assert!(
                    matches!(open_at(&s, &signed, now), Err(PushError::OutsideWindow(_))),
                    "{mode:?} at {now}"
                );
            }
            for now in [SENT + 300, SENT - 300, SENT] {
                let opened = open_at(&s, &signed, now).expect("within the window");
                assert_eq!(opened.timestamp, SENT, "{mode:?} at {now}");
            }
        }
    }

    #[test]
    fn open_is_refused_when_the_timestamp_is_not_a_number() {
        let s = security_in(PushMode::Plaintext);
        for timestamp in ["", "17e8", "1700000000.5", "+-1"] {
            let signature = crypto::signature(&["testtoken", timestamp, "n"]);
            let params = PushParams {
                signature: Some(&signature),
                timestamp,
                nonce: "n",
                encrypt_type: None,
                msg_signature: None,
            };
            assert!(
                matches!(
                    s.open(&params, EVENT, SENT),
                    Err(PushError::OutsideWindow(_))
                ),
                "{timestamp:?}"
            );
        }
    }

    #[test]
    fn verify_url_is_refused_when_unsigned_or_outside_the_window() {
        let s = security_in(PushMode::Safe);
        let ts = SENT.to_string();
        let signature = crypto::signature(&["testtoken", &ts, "n"]);
        assert_eq!(
            s.verify_url(&signature, &ts, "n", SENT + 300).ok(),
            Some(SENT)
        );
        assert!(matches!(
            s.verify_url(&signature, &ts, "n", SENT + 301),
            Err(PushError::OutsideWindow(_))
        ));
        assert!(matches!(
            s.verify_url("0000", &ts, "n", SENT),
            Err(PushError::BadSignature)
        ));
    }
}
