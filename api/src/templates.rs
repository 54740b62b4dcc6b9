//! The official account's templates. WeChat's list is synced into `templates` at start, on a
//! timer (`WXBIND_TEMPLATE_SYNC_SECONDS`) and on `POST /api/templates/sync`, and each process
//! keeps what it last synced as its [`Registry`], which `POST /api/messages` checks a message's
//! `data` against before anything is queued: a message WeChat would refuse (47003, 40037) is
//! refused at once, naming every problem, instead of failing later in the queue.
//!
//! Until this process has synced once (WeChat unreachable since start) nothing is checked:
//! refusing every message because the list could not be read would turn a WeChat hiccup into
//! an outage, and WeChat still refuses a bad send itself. A send refused with 40037 marks its
//! template gone here and in the table, so later messages with it fail fast; other processes
//! learn it at their next sync, or from their own first 40037.
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use diesel::Connection;

use crate::audit::{self, Action, Actor};
use crate::db::{self, DbError, PgPool, templates::Listed, templates::Template};
use crate::domain::{KeyProblem, TemplateData, TemplateShape};
use crate::error::ErrorChain;
use crate::wechat::{Account, CallError, Connected};

/// How soon a failed sync is retried while this process has never synced: until then
/// messages go unchecked, so waiting a whole interval would be too long.
const RETRY_UNSYNCED: Duration = Duration::from_secs(60);

/// What this process knows of the official account's templates.
#[derive(Default)]
pub struct Registry {
    /// `None` until the first sync; then every template the table holds, by id.
    catalog: RwLock<Option<Arc<HashMap<String, Entry>>>>,
}

#[derive(Clone)]
struct Entry {
    shape: TemplateShape,
    gone_at: Option<DateTime<Utc>>,
}

/// Why a message does not fit the registry.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The template is not, or no longer, the official account's.
    #[error(transparent)]
    Unknown(#[from] UnknownTemplate),
    /// The data breaks the template's keywords.
    #[error(transparent)]
    Misfit(#[from] Misfit),
}

/// A template the official account does not have (any more).
#[derive(Debug, thiserror::Error)]
pub struct UnknownTemplate {
    /// The template asked for.
    pub template_id: String,
    /// When it was found gone, if it ever was the account's.
    pub gone_at: Option<DateTime<Utc>>,
}

impl std::fmt::Display for UnknownTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.template_id;
        match self.gone_at {
            Some(at) => write!(
                f,
                "template {id} is gone: WeChat has not known it since {} (deleted, or removed by a category change); GET /api/templates lists the live ones",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => write!(
                f,
                "template {id} is not one of the official account's templates; GET /api/templates lists them"
            ),
        }
    }
}

