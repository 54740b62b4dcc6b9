//! Who the caller is: argon2id password hashes, HS256 access tokens (JWT) with the algorithm
//! pinned, the [`AuthUser`] extractor that makes a handler authenticated, and the limits on
//! failed logins per client address (counted in PostgreSQL, `db::login_failures`).
use std::future::ready;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, Block, Params, PasswordHasher, Version};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Defined with the other stored values; tokens and [`AuthUser`] carry it, so it is named
/// here too.
pub use crate::domain::Role;

/// Hashes a password with argon2id and a random salt (PHC string). CPU-heavy: call it on
/// the blocking pool.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::Error::new(e).context("hashing password"))
}

/// Argon2's working memory (about 19 MiB with the default costs), kept by a thread that checks
/// many passwords and reused for each. The crate would allocate and free it for every check;
/// glibc keeps such large, 64-byte aligned blocks resident in fragmented arena heaps, and two
/// threads' checks grew the process past 400 MiB (the login-flood bench).
#[derive(Default)]
pub struct HashMemory(Vec<Block>);

/// The most working memory a [`HashMemory`] keeps: four times the default costs'. A stored hash
/// with larger costs is checked in memory of its own, freed afterwards.
const MAX_KEPT_BLOCKS: usize = 4 * Params::DEFAULT.block_count();

/// Checks a password against a stored PHC hash. CPU-heavy (and about 19 MiB): logins call it
/// through [`crate::verifier`], which bounds how many run at once.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    verify_password_in(&mut HashMemory::default(), password, stored_hash)
}

/// [`verify_password`] in reused working memory. Does what argon2's `PasswordVerifier` does
/// (the hash's algorithm, version, costs, salt and output length, compared in constant time),
/// with `hash_password_into_with_memory` so that no memory is allocated per check.
pub fn verify_password_in(memory: &mut HashMemory, password: &str, stored_hash: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored_hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        argon2::Algorithm::try_from(hash.algorithm.as_str()),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let mut output = [0u8; 64];
    let Some(computed) = output.get_mut(..expected.len()) else {
        return false;
    };
    let blocks = params.block_count();
    let mut own = Vec::new();
    let working = if blocks <= MAX_KEPT_BLOCKS {
        if memory.0.len() < blocks {
            memory.0.resize(blocks, Block::default());
        }
        &mut memory.0[..blocks]
    } else {
        own.resize(blocks, Block::default());
        &mut own[..]
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, computed, working)
        .is_ok()
        && bool::from(expected.as_bytes().ct_eq(computed))
}

/// Verifies against a fixed hash so that an unknown username costs as much as a wrong
/// password: timing does not reveal which usernames exist.
pub fn verify_dummy(memory: &mut HashMemory, password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let hash = DUMMY.get_or_init(|| {
        hash_password("wxbind-dummy-password").unwrap_or_else(|_| String::from("$invalid"))
    });
    let _ = verify_password_in(memory, password, hash);
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id, as a string (RFC 7519).
    pub sub: String,
    /// The user's role when the token was issued.
    pub role: Role,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
}

/// `iss` of every token.
pub const ISSUER: &str = "wxbind";
/// `aud` of every token.
pub const AUDIENCE: &str = "wxbind-api";

/// Keys and rules for issuing and checking access tokens; created once per process.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    previous: Option<DecodingKey>,
    validation: Validation,
    ttl: Duration,
}

/// A freshly issued token.
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl JwtKeys {
    /// Keys from the configured secret, plus the previous one during a rotation
    /// (`JWT_SECRET_PREVIOUS`): tokens it signed are still accepted, new ones use `secret`.
    pub fn new(secret: &SecretString, previous: Option<&SecretString>, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        // Only HS256 is accepted: no `none`, no algorithm switching.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            previous: previous.map(|p| DecodingKey::from_secret(p.expose_secret().as_bytes())),
            validation,
            ttl,
        }
    }

    /// Issues a token for `user_id`.
    pub fn issue(&self, user_id: i64, role: Role) -> Result<IssuedToken, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = self.ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + i64::try_from(ttl).unwrap_or(i64::MAX / 2),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("signing a JWT")))?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
        })
    }

    /// Checks signature, algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let decode = |key| jsonwebtoken::decode::<Claims>(token, key, &self.validation);
        let data = match (decode(&self.decoding), &self.previous) {
            (Err(e), Some(previous))
                if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) =>
            {
                decode(previous)
            }
            (result, _) => result,
        }
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::Unauthorized("access token expired; log in again")
            }
            _ => ApiError::Unauthorized("invalid access token"),
        })?;
        // This service never issues a token from the future or one that lives longer than its
        // TTL: such a token was minted by whoever holds a key (a leaked previous key above all),
        // and must not outlive the rotation that retired it.
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 4);
        let claims = &data.claims;
        if claims.iat > now + leeway || claims.exp.saturating_sub(claims.iat) > ttl + leeway {
            return Err(ApiError::Unauthorized("invalid access token"));
        }
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("invalid access token"))?;
        Ok(AuthUser {
            id,
            role: data.claims.role,
            key: None,
        })
    }
}

