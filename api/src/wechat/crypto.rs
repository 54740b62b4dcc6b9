//! WeChat's server-push security: the SHA-1 signatures (plaintext and safe mode) and the
//! AES-256-CBC message encryption of safe mode (消息加解密).
//!
//! Safe mode: key = base64(EncodingAESKey + "="), IV = the key's first 16 bytes, PKCS#7 padding
//! to 32-byte blocks, plaintext layout random(16) ‖ big-endian length(4) ‖ XML ‖ appid.
use aes::Aes256;
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// A 43-character EncodingAESKey plus "=" leaves non-zero trailing bits in its last symbol,
/// which WeChat's reference decoders ignore; a strict decoder would refuse real keys.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// WeChat pads to 32-byte blocks, not AES's 16.
const PAD_BLOCK: usize = 32;

/// `sha1(sort(parts).join(""))` as lowercase hex: the URL check signs token, timestamp and
/// nonce; safe mode adds the `Encrypt` element.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

/// Compares a received signature with the expected one in constant time.
pub fn signature_matches(received: &str, parts: &[&str]) -> bool {
    let expected = signature(parts);
    received.len() == expected.len() && bool::from(received.as_bytes().ct_eq(expected.as_bytes()))
}

/// Why a safe-mode message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The EncodingAESKey is not 43 base64 characters.
    #[error("EncodingAESKey must be 43 characters of base64")]
    InvalidKey,
    /// Not base64, not whole blocks, bad padding or a bad length field.
    #[error("the ciphertext does not decrypt")]
    Malformed,
    /// It decrypted, but for another official account.
    #[error("the message is for another appid")]
    WrongAppId,
}

/// The current EncodingAESKey (and, during a rotation, the previous one) of one account.
#[derive(Clone)]
pub struct MsgCrypt {
    keys: Vec<[u8; 32]>,
    app_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("keys", &self.keys.len())
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// Decodes a 43-character EncodingAESKey into the AES key.
pub fn decode_key(encoding_aes_key: &str) -> Result<[u8; 32], CryptoError> {
    if encoding_aes_key.len() != 43 {
        return Err(CryptoError::InvalidKey);
    }
    let bytes = KEY_BASE64
        .decode(format!("{encoding_aes_key}="))
        .map_err(|_| CryptoError::InvalidKey)?;
    bytes.try_into().map_err(|_| CryptoError::InvalidKey)
}

impl MsgCrypt {
    /// A crypt for `app_id` with the current key and an optional previous one.
    pub fn new(current: &str, previous: Option<&str>, app_id: &str) -> Result<Self, CryptoError> {
        let mut keys = vec![decode_key(current)?];
        if let Some(p) = previous {
            keys.push(decode_key(p)?);
        }
        Ok(Self {
            keys,
            app_id: app_id.to_owned(),
        })
    }

