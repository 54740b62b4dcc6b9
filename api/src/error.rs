//! The API's one error type and its wire table: every failure a client can see is an `ApiError`,
//! answered as `{"error":{"code","message"}}` with the status below (plus `details`, one entry
//! per problem, where a request has several). Internal causes are logged here, once, and never
//! sent.
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wechat::WechatError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input; the message says which field and why.
    #[error("{0}")]
    InvalidRequest(String),
    /// A message's `data` does not fit its template; every problem is listed.
    #[error("{0}")]
    InvalidTemplateData(crate::templates::Misfit),
    /// The message's template is not (or no longer) the official account's.
    #[error("{0}")]
    UnknownTemplate(crate::templates::UnknownTemplate),
    /// Unknown username or wrong password (deliberately indistinguishable).
    #[error("username or password is wrong")]
    InvalidCredentials,
    /// No, malformed, forged or expired bearer token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// No valid refresh session (expired, logged out, or no cookie).
    #[error("no valid session; log in again")]
    SessionExpired,
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The named user does not exist.
    #[error("user not found")]
    UserNotFound,
    /// The message does not exist or is not visible to the caller.
    #[error("message not found")]
    MessageNotFound,
    /// Only a failed message can be retried; it has this status.
    #[error("only a failed message can be retried; this one is {0}")]
    NotFailed(&'static str),
    /// No live API key of that name.
    #[error("no live API key of that name")]
    KeyNotFound,
    /// An API key of that name exists (or existed).
    #[error("an API key of that name exists or existed; choose another name")]
    KeyExists,
    /// No webhook endpoint with that id.
    #[error("webhook not found")]
    WebhookNotFound,
    /// No broadcast with that id visible to the caller.
    #[error("broadcast not found")]
    BroadcastNotFound,
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists, with other methods.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method that was used.
        method: String,
        /// Comma-separated methods the route accepts.
        allow: String,
    },
    /// The recipient has no WeChat binding.
    #[error("the recipient has not bound a WeChat account")]
    NotBound,
    /// The WeChat account is already bound to another user.
    #[error("this WeChat account is already bound to another user")]
    AlreadyBound,
    /// The caller's account is bound to another WeChat account.
    #[error(
        "this account is already bound to another WeChat account; unbind it first (DELETE /api/binding)"
    )]
    AccountBoundElsewhere,
    /// OAuth `state` missing, unknown, expired or already used.
    #[error("the bind link is invalid, expired or already used; request a new one")]
    InvalidState,
    /// A WeChat push or URL check that is not authentic: its signature does not verify, it is
    /// plaintext where safe mode is required, its timestamp is out of the window, or its
    /// signed timestamp and nonce came before with another body.
    #[error(
        "signature does not verify, or the push is plaintext where safe mode is required, stale or replayed"
    )]
    InvalidSignature,
    /// The user refused authorization in WeChat (no `code`).
    #[error("the WeChat user did not authorize the binding")]
    AuthorizationDenied,
    /// WeChat rejected the OAuth code (invalid, used or expired).
    #[error("WeChat rejected the authorization code; scan the bind link again")]
    InvalidCode,
    /// WeChat answered with a virtual (snapshot) user, which cannot be bound.
    #[error(
        "WeChat returned a snapshot (virtual) user; open the link in WeChat and tap 'use full service'"
    )]
    SnapshotUser,
    /// The request body is larger than allowed.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The sender is over a send limit.
    #[error("{reason}")]
    TooManyRequests {
        /// Seconds until a retry can succeed.
        retry_after: u64,
        /// Which limit.
        reason: &'static str,
    },
    /// WeChat allows no more quota resets this month.
    #[error(
        "WeChat allows 10 quota resets a month and none is left; sending resumes at midnight Beijing time"
    )]
    QuotaResetLimit,
    /// Too many failed logins from the client's address (for one username, or for all).
    #[error("too many failed login attempts; wait a minute and try again")]
    TooManyAttempts,
    /// WeChat credentials are not configured on this server.
    #[error("WeChat is not configured on this server (WECHAT_APP_ID is unset)")]
    WechatNotConfigured,
    /// WeChat failed, timed out or answered an unexpected error.
    #[error("WeChat is unavailable; try again later")]
    WechatUnavailable(#[source] WechatError),
    /// The database (or another dependency) cannot be reached.
    #[error("the service is temporarily unavailable; try again later")]
    Unavailable(#[source] anyhow::Error),
    /// Too many logins are being verified at once; the client should retry shortly.
    #[error("too many logins are being checked at once; retry in a second")]
    Busy,
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The contract's machine-readable code, which also fixes the status.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::InvalidTemplateData(_) => ErrorCode::InvalidTemplateData,
            Self::UnknownTemplate(_) => ErrorCode::UnknownTemplate,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::SessionExpired => ErrorCode::SessionExpired,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::UserNotFound => ErrorCode::UserNotFound,
            Self::MessageNotFound => ErrorCode::MessageNotFound,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::KeyNotFound => ErrorCode::KeyNotFound,
            Self::KeyExists => ErrorCode::KeyExists,
            Self::WebhookNotFound => ErrorCode::WebhookNotFound,
            Self::BroadcastNotFound => ErrorCode::BroadcastNotFound,
            Self::NotFailed(_) => ErrorCode::NotFailed,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::NotBound => ErrorCode::NotBound,
            Self::AlreadyBound | Self::AccountBoundElsewhere => ErrorCode::AlreadyBound,
            Self::InvalidState => ErrorCode::InvalidState,
            Self::InvalidSignature => ErrorCode::InvalidSignature,
            Self::AuthorizationDenied => ErrorCode::AuthorizationDenied,
            Self::InvalidCode => ErrorCode::InvalidCode,
            Self::SnapshotUser => ErrorCode::SnapshotUser,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::TooManyAttempts => ErrorCode::TooManyAttempts,
            Self::QuotaResetLimit => ErrorCode::QuotaResetLimit,
            Self::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            Self::WechatNotConfigured => ErrorCode::WechatNotConfigured,
            Self::WechatUnavailable(_) => ErrorCode::WechatUnavailable,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Busy => ErrorCode::Busy,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Shorthand for [`ApiError::InvalidRequest`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}

/// Declares [`ErrorCode`] from one table, a row per code: variant, wire string, HTTP status,
/// meaning. `ALL`, `as_str`, `status` and `meaning` are all generated from it, so a code
/// cannot exist without its status and its line in the catalogue.
macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:ident, $meaning:literal;)*) => {
        /// A code the contract promises, with its HTTP status and meaning: the wire table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = concat!("`", $code, "`: ", $meaning)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in catalogue order (by status, as the README lists them).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The stable snake_case string clients branch on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The HTTP status every error with this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// What the code means, for the catalogue in the spec and the README.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                }
            }
        }
    };
}

