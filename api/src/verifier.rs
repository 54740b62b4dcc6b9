//! Bounded password verification. An argon2id check takes about 19 MiB and tens of milliseconds
//! of CPU, so logins are checked on a few threads of their own (one per core by default) behind
//! a short queue; a login that finds every slot taken, or whose turn has not come within the
//! configured wait, is refused at once with 503 `busy`. However many logins arrive, hashing
//! then costs at most `threads` × 19 MiB and `threads` cores, and never occupies the blocking
//! pool that every database call runs on.
//!
//! Why threads of its own rather than `web::block` behind a semaphore: the blocking pool's
//! threads come and go and are many (hundreds per HTTP worker), so the allocator would keep
//! 19 MiB buffers in many per-thread arenas, and a hash would hold a thread the database calls
//! are waiting for. A fixed set of threads keeps both bounds simple and visible.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::auth::{self, HashMemory};
use crate::config::VerifierConfig;

/// The password-verification threads and the slots that admit work to them.
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
    /// `threads + queue` permits: one per check running or waiting.
    slots: Arc<Semaphore>,
    max_wait: Duration,
}

/// Why a password could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Every slot is taken, or this check's turn did not come within the wait.
    #[error("too many password checks at once")]
    Busy,
    /// The verification threads are gone or the check panicked (a bug).
    #[error("the password verifier did not answer")]
    Lost,
}

/// A place in the verification queue, taken before any other work on a login so that a flood
/// is refused before it reaches the database.
pub struct Slot<'a> {
    verifier: &'a Verifier,
    permit: OwnedSemaphorePermit,
    deadline: Instant,
}

/// One check, carried to a verification thread with its slot: the slot is freed when the
/// work is done (or skipped), not when the caller stops waiting, so the bound also holds for
/// callers that went away.
struct Job {
    password: String,
    /// `None` for an unknown username: a dummy hash is checked so both cost the same.
    stored_hash: Option<String>,
    deadline: Instant,
    reply: oneshot::Sender<Checked>,
    slot: OwnedSemaphorePermit,
}

enum Checked {
    Verified(bool),
    Expired,
}

impl Verifier {
    /// Starts `config.threads` verification threads; they end when the verifier is dropped.
    pub fn start(config: &VerifierConfig) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = config.threads.max(1);
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("wxbind-verify-{i}"))
                .spawn(move || work(&queue))?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(Semaphore::new(threads + config.queue)),
            max_wait: config.max_wait,
        })
    }

    /// Takes a slot, or refuses at once when all are taken. The wait for the check starts now.
    pub fn admit(&self) -> Result<Slot<'_>, VerifyError> {
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| VerifyError::Busy)?;
        Ok(Slot {
            verifier: self,
            permit,
            deadline: Instant::now() + self.max_wait,
        })
    }
}

impl Slot<'_> {
    /// Checks `password` against `stored_hash` (or a dummy hash when the user is unknown, which
    /// is always false). `Busy` when the check's turn came after the slot's deadline; then no
    /// hash was computed.
    pub async fn verify(
        self,
        password: String,
        stored_hash: Option<String>,
    ) -> Result<bool, VerifyError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            stored_hash,
            deadline: self.deadline,
            reply,
            slot: self.permit,
        };
        self.verifier
            .jobs
            .send(job)
            .map_err(|_| VerifyError::Lost)?;
        match answer.await {
            Ok(Checked::Verified(ok)) => Ok(ok),
            Ok(Checked::Expired) => Err(VerifyError::Busy),
            Err(_) => Err(VerifyError::Lost),
        }
    }
}

/// One verification thread: takes the next job until the verifier is dropped. Its argon2
/// working memory is allocated at the first check and reused for every later one, so the
/// threads hold `threads` × 19 MiB however many checks they make.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = HashMemory::default();
    loop {
        // Waiting for a job while holding the lock is what makes the threads take turns; a
        // panic never happens while it is held, so a poisoned lock is still consistent.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        run(job, &mut memory);
    }
}

fn run(job: Job, memory: &mut HashMemory) {
    let Job {
        password,
        stored_hash,
        deadline,
        reply,
        slot,
    } = job;
    // The caller went away (the client disconnected): nobody would read the answer.
    if reply.is_closed() {
        return;
    }
    // A check whose turn came too late is refused without hashing: under a flood the queue
    // drains at once instead of computing answers nobody waits for any more.
    if Instant::now() > deadline {
        drop(slot);
        let _ = reply.send(Checked::Expired);
        return;
    }
    // A panic must not take the thread with it: every later login would wait in vain.
    let verified = catch_unwind(AssertUnwindSafe(|| match &stored_hash {
        Some(hash) => auth::verify_password_in(memory, &password, hash),
        None => {
            auth::verify_dummy(memory, &password);
            false
        }
    }));
    // Freed before answering: a caller that logs in again right after must find it free.
    drop(slot);
    match verified {
        Ok(ok) => {
            let _ = reply.send(Checked::Verified(ok));
        }
        Err(_) => tracing::error!("password verification panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(threads: usize, queue: usize, max_wait: Duration) -> Verifier {
        Verifier::start(&VerifierConfig {
            threads,
            queue,
            max_wait,
        })
        .expect("threads start")
    }

    #[actix_web::test]
    async fn checks_passwords_and_unknown_users_are_never_right() {
        let v = verifier(1, 1, Duration::from_secs(10));
        let hash = auth::hash_password("correct horse").expect("hash");
        let check = |pw: &str, hash: Option<String>| {
            let slot = v.admit().expect("a free slot");
            slot.verify(pw.to_owned(), hash)
        };
        assert!(
            check("correct horse", Some(hash.clone()))
                .await
                .expect("answer")
        );
        assert!(!check("wrong horse", Some(hash)).await.expect("answer"));
        assert!(!check("correct horse", None).await.expect("answer"));
    }

    #[actix_web::test]
    async fn admits_threads_plus_queue_and_frees_slots_when_done() {
        let v = verifier(1, 2, Duration::from_secs(10));
        let slots: Vec<_> = (0..3).map(|_| v.admit().expect("free slot")).collect();
        assert!(matches!(v.admit(), Err(VerifyError::Busy)));
        drop(slots);
        let slot = v
            .admit()
            .expect("slots are freed with the unused admissions");
        assert!(!slot.verify("x".into(), None).await.expect("answer"));
        // A sequential caller always finds the slot of its previous check free again.
        for _ in 0..3 {
            let slot = v.admit().expect("freed before the answer");
            assert!(!slot.verify("x".into(), None).await.expect("answer"));
        }
    }

    #[actix_web::test]
    async fn a_check_whose_turn_comes_too_late_is_busy() {
        let v = verifier(1, 1, Duration::ZERO);
        let slot = v.admit().expect("free slot");
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            slot.verify("x".into(), None).await,
            Err(VerifyError::Busy)
        ));
        assert!(v.admit().is_ok(), "the expired check freed its slot");
    }
}
