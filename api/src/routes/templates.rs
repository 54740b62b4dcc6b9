//! The official account's templates: `GET /api/templates` lists them with the keywords each
//! takes (what a SPA builds its message form from), `POST /api/templates/sync` reads them from
//! WeChat again at once (admins only). The rules live in `templates`.
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::auth::AuthUser;
use crate::db::{self, templates::Template};
use crate::domain::{Keyword, TemplateKind, TemplateShape};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::templates;
use crate::wechat::Wechat;

/// A template of the official account and the keywords it takes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateResponse {
    /// WeChat's template id: what `template_id` in `POST /api/messages` names.
    #[schema(example = "SANDBOX_TEMPLATE")]
    pub template_id: String,
    /// Its title.
    #[schema(example = "订单发货通知")]
    pub title: String,
    /// Its content as WeChat lists it: one `标签：{{key.DATA}}` per keyword.
    #[schema(example = "商品名称：{{thing1.DATA}}\n发货时间：{{time3.DATA}}")]
    pub content: String,
    /// WeChat's example of a filled-in message.
    #[schema(example = "商品名称：无线耳机\n发货时间：2026年12月2日 15:01")]
    pub example: String,
    /// `category` (typed keys, each value checked by its type) or `legacy` (free keys).
    pub kind: TemplateKind,
    /// The keys `data` takes, in the content's order, read from `content`.
    pub keywords: Vec<Keyword>,
    /// Whether this is the server's default template (`WECHAT_TEMPLATE_ID`): what a message
    /// without `template_id` uses, and the only one non-admins may send.
    pub default: bool,
    /// When WeChat stopped knowing it (gone from its list, or a send refused with 40037);
    /// null while it can be sent.
    pub gone_at: Option<DateTime<Utc>>,
}

impl TemplateResponse {
    fn new(t: Template, default_template: Option<&str>) -> Self {
        let shape = TemplateShape::parse(&t.content);
        Self {
            default: default_template == Some(t.template_id.as_str()),
            template_id: t.template_id,
            title: t.title,
            content: t.content,
            example: t.example,
            kind: shape.kind,
            keywords: shape.keywords,
            gone_at: t.gone_at,
        }
    }
}

fn respond(state: &AppState, rows: Vec<Template>) -> HttpResponse {
    let default = state
        .config
        .wechat
        .as_ref()
        .and_then(|w| w.default_template_id.as_deref());
    let list: Vec<TemplateResponse> = rows
        .into_iter()
        .map(|t| TemplateResponse::new(t, default))
        .collect();
    HttpResponse::Ok().json(list)
}

/// The official account's templates, live and gone, by id.
///
/// As last synced from WeChat (at start, every `WXBIND_TEMPLATE_SYNC_SECONDS`, or by
/// `POST /api/templates/sync`). Empty until a first sync has succeeded.
#[utoipa::path(
    tag = "templates",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every template", body = Vec<TemplateResponse>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
#[get("/templates")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn list_templates(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let rows = db::run(&state.pool, db::templates::all).await?;
    Ok(respond(&state, rows))
}

/// Read the template list from WeChat now (admins).
///
/// Records what WeChat lists: new templates are added, changed ones updated, missing ones
/// marked gone (never deleted), returning ones live again; messages are checked against the
/// result from then on. Answers with every template, as `GET /api/templates` does.
#[utoipa::path(
    tag = "templates",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Synced; every template", body = Vec<TemplateResponse>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins may sync the template list", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`: WeChat did not list the templates", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    )
)]
#[post("/templates/sync")]
#[tracing::instrument(skip_all, fields(user.id = %auth.id))]
pub async fn sync_templates(
    state: web::Data<AppState>,
    wechat: web::Data<Wechat>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiError> {
    auth.require_admin("only admins may sync the template list")?;
    let actor = Actor::of(&auth);
    let rows = templates::sync(&state.pool, &state.templates, wechat.get()?, actor).await?;
    Ok(respond(&state, rows))
}