// The wire table: one row per code, in catalogue order.
error_codes! {
    InvalidRequest => "invalid_request", BAD_REQUEST,
        "Malformed or invalid input; the message names the field.";
    InvalidTemplateData => "invalid_template_data", BAD_REQUEST,
        "The message's `data` does not fit its template (a key it lacks or has not, a `const` key, `first`/`remark` on a category template, a value its type refuses); `details` lists every problem.";
    UnknownTemplate => "unknown_template", BAD_REQUEST,
        "The template is not, or no longer, one of the official account's templates (`GET /api/templates`).";
    InvalidState => "invalid_state", BAD_REQUEST,
        "The bind link's state is missing, unknown, expired or already used.";
    AuthorizationDenied => "authorization_denied", BAD_REQUEST,
        "The WeChat user refused the authorization.";
    InvalidCode => "invalid_code", BAD_REQUEST,
        "WeChat rejected the OAuth code (invalid, used or expired).";
    SnapshotUser => "snapshot_user", BAD_REQUEST,
        "WeChat answered for a virtual snapshot user, which cannot be bound.";
    InvalidCredentials => "invalid_credentials", UNAUTHORIZED,
        "Unknown username or wrong password.";
    Unauthorized => "unauthorized", UNAUTHORIZED,
        "Missing, malformed, forged or expired access token.";
    SessionExpired => "session_expired", UNAUTHORIZED,
        "No valid refresh session: expired, logged out, or no cookie.";
    InvalidSignature => "invalid_signature", UNAUTHORIZED,
        "A WeChat push or URL check that does not verify: bad signature, plaintext where safe mode is required, timestamp over 300 s off, or a replayed nonce.";
    Forbidden => "forbidden", FORBIDDEN,
        "Authenticated but not allowed: only admins message other users, choose the template, link outside `WXBIND_URL_HOSTS`, open mini programs outside `WXBIND_MINIPROGRAM_APPIDS`, look users up, sync the templates, see and reset the quota, manage API keys and webhooks or read the audit log; only admins and API keys broadcast or send `urgent` messages; a key with scope `send` only sends, broadcasts and reads what it sent; the message names the field.";
    UserNotFound => "user_not_found", NOT_FOUND,
        "The named user does not exist.";
    MessageNotFound => "message_not_found", NOT_FOUND,
        "No such message, or not visible to the caller.";
    KeyNotFound => "key_not_found", NOT_FOUND,
        "No live API key of that name.";
    WebhookNotFound => "webhook_not_found", NOT_FOUND,
        "No webhook endpoint with that id.";
    BroadcastNotFound => "broadcast_not_found", NOT_FOUND,
        "No such broadcast, or not visible to the caller.";
    NotFound => "not_found", NOT_FOUND,
        "No such route.";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED,
        "The route exists with other methods (see `Allow`).";
    NotBound => "not_bound", CONFLICT,
        "The recipient has no WeChat binding.";
    NotFailed => "not_failed", CONFLICT,
        "Only a `failed` message can be retried.";
    KeyExists => "key_exists", CONFLICT,
        "An API key of that name exists or existed (names are not reused).";
    AlreadyBound => "already_bound", CONFLICT,
        "The WeChat account is bound to another user, or the caller's account to another WeChat account (unbind first).";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE,
        "The body is over the limit (64 KiB).";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "The body is not `application/json`.";
    TooManyAttempts => "too_many_attempts", TOO_MANY_REQUESTS,
        "Too many failed logins from this client address: 10 a minute for one username, or 30 for all.";
    TooManyRequests => "too_many_requests", TOO_MANY_REQUESTS,
        "Over a send limit: `WXBIND_USER_SENDS_PER_MINUTE` accepted messages a minute (non-admins), or `WXBIND_MAX_QUEUED_PER_SENDER` waiting ones; retry after `Retry-After` seconds.";
    QuotaResetLimit => "quota_reset_limit", TOO_MANY_REQUESTS,
        "WeChat allows 10 quota resets a month and none is left (48006); sending resumes at midnight Beijing time.";
    Internal => "internal", INTERNAL_SERVER_ERROR,
        "A bug or unexpected failure; the cause is in the server log.";
    WechatUnavailable => "wechat_unavailable", BAD_GATEWAY,
        "WeChat failed, timed out or answered an unexpected error.";
    WechatNotConfigured => "wechat_not_configured", SERVICE_UNAVAILABLE,
        "This server has no WeChat credentials (or no WECHAT_TOKEN).";
    Unavailable => "unavailable", SERVICE_UNAVAILABLE,
        "The database is unreachable or migrations are pending.";
    Busy => "busy", SERVICE_UNAVAILABLE,
        "The server is at capacity (too many logins being verified, or writes queued); retry after `Retry-After` seconds.";
}

