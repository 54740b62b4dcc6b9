//! The `wxbind` binary: parse the command line, set up logging and configuration, dispatch.
use std::io::BufRead;
use std::process::ExitCode;

use clap::Parser;
use diesel::Connection;
use secrecy::ExposeSecret;
use wxbind::auth::{self, Role};
use wxbind::cli::{Cli, Command, KeyCommand, UserCommand};
use wxbind::config::Config;
use wxbind::deployment::{self, Serves};
use wxbind::domain::{Password, Username};
use wxbind::sandbox::DemoAccount;
use wxbind::startup::ProcessRole;
use wxbind::{db, openapi, startup, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = std::env::var("WXBIND_LOG_FORMAT").is_ok_and(|v| v == "json");
    telemetry::init("info,actix_server=warn", json_logs, std::io::stderr);

    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        print!("{}", openapi::spec_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxbind: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve => serve(config, ProcessRole::Serve),
        Command::Api => serve(config, ProcessRole::Api),
        Command::Worker => serve(config, ProcessRole::Worker),
        Command::Migrate => migrate(&config).map(drop),
        Command::User {
            action: UserCommand::Add { name, admin },
        } => add_user(&config, &name, admin),
        Command::Key { action } => key_command(&config, action),
        Command::Openapi => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxbind: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Applies migrations, then claims or checks what the database serves: every command that
/// writes to the database (`serve`, `migrate`, `user add`) goes through here, so none of them
/// runs against a database that belongs to another mode or official account.
fn migrate(config: &Config) -> anyhow::Result<(diesel::PgConnection, Option<Serves>)> {
    let mut conn = db::connect_creating(config.database_url())?;
    let applied = db::run_migrations(&mut conn)?;
    if applied.is_empty() {
        tracing::info!("database schema is up to date");
    }
    for m in applied {
        tracing::info!(migration = %m, "applied migration");
    }
    let serves = deployment::enforce(&mut conn, config)?;
    Ok((conn, serves))
}

fn serve(config: Config, role: ProcessRole) -> anyhow::Result<()> {
    let (mut conn, serves) = migrate(&config)?;
    // `migrate` refused any database that does not serve the sandbox, so demo accounts are
    // only ever made in a sandbox database (and `ensure_demo_accounts` checks again).
    if config.sandbox.enabled && serves == Some(Serves::Sandbox) && role.serves_api() {
        let password = config.sandbox.demo_password.as_ref().map_or_else(
            || wxbind::domain::random_alphanumeric(12),
            |p| p.expose_secret().to_owned(),
        );
        let accounts = wxbind::sandbox::ensure_demo_accounts(&mut conn, &password)?;
        print_sandbox_banner(&config, &password, &accounts);
    }
    drop(conn);
    if config.auth.jwt_secret_generated {
        tracing::warn!(
            "JWT_SECRET is not set: using a random key for this process; tokens will not survive a restart"
        );
    }
    if config.wechat.is_none() {
        // Only with WXBIND_SANDBOX=off and no credentials.
        tracing::warn!(
            "WECHAT_APP_ID is not set: binding and messages answer 503 wechat_not_configured"
        );
    }
    let listen = config.http.listen;
    let public = config.http.public_url.clone();
    actix_web::rt::System::new().block_on(async move {
        let app = startup::Application::build(config, role)?;
        if role.serves_api() {
            tracing::info!(
                listen = %listen,
                ?role,
                "wxbind listening: API at {public}api, Swagger UI at {public}api/docs/"
            );
        } else {
            tracing::info!(listen = %listen, "wxbind worker: health, readiness and metrics under /api");
        }
        app.run_until_stopped().await?;
        Ok(())
    })
}

fn print_sandbox_banner(config: &Config, password: &str, accounts: &[(&str, DemoAccount)]) {
    let base = config.http.public_url.as_str().trim_end_matches('/');
    let shown = if config.sandbox.demo_password.is_some() {
        "(WXBIND_DEMO_PASSWORD)"
    } else {
        password
    };
    let rule = "=".repeat(78);
    eprintln!("\n{rule}");
    eprintln!("SANDBOX MODE: no WECHAT_APP_ID is set, so WeChat is simulated by this process");
    eprintln!("under {base}/sandbox/ and nothing is sent to WeChat. Set WECHAT_APP_ID and");
    eprintln!("WECHAT_APP_SECRET to use a real official account.");
    eprintln!();
    for (name, outcome) in accounts {
        match outcome {
            DemoAccount::Created | DemoAccount::PasswordReset => {
                eprintln!("  demo account  : {name} / {shown}");
            }
            DemoAccount::NotDemo => {
                eprintln!("  {name:<14}: an account the sandbox did not make; left as it is");
            }
        }
    }
    eprintln!("  phone view    : {base}/sandbox/");
    eprintln!("  API docs      : {base}/api/docs/");
    eprintln!("{rule}\n");
}

fn key_command(config: &Config, action: KeyCommand) -> anyhow::Result<()> {
    let (mut conn, _) = migrate(config)?;
    match action {
        KeyCommand::Add { name, scope } => {
            if !wxbind::keys::valid_name(&name) {
                anyhow::bail!("a key name is 1-64 letters, digits, '_', '.' or '-'");
            }
            let scope = wxbind::keys::Scope::parse(&scope)
                .ok_or_else(|| anyhow::anyhow!("a key's scope is send or admin"))?;
            let secret = db::api_keys::secret(&mut conn)?;
            let (key, hash, prefix) = wxbind::keys::generate(&secret);
            let actor = wxbind::audit::Actor::Cli;
            match wxbind::keys::create_audited(&mut conn, &name, scope, &hash, &prefix, actor)? {
                db::api_keys::Created::Key(k) => {
                    eprintln!(
                        "made {} key {} (shown once; store it in the calling server's secrets):",
                        k.scope, k.name
                    );
                    println!("{key}");
                    Ok(())
                }
                db::api_keys::Created::NameTaken => {
                    anyhow::bail!("a key named {name} exists or existed")
                }
            }
        }
        KeyCommand::List => {
            for k in db::api_keys::list(&mut conn)? {
                let used = k
                    .last_used_at
                    .map_or("never".to_owned(), |t| t.to_rfc3339());
                let state = k
                    .revoked_at
                    .map_or("live".to_owned(), |t| format!("revoked {}", t.to_rfc3339()));
                println!(
                    "{}\t{}\t{}…\tlast used {used}\t{state}",
                    k.name, k.scope, k.prefix
                );
            }
            Ok(())
        }
        KeyCommand::Revoke { name } => {
            if wxbind::keys::revoke_audited(&mut conn, &name, wxbind::audit::Actor::Cli)? {
                println!("revoked key {name}");
                Ok(())
            } else {
                anyhow::bail!("no live key named {name}")
            }
        }
    }
}

fn add_user(config: &Config, name: &str, admin: bool) -> anyhow::Result<()> {
    let username = Username::parse(name)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = Password::parse(line.trim_end_matches(['\r', '\n']))?;
    let hash = auth::hash_password(password.expose())?;
    let (mut conn, _) = migrate(config)?;
    let role = if admin { Role::Admin } else { Role::User };
    let new = db::users::NewUser {
        username: username.as_ref(),
        password_hash: &hash,
        role,
    };
    match conn.transaction(|c| db::users::insert(c, &new)) {
        Ok(user) => {
            println!(
                "created {} user {} (id {})",
                role.as_str(),
                user.username,
                user.id
            );
            Ok(())
        }
        Err(e) if db::is_unique_violation(&e) => {
            anyhow::bail!("user {} already exists", username.as_ref())
        }
        Err(e) => Err(e.into()),
    }
}
