//! Postgres access: the r2d2 pool, the embedded migrations and [`run`], the one way request
//! and worker code touches the database (synchronous diesel on the blocking thread pool).
pub mod api_keys;
pub mod audit_log;
pub mod bind_states;
pub mod broadcasts;
pub mod deployment;
pub mod events;
pub mod followers;
pub mod login_failures;
pub mod messages;
pub mod pause;
pub mod push_nonces;
pub mod schema;
pub mod sessions;
pub mod templates;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// The connection pool shared by the HTTP workers and the delivery worker.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;
/// One checked-out connection.
pub type PgPooled = PooledConnection<ConnectionManager<PgConnection>>;

/// The migrations in `../migrations`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Limits every pooled connection sets for itself when it connects.
#[derive(Debug, Clone, Copy)]
struct SessionLimits;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionLimits {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        // No statement of this service runs for seconds: one that does is stuck (a lock wait,
        // a runaway plan) and would hold its connection, and the request behind it, forever.
        // A transaction left idle (a frozen process mid-refresh) must not keep its locks.
        conn.batch_execute(
            "SET statement_timeout = '10s'; SET lock_timeout = '5s'; \
             SET idle_in_transaction_session_timeout = '60s'",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Longest one unit of work waits, checkout included. A database that accepts connections but
/// never answers (a frozen server, a black-holed proxy) must cost a request a 503 within this,
/// never a hang; the blocked thread is left to its statement and connection timeouts.
pub const WORK_DEADLINE: Duration = Duration::from_secs(5);

/// `database_url` with libpq's `connect_timeout` and TCP keepalives, unless it sets them: a
/// connect to an address that never answers would otherwise wait for the kernel's minutes, and
/// a dead peer on an idle connection would go unnoticed.
pub fn with_client_timeouts(database_url: &str) -> String {
    let Ok(mut url) = url::Url::parse(database_url) else {
        return database_url.to_owned();
    };
    let given: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in [
            ("connect_timeout", "3"),
            ("keepalives", "1"),
            ("keepalives_idle", "30"),
        ] {
            if !given.iter().any(|g| g == key) {
                query.append_pair(key, value);
            }
        }
    }
    url.to_string()
}

/// Builds the pool without connecting, so a down database shows in `/api/ready`
/// instead of a crash loop.
pub fn build_pool(database_url: &str, max_size: u32) -> PgPool {
    Pool::builder()
        .max_size(max_size)
        .connection_customizer(Box::new(SessionLimits))
        .min_idle(Some(0))
        // r2d2 would otherwise run `SELECT 1` on every checkout: a round trip per request.
        // A connection that failed is still dropped (diesel's `has_broken`).
        .test_on_check_out(false)
        // r2d2's default of 30 s would hide an outage behind hanging requests; the checkout
        // must leave room for the work inside `WORK_DEADLINE`.
        .connection_timeout(Duration::from_secs(3))
        .build_unchecked(ConnectionManager::new(with_client_timeouts(database_url)))
}

/// Why a unit of database work failed. Kept apart from HTTP: the worker, the session store
/// and the token cache handle it in their own way, and only the HTTP edge maps it to a
/// status (`ApiError`'s `From`).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had from the pool in time: the database is down or saturated.
    #[error("no database connection")]
    Unavailable(#[source] diesel::r2d2::PoolError),
    /// The connection broke while in use (the server restarted or went away).
    #[error("the database connection was lost")]
    ConnectionLost(#[source] diesel::result::Error),
    /// A statement failed.
    #[error("database query failed")]
    Query(#[source] diesel::result::Error),
    /// The blocking task running the work was cancelled or panicked.
    #[error("the database task did not finish")]
    Task(#[source] actix_web::error::BlockingError),
    /// The work did not finish within [`WORK_DEADLINE`]: the database does not answer.
    #[error("the database did not answer within {}s", WORK_DEADLINE.as_secs())]
    Timeout,
}

impl DbError {
    /// True when the database could not be reached at all, as opposed to a failed statement:
    /// callers answer "try again later" rather than "bug".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::ConnectionLost(_) | Self::Timeout
        )
    }

    /// True when a statement broke a unique constraint (a race with a concurrent insert).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Query(e) if is_unique_violation(e))
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        if connection_lost(&e) {
            Self::ConnectionLost(e)
        } else {
            Self::Query(e)
        }
    }
}

/// Whether `e` says the connection is gone rather than that a statement failed: libpq found it
/// closed (`ClosedConnection`), or could not send the command on it at all
/// (`UnableToSendCommand`, libpq's "no connection to the server"). A server that restarts drops
/// every connection, and a pooled one is often found dead only by the next statement sent on
/// it. (libpq refuses to send more than 65535 bind parameters the same way; this service binds
/// its batches as arrays and never comes near that.) A commit that failed for either reason
/// counts too, whatever the rollback attempted after it said.
fn connection_lost(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        Error::RollbackErrorOnCommit { commit_error, .. } => connection_lost(commit_error),
        _ => false,
    }
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e)
    }
}

/// Runs `f` with a pooled connection on the blocking thread pool, inside the caller's span.
/// Checkout blocks too, so it happens inside the closure as well. One call per unit of work;
/// a unit that writes more than once wraps itself in `conn.transaction`.
pub async fn run<T, F>(pool: &PgPool, f: F) -> Result<T, DbError>
where
    F: FnOnce(&mut PgConnection) -> QueryResult<T> + Send + 'static,
    T: Send + 'static,
{
    run_with(pool, move |conn| f(conn).map_err(DbError::from)).await
}