/// A message's `data` against its template: every problem, in the template's order.
#[derive(Debug, thiserror::Error)]
pub struct Misfit {
    /// The template.
    pub template_id: String,
    /// What is wrong, key by key (never empty).
    pub problems: Vec<KeyProblem>,
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data does not fit template {}: ", self.template_id)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Registry {
    /// Whether this process has synced the template list since it started.
    pub fn is_synced(&self) -> bool {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Checks a message against its template. Passes everything while never synced.
    pub fn check(&self, template_id: &str, data: &TemplateData) -> Result<(), CheckError> {
        let Some(catalog) = self.snapshot() else {
            tracing::debug!("the template list was never synced; the message is not checked");
            return Ok(());
        };
        let entry = catalog.get(template_id);
        let Some(entry) = entry.filter(|e| e.gone_at.is_none()) else {
            return Err(UnknownTemplate {
                template_id: template_id.to_owned(),
                gone_at: entry.and_then(|e| e.gone_at),
            }
            .into());
        };
        let problems = entry.shape.check(data.fields());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Misfit {
                template_id: template_id.to_owned(),
                problems,
            }
            .into())
        }
    }

    /// Marks `template_id` gone in this process (the table is the caller's), if it knows it.
    pub fn mark_gone(&self, template_id: &str, at: DateTime<Utc>) {
        let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = catalog.as_ref() {
            if current
                .get(template_id)
                .is_some_and(|e| e.gone_at.is_none())
            {
                // Copy on write: checks in flight keep the snapshot they started with.
                let mut next = HashMap::clone(current);
                if let Some(e) = next.get_mut(template_id) {
                    e.gone_at = Some(at);
                }
                *catalog = Some(Arc::new(next));
            }
        }
    }

    fn snapshot(&self) -> Option<Arc<HashMap<String, Entry>>> {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, rows: &[Template]) {
        let catalog = rows
            .iter()
            .map(|t| {
                let entry = Entry {
                    shape: TemplateShape::parse(&t.content),
                    gone_at: t.gone_at,
                };
                (t.template_id.clone(), entry)
            })
            .collect();
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(catalog));
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// WeChat did not list the templates (or no access token could be had).
    #[error("reading the template list from WeChat failed")]
    Wechat(#[source] CallError),
    /// The list could not be recorded.
    #[error("recording the template list failed")]
    Db(#[source] DbError),
}

/// Reads WeChat's template list, records it (new and changed templates upserted, missing ones
/// marked gone, returning ones live again) and makes it this process's registry. Returns every
/// template, live and gone. A sync someone asked for (`actor`) is audited in the same
/// transaction (`templates.synced`, with the live and gone counts); the timer's are not.
pub async fn sync(
    pool: &PgPool,
    registry: &Registry,
    wechat: &Connected,
    actor: Option<Actor>,
) -> Result<Vec<Template>, SyncError> {
    let listed = wechat
        .with_token(|client, token| async move {
            client.get_all_private_templates(token.secret()).await
        })
        .await
        .map_err(SyncError::Wechat)?;
    let listed: Vec<Listed> = listed
        .into_iter()
        .map(|t| Listed {
            template_id: t.template_id,
            title: t.title,
            primary_industry: t.primary_industry,
            deputy_industry: t.deputy_industry,
            content: t.content,
            example: t.example,
        })
        .collect();
    let rows = db::run(pool, move |conn| {
        conn.transaction(|conn| {
            let rows = db::templates::sync(conn, &listed)?;
            if let Some(actor) = actor {
                let gone = rows.iter().filter(|t| t.gone_at.is_some()).count();
                let details = serde_json::json!({ "live": rows.len() - gone, "gone": gone });
                audit::record(conn, actor, Action::TemplatesSynced, None, details)?;
            }
            Ok(rows)
        })
    })
    .await
    .map_err(SyncError::Db)?;
    registry.replace(&rows);
    let gone = rows.iter().filter(|t| t.gone_at.is_some()).count();
    tracing::info!(
        live = rows.len() - gone,
        gone,
        "template list synced from WeChat"
    );
    Ok(rows)
}

/// Syncs at once, then every `every` until `stop` turns true or its sender is dropped. A
/// failure is logged and retried: after `every`, or within a minute while never synced. Runs
/// in every process that has WeChat; several syncing at once is harmless (each upserts).
pub async fn run(
    pool: PgPool,
    registry: Arc<Registry>,
    account: Arc<Account>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let wechat = Connected::new(account);
    loop {
        let wait = match sync(&pool, &registry, &wechat, None).await {
            Ok(_) => every,
            Err(e) => {
                let synced = registry.is_synced();
                tracing::warn!(
                    error = %ErrorChain(&e),
                    checking = synced,
                    "syncing the template list failed; retrying"
                );
                if synced {
                    every
                } else {
                    every.min(RETRY_UNSYNCED)
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::TemplateValue;

    fn data(fields: &[(&str, &str)]) -> TemplateData {
        let raw: BTreeMap<String, TemplateValue> = fields
            .iter()
            .map(|(k, v)| {
                let value = TemplateValue {
                    value: (*v).to_owned(),
                    color: None,
                };
                ((*k).to_owned(), value)
            })
            .collect();
        TemplateData::parse(raw).expect("well-formed data")
    }

    fn row(id: &str, content: &str) -> Template {
        Template {
            template_id: id.into(),
            title: "t".into(),
            content: content.into(),
            example: String::new(),
            gone_at: None,
        }
    }

    #[test]
    fn nothing_is_checked_before_the_first_sync_and_everything_after() {
        let registry = Registry::default();
        let bad = data(&[("nonsense", "x")]);
        assert!(!registry.is_synced());
        assert!(registry.check("ANY", &bad).is_ok());

        registry.replace(&[row("T", "名称：{{thing1.DATA}}")]);
        assert!(registry.is_synced());
        assert!(registry.check("T", &data(&[("thing1", "耳机")])).is_ok());
        let misfit = registry.check("T", &bad).expect_err("misfit");
        assert!(
            matches!(&misfit, CheckError::Misfit(m) if m.problems.len() == 2),
            "{misfit}"
        );
        assert!(
            misfit
                .to_string()
                .starts_with("data does not fit template T: data.thing1: missing"),
            "{misfit}"
        );
        let unknown = registry.check("OTHER", &bad).expect_err("unknown");
        assert!(matches!(
            unknown,
            CheckError::Unknown(UnknownTemplate { gone_at: None, .. })
        ));
    }

    #[test]
    fn a_template_marked_gone_is_unknown_with_the_time_it_went() {
        let registry = Registry::default();
        registry.replace(&[row("T", "{{keyword1.DATA}}")]);
        let ok = data(&[("keyword1", "x")]);
        registry.mark_gone("NOT_KNOWN", Utc::now());
        assert!(registry.check("T", &ok).is_ok());
        let at = Utc::now();
        registry.mark_gone("T", at);
        match registry.check("T", &ok) {
            Err(CheckError::Unknown(u)) => {
                assert_eq!(u.gone_at, Some(at));
                assert!(u.to_string().contains("is gone"), "{u}");
            }
            other => panic!("expected unknown_template, got {other:?}"),
        }
    }
}
