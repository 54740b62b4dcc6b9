//! The `templates` table: the official account's templates as WeChat last listed them. Rows are
//! never deleted; a template WeChat no longer knows is marked gone, and un-gone when it is
//! listed again.
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::schema::templates;

/// One template as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = templates, check_for_backend(diesel::pg::Pg))]
pub struct Template {
    /// WeChat's template id.
    pub template_id: String,
    /// Its title, e.g. 订单发货通知.
    pub title: String,
    /// Its keywords as placeholders (`商品名称：{{thing1.DATA}}`).
    pub content: String,
    /// WeChat's example of a filled-in message.
    pub example: String,
    /// When WeChat stopped knowing it; `None` while it is live.
    pub gone_at: Option<DateTime<Utc>>,
}

/// A template as WeChat lists it.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = templates)]
pub struct Listed {
    /// WeChat's template id.
    pub template_id: String,
    /// Its title.
    pub title: String,
    /// The industry it was chosen under (legacy templates; empty for category ones).
    pub primary_industry: String,
    /// The sub-industry it was chosen under.
    pub deputy_industry: String,
    /// Its keywords as placeholders.
    pub content: String,
    /// WeChat's example of a filled-in message.
    pub example: String,
}

/// Records WeChat's whole list in one transaction: each listed template is inserted or
/// updated and live, every other live one is marked gone. Returns every row, by id.
pub fn sync(conn: &mut PgConnection, listed: &[Listed]) -> QueryResult<Vec<Template>> {
    conn.transaction(|conn| {
        if !listed.is_empty() {
            diesel::insert_into(templates::table)
                .values(listed)
                .on_conflict(templates::template_id)
                .do_update()
                .set((
                    templates::title.eq(excluded(templates::title)),
                    templates::primary_industry.eq(excluded(templates::primary_industry)),
                    templates::deputy_industry.eq(excluded(templates::deputy_industry)),
                    templates::content.eq(excluded(templates::content)),
                    templates::example.eq(excluded(templates::example)),
                    templates::synced_at.eq(diesel::dsl::now),
                    templates::gone_at.eq(None::<DateTime<Utc>>),
                ))
                .execute(conn)?;
        }
        let ids: Vec<&str> = listed.iter().map(|t| t.template_id.as_str()).collect();
        diesel::update(
            templates::table
                .filter(templates::gone_at.is_null())
                .filter(templates::template_id.ne_all(ids)),
        )
        .set(templates::gone_at.eq(diesel::dsl::now))
        .execute(conn)?;
        all(conn)
    })
}

/// Marks `template_id` gone (WeChat refused a send with it); returns when, or `None` when
/// there is no such live template.
pub fn mark_gone(conn: &mut PgConnection, template_id: &str) -> QueryResult<Option<DateTime<Utc>>> {
    diesel::update(
        templates::table
            .filter(templates::template_id.eq(template_id))
            .filter(templates::gone_at.is_null()),
    )
    .set(templates::gone_at.eq(diesel::dsl::now))
    .returning(templates::gone_at)
    .get_result::<Option<DateTime<Utc>>>(conn)
    .optional()
    .map(Option::flatten)
}

/// Every template, live and gone, by id.
pub fn all(conn: &mut PgConnection) -> QueryResult<Vec<Template>> {
    templates::table
        .order(templates::template_id)
        .select(Template::as_select())
        .load(conn)
}
