//! Template messages: queue one (`POST /api/messages`) and follow it (`GET /api/messages/{id}`).
//! Delivery happens in the worker.
use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::db::{self, messages::Message, messages::Queued, messages::QueuedRequest};
use crate::domain::{
    Delivery, MessageStatus, MessageUrl, Miniprogram, TemplateData, TemplateId, TemplateValue,
};
use crate::error::{ApiError, ErrorBody};
use crate::sending::{self, Content, SendRequest, SendRules};
use crate::state::AppState;
use crate::wechat::Wechat;

/// Largest accepted `POST /api/messages` body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A template message to queue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMessageRequest {
    /// Recipient; omitted means the caller. Only admins may name another user.
    pub user_id: Option<i64>,
    /// Template to use: 1-128 letters, digits, `_` or `-`; omitted means the server's
    /// `WECHAT_TEMPLATE_ID`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    pub template_id: Option<String>,
    /// Page the message opens when tapped: an absolute http(s) URL of at most 1024 bytes,
    /// without credentials, spaces or control characters.
    #[schema(
        example = "https://example.com/orders/42",
        max_length = 1024,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?:[^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*$"
    )]
    pub url: Option<String>,
    /// Mini-program page the message opens; WeChat opens it instead of `url` when both are
    /// given (clients too old for mini programs open `url`). Non-admins may only name appids
    /// in `WXBIND_MINIPROGRAM_APPIDS`.
    #[serde(default, deserialize_with = "miniprogram_field")]
    pub miniprogram: Option<MiniprogramPage>,
    /// Template fields: key → `{value}` (described in `data_schema`).
    #[schema(schema_with = data_schema)]
    pub data: BTreeMap<String, TemplateValue>,
    /// Makes retries safe: the same key from the same sender returns the first message.
    /// 1-128 printable ASCII characters, no spaces.
    #[schema(example = "order-42-shipped", pattern = "^[!-~]{1,128}$")]
    pub idempotency_key: Option<String>,
    /// Not sent before this time (RFC 3339, at most 30 days ahead; a past time means now).
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours (`WXBIND_QUIET_HOURS`) too. Admins and API keys only.
    #[serde(default)]
    pub urgent: bool,
}

/// The schema of `data`: 1-32 fields named by 1-32 letters, digits or `_`, each a
/// [`TemplateValue`] (what `TemplateData::parse` accepts). Written out because the derive has
/// no way to state a map's key pattern.
fn data_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::Ref;
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let value = AdditionalProperties::RefOr(Ref::from_schema_name("TemplateValue").into());
    #[allow(deprecated)] // `example`, as the derive writes for every other schema here
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Template fields: key → `{value}`; 1-32 of them, each key 1-32 letters, digits or `_`.\n\
             Once the template list is synced, the keys and values must fit the template's\n\
             keywords (`GET /api/templates`): every key of a category template and none it\n\
             lacks, each value by its type's rule.",
        ))
        .additional_properties(Some(value))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9_]{1,32}$")),
        ))
        .min_properties(Some(1))
        .max_properties(Some(32))
        .example(Some(serde_json::json!({
            "thing1": {"value": "无线耳机"},
            "character_string2": {"value": "202612020001"},
            "time3": {"value": "2026年12月2日 15:01"},
            "amount4": {"value": "¥199.00"},
            "phrase5": {"value": "已发货"}
        })))
        .build()
}

/// A page of a mini program bound to the official account, as WeChat's template send takes it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MiniprogramPage {
    /// The mini program's appid: `wx` and 16 letters or digits.
    #[schema(example = "wx1234567890abcdef", pattern = "^wx[A-Za-z0-9]{16}$")]
    pub appid: String,
    /// The page, with an optional query; a path inside the mini program (no scheme or host),
    /// at most 1024 bytes.
    #[schema(
        example = "pages/order/detail?id=42",
        min_length = 1,
        max_length = 1024
    )]
    pub pagepath: String,
}

/// Reads `miniprogram` so that every shape error names the field: serde's own message for a
/// nested struct says only what it expected (`struct MiniprogramPage`), not where.
fn miniprogram_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MiniprogramPage>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => serde_json::from_value(raw)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("miniprogram: {e}"))),
    }
}

