//! The `confab` binary as an operator uses it: real processes on a temporary data directory,
//! checking standard output, the one-line errors on standard error and the exit codes.

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
const CONFAB: &str = env!("CARGO_BIN_EXE_confab");

/// Exit code for runtime failures.
const RUNTIME: i32 = 1;
/// Exit code for usage and configuration errors.
const USAGE: i32 = 2;

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    /// Exit code.
    code: i32,
    /// Standard output.
    stdout: String,
    /// Standard error.
    stderr: String,
}

impl Run {
    /// Asserts success and returns standard output.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        &self.stdout
    }

    /// Asserts the exit code and a single `confab: …` error line; returns the message.
    fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "exit code: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line expected: {self:?}");
        lines[0]
            .strip_prefix("confab: ")
            .unwrap_or_else(|| panic!("error starts with 'confab: ': {self:?}"))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A command with a clean environment: no stray CONFAB__ or RUST_LOG from the caller.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(CONFAB);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CONFAB__") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs the binary with `--data-dir dir` plus `args`.
fn confab(dir: &Path, args: &[&str]) -> Run {
    confab_env(dir, args, &[])
}

/// Like [`confab`] with extra environment variables.
fn confab_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = dir.to_str().expect("UTF-8 temp path");
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    let mut cmd = command(&all);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run confab").into()
}

#[test]
fn user_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();

    assert_eq!(confab(dir, &["user", "list"]).ok(), "");
    assert_eq!(
        confab(dir, &["user", "add", "Alice@localhost", "secret"]).ok(),
        "added alice@localhost\n"
    );
    assert_eq!(
        confab(dir, &["user", "add", "bob", "hunter2"]).ok(),
        "added bob@localhost\n"
    );
    assert_eq!(
        confab(dir, &["user", "list"]).ok(),
        "alice@localhost\nbob@localhost\n"
    );

    assert_eq!(
        confab(dir, &["user", "add", "alice", "again"]).fails(RUNTIME),
        "user alice@localhost exists"
    );
    assert_eq!(
        confab(dir, &["user", "passwd", "alice", "new-secret"]).ok(),
        "changed the password of alice@localhost\n"
    );
    assert_eq!(
        confab(dir, &["user", "passwd", "carol", "x"]).fails(RUNTIME),
        "no such user carol@localhost"
    );
    assert_eq!(
        confab(dir, &["user", "del", "alice@localhost"]).ok(),
        "deleted alice@localhost\n"
    );
    assert_eq!(
        confab(dir, &["user", "del", "alice"]).fails(RUNTIME),
        "no such user alice@localhost"
    );
    assert_eq!(confab(dir, &["user", "list"]).ok(), "bob@localhost\n");
}

#[test]
fn password_can_come_from_stdin() {
    use std::io::Write as _;
    use std::process::Stdio;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("UTF-8 temp path");
    let mut child = command(&["--data-dir", dir, "user", "add", "dave", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn confab");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pw from stdin\n")
        .expect("write password");
    let run = Run::from(child.wait_with_output().expect("wait"));
    assert_eq!(run.ok(), "added dave@localhost\n");

    let run = confab(tmp.path(), &["user", "add", "erin", ""]);
    assert_eq!(run.fails(USAGE), "the password must not be empty");
}

#[test]
fn jid_arguments_are_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    assert_eq!(
        confab(dir, &["user", "add", "bob@example.com", "pw"]).fails(USAGE),
        "bob@example.com: domain example.com is not the configured domain localhost"
    );
    let message = confab(dir, &["user", "del", "a/b"]).fails(USAGE).to_owned();
    assert!(message.starts_with("invalid JID \"a/b\""), "{message}");
    // Argument errors are caught before the database is created.
    assert!(!dir.join("confab.db").exists());
}

#[test]
fn env_domain_changes_created_accounts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let env = [("CONFAB__DOMAIN", "example.com")];
    assert_eq!(
        confab_env(dir, &["user", "add", "bob", "pw"], &env).ok(),
        "added bob@example.com\n"
    );
    assert_eq!(
        confab_env(dir, &["user", "list"], &env).ok(),
        "bob@example.com\n"
    );
    // The --domain flag beats the environment.
    assert_eq!(
        confab_env(dir, &["user", "list", "--domain", "other.org"], &env).ok(),
        "bob@other.org\n"
    );
}

#[test]
fn data_dir_flag_is_respected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    confab(&first, &["user", "add", "alice", "pw"]).ok();
    assert!(first.join("confab.db").exists());
    assert_eq!(confab(&first, &["user", "list"]).ok(), "alice@localhost\n");
    assert_eq!(confab(&second, &["user", "list"]).ok(), "");
}

#[test]
fn config_check_reports_bad_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("confab.toml");
    std::fs::write(&file, "[c2s]\nlisen = \"127.0.0.1:5222\"\n").expect("write config");
    let file = file.to_str().expect("UTF-8 temp path");

    let run = command(&["config", "check", "--config", file])
        .output()
        .expect("run confab");
    assert_eq!(
        Run::from(run).fails(USAGE),
        format!("config: unknown key 'c2s.lisen' in {file}")
    );

    std::fs::write(file, "domain = \"example.com\"\n").expect("write config");
    let run = command(&["config", "check", "--config", file])
        .output()
        .expect("run confab");
    assert_eq!(Run::from(run).ok(), "OK\n");

    let run = command(&["config", "check"])
        .env("CONFAB__C2S__LISTEN", "foo")
        .output()
        .expect("run confab");
    assert_eq!(
        Run::from(run).fails(USAGE),
        "config: c2s.listen: invalid socket address \"foo\": expected IP:PORT such as \
         127.0.0.1:5222 (from environment variable CONFAB__C2S__LISTEN)"
    );

    let run = command(&["config", "check"])
        .env("CONFAB__C2S__LISTN", "127.0.0.1:1")
        .output()
        .expect("run confab");
    assert_eq!(
        Run::from(run).fails(USAGE),
        "config: unknown key 'c2s.listn' in environment variable CONFAB__C2S__LISTN"
    );
}

