//! `confab app …`: registered third-party apps, straight on the data directory like
//! `confab user …`, so they work while the server runs (SQLite WAL and busy timeout).
//!
//! Output is for scripts as much as for people: `add` prints `client_id=…` and
//! `client_secret=…` lines (the secret exists nowhere else afterwards), `list` prints one
//! tab-separated `client_id created name` line per app, name last since it may hold spaces.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use confab_core::apps::{self, AppError, AppStore as _};
use confab_core::store::StoreError;
use confab_store::SqliteStore;

use crate::cli::{AppCommand, UsageError};
use crate::config::Config;

/// Runs one app command, printing its result to standard output.
pub async fn run(config: &Config, command: &AppCommand) -> anyhow::Result<()> {
    // Checked before the database is opened, so a bad name creates no data directory.
    if let AppCommand::Add { name } = command {
        check_name(name)?;
    }
    let store = SqliteStore::open(&config.data_dir).await?;
    let result = execute(&store, command).await;
    // Closing checkpoints the WAL, leaving a single tidy database file behind.
    store.close().await;
    result
}

async fn execute(store: &SqliteStore, command: &AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Add { name } => {
            let new = match apps::create(store, name, now_ms()).await {
                Ok(new) => new,
                Err(AppError::InvalidName) => return Err(name_error().into()),
                Err(e) => return Err(e).context(format!("adding app {name:?}")),
            };
            println!("client_id={}", new.app.client_id);
            println!("client_secret={}", new.secret);
            eprintln!("confab: store the secret now; it is not kept and cannot be shown again");
        }
        AppCommand::List => {
            let apps = store.list_apps().await.context("listing apps")?;
            for app in apps {
                println!(
                    "{}\t{}\t{}",
                    app.client_id,
                    rfc3339(app.created_ms),
                    app.name
                );
            }
        }
        AppCommand::Del { client_id } => match store.delete_app(client_id).await {
            Ok(()) => println!("deleted app {client_id}"),
            Err(StoreError::NotFound) => anyhow::bail!("no such app {client_id}"),
            Err(e) => return Err(e).context(format!("deleting app {client_id}")),
        },
    }
    Ok(())
}

/// The same rule `apps::create` applies, checked up front for a usage exit code.
fn check_name(name: &str) -> Result<(), UsageError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > apps::MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(name_error());
    }
    Ok(())
}

fn name_error() -> UsageError {
    UsageError(AppError::InvalidName.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        // A clock before 1970 is a broken machine; the stamp is informational only.
        .unwrap_or(0)
}

/// Milliseconds since the epoch as an RFC 3339 UTC stamp with second precision.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_the_core() {
        assert!(check_name("reports").is_ok());
        assert!(check_name(" spaced name ").is_ok());
        for bad in ["", " ", "tab\there", &"x".repeat(apps::MAX_NAME_CHARS + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamps_are_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }
}