    /// Decrypts an `Encrypt` element: tries the current key, then the previous one.
    pub fn decrypt(&self, encrypted_b64: &str) -> Result<String, CryptoError> {
        let cipher = STANDARD
            .decode(encrypted_b64.trim())
            .map_err(|_| CryptoError::Malformed)?;
        let mut last = CryptoError::Malformed;
        for key in &self.keys {
            match open(key, &cipher) {
                Ok((xml, app_id)) if app_id == self.app_id => return Ok(xml),
                Ok(_) => last = CryptoError::WrongAppId,
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Encrypts a reply with the current key and 16 random bytes.
    pub fn encrypt(&self, xml: &str) -> String {
        let random = crate::domain::random_alphanumeric(16);
        self.encrypt_with_random(xml, random.as_bytes())
    }

    /// Encrypts with a given 16-byte prefix (deterministic, for the official test vectors).
    pub fn encrypt_with_random(&self, xml: &str, random: &[u8]) -> String {
        let key = &self.keys[0];
        let msg = xml.as_bytes();
        let mut plain = Vec::with_capacity(16 + 4 + msg.len() + self.app_id.len() + PAD_BLOCK);
        plain.extend_from_slice(random);
        plain.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(self.app_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(u8::try_from(pad).unwrap_or(32), pad));
        let len = plain.len();
        let encrypted = cbc::Encryptor::<Aes256>::new(key.into(), key[..16].into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        STANDARD.encode(encrypted)
    }

    /// The app id messages must carry.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

/// Decrypts and splits the plaintext into `(xml, appid)`.
fn open(key: &[u8; 32], cipher: &[u8]) -> Result<(String, String), CryptoError> {
    if cipher.is_empty() || cipher.len() % 16 != 0 {
        return Err(CryptoError::Malformed);
    }
    let mut buf = cipher.to_vec();
    let plain = cbc::Decryptor::<Aes256>::new(key.into(), key[..16].into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::Malformed)?;
    let pad = usize::from(*plain.last().ok_or(CryptoError::Malformed)?);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::Malformed);
    }
    let body = &plain[..plain.len() - pad];
    if body.len() < 20 {
        return Err(CryptoError::Malformed);
    }
    let len_bytes: [u8; 4] = body[16..20]
        .try_into()
        .map_err(|_| CryptoError::Malformed)?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| CryptoError::Malformed)?;
    let rest = &body[20..];
    if len > rest.len() {
        return Err(CryptoError::Malformed);
    }
    let xml = std::str::from_utf8(&rest[..len]).map_err(|_| CryptoError::Malformed)?;
    let app_id = std::str::from_utf8(&rest[len..]).map_err(|_| CryptoError::Malformed)?;
    Ok((xml.to_owned(), app_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from WeChat's official WXBizMsgCrypt samples (Java test, Python and C++ samples).
    const KEY_A: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn official_encryption_vector_with_fixed_random() {
        let c = MsgCrypt::new(KEY_A, None, "wxb11529c136998cb6").expect("key");
        assert_eq!(
            c.encrypt_with_random("我是中文abcd123", b"aaaabbbbccccdddd"),
            "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
        );
    }

    #[test]
    fn official_url_check_vector_signature_and_echostr() {
        let echostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
        assert!(signature_matches(
            "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
            &["QDG6eK", "1409659589", "263014780", echostr]
        ));
        let c = MsgCrypt::new(
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            None,
            "wx5823bf96d3bd56c7",
        )
        .expect("key");
        assert_eq!(c.decrypt(echostr).expect("decrypts"), "1616140317555161061");
    }

    const ENCRYPT_C: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

    #[test]
    fn official_decryption_vector() {
        assert!(signature_matches(
            "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
            &["spamtest", "1409735669", "1320562132", ENCRYPT_C]
        ));
        let c = MsgCrypt::new(KEY_A, None, "wx2c2769f8efd9abc2").expect("key");
        assert_eq!(
            c.decrypt(ENCRYPT_C).expect("decrypts"),
            "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n<CreateTime>1409735668</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[abcdteT]]></Content>\n<MsgId>6054768590064713728</MsgId>\n</xml>"
        );
    }

    #[test]
    fn wrong_appid_tampering_and_garbage_are_refused() {
        let other = MsgCrypt::new(KEY_A, None, "wxsomeoneelse").expect("key");
        assert_eq!(other.decrypt(ENCRYPT_C), Err(CryptoError::WrongAppId));
        let c = MsgCrypt::new(KEY_A, None, "wx2c2769f8efd9abc2").expect("key");
        let mut tampered = STANDARD.decode(ENCRYPT_C).expect("b64");
        let last = tampered.len() - 1;
        tampered[last] ^= 0x55;
        assert!(c.decrypt(&STANDARD.encode(&tampered)).is_err());
        assert_eq!(c.decrypt("!!!not-base64!!!"), Err(CryptoError::Malformed));
        assert_eq!(c.decrypt("YWJj"), Err(CryptoError::Malformed));
        assert!(c.decrypt("AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }

    #[test]
    fn round_trip_and_key_rotation() {
        let old = MsgCrypt::new(KEY_A, None, "wx1").expect("key");
        let new_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
        let rotated = MsgCrypt::new(new_key, Some(KEY_A), "wx1").expect("keys");
        let sealed = old.encrypt("<xml>hi 微信</xml>");
        assert_eq!(
            rotated.decrypt(&sealed).expect("previous key"),
            "<xml>hi 微信</xml>"
        );
        let sealed_new = rotated.encrypt("<xml>x</xml>");
        assert_eq!(
            rotated.decrypt(&sealed_new).expect("current key"),
            "<xml>x</xml>"
        );
        assert!(old.decrypt(&sealed_new).is_err());
    }

    #[test]
    fn keys_must_be_43_base64_characters() {
        assert_eq!(decode_key("abcde"), Err(CryptoError::InvalidKey));
        assert_eq!(decode_key(&"*".repeat(43)), Err(CryptoError::InvalidKey));
        assert!(decode_key(&"A".repeat(43)).is_ok());
    }

    #[test]
    fn plaintext_signature_is_sorted_sha1() {
        // sha1("1409304348pamtestxxxxxx"), the three parts sorted.
        let sig = signature(&["pamtest", "1409304348", "xxxxxx"]);
        assert_eq!(sig, hex::encode(Sha1::digest(b"1409304348pamtestxxxxxx")));
        assert!(signature_matches(
            &sig,
            &["xxxxxx", "pamtest", "1409304348"]
        ));
        assert!(!signature_matches(
            "wrong",
            &["pamtest", "1409304348", "xxxxxx"]
        ));
    }
}
