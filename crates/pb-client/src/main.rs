//! `confab-pb`: send and receive messages over Confab's protobuf binding from a shell.
//!
//! Every command logs in, does its work and prints JSON lines on standard output (one per
//! event, flushed at once, so another program can follow along); progress and errors go to
//! standard error.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use confab_pb_client::{Client, Endpoint, Event, LoginOptions, Mechanism, Receipt};
use tokio::io::AsyncBufReadExt as _;

#[derive(Parser)]
#[command(
    name = "confab-pb",
    version,
    about = "Client for Confab's protobuf binding"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send one chat message and wait for its Confab commit receipt; prints
    /// {"id","server_id","seq","stamp"}.
    Send {
        #[command(flatten)]
        conn: ConnArgs,
        /// The recipient's JID.
        #[arg(long)]
        to: String,
        /// The message text.
        text: String,
    },
    /// Go online and print each received message as {"from","body","id","stanza_id"}.
    Listen {
        #[command(flatten)]
        conn: ConnArgs,
        /// Exit after this many messages (exit status 1 if the timeout comes first).
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Interactive: each stdin line `JID: text` is sent; messages and receipts are printed.
    Chat {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Args)]
struct ConnArgs {
    /// The protobuf listener (`[pb] listen`), host:port.
    #[arg(long, default_value = "127.0.0.1:5202")]
    server: String,
    /// Speak TLS from the first byte (`[pb] tls = true`).
    #[arg(long)]
    tls: bool,
    /// With --tls or a wss:// URL: accept any certificate (self-signed test servers).
    #[arg(long)]
    insecure: bool,
    /// With --tls: the certificate's name (default: the domain of --user).
    #[arg(long)]
    server_name: Option<String>,
    /// Use the WebSocket endpoint instead, e.g. ws://127.0.0.1:5280/pb-websocket.
    #[arg(long, conflicts_with = "tls")]
    websocket: Option<String>,
    /// The account, user@domain[/resource].
    #[arg(long)]
    user: String,
    /// The password.
    #[arg(long, env = "CONFAB_PB_PASSWORD", hide_env_values = true)]
    password: String,
    /// The SASL mechanism.
    #[arg(long, value_enum, default_value_t = MechanismArg::ScramSha256)]
    mechanism: MechanismArg,
    /// Longest wait, in seconds, for each step of the login and for a receipt.
    #[arg(long, default_value_t = 10)]
    step_timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum MechanismArg {
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[value(name = "scram-sha-1")]
    ScramSha1,
    Plain,
}

impl ConnArgs {
    async fn login(&self) -> anyhow::Result<Client> {
        let mut options = LoginOptions::new(&self.user, self.password.clone())?;
        options.mechanism = match self.mechanism {
            MechanismArg::ScramSha256 => Mechanism::ScramSha256,
            MechanismArg::ScramSha1 => Mechanism::ScramSha1,
            MechanismArg::Plain => Mechanism::Plain,
        };
        options.timeout = Duration::from_secs(self.step_timeout);
        let endpoint = match &self.websocket {
            Some(url) => Endpoint::WebSocket {
                url: url.clone(),
                verify: !self.insecure,
            },
            None => {
                let addr = tokio::net::lookup_host(&self.server)
                    .await
                    .with_context(|| format!("resolve {}", self.server))?
                    .next()
                    .with_context(|| format!("{} has no address", self.server))?;
                match self.tls {
                    true => Endpoint::Tls {
                        addr,
                        server_name: self
                            .server_name
                            .clone()
                            .unwrap_or_else(|| options.domain.clone()),
                        verify: !self.insecure,
                    },
                    false => Endpoint::Tcp(addr),
                }
            }
        };
        let client = Client::login(&endpoint, options)
            .await
            .with_context(|| format!("log in as {}", self.user))?;
        eprintln!("confab-pb: logged in as {}", client.jid());
        Ok(client)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send { conn, to, text } => send(&conn, &to, &text).await,
        Command::Listen {
            conn,
            count,
            timeout,
        } => listen(&conn, count, timeout).await,
        Command::Chat { conn } => chat(&conn).await,
    }
}

async fn send(conn: &ConnArgs, to: &str, text: &str) -> anyhow::Result<()> {
    let mut client = conn.login().await?;
    let receipt = client
        .send_message_acked(to, text)
        .await
        .context("send the message")?;
    print_line(&receipt_json(&receipt))?;
    client.close().await.context("close the stream")?;
    Ok(())
}

async fn listen(conn: &ConnArgs, count: Option<u64>, timeout: Option<u64>) -> anyhow::Result<()> {
    let mut client = conn.login().await?;
    client.available().await?;
    eprintln!("confab-pb: listening");
    let mut received = 0u64;
    let deadline = timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    while count.is_none_or(|count| received < count) {
        let event = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, client.next_event()).await {
                Ok(event) => event?,
                Err(_) => break,
            },
            None => client.next_event().await?,
        };
        match event {
            Event::Message(message) if message.body().is_some() => {
                print_line(&serde_json::json!({
                    "from": message.from(),
                    "body": message.body(),
                    "id": message.id,
                    "stanza_id": message.stanza_id,
                }))?;
                received += 1;
            }
            Event::Closed(error) => bail!("the server closed the stream: {error:?}"),
            _ => {}
        }
    }
    if let Some(count) = count
        && received < count
    {
        bail!("timed out after {received} of {count} messages");
    }
    client.close().await.context("close the stream")?;
    Ok(())
}

async fn chat(conn: &ConnArgs) -> anyhow::Result<()> {
    let mut client = conn.login().await?;
    client.available().await?;
    eprintln!("confab-pb: type `JID: text` lines; end with Ctrl-D");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("read stdin")? else { break };
                let Some((to, text)) = line.split_once(':') else {
                    eprintln!("confab-pb: expected `JID: text`");
                    continue;
                };
                client.send_message(to.trim(), text.trim_start()).await?;
            }
            // `next_event` is cancel-safe, so racing it against stdin loses nothing.
            event = client.next_event() => match event? {
                Event::Message(message) if message.body().is_some() => print_line(&serde_json::json!({
                    "from": message.from(),
                    "body": message.body(),
                    "id": message.id,
                    "stanza_id": message.stanza_id,
                }))?,
                Event::Receipt(receipt) => print_line(&receipt_json(&receipt))?,
                Event::Closed(error) => bail!("the server closed the stream: {error:?}"),
                _ => {}
            },
        }
    }
    client.close().await.context("close the stream")?;
    Ok(())
}

fn receipt_json(receipt: &Receipt) -> serde_json::Value {
    serde_json::json!({
        "id": receipt.client_id,
        "server_id": receipt.server_id,
        "seq": receipt.seq,
        "stamp": receipt.stamp(),
    })
}

/// One JSON line, flushed at once: a reader of a pipe sees each event as it happens.
fn print_line(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}