/// The authenticated caller. Taking it as a handler argument is what makes the route
/// require `Authorization: Bearer <jwt>` (or an API key, `Bearer wxk_…`).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The caller's user id (for a key, its service principal's).
    pub id: i64,
    /// The caller's role (a key with scope `admin` is an admin).
    pub role: Role,
    /// The key's scope when the caller is an API key.
    pub key: Option<crate::keys::Scope>,
}

impl AuthUser {
    /// True for admins (admin users and keys with scope `admin`).
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses non-admins with `forbidden` and `why`.
    pub fn require_admin(&self, why: &'static str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(why))
        }
    }

    /// May send to any bound user, with any template and link: admins, and keys with scope
    /// `send`.
    pub fn may_send_to_anyone(&self) -> bool {
        self.is_admin() || self.key == Some(crate::keys::Scope::Send)
    }
}

/// What a key with scope `send` may call (method and route pattern); anything else is 403.
const SEND_KEY_ROUTES: [(&str, &str); 9] = [
    ("POST", "/api/messages"),
    ("GET", "/api/messages"),
    ("GET", "/api/messages/{id}"),
    ("GET", "/api/messages/{id}/history"),
    ("GET", "/api/templates"),
    ("POST", "/api/broadcasts"),
    ("GET", "/api/broadcasts/{id}"),
    ("GET", "/api/broadcasts/{id}/messages"),
    ("POST", "/api/broadcasts/{id}/cancel"),
];

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = match bearer(req) {
            Ok(t) => t.to_owned(),
            Err(e) => return Box::pin(ready(Err(e))),
        };
        if !token.starts_with(crate::keys::PREFIX) {
            return Box::pin(ready(authenticate(req, &token)));
        }
        let state = req.app_data::<web::Data<crate::state::AppState>>().cloned();
        let route = (req.method().as_str().to_owned(), req.match_pattern());
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("AppState missing from app data"))
            })?;
            let Some(key) = state.keys.check(&state.pool, &token).await? else {
                return Err(ApiError::Unauthorized("unknown or revoked API key"));
            };
            let user = AuthUser {
                id: key.user_id,
                role: match key.scope {
                    crate::keys::Scope::Admin => Role::Admin,
                    crate::keys::Scope::Send => Role::User,
                },
                key: Some(key.scope),
            };
            if key.scope == crate::keys::Scope::Send {
                let allowed = SEND_KEY_ROUTES
                    .iter()
                    .any(|(m, p)| route.0 == *m && route.1.as_deref() == Some(*p));
                if !allowed {
                    return Err(ApiError::Forbidden(
                        "an API key with scope send may only send messages and broadcasts, read the ones it sent and list the templates",
                    ));
                }
            }
            Ok(user)
        })
    }
}

/// The bearer token of the request.
fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer token",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "Authorization must be 'Bearer <token>'",
        ))
}

fn authenticate(req: &HttpRequest, token: &str) -> Result<AuthUser, ApiError> {
    let keys = req
        .app_data::<web::Data<JwtKeys>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("JwtKeys missing from app data")))?;
    keys.verify(token)
}

/// Failed logins one client address may have within [`FAILURE_WINDOW`] for one username.
/// Counted per address, never per username alone: failures from elsewhere must not lock the
/// right password out.
pub const MAX_FAILURES_PER_USERNAME: i64 = 10;
/// Failed logins one client address may have within [`FAILURE_WINDOW`], all usernames
/// together: trying many names from one place is guessing too.
pub const MAX_FAILURES_PER_ADDRESS: i64 = 30;
/// The sliding window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a failed login is counted against: the client's address (IPv6 by its /64, see
/// `client_ip::throttle_key`) and the username tried, as a SHA-256 hex: what people type
/// there includes passwords entered into the wrong field, and no row should keep those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureKey {
    /// The address as counted.
    pub address: String,
    /// SHA-256 hex of the username as typed.
    pub username_hash: String,
}

impl FailureKey {
    /// The key of a login for `username` from `client`.
    pub fn new(client: IpAddr, username: &str) -> Self {
        use sha2::{Digest, Sha256};
        Self {
            address: crate::client_ip::throttle_key(client),
            username_hash: hex::encode(Sha256::digest(username.as_bytes())),
        }
    }
}

