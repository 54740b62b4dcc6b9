//! The OAuth `state` nonce that names the account a WeChat authorization binds to.
use sha2::{Digest, Sha256};

use super::DomainError;

/// A state nonce: what WeChat allows (`[A-Za-z0-9]`, at most 128 bytes). `Debug` hides it:
/// until it is used, it binds whoever presents it to the account that asked for it.
#[derive(Clone, PartialEq, Eq)]
pub struct BindState(String);

impl std::fmt::Debug for BindState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BindState")
            .field(&crate::telemetry::Redacted(&self.0))
            .finish()
    }
}

/// 32 characters of 62 symbols: about 190 random bits.
const GENERATED_LEN: usize = 32;

impl BindState {
    /// A fresh random state.
    pub fn generate() -> Self {
        Self(super::random_alphanumeric(GENERATED_LEN))
    }

    /// Validates a state received from WeChat.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.len() > 128 || !raw.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(DomainError("state must be 1-128 letters and digits".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The value stored in the database: SHA-256 hex, so stored rows are not usable links.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl AsRef<str> for BindState {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_states_fit_wechat_rules_and_differ() {
        let a = BindState::generate();
        let b = BindState::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_ref().len(), 32);
        assert!(BindState::parse(a.as_ref()).is_ok());
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.as_ref());
    }

    #[test]
    fn parse_refuses_what_wechat_would_not_send() {
        for bad in ["", "abc-def", "a b", &"a".repeat(129), "état"] {
            assert!(BindState::parse(bad).is_err(), "{bad:?}");
        }
    }
}