/// The catalogue as a Markdown table; the spec's description and the README carry it verbatim.
pub fn catalogue_markdown() -> String {
    let mut out = String::from("| code | status | meaning |\n| --- | --- | --- |\n");
    for code in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.meaning()
        ));
    }
    out
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // `busy` is load being shed as designed, not a fault: under a flood, logging each one
        // would cost more than refusing it (it is counted in the metrics instead).
        if status.is_server_error() && !matches!(self, Self::Busy) {
            // The one place a 5xx cause is logged; the client only gets the fixed message.
            tracing::error!(error.code = self.code().as_str(), error.cause = %ErrorChain(self), "request failed");
        }
        let mut builder = HttpResponse::build(status);
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                builder.insert_header((header::ALLOW, allow.as_str()));
            }
            Self::Unauthorized(_) => {
                builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::TooManyAttempts => {
                builder.insert_header((header::RETRY_AFTER, "60"));
            }
            Self::TooManyRequests { retry_after, .. } => {
                builder.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            // The queue holds about a second of work: by then it has drained.
            Self::Busy => {
                builder.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        let mut body = ErrorBody::new(self.code().as_str(), self.to_string());
        if let Self::InvalidTemplateData(misfit) = self {
            body.error.details = Some(misfit.problems.clone());
        }
        builder.json(body)
    }
}

/// Formats an error with its whole `source()` chain on one line.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Machine-readable code plus a message for the developer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_state`.
    #[schema(example = "invalid_request")]
    pub code: String,
    /// Human-readable explanation, for developers (not end users).
    pub message: String,
    /// Every problem of the request, one per `data` key, for `invalid_template_data`; absent
    /// from other errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<crate::domain::KeyProblem>>,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                details: None,
            },
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.into())
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<crate::templates::CheckError> for ApiError {
    fn from(e: crate::templates::CheckError) -> Self {
        use crate::templates::CheckError;
        match e {
            CheckError::Unknown(u) => Self::UnknownTemplate(u),
            CheckError::Misfit(m) => Self::InvalidTemplateData(m),
        }
    }
}