/// Refuses another attempt (429 `too_many_attempts`) once the client address has reached
/// either limit in the window: `for_username` failures for this username, `for_address` for
/// all. Decided before the user is looked up, so the answer says nothing about who exists.
pub fn check_failures(for_username: i64, for_address: i64) -> Result<(), ApiError> {
    if for_username >= MAX_FAILURES_PER_USERNAME || for_address >= MAX_FAILURES_PER_ADDRESS {
        return Err(ApiError::TooManyAttempts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(
            &SecretString::from(secret.to_owned()),
            None,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn reused_memory_verifies_exactly_as_the_argon2_crate_does() {
        use argon2::PasswordVerifier;
        let mut memory = HashMemory::default();
        let small = |m, t, p, len| Params::new(m, t, p, Some(len)).expect("params");
        let hashers = [
            Argon2::default(),
            // Smaller and larger than what the memory holds, other algorithms and versions,
            // several lanes and a longer output.
            Argon2::new(
                argon2::Algorithm::Argon2id,
                Version::V0x13,
                small(64, 1, 1, 32),
            ),
            Argon2::new(
                argon2::Algorithm::Argon2i,
                Version::V0x10,
                small(256, 3, 2, 64),
            ),
            Argon2::new(
                argon2::Algorithm::Argon2d,
                Version::V0x13,
                small(8192, 2, 4, 16),
            ),
            Argon2::default(),
        ];
        for hasher in hashers {
            let stored = hasher
                .hash_password(b"correct horse")
                .expect("hash")
                .to_string();
            let parsed = PasswordHash::new(&stored).expect("phc");
            for pw in ["correct horse", "wrong horse", ""] {
                let theirs = Argon2::default()
                    .verify_password(pw.as_bytes(), &parsed)
                    .is_ok();
                assert_eq!(
                    verify_password_in(&mut memory, pw, &stored),
                    theirs,
                    "{pw:?} against {stored}"
                );
                assert_eq!(theirs, pw == "correct horse");
            }
            let (head, last) = stored.split_at(stored.len() - 1);
            let tampered = format!("{head}{}", if last == "A" { "B" } else { "A" });
            assert!(!verify_password_in(&mut memory, "correct horse", &tampered));
        }
        assert_eq!(memory.0.len(), Params::DEFAULT.block_count().max(8192));
    }

    #[test]
    fn tokens_verify_only_with_the_same_key() {
        let k = keys("test-secret-test-secret-test-secret!");
        let t = k.issue(7, Role::Admin).expect("issue");
        let u = k.verify(&t.token).expect("valid");
        assert_eq!((u.id, u.role), (7, Role::Admin));
        let other = keys("another-secret-another-secret-12345");
        assert!(other.verify(&t.token).is_err());
    }

    #[test]
    fn tokens_of_the_previous_key_verify_during_a_rotation() {
        let old = SecretString::from("old-secret-old-secret-old-secret-1".to_owned());
        let new = SecretString::from("new-secret-new-secret-new-secret-2".to_owned());
        let ttl = Duration::from_secs(60);
        let before = JwtKeys::new(&old, None, ttl)
            .issue(7, Role::User)
            .expect("issue");
        let rotated = JwtKeys::new(&new, Some(&old), ttl);
        assert_eq!(rotated.verify(&before.token).expect("still valid").id, 7);
        let after = rotated.issue(8, Role::User).expect("issue");
        assert!(JwtKeys::new(&old, None, ttl).verify(&after.token).is_err());
        let forged = JwtKeys::new(&SecretString::from("x".repeat(40)), None, ttl)
            .issue(9, Role::Admin)
            .expect("issue");
        assert!(rotated.verify(&forged.token).is_err());
    }

    #[test]
    fn tokens_this_service_would_never_issue_are_refused() {
        let secret = SecretString::from("a-secret-a-secret-a-secret-a-secret".to_owned());
        let keys = JwtKeys::new(&secret, None, Duration::from_secs(60));
        let now = chrono::Utc::now().timestamp();
        let mint = |iat: i64, exp: i64| {
            let claims = Claims {
                sub: "7".into(),
                role: Role::Admin,
                iat,
                exp,
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
                .expect("encode")
        };
        assert!(keys.verify(&mint(now, now + 60)).is_ok());
        assert!(
            keys.verify(&mint(now, now + 10 * 365 * 86400)).is_err(),
            "too long"
        );
        assert!(
            keys.verify(&mint(now + 3600, now + 3660)).is_err(),
            "from the future"
        );
    }

    #[test]
    fn either_limit_refuses_the_next_attempt() {
        assert!(check_failures(9, 29).is_ok());
        assert!(matches!(
            check_failures(10, 10),
            Err(ApiError::TooManyAttempts)
        ));
        assert!(matches!(
            check_failures(0, 30),
            Err(ApiError::TooManyAttempts)
        ));
    }

    #[test]
    fn failure_keys_hash_the_username_and_group_ipv6_by_64() {
        let v6 = |s: &str| s.parse::<IpAddr>().expect("ip");
        let a = FailureKey::new(v6("2001:db8:1:2::1"), "alice");
        let b = FailureKey::new(v6("2001:db8:1:2::ffff"), "alice");
        assert_eq!(a, b);
        assert_eq!(a.username_hash.len(), 64);
        assert!(!a.username_hash.contains("alice"));
        assert_ne!(a, FailureKey::new(v6("2001:db8:1:2::1"), "Alice"));
        assert_eq!(
            FailureKey::new(v6("203.0.113.9"), "alice").address,
            "203.0.113.9"
        );
    }
}
