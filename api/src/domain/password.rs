//! New passwords, as set by `wxbind user add`.
use secrecy::{ExposeSecret, SecretString};

use super::DomainError;

/// A password of 8 to 1024 characters; never printed.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    /// Validates a new password.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError("password is empty".into()));
        }
        if raw.chars().count() < 8 {
            return Err(DomainError("password must be at least 8 characters".into()));
        }
        if raw.len() > 1024 {
            return Err(DomainError("password must be at most 1024 bytes".into()));
        }
        Ok(Self(raw.to_owned().into()))
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules() {
        assert!(Password::parse("").is_err());
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert!(!format!("{:?}", Password::parse("secret-pass").expect("ok")).contains("secret"));
    }
}