impl From<crate::templates::SyncError> for ApiError {
    fn from(e: crate::templates::SyncError) -> Self {
        use crate::templates::SyncError;
        match e {
            SyncError::Wechat(e) => e.into(),
            SyncError::Db(e) => e.into(),
        }
    }
}

impl From<crate::quota::QuotaError> for ApiError {
    fn from(e: crate::quota::QuotaError) -> Self {
        use crate::quota::QuotaError;
        match e {
            QuotaError::Call(e) => e.into(),
            QuotaError::Db(e) => e.into(),
            QuotaError::ResetLimit => Self::QuotaResetLimit,
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(e: crate::limits::LimitError) -> Self {
        use crate::limits::LimitError;
        match e {
            LimitError::Refused {
                retry_after,
                reason,
            } => Self::TooManyRequests {
                retry_after,
                reason,
            },
            LimitError::Db(e) => e.into(),
        }
    }
}

impl From<crate::batch::BatchError> for ApiError {
    fn from(e: crate::batch::BatchError) -> Self {
        use crate::batch::BatchError;
        match e {
            BatchError::Write { .. } | BatchError::Panicked(_) | BatchError::NoOutcome(_) => {
                Self::Unavailable(e.into())
            }
            BatchError::Full(_) => Self::Busy,
            BatchError::Stopped(_) => Self::Internal(e.into()),
        }
    }
}

impl From<crate::wechat::CallError> for ApiError {
    fn from(e: crate::wechat::CallError) -> Self {
        use crate::wechat::{CallError, TokenError};
        match e {
            CallError::Wechat(w) | CallError::Token(TokenError::Wechat(w)) => {
                Self::WechatUnavailable(w)
            }
            CallError::Token(store @ TokenError::Store(_)) => Self::Unavailable(store.into()),
        }
    }
}

impl From<crate::binding::BindError> for ApiError {
    fn from(e: crate::binding::BindError) -> Self {
        use crate::binding::BindError;
        match e {
            BindError::InvalidState => Self::InvalidState,
            BindError::AuthorizationDenied => Self::AuthorizationDenied,
            BindError::InvalidCode => Self::InvalidCode,
            BindError::SnapshotUser => Self::SnapshotUser,
            BindError::AlreadyBound => Self::AlreadyBound,
            BindError::AccountBoundElsewhere => Self::AccountBoundElsewhere,
            BindError::UserGone => Self::UserNotFound,
            BindError::Wechat(w) => Self::WechatUnavailable(w),
            BindError::Call(e) => e.into(),
            BindError::Batch(e) => e.into(),
            BindError::Db(e) => e.into(),
        }
    }
}

impl From<crate::wechat::push::PushError> for ApiError {
    fn from(e: crate::wechat::push::PushError) -> Self {
        use crate::wechat::push::PushError;
        match e {
            PushError::BadSignature | PushError::PlaintextRefused | PushError::OutsideWindow(_) => {
                Self::InvalidSignature
            }
            PushError::Malformed(why) => Self::InvalidRequest(why),
        }
    }
}

impl From<crate::pushes::AcceptError> for ApiError {
    fn from(e: crate::pushes::AcceptError) -> Self {
        use crate::pushes::AcceptError;
        match e {
            AcceptError::Replayed => Self::InvalidSignature,
            AcceptError::Apply(e) => e.into(),
            AcceptError::Db(e) => e.into(),
        }
    }
}

impl From<crate::wechat::NotConfigured> for ApiError {
    fn from(_: crate::wechat::NotConfigured) -> Self {
        Self::WechatNotConfigured
    }
}

impl From<crate::verifier::VerifyError> for ApiError {
    fn from(e: crate::verifier::VerifyError) -> Self {
        use crate::verifier::VerifyError;
        match e {
            VerifyError::Busy => Self::Busy,
            VerifyError::Lost => Self::Internal(e.into()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::Internal(anyhow::Error::new(e).context("a blocking task did not finish"))
    }
}

/// Turns body-extractor failures into contract errors (413, 415, 400).
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => {
            ApiError::PayloadTooLarge(*limit)
        }
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Deserialize(e) => ApiError::invalid(format!("invalid JSON body: {e}")),
        other => ApiError::invalid(format!("could not read the JSON body: {other}")),
    };
    api.into()
}

/// Turns query-string failures into `invalid_request`.
pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::invalid(format!("invalid query string: {err}")).into()
}

/// Turns path-parameter failures into `invalid_request`.
pub fn path_error_handler(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("invalid path parameter: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn error_bodies_have_code_and_message_and_hide_internal_causes() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2 leaked?"));
        let resp = err.error_response();
        assert_eq!(resp.status(), 500);
        let body = to_bytes(resp.into_body()).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "internal");
        assert_eq!(json["error"]["message"], "internal error");
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
        assert!(json["error"].get("details").is_none(), "no details: {json}");
    }

    #[actix_web::test]
    async fn a_template_misfit_lists_every_problem_in_details_and_the_message() {
        let problem = |key: &str, problem: &str| crate::domain::KeyProblem {
            key: key.into(),
            problem: problem.into(),
        };
        let err = ApiError::InvalidTemplateData(crate::templates::Misfit {
            template_id: "T".into(),
            problems: vec![problem("thing1", "too long"), problem("time2", "missing")],
        });
        let resp = err.error_response();
        assert_eq!(resp.status(), 400);
        let body = to_bytes(resp.into_body()).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"]["code"], "invalid_template_data");
        assert_eq!(
            json["error"]["message"],
            "data does not fit template T: data.thing1: too long; data.time2: missing"
        );
        assert_eq!(
            json["error"]["details"],
            serde_json::json!([
                {"key": "thing1", "problem": "too long"},
                {"key": "time2", "problem": "missing"},
            ])
        );
    }

    #[test]
    fn the_readme_carries_the_catalogue_verbatim() {
        let readme = include_str!("../../README.md");
        let table = catalogue_markdown();
        assert!(
            readme.contains(&table),
            "README's error table differs from error::catalogue_markdown():\n{table}"
        );
    }

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !s.starts_with('_')
                    && !s.ends_with('_')
                    && !s.contains("__"),
                "not snake_case: {s:?}"
            );
        }
    }

    #[test]
    fn the_wire_table_matches_the_contract() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::invalid("x"), 400, "invalid_request"),
            (
                ApiError::UnknownTemplate(crate::templates::UnknownTemplate {
                    template_id: "T".into(),
                    gone_at: None,
                }),
                400,
                "unknown_template",
            ),
            (ApiError::InvalidCredentials, 401, "invalid_credentials"),
            (ApiError::Unauthorized("x"), 401, "unauthorized"),
            (ApiError::Forbidden("x"), 403, "forbidden"),
            (ApiError::UserNotFound, 404, "user_not_found"),
            (ApiError::NotBound, 409, "not_bound"),
            (ApiError::AlreadyBound, 409, "already_bound"),
            (ApiError::InvalidState, 400, "invalid_state"),
            (ApiError::AuthorizationDenied, 400, "authorization_denied"),
            (ApiError::InvalidCode, 400, "invalid_code"),
            (ApiError::SnapshotUser, 400, "snapshot_user"),
            (ApiError::PayloadTooLarge(1), 413, "payload_too_large"),
            (ApiError::TooManyAttempts, 429, "too_many_attempts"),
            (ApiError::WechatNotConfigured, 503, "wechat_not_configured"),
            (ApiError::Busy, 503, "busy"),
            (
                ApiError::WechatUnavailable(WechatError::Timeout),
                502,
                "wechat_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{code}");
            assert_eq!(err.code().as_str(), code);
            let listed = ErrorCode::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .expect("catalogued");
            assert_eq!(
                listed.status().as_u16(),
                status,
                "catalogue status of {code}"
            );
        }
    }
}