/// [`run`] for work with an error type of its own (a rule that can refuse, like binding an
/// openid that belongs to someone else); database failures convert into it.
pub async fn run_with<T, E, F>(pool: &PgPool, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    run_within(pool, WORK_DEADLINE, f).await
}

/// [`run_with`] with a deadline of its own, for the few units of work that are large by
/// design (a broadcast to 100,000 users); they raise their statements' timeout to match with
/// `SET LOCAL statement_timeout` inside their transaction.
pub async fn run_within<T, E, F>(pool: &PgPool, deadline: Duration, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let pool = pool.clone();
    let span = tracing::Span::current();
    let work = actix_web::web::block(move || {
        let _entered = span.enter();
        let mut conn = pool.get().map_err(DbError::from)?;
        f(&mut conn)
    });
    match tokio::time::timeout(deadline, work).await {
        Ok(done) => done.map_err(|e| E::from(DbError::Task(e)))?,
        Err(_) => Err(E::from(DbError::Timeout)),
    }
}

/// A fixed SQL statement (built with `diesel::sql_query`) that diesel may prepare once per
/// connection and reuse. diesel never caches `sql_query` statements, since their text could be
/// assembled at run time; its statement cache keys uncached-by-type queries by their SQL text
/// and bind types, so for a constant string reuse is exact. The hot statements of the queue
/// (batch inserts, claims, sent marks) run thousands of times a minute: parsing and planning
/// each anew was a quarter of their cost in PostgreSQL.
///
/// Only for statements whose generic plan is as good as a custom one (the queue's: primary-key
/// lookups driven by `unnest` of the parameters). Run it with `load` or `get_result`: diesel's
/// `execute` handles the query by reference, which loses this override, so the statement
/// would silently stay unprepared.
#[derive(Debug, Clone)]
pub struct Prepared<Q>(pub Q);

impl<Q: QueryFragment<diesel::pg::Pg>> QueryFragment<diesel::pg::Pg> for Prepared<Q> {
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &diesel::pg::Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    type QueryId = ();
    // No type-level id: the cache then keys the statement by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn> RunQueryDsl<Conn> for Prepared<Q> {}

/// Applies every pending migration.
pub fn run_migrations(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::Error::from_boxed(e).context("applying migrations failed"))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// True when every embedded migration has been applied.
pub fn migrations_applied(conn: &mut PgConnection) -> anyhow::Result<bool> {
    let pending = conn
        .has_pending_migration(MIGRATIONS)
        .map_err(|e| anyhow::Error::from_boxed(e).context("reading migration state failed"))?;
    Ok(!pending)
}

/// Connects to `database_url`, creating the database first if the server exists but the
/// database does not. Errors explain how to get a Postgres when none answers.
pub fn connect_creating(database_url: &str) -> anyhow::Result<PgConnection> {
    match PgConnection::establish(database_url) {
        Ok(conn) => Ok(conn),
        Err(e) if e.to_string().contains("does not exist") => {
            let mut url = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
            let name = url.path().trim_start_matches('/').to_owned();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                anyhow::bail!(
                    "database in DATABASE_URL does not exist and {name:?} is not a name wxbind will create"
                );
            }
            url.set_path("/postgres");
            let mut admin = PgConnection::establish(url.as_str())
                .with_context(|| unreachable_hint(database_url))?;
            diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .with_context(|| format!("creating database {name}"))?;
            tracing::info!(db.name = %name, "created database");
            PgConnection::establish(database_url).context("connecting to the new database")
        }
        Err(e) => Err(anyhow::Error::new(e).context(unreachable_hint(database_url))),
    }
}

fn unreachable_hint(database_url: &str) -> String {
    let shown = url::Url::parse(database_url)
        .map(|mut u| {
            let _ = u.set_password(None);
            u.to_string()
        })
        .unwrap_or_else(|_| "DATABASE_URL".into());
    format!(
        "cannot connect to PostgreSQL at {shown}. Start one with `docker compose up -d db` \
         (DATABASE_URL=postgres://wxbind:wxbind-local-only@127.0.0.1:5432/wxbind), \
         or install it (`apt-get install postgresql`), or point DATABASE_URL at yours"
    )
}

/// True when a diesel error is a unique-constraint violation.
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn database_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn a_connection_found_dead_is_unavailable_not_a_failed_query() {
        for kind in [
            DatabaseErrorKind::ClosedConnection,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            let e = DbError::from(database_error(kind, "no connection to the server"));
            assert!(e.is_unavailable(), "{kind:?}: {e:?}");
        }
        let commit = Error::RollbackErrorOnCommit {
            rollback_error: Box::new(database_error(
                DatabaseErrorKind::UnableToSendCommand,
                "no connection to the server",
            )),
            commit_error: Box::new(database_error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly",
            )),
        };
        assert!(DbError::from(commit).is_unavailable());
    }

    #[test]
    fn a_failed_statement_is_a_query_error() {
        for e in [
            database_error(DatabaseErrorKind::UniqueViolation, "duplicate key"),
            database_error(
                DatabaseErrorKind::Unknown,
                "canceling statement due to statement timeout",
            ),
            Error::NotFound,
        ] {
            assert!(matches!(DbError::from(e), DbError::Query(_)));
        }
    }
}
