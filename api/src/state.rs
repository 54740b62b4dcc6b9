//! What every request handler shares: the pool, the configuration, the password
//! verifier, the template registry and the group-commit writers. Built by `startup`; read by
//! `routes` and the modules that own the rules. WeChat is not here: its handle is per thread
//! (`wechat::Wechat`). Failed logins are not here either: they are counted in PostgreSQL,
//! shared by every instance.
use std::sync::Arc;

use tokio::sync::Notify;

use crate::batch::Batcher;
use crate::config::Config;
use crate::db::PgPool;
use crate::db::bind_states::NewState;
use crate::db::messages::{Queued, QueuedRequest};
use crate::templates::Registry;
use crate::verifier::Verifier;

/// State shared by every HTTP worker thread.
pub struct AppState {
    /// The database pool.
    pub pool: PgPool,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Bounded password verification for logins.
    pub verifier: Verifier,
    /// The official account's templates as this process last synced them (shared with the
    /// delivery worker, which marks a template gone when WeChat no longer knows it).
    pub templates: Arc<Registry>,
    /// Wakes the delivery worker when a message is queued.
    pub wake_worker: Arc<Notify>,
    /// Group commit for queued messages.
    pub messages: Batcher<QueuedRequest, Queued>,
    /// Group commit for new bind states.
    pub bind_states: Batcher<NewState, ()>,
    /// What one sender may queue.
    pub limits: crate::limits::SenderLimits,
    /// API keys.
    pub keys: crate::keys::KeyChecker,
}
