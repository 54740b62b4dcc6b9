//! Builds the shared state and the actix application (routes, middleware), starts the HTTP
//! server, the delivery worker, housekeeping and the template sync, and stops them together.
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use tokio::sync::{Notify, watch};
use tracing_actix_web::TracingLogger;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::JwtKeys;
use crate::batch::Batcher;
use crate::config::Config;
use crate::db;
use crate::error;
use crate::housekeeping;
use crate::routes;
use crate::state::AppState;
use crate::templates::{self, Registry};
use crate::verifier::Verifier;
use crate::wechat::{Account, Wechat};
use crate::worker::{self, WorkerDeps};

/// What a process runs; any mix of them can share one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    /// The API and delivery with housekeeping (`wxbind serve`).
    Serve,
    /// The API only (`wxbind api`).
    Api,
    /// Delivery and housekeeping, with `/api/health`, `/api/ready` and `/api/metrics` on its
    /// own listen address (`wxbind worker`).
    Worker,
}

impl ProcessRole {
    /// Whether the process serves the product API (and the sandbox and the docs).
    pub fn serves_api(self) -> bool {
        self != Self::Worker
    }

    /// Whether the process delivers messages and runs housekeeping.
    pub fn delivers(self) -> bool {
        self != Self::Api
    }
}

/// Stops an application the way SIGTERM does: claiming stops at once, sends in flight get
/// `WXBIND_SHUTDOWN_SECONDS` to finish, and the HTTP server drains.
#[derive(Clone)]
pub struct StopHandle {
    server: actix_web::dev::ServerHandle,
    stop_worker: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Stops and waits until the server has stopped.
    pub async fn stop(&self) {
        let _ = self.stop_worker.send(true);
        self.server.stop(true).await;
    }
}

/// A built, not yet awaited, server plus its background tasks.
pub struct Application {
    port: u16,
    server: Server,
    /// Tells the delivery worker, the listener, housekeeping and the template sync to stop
    /// (dropping it does too).
    stop_worker: Arc<watch::Sender<bool>>,
    worker: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// CORS for the configured browser origins only; credentials (the session cookie) are
/// allowed for exactly those, never for `*`. Other origins get no CORS headers, so browsers
/// refuse them, while same-origin and non-browser callers are unaffected.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::{Method, header};
    origins
        .iter()
        .fold(actix_cors::Cors::default(), |c, o| c.allowed_origin(o))
        .allowed_methods([Method::GET, Method::POST, Method::DELETE])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(600)
}

/// Headers every response carries: no MIME sniffing (a JSON body is never run as a script),
/// no referrer (bind pages and the callback carry single-use values in their URLs), and HSTS
/// once the service is reached over https.
fn security_headers(public_url: &url::Url) -> actix_web::middleware::DefaultHeaders {
    let headers = actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"));
    if public_url.scheme() == "https" {
        headers.add(("Strict-Transport-Security", "max-age=31536000"))
    } else {
        headers
    }
}

