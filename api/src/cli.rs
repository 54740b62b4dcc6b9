//! The command line: `serve` (default), `api`, `worker`, `migrate`, `user add`, `key add|list|revoke`,
//! `openapi`.
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
    /// Manage API keys for servers.
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Print the OpenAPI document (JSON) to stdout.
    Openapi,
}

/// `wxbind key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a key and print it (once: only its hash is stored).
    Add {
        /// 1-64 letters, digits, '_', '.' or '-'.
        name: String,
        /// `send` (send to any bound user, read what it sent) or `admin`.
        #[arg(long, default_value = "send", value_parser = ["send", "admin"])]
        scope: String,
    },
    /// List the keys (names, scopes, prefixes, last use; never the keys).
    List,
    /// Revoke a key: requests with it are refused (within 10 s on running instances).
    Revoke {
        /// The key's name.
        name: String,
    },
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
    fn key_commands_parse() {
        let cli = Cli::try_parse_from(["wxbind", "key", "add", "billing", "--scope", "admin"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Key { action: KeyCommand::Add { ref name, ref scope } }) if name == "billing" && scope == "admin"
        ));
        assert!(Cli::try_parse_from(["wxbind", "key", "add", "x", "--scope", "root"]).is_err());
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
