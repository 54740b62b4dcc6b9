//! A database that accepts connections but never answers (a black-holed address, a frozen
//! server behind a proxy) costs each request a 503 within seconds; none hangs.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wxbind_tests::{TestApp, assert_error, spawn_app_with};

/// Longest a request may take to give up: the work deadline plus slack for a busy machine.
const ANSWERS_WITHIN: Duration = Duration::from_secs(9);

/// A TCP forwarder to the test PostgreSQL that can be frozen: it then keeps every socket open
/// and passes nothing on, as a hung proxy or a stopped server behind one does.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Drop for Proxy {
    /// Thaws whatever is still frozen, so a failed test does not leave the database's
    /// sessions stuck behind it for the clean-up.
    fn drop(&mut self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let (upstream, f) = (upstream.to_owned(), Arc::clone(&frozen));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let frozen = Arc::clone(&f);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            while frozen.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Self { port, frozen }
    }
}

/// An address that accepts TCP connections and never says a word.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

async fn timed_me(app: &TestApp, token: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let resp = app.get_as(token, "/api/me").await;
    (resp, started.elapsed())
}

#[actix_web::test]
async fn requests_get_503_when_the_database_is_black_holed() {
    let port = black_hole();
    let app = spawn_app_with(|c| {
        c.database.url = secrecy::SecretString::from(format!(
            "postgres://postgres@127.0.0.1:{port}/nowhere?sslmode=disable&gssencmode=disable"
        ));
    })
    .await;
    let token =
        wxbind::auth::JwtKeys::new(&app.config.auth.jwt_secret, None, Duration::from_secs(60))
            .issue(1, wxbind::domain::Role::User)
            .expect("token")
            .token;

    let (resp, took) = timed_me(&app, &token).await;

    assert!(took < ANSWERS_WITHIN, "took {took:?}");
    assert_error(resp, 503, "unavailable").await;
    let started = Instant::now();
    assert_error(app.get("/api/ready").await, 503, "unavailable").await;
    assert!(started.elapsed() < ANSWERS_WITHIN);
}

#[actix_web::test]
async fn requests_get_503_when_the_database_freezes_behind_a_proxy() {
    let app = spawn_app_with(|_| {}).await;
    let proxy = Proxy::start("127.0.0.1:5432");
    let mut via_proxy = url::Url::parse(&app.db.url).expect("url");
    via_proxy.set_port(Some(proxy.port)).expect("port");
    let user = app.user("alice").await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = app.config.clone();
    config.database.url = secrecy::SecretString::from(via_proxy.to_string());
    config.http.public_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let frozen_app =
        wxbind::startup::Application::build_with_listener(config, listener).expect("app");
    let stop = frozen_app.stop_handle();
    actix_web::rt::spawn(frozen_app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    // A bound on the client too: a hang fails the test instead of hanging the run.
    let me = || {
        app.http
            .get(format!("{base}/api/me"))
            .bearer_auth(&user.token)
            .timeout(Duration::from_secs(30))
            .send()
    };
    assert_eq!(
        me().await.expect("answer").status(),
        200,
        "through the proxy"
    );

    proxy.frozen.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let resp = me().await.expect("an answer");
    let took = started.elapsed();

    assert!(took < ANSWERS_WITHIN, "took {took:?}");
    assert_error(resp, 503, "unavailable").await;
    proxy.frozen.store(false, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(10), stop.stop()).await;
}
