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
use std::thread;

use diesel::{PgConnection, QueryResult};
use tokio::sync::{mpsc, oneshot};

use crate::db::PgPool;
use crate::error::{ApiError, ErrorChain};

/// Most rows one statement writes.
const MAX_BATCH: usize = 256;

type Reply<Out> = oneshot::Sender<Result<Out, String>>;
type Job<Req, Out> = (Req, Reply<Out>);

/// Writes one batch: `Err` means nothing was written for any request in it; otherwise one
/// outcome per request, in the order given. Each request's own write must be atomic, since no
/// transaction spans the batch.
pub type WriteBatch<Req, Out> = fn(&mut PgConnection, &[Req]) -> QueryResult<Vec<QueryResult<Out>>>;

/// Writes one kind of row for many concurrent requests at once.
pub struct Batcher<Req, Out> {
    tx: mpsc::UnboundedSender<Job<Req, Out>>,
}

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the writer thread; it ends when the last handle to this batcher is dropped.
    pub fn start(
        pool: PgPool,
        what: &'static str,
        write: WriteBatch<Req, Out>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        thread::Builder::new()
            .name(format!("wxbind-batch-{}", what.replace(' ', "-")))
            .spawn(move || run(&pool, what, write, rx))?;
        Ok(Self { tx })
    }

    /// Submits one request and waits for the statement that carries it to commit.
    pub async fn submit(&self, request: Req) -> Result<Out, ApiError> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send((request, reply))
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("batch writer has stopped")))?;
        outcome
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("batch writer dropped a request")))?
            .map_err(|cause| ApiError::Unavailable(anyhow::anyhow!(cause)))
    }
}

fn run<Req, Out>(
    pool: &PgPool,
    what: &'static str,
    write: WriteBatch<Req, Out>,
    mut rx: mpsc::UnboundedReceiver<Job<Req, Out>>,
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
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut conn = pool.get().map_err(|e| ErrorChain(&e).to_string())?;
            write(&mut conn, &requests).map_err(|e| ErrorChain(&e).to_string())
        }))
        .unwrap_or_else(|_| Err(format!("{what}: the batch writer panicked")));
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
                        Some(Err(e)) => {
                            let cause = ErrorChain(&e).to_string();
                            tracing::error!(error.cause = %cause, what, "writing one request of a batch failed");
                            Err(cause)
                        }
                        None => Err(format!("{what}: the batch writer gave no outcome")),
                    };
                    let _ = reply.send(outcome);
                }
            }
            Err(cause) => {
                tracing::error!(error.cause = %cause, count, what, "batch write failed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
        }
    }
}
