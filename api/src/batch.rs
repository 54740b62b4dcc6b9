//! Group commit: concurrent requests hand their row to one task per kind, which writes
//! whatever has gathered with one statement in one transaction. Each request still gets
//! exactly its own outcome; a failed batch fails every request in it with nothing written
//! (one transaction), so no request sees a partial write.
use diesel::{Connection, PgConnection, QueryResult};
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, PgPool};
use crate::error::ApiError;

/// Most rows one statement writes.
const MAX_BATCH: usize = 256;

type Job<Req, Out> = (Req, oneshot::Sender<Result<Out, String>>);

/// Writes one kind of row for many concurrent requests at once.
pub struct Batcher<Req, Out> {
    tx: mpsc::UnboundedSender<Job<Req, Out>>,
}

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the batching task on the current actix system. `write` gets the batch in
    /// arrival order and returns one outcome per request, in the same order.
    pub fn start(
        pool: PgPool,
        what: &'static str,
        write: fn(&mut PgConnection, &[Req]) -> QueryResult<Vec<Out>>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        actix_web::rt::spawn(run(pool, what, write, rx));
        Self { tx }
    }

    /// Submits one request and waits for the batch that carries it to commit.
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

async fn run<Req: Send + 'static, Out: Send + 'static>(
    pool: PgPool,
    what: &'static str,
    write: fn(&mut PgConnection, &[Req]) -> QueryResult<Vec<Out>>,
    mut rx: mpsc::UnboundedReceiver<Job<Req, Out>>,
) {
    let mut jobs: Vec<Job<Req, Out>> = Vec::with_capacity(MAX_BATCH);
    // Whatever arrived while the previous batch was committing forms the next one: no timer,
    // so a lone request is never delayed.
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (requests, replies): (Vec<Req>, Vec<_>) = jobs.drain(..).unzip();
        let result = db::run(&pool, move |conn| {
            Ok(conn.transaction(|conn| write(conn, &requests))?)
        })
        .await;
        match result {
            Ok(outcomes) if outcomes.len() == replies.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let cause = format!(
                    "{what}: {} outcomes for {} requests",
                    outcomes.len(),
                    replies.len()
                );
                tracing::error!(error.cause = %cause, "batch write returned the wrong count");
                for reply in replies {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
            Err(e) => {
                let cause = crate::error::ErrorChain(&e).to_string();
                tracing::error!(error.cause = %cause, count = replies.len(), what, "batch write failed");
                for reply in replies {
                    let _ = reply.send(Err(cause.clone()));
                }
            }
        }
    }
}