/// A message and its delivery state.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    /// Message id (also WeChat's `client_msg_id`).
    pub id: Uuid,
    /// Recipient.
    pub user_id: i64,
    /// Template used.
    pub template_id: String,
    /// Page the message opens.
    pub url: Option<String>,
    /// Mini-program page the message opens (WeChat prefers it to `url`).
    #[schema(value_type = Option<MiniprogramPage>)]
    pub miniprogram: Option<serde_json::Value>,
    /// `queued`, `sending`, `sent`, `failed`, or `under_review`: WeChat holds it for content
    /// review (errcode 40252, its errmsg kept). A message under review is never resent; it
    /// ends `failed` with delivery `blocked` if review blocks it, or `sent` once an hour has
    /// passed without it being listed as blocked (WeChat delivers approved ones itself).
    pub status: MessageStatus,
    /// Send attempts so far.
    pub attempts: i32,
    /// WeChat's msgid once sent.
    pub msgid: Option<i64>,
    /// WeChat's errcode of the last failed attempt (null for non-WeChat failures).
    pub errcode: Option<i32>,
    /// Why the last attempt failed.
    pub errmsg: Option<String>,
    /// The idempotency key given at creation.
    pub idempotency_key: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When WeChat accepted it (or took it for review).
    pub sent_at: Option<DateTime<Utc>>,
    /// WeChat's delivery report: `unknown` until it arrives, then `delivered`, `blocked`
    /// (the user blocked the account, or content review blocked the message) or `failed`.
    #[schema(example = "unknown")]
    pub delivery: String,
    /// Why wxbind itself ended it `failed`: `frequency_cap` (the recipient had
    /// `WXBIND_MAX_MESSAGES_PER_USER_PER_DAY` messages that day) or `cancelled` (its broadcast
    /// was cancelled); null otherwise (WeChat's refusals have `errcode` and `errmsg`).
    #[schema(example = json!(null))]
    pub reason: Option<String>,
    /// Not sent before this time.
    pub send_at: Option<DateTime<Utc>>,
    /// Sent during quiet hours too.
    pub urgent: bool,
    /// The broadcast it belongs to.
    pub broadcast_id: Option<Uuid>,
}

impl From<Message> for MessageResponse {
    fn from(m: Message) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            template_id: m.template_id,
            url: m.url,
            miniprogram: m.miniprogram,
            status: m.status,
            attempts: m.attempts,
            msgid: m.msgid,
            errcode: m.errcode,
            errmsg: m.errmsg,
            idempotency_key: m.idempotency_key,
            created_at: m.created_at,
            sent_at: m.sent_at,
            delivery: Delivery::shown(m.delivery).to_owned(),
            reason: m.reason,
            send_at: m.send_at,
            urgent: m.urgent,
            broadcast_id: m.broadcast_id,
        }
    }
}

struct ValidMessage {
    user_id: i64,
    template_id: TemplateId,
    url: Option<MessageUrl>,
    miniprogram: Option<Miniprogram>,
    data: TemplateData,
    idempotency_key: Option<String>,
    send_at: Option<DateTime<Utc>>,
    urgent: bool,
}

impl ValidMessage {
    fn parse(
        req: CreateMessageRequest,
        caller: i64,
        default_template: Option<&str>,
    ) -> Result<Self, ApiError> {
        let content = Content::parse(
            req.template_id.as_deref(),
            default_template,
            req.url.as_deref(),
            req.miniprogram
                .as_ref()
                .map(|m| (m.appid.as_str(), m.pagepath.as_str())),
        )?;
        let data = TemplateData::parse(req.data).map_err(|e| ApiError::InvalidRequest(e.0))?;
        sending::check_idempotency_key(req.idempotency_key.as_deref())?;
        Ok(Self {
            user_id: req.user_id.unwrap_or(caller),
            template_id: content.template_id,
            url: content.url,
            miniprogram: content.miniprogram,
            data,
            idempotency_key: req.idempotency_key,
            send_at: req.send_at,
            urgent: req.urgent,
        })
    }
}

