//! The command line: `confab serve`, `confab user …`, `confab app …` and `confab config …`.
//!
//! Every command takes the same configuration flags (`--config`, `--data-dir`, `--domain`,
//! …) so that `confab user add` acts on exactly the data directory and domain that
//! `confab serve` uses. The flags are global: they may appear before or after the subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Overrides, Registration};

/// Exit code for a failure while running (storage, an existing user, …).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for a bad command line, argument or configuration.
pub const EXIT_USAGE: u8 = 2;

/// Confab: an XMPP server.
#[derive(Debug, Parser)]
#[command(
    name = "confab",
    version,
    about,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that locate and override the configuration; highest precedence of all layers.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file (see `confab config example`).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the database (overrides data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// XMPP domain served (overrides domain).
    #[arg(long, global = true, value_name = "NAME")]
    pub domain: Option<String>,
    /// Client listener address (overrides c2s.listen).
    #[arg(long, global = true, value_name = "ADDR:PORT", value_parser = config::parse_socket_addr)]
    pub c2s: Option<SocketAddr>,
    /// HTTP listener address (overrides http.listen).
    #[arg(long, global = true, value_name = "ADDR:PORT", value_parser = config::parse_socket_addr)]
    pub http: Option<SocketAddr>,
    /// Whether anyone may register over XMPP (overrides registration).
    #[arg(long, global = true, value_name = "open|closed")]
    pub registration: Option<Registration>,
}

impl ConfigArgs {
    /// The flags that override configuration values.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            domain: self.domain.clone(),
            c2s_listen: self.c2s,
            http_listen: self.http,
            registration: self.registration,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Manage accounts; works while the server runs.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage registered third-party apps; works while the server runs.
    #[command(subcommand)]
    App(AppCommand),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `confab user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. JID is `user@domain` or just `user` for the configured domain.
    Add {
        /// The account: `user@domain` or `user`.
        jid: String,
        /// The password; `-` reads one line from standard input instead, which keeps it out
        /// of the process list and shell history.
        password: String,
    },
    /// Delete an account and everything it owns.
    Del {
        /// The account: `user@domain` or `user`.
        jid: String,
    },
    /// Change an account's password.
    Passwd {
        /// The account: `user@domain` or `user`.
        jid: String,
        /// The new password, or `-` to read it from standard input.
        password: String,
    },
    /// List every account, one JID per line.
    List,
}

/// `confab app …`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an app; prints `client_id=…` and `client_secret=…`, the secret only this once.
    Add {
        /// A label for operators, 1 to 64 characters.
        name: String,
    },
    /// List apps, one `client_id<TAB>created<TAB>name` line each.
    List,
    /// Delete an app; its secret stops working at once.
    Del {
        /// The app's client id.
        client_id: String,
    },
}

/// `confab config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print an example configuration listing every key with its default.
    Example,
    /// Load and validate the configuration, then print OK.
    Check,
}

/// A mistake in how the command was invoked (a bad argument); exits with [`EXIT_USAGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the process arguments. Help and version are printed as clap formats them; a usage
/// error is printed as one `confab: …` line and turned into the exit code to return.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 })
        }
        _ => {
            eprintln!("confab: {}", one_line(&e.render().to_string()));
            ExitCode::from(EXIT_USAGE)
        }
    })
}

/// Squeezes clap's multi-line error into one line: drops the `error:` label, the usage
/// section and the pointer to `--help`, and joins what is left.
fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses arguments without touching the process.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("confab").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_are_global() {
        let cli = parse(&[
            "user",
            "add",
            "alice",
            "pw",
            "--data-dir",
            "/d",
            "--domain",
            "x",
        ])
        .expect("parses");
        assert_eq!(cli.config.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(cli.config.domain.as_deref(), Some("x"));
        let cli =
            parse(&["--c2s", "127.0.0.1:1", "serve", "--registration", "open"]).expect("parses");
        assert_eq!(cli.config.c2s.map(|a| a.port()), Some(1));
        assert_eq!(cli.config.registration, Some(Registration::Open));
        assert!(matches!(cli.command, Command::Serve));
    }

    #[test]
    fn errors_fit_on_one_line() {
        let e = parse(&["serve", "--c2s", "foo"]).expect_err("bad address");
        let line = one_line(&e.render().to_string());
        assert_eq!(
            line,
            "invalid value 'foo' for '--c2s <ADDR:PORT>': invalid socket address \"foo\": \
             expected IP:PORT such as 127.0.0.1:5222"
        );
        let e = parse(&["user", "frobnicate"]).expect_err("bad subcommand");
        assert!(!one_line(&e.render().to_string()).is_empty());
    }
}
