//! The `confab` binary: parses the command line, loads the configuration and runs the
//! requested command. Only this crate wires adapters together (DESIGN.md invariant 4).

mod apps;
mod cli;
mod client_actions;
mod config;
mod serve;
mod tls_reload;
mod users;

use std::process::ExitCode;

use cli::{Cli, Command, ConfigCommand, EXIT_RUNTIME, EXIT_USAGE, UsageError};
use config::{Config, ConfigError};

/// mimalloc keeps per-thread free lists, which suits many small short-lived stanza buffers
/// better than the system allocator and returns memory to the OS more eagerly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log filter for the administrative commands when RUST_LOG is unset: they report results on
/// standard output, and info-level chatter on standard error would bury their one-line errors.
const ADMIN_LOG_LEVEL: &str = "warn";

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the error's causes with ": "; newlines inside a cause would break
            // the one-line promise, so they are flattened too.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("confab: {message}");
            let usage = e
                .chain()
                .any(|c| c.is::<ConfigError>() || c.is::<UsageError>());
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_RUNTIME })
        }
    }
}

/// Loads the configuration and dispatches the command.
fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || Config::load(cli.config.config.as_deref(), &cli.config.overrides());
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            // The example shows defaults, so it neither reads nor fails because of the
            // operator's file or environment.
            print!("{}", config::example());
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            load()?;
            println!("OK");
            Ok(())
        }
        Command::Serve => {
            let config = load()?;
            init_tracing(&config.log.level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("confab")
                .build()?;
            runtime.block_on(serve::run(config))
        }
        Command::User(command) => {
            let config = load()?;
            init_tracing(ADMIN_LOG_LEVEL);
            // One short database session: a single-threaded runtime is enough.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(users::run(&config, &command))
        }
        Command::App(command) => {
            let config = load()?;
            init_tracing(ADMIN_LOG_LEVEL);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(apps::run(&config, &command))
        }
    }
}

/// Installs the log subscriber on standard error. A non-empty RUST_LOG wins over the
/// configured level so a developer can raise verbosity without editing the config.
fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        // The configured level was validated at load time, so this fallback is only reached
        // for the built-in admin level, which is valid too.
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
