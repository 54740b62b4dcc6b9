//! Account names.
use super::DomainError;

/// A username: 1–64 characters of letters, digits and `_ . - @`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates a raw username.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@');
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(ok_char) {
            return Err(DomainError(
                "username must be 1-64 characters of letters, digits, '_', '.', '-' or '@'".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The public user id: md5 hex of the username (an identifier, never a secret).
    pub fn uid(&self) -> String {
        public_uid(&self.0)
    }
}

/// The public user id of a stored username: md5 hex (an identifier, never a secret).
pub fn public_uid(username: &str) -> String {
    format!("{:x}", md5::compute(username.as_bytes()))
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_rejects_the_rest() {
        for ok in ["alice", "a", "bob.smith-2@example", &"x".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in ["", " alice", "al ice", "名字", &"x".repeat(65), "a/b"] {
            assert!(Username::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn uid_is_the_md5_hex_of_the_name() {
        let u = Username::parse("alice").expect("valid");
        assert_eq!(u.uid(), "6384e2b2184bcbf58eccf10ca7a6563c");
    }
}
