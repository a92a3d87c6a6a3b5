//! `confab user …`: account administration straight on the data directory.
//!
//! The commands open the same SQLite database as the running server; SQLite's WAL mode and
//! busy timeout let them run while the server is up, so an operator need not stop it to add
//! a user.

use std::io::BufRead as _;

use anyhow::Context as _;
use confab_core::store::{AccountStore, StoreError};
use confab_store::SqliteStore;

use crate::cli::{UsageError, UserCommand};
use crate::config::Config;

/// Runs one user command, printing its result to standard output.
pub async fn run(config: &Config, command: &UserCommand) -> anyhow::Result<()> {
    // Arguments are checked before the database is opened, so a typo neither creates a data
    // directory nor waits on a lock.
    let request = Request::parse(config, command)?;
    let store = SqliteStore::open(&config.data_dir).await?;
    let result = execute(&store, config, &request).await;
    // Closing checkpoints the WAL, leaving a single tidy database file behind.
    store.close().await;
    result
}

/// A user command with its arguments validated.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// Create `username` with `password`.
    Add { username: String, password: String },
    /// Delete `username`.
    Del { username: String },
    /// Set `username`'s password.
    Passwd { username: String, password: String },
    /// List every account.
    List,
}

impl Request {
    /// Validates the JID and password arguments of a command.
    fn parse(config: &Config, command: &UserCommand) -> anyhow::Result<Self> {
        Ok(match command {
            UserCommand::Add { jid, password } => Self::Add {
                username: username(jid, &config.domain)?,
                password: read_password(password)?,
            },
            UserCommand::Del { jid } => Self::Del {
                username: username(jid, &config.domain)?,
            },
            UserCommand::Passwd { jid, password } => Self::Passwd {
                username: username(jid, &config.domain)?,
                password: read_password(password)?,
            },
            UserCommand::List => Self::List,
        })
    }
}

/// Carries out a validated command against the store.
async fn execute(store: &SqliteStore, config: &Config, request: &Request) -> anyhow::Result<()> {
    let domain = &config.domain;
    let iterations = config.auth.scram_iterations;
    match request {
        Request::Add { username, password } => {
            let credentials = confab_auth::derive_credentials(password, iterations);
            match store.create_account(username, &credentials).await {
                Ok(()) => println!("added {username}@{domain}"),
                Err(StoreError::Conflict) => anyhow::bail!("user {username}@{domain} exists"),
                Err(e) => return Err(e).context(format!("adding {username}@{domain}")),
            }
        }
        Request::Del { username } => match store.delete_account(username).await {
            Ok(()) => println!("deleted {username}@{domain}"),
            Err(StoreError::NotFound) => anyhow::bail!("no such user {username}@{domain}"),
            Err(e) => return Err(e).context(format!("deleting {username}@{domain}")),
        },
        Request::Passwd { username, password } => {
            let credentials = confab_auth::derive_credentials(password, iterations);
            match store.set_credentials(username, &credentials).await {
                Ok(()) => println!("changed the password of {username}@{domain}"),
                Err(StoreError::NotFound) => anyhow::bail!("no such user {username}@{domain}"),
                Err(e) => return Err(e).context(format!("changing {username}@{domain}")),
            }
        }
        Request::List => {
            let names = store.list_accounts().await.context("listing accounts")?;
            for name in names {
                println!("{name}@{domain}");
            }
        }
    }
    Ok(())
}

/// Turns a `user@domain` or bare `user` argument into the nodeprep'd username, insisting
/// that the domain is the one this server hosts (the store keeps one domain's accounts).
fn username(arg: &str, domain: &str) -> Result<String, UsageError> {
    let invalid = |why: &str| UsageError(format!("invalid JID {arg:?}: {why}"));
    if arg.contains('/') {
        return Err(invalid("a user JID has no /resource"));
    }
    let text = if arg.contains('@') {
        arg.to_owned()
    } else {
        format!("{arg}@{domain}")
    };
    let jid = jid::BareJid::new(&text).map_err(|e| invalid(&e.to_string()))?;
    let Some(node) = jid.node() else {
        return Err(invalid("expected user@domain or user"));
    };
    if jid.domain().as_str() != domain {
        return Err(UsageError(format!(
            "{arg}: domain {} is not the configured domain {domain}",
            jid.domain()
        )));
    }
    Ok(node.as_str().to_owned())
}

/// Returns the password argument, or one line of standard input when it is `-`.
fn read_password(arg: &str) -> anyhow::Result<String> {
    let password = if arg == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        arg.to_owned()
    };
    if password.is_empty() {
        return Err(UsageError("the password must not be empty".into()).into());
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        let ok = |arg| username(arg, "localhost").map_err(|e| e.0);
        assert_eq!(ok("alice"), Ok("alice".into()));
        assert_eq!(ok("Alice@localhost"), Ok("alice".into()));
        assert_eq!(ok("Alice@LOCALHOST"), Ok("alice".into()));
        assert_eq!(
            ok("bob@example.com"),
            Err(
                "bob@example.com: domain example.com is not the configured domain localhost".into()
            )
        );
        assert!(ok("a/b").is_err());
        assert!(ok("@localhost").is_err());
        assert!(ok("").is_err());
        assert!(ok("a b").is_err());
    }
}