#[test]
fn bad_flags_are_one_line() {
    let run = Run::from(
        command(&["serve", "--c2s", "foo"])
            .output()
            .expect("run confab"),
    );
    assert_eq!(
        run.fails(USAGE),
        "invalid value 'foo' for '--c2s <ADDR:PORT>': invalid socket address \"foo\": \
         expected IP:PORT such as 127.0.0.1:5222"
    );

    let run = Run::from(
        command(&["config", "check", "--domain", "a b"])
            .output()
            .expect("run confab"),
    );
    assert_eq!(
        run.fails(USAGE),
        "config: domain \"a b\" is not a valid XMPP domain"
    );

    let run = Run::from(
        command(&["user", "frobnicate"])
            .output()
            .expect("run confab"),
    );
    run.fails(USAGE);
}

#[test]
fn no_subcommand_shows_help() {
    let run = Run::from(command(&[]).output().expect("run confab"));
    assert_eq!(run.code, USAGE);
    assert!(run.stderr.contains("Usage: confab"), "{run:?}");
    let run = Run::from(command(&["--help"]).output().expect("run confab"));
    assert!(run.ok().contains("serve"));
}

#[test]
fn example_config_is_in_sync() {
    let run = Run::from(
        command(&["config", "example"])
            .output()
            .expect("run confab"),
    );
    let generated = run.ok();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../confab.example.toml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "confab.example.toml is out of date with the configuration struct; regenerate it \
         from the repository root with:\n    cargo run -p confab -- config example > \
         confab.example.toml"
    );

    // The example is itself a valid configuration.
    let run = command(&["config", "check", "--config"])
        .arg(&path)
        .output()
        .expect("run confab");
    assert_eq!(Run::from(run).ok(), "OK\n");
}

/// The `key=value` lines `confab app add` prints, as `(client_id, client_secret)`.
fn app_credentials(stdout: &str) -> (String, String) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines expected: {stdout:?}");
    let id = lines[0].strip_prefix("client_id=").expect("client_id line");
    let secret = lines[1]
        .strip_prefix("client_secret=")
        .expect("client_secret line");
    (id.to_owned(), secret.to_owned())
}

/// Whether the store in `dir` accepts `secret` for `client_id`, checked through the same
/// core policy the server's introspection endpoint uses.
fn app_verifies(dir: &Path, client_id: &str, secret: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = confab_store::SqliteStore::open(dir).await.expect("open");
        let app = confab_core::apps::verify(&store, client_id, secret)
            .await
            .expect("verify");
        store.close().await;
        app.is_some()
    })
}

#[test]
fn app_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();

    assert_eq!(confab(dir, &["app", "list"]).ok(), "");
    let run = confab(dir, &["app", "add", "Reports backend"]);
    let (id, secret) = app_credentials(run.ok());
    // 256 bits, base64url without padding; shown once, with a warning on standard error.
    assert_eq!(secret.len(), 43);
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(run.stderr.contains("cannot be shown again"), "{run:?}");
    let (other_id, other_secret) = app_credentials(confab(dir, &["app", "add", "dash"]).ok());
    assert_ne!(id, other_id);
    assert_ne!(secret, other_secret);

    // The secret is not stored: neither listing nor the database file shows it.
    let listing = confab(dir, &["app", "list"]).ok().to_owned();
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{listing:?}");
    assert_eq!(rows[0][0], id);
    assert_eq!(rows[0][2], "Reports backend");
    assert_eq!(rows[1][0], other_id);
    assert_eq!(rows[1][2], "dash");
    assert!(
        rows[0][1].ends_with('Z') && rows[0][1].contains('T'),
        "{listing}"
    );
    assert!(!listing.contains(&secret));
    let db = std::fs::read(dir.join("confab.db")).expect("database file");
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    assert!(app_verifies(dir, &id, &secret));
    assert!(!app_verifies(dir, &id, &other_secret));

    assert_eq!(
        confab(dir, &["app", "del", &id]).ok(),
        format!("deleted app {id}\n")
    );
    assert_eq!(
        confab(dir, &["app", "del", &id]).fails(RUNTIME),
        format!("no such app {id}")
    );
    assert!(!app_verifies(dir, &id, &secret));
    assert!(app_verifies(dir, &other_id, &other_secret));
    let listing = confab(dir, &["app", "list"]).ok().to_owned();
    assert_eq!(listing.lines().count(), 1);
    assert!(listing.starts_with(&format!("{other_id}\t")));
}

#[test]
fn app_names_are_checked_before_touching_the_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("never-created");
    let long = "x".repeat(65);
    for name in ["", "  ", long.as_str(), "two\nlines"] {
        let run = confab(&dir, &["app", "add", name]);
        assert!(run.fails(USAGE).starts_with("app name must be"), "{run:?}");
    }
    assert!(!dir.exists());
    assert!(!confab(&dir, &["app", "frobnicate"]).fails(USAGE).is_empty());
}