/// Queue a template message to a bound user.
///
/// Answers 202 once the message is stored; a worker delivers it. Poll
/// `GET /api/messages/{id}` for the outcome. Repeating a request with the same
/// `idempotency_key` returns the first message with 200 and never sends twice. Non-admin
/// callers message only themselves, with the default template, link only to hosts in
/// `WXBIND_URL_HOSTS` and open only mini programs in `WXBIND_MINIPROGRAM_APPIDS`.
///
/// Once this server has synced the official account's template list, `data` is checked
/// against the template before anything is queued, with WeChat's rules: every problem is
/// listed in `details`. Until then (WeChat unreachable since start, see `templates_synced`
/// in `/api/health`) messages are queued unchecked and WeChat judges them.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    request_body = CreateMessageRequest,
    responses(
        (status = 202, description = "Queued", body = MessageResponse, links(
            ("GetMessage" = (operation_id = "get_message", parameters(("id" = "$response.body#/id")), description = "Follow its delivery"))
        )),
        (status = 200, description = "Already queued under this idempotency key", body = MessageResponse, links(
            ("GetMessage" = (operation_id = "get_message", parameters(("id" = "$response.body#/id")), description = "Follow its delivery"))
        )),
        (status = 400, description = "`invalid_request`: bad data, template, url, miniprogram or key (the message names the field); `invalid_template_data`: `data` does not fit the template (`details` lists every problem); `unknown_template`: not, or no longer, one of the account's templates", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may message other users, choose the template, link to hosts outside `WXBIND_URL_HOSTS` or open mini programs outside `WXBIND_MINIPROGRAM_APPIDS`; the message names the field", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 409, description = "`not_bound`: the recipient has no WeChat binding", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 64 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: over `WXBIND_USER_SENDS_PER_MINUTE` (non-admins) or `WXBIND_MAX_QUEUED_PER_SENDER`; wait `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[post("/messages")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn create_message(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
    body: web::Json<CreateMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    wechat.get()?;
    let msg = ValidMessage::parse(
        body.into_inner(),
        auth.id,
        state
            .config
            .wechat
            .as_ref()
            .and_then(|w| w.default_template_id.as_deref()),
    )?;
    let wechat_config = state.config.wechat.as_ref();
    sending::authorize(
        &auth,
        &SendRequest {
            user_id: msg.user_id,
            template_id: &msg.template_id,
            url: msg.url.as_ref(),
            miniprogram: msg.miniprogram.as_ref(),
        },
        &SendRules {
            default_template: wechat_config.and_then(|w| w.default_template_id.as_deref()),
            url_hosts: &state.config.http.url_hosts,
            miniprogram_appids: &state.config.http.miniprogram_appids,
        },
    )?;
    sending::check_timing(&auth, msg.send_at, msg.urgent)?;
    // After authorize: a caller who may not use a template learns nothing about it.
    state.templates.check(msg.template_id.as_ref(), &msg.data)?;
    state
        .limits
        .admit(&state.pool, auth.id, auth.may_send_to_anyone())
        .await?;
    let queued = state
        .messages
        .submit(QueuedRequest {
            id: Uuid::new_v4(),
            sender_id: auth.id,
            user_id: msg.user_id,
            template_id: msg.template_id.as_ref().to_owned(),
            url: msg.url.as_ref().map(|u| u.as_ref().to_owned()),
            data: msg.data.to_json(),
            idempotency_key: msg.idempotency_key,
            miniprogram: msg.miniprogram.as_ref().map(Miniprogram::to_json),
            send_at: msg.send_at,
            urgent: msg.urgent,
        })
        .await?;
    let message = match queued {
        Queued::Created(m) => m,
        Queued::Existing(m) => return Ok(HttpResponse::Ok().json(MessageResponse::from(m))),
        Queued::NoRecipient => return Err(ApiError::UserNotFound),
        Queued::NotBound => return Err(ApiError::NotBound),
        Queued::NoSender => {
            return Err(ApiError::Unauthorized(
                "the account of this token no longer exists",
            ));
        }
    };
    crate::metrics::message_accepted();
    state.limits.accepted(auth.id);
    state.wake_worker.notify_one();
    tracing::info!(message.id = %message.id, "message queued");
    Ok(HttpResponse::Accepted().json(MessageResponse::from(message)))
}

/// A message and its delivery state.
///
/// Visible to its sender, its recipient and admins; to anyone else it does not exist (404).
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "The message", body = MessageResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`message_not_found`", body = ErrorBody),
    )
)]
#[get("/messages/{id}")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn get_message(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::MessageNotFound)?;
    let message = db::run(&state.pool, move |conn| db::messages::find(conn, id))
        .await?
        .filter(|m| auth.is_admin() || m.sender_id == auth.id || m.user_id == auth.id)
        .ok_or(ApiError::MessageNotFound)?;
    Ok(HttpResponse::Ok().json(MessageResponse::from(message)))
}
