//! One database serves one thing: a single official account, or the sandbox. The first process
//! to start on a database records which (`db::deployment`); a process whose mode or app id
//! differs refuses to start. Without this, a replica whose secret injection failed, or a
//! `docker compose up` without `.env`, would come up in sandbox mode on real data: seeding demo
//! accounts there, and letting the simulator's fake openids bind real users.
//!
//! Checked on the command line's start path (`serve`, `migrate`, `user add`) right after
//! migrations, never in [`crate::startup::Application`]: that is built while the database may
//! be down, and must not wait for it.
use std::fmt;

use diesel::{Connection, PgConnection};

use crate::config::Config;
use crate::db;

/// What a database serves, or what a process would have it serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    /// Sandbox mode: WeChat simulated by the process, demo accounts.
    Sandbox,
    /// The official account with this app id.
    Account(String),
}

/// How sandbox mode is stored. Real app ids start with `wx`, so this never names an account
/// (and an account configured as `sandbox` is refused by the comparison, never confused).
const SANDBOX: &str = "sandbox";

impl Serves {
    /// What a process with `config` serves. `None` for a process without an official account
    /// (`WXBIND_SANDBOX=off` and no credentials): it sends nothing to anyone, so it neither
    /// claims a database nor is refused by one.
    pub fn of(config: &Config) -> Option<Self> {
        // The sandbox has an app id of its own (the simulator's); the mode is what counts.
        if config.sandbox.enabled {
            return Some(Self::Sandbox);
        }
        config
            .wechat
            .as_ref()
            .map(|w| Self::Account(w.app_id.clone()))
    }

    /// The text stored in `deployment.serves`.
    pub fn as_stored(&self) -> &str {
        match self {
            Self::Sandbox => SANDBOX,
            Self::Account(app_id) => app_id,
        }
    }

    /// The value of stored text.
    pub fn from_stored(text: &str) -> Self {
        if text == SANDBOX {
            Self::Sandbox
        } else {
            Self::Account(text.to_owned())
        }
    }
}

impl fmt::Display for Serves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sandbox => f.write_str("the sandbox"),
            Self::Account(app_id) => write!(f, "the official account {app_id}"),
        }
    }
}

/// Why a process may not run on its database. Each message is one line, for the operator:
/// what the database belongs to, and how to point the process elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The database records another mode or app id than the process runs with.
    #[error("{}", mismatch_line(.database, .process))]
    Mismatch {
        /// What the database serves.
        database: Serves,
        /// What this process would serve.
        process: Serves,
    },
    /// A sandbox process found accounts in a database that records nothing yet: one made
    /// before wxbind kept this record, which may well be real data.
    #[error(
        "this database holds accounts but records nothing it serves (it predates that record), \
         and sandbox mode only claims an empty database. Point DATABASE_URL at another database, \
         or set WECHAT_APP_ID/WECHAT_APP_SECRET for the official account it serves"
    )]
    UnclaimedWithAccounts,
    /// Reading or writing the record failed.
    #[error("reading or recording what this database serves failed")]
    Db(#[from] diesel::result::Error),
}

fn mismatch_line(database: &Serves, process: &Serves) -> String {
    let this_process = match process {
        Serves::Sandbox => "runs in sandbox mode".to_owned(),
        Serves::Account(app_id) => format!("runs for the official account {app_id}"),
    };
    let remedy = match database {
        Serves::Account(app_id) => {
            format!("or set WECHAT_APP_ID/WECHAT_APP_SECRET for {app_id}")
        }
        Serves::Sandbox => "or unset WECHAT_APP_ID/WECHAT_APP_SECRET to run in sandbox mode \
                            (a sandbox database never becomes a real one)"
            .to_owned(),
    };
    format!(
        "this database serves {database}; this process {this_process}. \
         Point DATABASE_URL at another database, {remedy}"
    )
}

/// Claims the database for `process` if it records nothing yet, else checks that it records
/// `process`; returns what it serves. Sandbox mode only claims a database without accounts:
/// a database with accounts and no record predates the record, and is treated as real.
pub fn claim_or_check(
    conn: &mut PgConnection,
    process: &Serves,
) -> Result<Serves, DeploymentError> {
    let claim = conn.transaction(|conn| {
        if let Some(stored) = db::deployment::serves(conn)? {
            return Ok(db::deployment::Claim {
                serves: stored,
                claimed_now: false,
            });
        }
        if *process == Serves::Sandbox && db::users::any(conn)? {
            return Err(DeploymentError::UnclaimedWithAccounts);
        }
        Ok(db::deployment::claim(conn, process.as_stored())?)
    })?;
    let database = Serves::from_stored(&claim.serves);
    if database != *process {
        return Err(DeploymentError::Mismatch {
            database,
            process: process.clone(),
        });
    }
    if claim.claimed_now {
        tracing::info!(serves = %claim.serves, "recorded what this database serves: {database}");
    }
    Ok(database)
}

/// The check `wxbind serve`, `migrate` and `user add` run right after migrations, for the
/// process `config` describes. A process without an official account claims nothing and is
/// refused nothing; it gets what the database serves, if anything.
pub fn enforce(
    conn: &mut PgConnection,
    config: &Config,
) -> Result<Option<Serves>, DeploymentError> {
    match Serves::of(config) {
        Some(process) => claim_or_check(conn, &process).map(Some),
        None => Ok(db::deployment::serves(conn)?.map(|s| Serves::from_stored(&s))),
    }
}