/// Installs rustls' crypto provider; awc panics on its first client without one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    /// Binds `config.listen` and builds the application for `role`.
    pub fn build(config: Config, role: ProcessRole) -> anyhow::Result<Self> {
        let listen = config.http.listen;
        let listener = TcpListener::bind(listen).map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot listen on {listen} (WXBIND_LISTEN)"))
        })?;
        Self::build_for(config, listener, role)
    }

    /// Builds the application on an already bound listener (tests bind port 0). Must be
    /// called inside an actix system, which runs the server; the delivery worker and the
    /// group-commit writers get threads of their own, and stop when the application is
    /// dropped.
    pub fn build_with_listener(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        Self::build_for(config, listener, ProcessRole::Serve)
    }

    /// [`Application::build_with_listener`] for a given role.
    pub fn build_for(
        config: Config,
        listener: TcpListener,
        role: ProcessRole,
    ) -> anyhow::Result<Self> {
        install_crypto_provider();
        let port = listener.local_addr()?.port();
        let config = Arc::new(config);
        let pool = db::build_pool(config.database_url(), config.database.pool_size);
        crate::metrics::install();
        let wake = Arc::new(Notify::new());
        let keys = web::Data::new(JwtKeys::new(
            &config.auth.jwt_secret,
            config.auth.jwt_secret_previous.as_ref(),
            config.auth.jwt_ttl,
        ));
        let account = config
            .wechat
            .as_ref()
            .map(|w| Account::new(w, pool.clone()).map(Arc::new))
            .transpose()?;
        let registry = Arc::new(Registry::default());
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            config: Arc::clone(&config),
            verifier: Verifier::start(&config.auth.verifier)
                .map_err(|e| anyhow::Error::new(e).context("starting the password verifiers"))?,
            templates: Arc::clone(&registry),
            wake_worker: Arc::clone(&wake),
            messages: Batcher::start(pool.clone(), "messages", db::messages::enqueue_many)?,
            bind_states: Batcher::start(pool.clone(), "bind states", db::bind_states::insert_many)?,
            limits: crate::limits::SenderLimits::new(
                config.delivery.user_sends_per_minute,
                config.delivery.max_queued_per_sender,
            ),
            keys: crate::keys::KeyChecker::default(),
        });
        let simulator = crate::sandbox::Simulator::from_config(&config)
            .filter(|_| role.serves_api())
            .map(web::Data::new);
        let spec = crate::openapi::spec();
        let allowed = web::Data::new(if role.serves_api() {
            routes::AllowedMethods::from_spec(&spec)
        } else {
            routes::AllowedMethods::of(routes::configure_ops)
        });

        let thread_account = account.clone();
        let workers = config.http.workers;
        let factory_config = Arc::clone(&config);
        let session_pool = pool.clone();
        let rekey = crate::session::CookieRekey::new(&config.auth);
        let mut server = HttpServer::new(move || {
            // awc clients are !Send: one per worker thread.
            let wechat = web::Data::new(Wechat::new(thread_account.clone()));
            App::new()
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(wechat)
                .app_data(allowed.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(routes::messages::MAX_BODY_BYTES)
                        .error_handler(error::json_error_handler),
                )
                .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
                .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
                .configure(|cfg| {
                    if let Some(sim) = &simulator {
                        cfg.app_data(sim.clone());
                        crate::sandbox::configure(cfg);
                    }
                })
                // Registered before the /api scope, which would otherwise swallow these paths.
                .configure(|cfg| {
                    if role.serves_api() {
                        cfg.service(web::redirect("/api/docs", "/api/docs/"))
                            .service(
                                SwaggerUi::new("/api/docs/{_:.*}")
                                    .url("/api/openapi.json", spec.clone()),
                            );
                    }
                })
                .into_utoipa_app()
                .configure(|cfg| {
                    if role.serves_api() {
                        routes::configure(cfg);
                    } else {
                        routes::configure_ops(cfg);
                    }
                })
                .into_app()
                .default_service(web::to(routes::fallback))
                .wrap(crate::session::middleware(
                    &factory_config,
                    session_pool.clone(),
                ))
                .wrap_fn({
                    let rekey = rekey.clone();
                    move |mut req, srv| {
                        if let Some(rekey) = &rekey {
                            rekey.apply(&mut req);
                        }
                        srv.call(req)
                    }
                })
                .wrap(cors(&factory_config.http.cors_origins))
                .wrap(security_headers(&factory_config.http.public_url))
                .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
        })
        .listen(listener)?
        // Signals are handled in `run_until_stopped`, so a stop reaches the worker at once
        // rather than after the HTTP server has drained.
        .disable_signals()
        .shutdown_timeout(15);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.run();

        let (stop_worker, stop_rx) = watch::channel(false);
        if role.delivers() {
            actix_web::rt::spawn(housekeeping::run(
                pool.clone(),
                config.delivery.message_retention,
                stop_rx.clone(),
            ));
            actix_web::rt::spawn(housekeeping::probe_queue(pool.clone(), stop_rx.clone()));
        }
        // The API checks messages against the template list, so every process serving it
        // syncs the list; a worker-only process learns of gone templates from WeChat's 40037.
        if let Some(account) = account.as_ref().filter(|_| role.serves_api()) {
            actix_web::rt::spawn(templates::run(
                pool.clone(),
                Arc::clone(&registry),
                Arc::clone(account),
                config.templates.sync_interval,
                stop_rx.clone(),
            ));
        }
        let worker = match account.filter(|_| role.delivers()) {
            Some(account) => {
                worker::spawn_listener(config.database_url(), Arc::clone(&wake), stop_rx.clone())?;
                let deps = WorkerDeps {
                    pool,
                    account,
                    templates: registry,
                    wake,
                    config: config.delivery.clone(),
                    webhooks: config.webhooks.clone(),
                };
                Some(worker::spawn(deps, stop_rx)?)
            }
            None => None,
        };
        Ok(Self {
            port,
            server,
            stop_worker: Arc::new(stop_worker),
            worker,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops this application as SIGTERM does.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            stop_worker: Arc::clone(&self.stop_worker),
        }
    }

    /// Serves until stopped (SIGINT, SIGTERM or a [`StopHandle`]): claiming stops at once,
    /// the HTTP server drains, and sends in flight get their shutdown budget to finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let on_signal = self.stop_handle();
        actix_web::rt::spawn(async move {
            if wait_for_stop_signal().await {
                tracing::info!("stop signal received; stopping");
                on_signal.stop().await;
            }
        });
        let result = self.server.await;
        let _ = self.stop_worker.send(true);
        if let Some(worker) = self.worker {
            let _ = worker.await;
        }
        result
    }
}

/// Waits for SIGTERM or SIGINT; false when no signal can be watched.
async fn wait_for_stop_signal() -> bool {
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return false;
        };
        tokio::select! {
            _ = term.recv() => true,
            _ = int.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        actix_web::rt::signal::ctrl_c().await.is_ok()
    }
}
