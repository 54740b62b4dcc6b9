//! Group commit: concurrent requests hand their row to one writer thread per kind, which
//! writes whatever has gathered with one statement. Each request gets exactly its own outcome.
//!
//! The batch statement runs on its own (autocommit): it is one round trip, and it writes all
//! of its rows or none. The rare requests it cannot settle (an idempotent repeat, an unknown
//! recipient) are then resolved one by one, each with its own atomic statement, so a failure
//! there fails only that request and never one whose row has already been committed.
//!
//! The writer is a plain thread that owns the blocking database work, rather than an async
//! task that hops to the blocking pool for every batch: under load each hop is a wake-up of
//! another thread, and on a small machine those wake-ups are most of a batch's latency.
use std::sync::Arc;
use std::thread;

use diesel::{PgConnection, QueryResult};
use tokio::sync::{mpsc, oneshot};

use crate::db::{DbError, PgPool};

/// Most rows one statement writes.
const MAX_BATCH: usize = 256;
/// Most requests waiting for the writer. While the database is slow or away, a full queue
/// answers `busy` at once instead of letting requests (and their memory) pile up behind it;
/// sixteen full batches is far more than a healthy database ever leaves waiting.
const QUEUE_CAPACITY: usize = 16 * MAX_BATCH;

type Reply<Out> = oneshot::Sender<Result<Out, BatchError>>;

/// Why a request's row was not written. The writer does not log it: the caller does, once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The statement failed; every request of its batch gets the same cause.
    #[error("writing a batch of {what} failed")]
    Write {
        /// Which writer.
        what: &'static str,
        /// The database's answer, shared by the batch.
        #[source]
        cause: Arc<DbError>,
    },
    /// The write panicked (a bug); the writer goes on with the next batch.
    #[error("the {0} batch writer panicked")]
    Panicked(&'static str),
    /// The write gave no outcome for this request (a bug in the write function).
    #[error("the {0} batch writer gave no outcome for this request")]
    NoOutcome(&'static str),
    /// Too many requests already wait for the writer.
    #[error("the {0} batch writer's queue is full")]
    Full(&'static str),
    /// The writer is gone (the application is shutting down).
    #[error("the {0} batch writer has stopped")]
    Stopped(&'static str),
}

type Job<Req, Out> = (Req, Reply<Out>);

/// Writes one batch: `Err` means nothing was written for any request in it; otherwise one
/// outcome per request, in the order given. Each request's own write must be atomic, since no
/// transaction spans the batch.
pub type WriteBatch<Req, Out> = fn(&mut PgConnection, &[Req]) -> QueryResult<Vec<QueryResult<Out>>>;

/// Writes one kind of row for many concurrent requests at once.
pub struct Batcher<Req, Out> {
    tx: mpsc::Sender<Job<Req, Out>>,
    what: &'static str,
}

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the writer thread; it ends when the last handle to this batcher is dropped.
    pub fn start(
        pool: PgPool,
        what: &'static str,
        write: WriteBatch<Req, Out>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        thread::Builder::new()
            .name(format!("wxbind-batch-{}", what.replace(' ', "-")))
            .spawn(move || run(&pool, what, write, rx))?;
        Ok(Self { tx, what })
    }

    /// Submits one request and waits for the statement that carries it to commit.
    pub async fn submit(&self, request: Req) -> Result<Out, BatchError> {
        let (reply, outcome) = oneshot::channel();
        self.tx.try_send((request, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BatchError::Full(self.what),
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped(self.what),
        })?;
        outcome.await.map_err(|_| BatchError::Stopped(self.what))?
    }
}

fn run<Req, Out>(
    pool: &PgPool,
    what: &'static str,
    write: WriteBatch<Req, Out>,
    mut rx: mpsc::Receiver<Job<Req, Out>>,
) {
    let mut requests: Vec<Req> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply<Out>> = Vec::with_capacity(MAX_BATCH);
    // Whatever arrived while the previous batch was being written forms the next one: no
    // timer, so a lone request is never delayed.
    while let Some((request, reply)) = rx.blocking_recv() {
        requests.push(request);
        replies.push(reply);
        while requests.len() < MAX_BATCH {
            let Ok((request, reply)) = rx.try_recv() else {
                break;
            };
            requests.push(request);
            replies.push(reply);
        }
        // A panic must not take the writer down with it: every later request of this kind
        // would fail until a restart. It fails this batch, like any other error.
        let failed = |e: DbError| BatchError::Write {
            what,
            cause: Arc::new(e),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut conn = pool.get().map_err(|e| failed(e.into()))?;
            write(&mut conn, &requests).map_err(|e| failed(e.into()))
        }))
        .unwrap_or_else(|_| Err(BatchError::Panicked(what)));
        let count = requests.len();
        requests.clear();
        match result {
            Ok(outcomes) => {
                if outcomes.len() != count {
                    // A bug in `write`: answer what it answered, fail the rest.
                    tracing::error!(
                        what,
                        outcomes = outcomes.len(),
                        count,
                        "batch write returned the wrong count"
                    );
                }
                let mut outcomes = outcomes.into_iter();
                for reply in replies.drain(..) {
                    let outcome = match outcomes.next() {
                        Some(Ok(out)) => Ok(out),
                        Some(Err(e)) => Err(failed(e.into())),
                        None => Err(BatchError::NoOutcome(what)),
                    };
                    let _ = reply.send(outcome);
                }
            }
            Err(cause) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
        }
    }
}
