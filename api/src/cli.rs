//! The command line: `serve` (default), `api`, `worker`, `migrate`, `user add`, `openapi`.
use clap::{Parser, Subcommand};

/// wxbind: bind website accounts to a WeChat Official Account and send template messages.
#[derive(Debug, Parser)]
#[command(name = "wxbind", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then run the HTTP API and the delivery worker.
    Serve,
    /// Apply migrations, then run the HTTP API only (delivery runs in `worker` processes).
    Api,
    /// Apply migrations, then deliver messages and run housekeeping only, with
    /// `/api/health`, `/api/ready` and `/api/metrics` on `WXBIND_LISTEN`.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    User {
        /// What to do with users.
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Print the OpenAPI document (JSON) to stdout.
    Openapi,
}

/// `wxbind user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from stdin (one line).
    Add {
        /// Username: letters, digits, '_', '.', '-' or '@' (at most 64).
        name: String,
        /// Make the account an admin (may message any user).
        #[arg(long)]
        admin: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn user_add_parses() {
        let cli =
            Cli::try_parse_from(["wxbind", "user", "add", "alice", "--admin"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::User { action: UserCommand::Add { ref name, admin: true } }) if name == "alice"
        ));
    }
}
