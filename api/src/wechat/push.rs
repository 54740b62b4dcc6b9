//! Server-push security, both ends of the wire: opening a push WeChat sent (signature,
//! safe-mode decryption, the appid inside) and sealing the passive reply, plus signing a push
//! and reading its reply the way WeChat does, for the sandbox. One module holds the envelope
//! rules, so the service and its simulator cannot disagree about them.
use secrecy::{ExposeSecret, SecretString};

use super::PushConfig;
use super::crypto::{self, CryptoError, MsgCrypt};
use super::events::{self, Push};
use crate::telemetry::redacted_debug;

/// What verifying a push needs: the token and, in safe mode, the keys.
pub struct PushSecurity {
    token: SecretString,
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
            crypt,
        })
    }

    fn token(&self) -> &str {
        self.token.expose_secret()
    }

    /// The server-URL check: true when `signature` signs `timestamp` and `nonce`.
    pub fn verify_url(&self, signature: &str, timestamp: &str, nonce: &str) -> bool {
        crypto::signature_matches(signature, &[self.token(), timestamp, nonce])
    }

    /// Verifies and, in safe mode, decrypts a push, then parses it.
    pub fn open(&self, params: &PushParams<'_>, body: &str) -> Result<Opened, PushError> {
        let encrypted = params.encrypt_type == Some("aes");
        let xml = if encrypted {
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
            crypt.decrypt(sealed).map_err(malformed)?
        } else {
            let sig = params.signature.unwrap_or_default();
            if !self.verify_url(sig, params.timestamp, params.nonce) {
                return Err(PushError::BadSignature);
            }
            body.to_owned()
        };
        let push = events::parse_fields(&xml)
            .and_then(Push::from_fields)
            .map_err(malformed)?;
        Ok(Opened { push, encrypted })
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

fn malformed(e: impl std::fmt::Display) -> PushError {
    PushError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const EVENT: &str = "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[bind_x]]></EventKey></xml>";

    fn security(aes: bool) -> PushSecurity {
        PushSecurity::new(
            &PushConfig {
                token: SecretString::from("testtoken".to_owned()),
                aes_key: aes.then(|| SecretString::from(KEY.to_owned())),
                aes_key_previous: None,
            },
            "wxtestappid",
        )
        .expect("valid keys")
    }

    fn params(signed: &SignedPush) -> Vec<(&'static str, &str)> {
        signed.query.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn open(s: &PushSecurity, signed: &SignedPush) -> Result<Opened, PushError> {
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
        )
    }

    #[test]
    fn what_the_wechat_side_signs_the_service_side_opens_in_both_modes() {
        for aes in [false, true] {
            let s = security(aes);
            let signed = s.sign_push(EVENT, "gh_test", 1_700_000_000);
            let opened = open(&s, &signed).expect("opens");
            assert_eq!(opened.encrypted, aes);
            assert_eq!(opened.push.from, "oUser");
            let reply = s.reply(&opened, "hello", 1_700_000_001);
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
        let mut signed = s.sign_push(EVENT, "gh_test", 1_700_000_000);
        signed.body = signed
            .body
            .replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A");
        assert!(matches!(open(&s, &signed), Err(PushError::BadSignature)));
        let plain = security(false);
        let mut signed = plain.sign_push(EVENT, "gh_test", 1_700_000_000);
        signed.query.retain(|(k, _)| *k != "signature");
        assert!(matches!(
            open(&plain, &signed),
            Err(PushError::BadSignature)
        ));
    }

    #[test]
    fn safe_mode_without_a_key_is_malformed_not_accepted() {
        let sealed = security(true).sign_push(EVENT, "gh_test", 1_700_000_000);
        assert!(matches!(
            open(&security(false), &sealed),
            Err(PushError::Malformed(_))
        ));
    }
}
