//! The group-commit writer on its own, against a real database: how one request's failure and
//! a whole batch's failure reach the requests. Over HTTP neither can be caused on demand, and
//! both decide whether a client may be told "failed" about a row that was written.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use wxbind::batch::Batcher;
use wxbind::error::ApiError;
use wxbind_tests::TestDb;

/// Holds the writer busy for a moment, so what is submitted meanwhile forms one batch.
const PLUG: i64 = 1000;
/// Fails alone: the others in its batch still succeed.
const FAILS_ALONE: i64 = -1;
/// Fails the batch statement itself: every request in that batch fails.
const FAILS_BATCH: i64 = 0;
/// A bug in the write function.
const PANICS: i64 = -2;

static SAW_BATCH_OF_THREE: AtomicBool = AtomicBool::new(false);

fn write(conn: &mut PgConnection, batch: &[i64]) -> QueryResult<Vec<QueryResult<i64>>> {
    if batch.contains(&PLUG) {
        std::thread::sleep(Duration::from_millis(300));
    }
    if batch.len() == 3 {
        SAW_BATCH_OF_THREE.store(true, Ordering::SeqCst);
    }
    assert!(!batch.contains(&PANICS), "a bug in the writer");
    if batch.contains(&FAILS_BATCH) {
        diesel::sql_query("SELECT 1 / 0").execute(conn)?;
    }
    Ok(batch
        .iter()
        .map(|&n| match n {
            FAILS_ALONE => Err(diesel::result::Error::NotFound),
            n => Ok(n * 2),
        })
        .collect())
}

async fn submit_behind_plug(
    batcher: &Batcher<i64, i64>,
    requests: [i64; 3],
) -> Vec<Result<i64, ApiError>> {
    let plug = batcher.submit(PLUG);
    let rest = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        futures_util::future::join_all(requests.map(|r| batcher.submit(r))).await
    };
    let (plugged, rest) = tokio::join!(plug, rest);
    assert_eq!(plugged.expect("the plug succeeds"), PLUG * 2);
    // What a handler answers: the batch error as the HTTP edge maps it.
    rest.into_iter()
        .map(|r| r.map_err(ApiError::from))
        .collect()
}

#[actix_web::test]
async fn one_failing_request_fails_alone_and_a_failing_batch_fails_all_of_it() {
    let db = TestDb::create();
    let batcher =
        Batcher::start(wxbind::db::build_pool(&db.url, 2), "test", write).expect("writer thread");

    SAW_BATCH_OF_THREE.store(false, Ordering::SeqCst);
    let outcomes = submit_behind_plug(&batcher, [1, FAILS_ALONE, 2]).await;
    assert!(
        SAW_BATCH_OF_THREE.load(Ordering::SeqCst),
        "the three formed one batch"
    );
    assert_eq!(outcomes[0].as_ref().ok(), Some(&2));
    assert!(
        matches!(outcomes[1], Err(ApiError::Unavailable(_))),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2].as_ref().ok(), Some(&4));

    let outcomes = submit_behind_plug(&batcher, [3, FAILS_BATCH, 4]).await;
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(ApiError::Unavailable(_))),
            "{outcome:?}"
        );
    }

    // The writer goes on after a failed batch.
    assert_eq!(batcher.submit(5).await.expect("after a failure"), 10);
}

#[actix_web::test]
async fn a_panicking_batch_fails_its_requests_and_the_writer_goes_on() {
    let db = TestDb::create();
    let batcher =
        Batcher::start(wxbind::db::build_pool(&db.url, 2), "test", write).expect("writer thread");

    let outcome = batcher.submit(PANICS).await.map_err(ApiError::from);
    assert!(
        matches!(outcome, Err(ApiError::Unavailable(_))),
        "{outcome:?}"
    );

    assert_eq!(batcher.submit(6).await.expect("after a panic"), 12);
}

#[actix_web::test]
async fn requests_get_busy_at_once_when_the_writers_queue_is_full() {
    let db = TestDb::create();
    let batcher =
        Batcher::start(wxbind::db::build_pool(&db.url, 2), "test", write).expect("writer thread");
    let plug = batcher.submit(PLUG);
    let flood = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Far more than the queue holds, while the writer is held by the plug.
        futures_util::future::join_all((0..5000).map(|n| batcher.submit(n + 1))).await
    };
    let (plugged, outcomes) = tokio::join!(plug, flood);
    assert_eq!(plugged.expect("the plug succeeds"), PLUG * 2);

    let busy = outcomes
        .into_iter()
        .map(|r| r.map_err(ApiError::from))
        .filter(|r| matches!(r, Err(ApiError::Busy)))
        .count();
    assert!(busy > 0, "a full queue answers busy");
    assert_eq!(batcher.submit(7).await.expect("room again"), 14);
}
