//! `citypulse`: the terminal's view of the subjects.
//!
//! - `citypulse tail 'metrics.air.>' [--json]`: subscribes and prints every reading, window
//!   result, alert transition or dead letter as one readable line (or one JSON object per line).
//! - `citypulse decode [--subject S] < payload.cbor`: one CBOR payload from stdin as JSON.

use citypulse_runtime::nats::NatsArgs;
use citypulse_schema::streams::{HEADER_DETAIL, HEADER_REASON};
use citypulse_web::decode::{cbor_to_json, Message};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

/// citypulse: read the pipeline's subjects in the terminal (CBOR decoded).
#[derive(Debug, Parser)]
#[command(name = "citypulse", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribe to a subject (wildcards allowed) and print each message on one line.
    Tail {
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
        /// Subject or wildcard, e.g. 'metrics.air.>', 'alerts.>', 'dlq.>', 'sensors.d03.>'.
        #[arg(default_value = ">")]
        subject: String,
        /// One JSON object per line instead of a readable line.
        #[arg(long)]
        json: bool,
        /// Stop after this many messages (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Read one CBOR payload from stdin and print it as JSON.
    Decode {
        /// The subject it came from: also checks it is the message that subject carries.
        #[arg(long)]
        subject: Option<String>,
        /// One line instead of indented JSON.
        #[arg(long)]
        compact: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tail {
            nats,
            subject,
            json,
            count,
        } => tail(&nats, &subject, json, count).await,
        Command::Decode { subject, compact } => decode(subject.as_deref(), compact),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citypulse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The NATS client name of `citypulse tail`, and so its inbox prefix, `_INBOX.citypulse-cli`.
const CLIENT_NAME: &str = "citypulse-cli";

async fn tail(nats: &NatsArgs, subject: &str, json: bool, count: u64) -> anyhow::Result<()> {
    let client = nats
        .options(CLIENT_NAME)
        .await?
        .connect(nats.nats_url.as_str())
        .await?;
    let mut sub = client.subscribe(subject.to_owned()).await?;
    subscribed(&client).await;
    // This client's own replies (the echo above) are not what a `>` tail is for.
    let own_inbox = format!("{}.", nats.inbox_prefix(CLIENT_NAME));
    eprintln!("tailing {subject} (Ctrl-C to stop)");
    let mut out = std::io::stdout().lock();
    let mut seen = 0;
    while count == 0 || seen < count {
        let msg = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        if msg.subject.starts_with(own_inbox.as_str()) {
            continue;
        }
        seen += 1;
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let dead_letter =
            header(HEADER_REASON).map(|r| (r, header(HEADER_DETAIL).unwrap_or_default()));
        let m = Message::decode(msg.subject.as_str(), &msg.payload, dead_letter);
        let line = if json { m.json().to_string() } else { m.line() };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Returns once the server has the subscription, so "tailing" is true when printed: a script may
/// publish right after it. A user who may not publish to its own inbox is warned, not refused.
async fn subscribed(client: &async_nats::Client) {
    if let Err(e) = citypulse_runtime::nats::round_trip(client, Duration::from_secs(5)).await {
        eprintln!("citypulse: could not confirm the subscription with the server ({e:#}); messages published in the next moments may be missed");
    }
}

fn decode(subject: Option<&str>, compact: bool) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let value = match subject {
        Some(s) => {
            let m = Message::decode(s, &bytes, None);
            if let Some(p) = &m.problem {
                anyhow::bail!("{s}: {p}");
            }
            m.body.unwrap_or_default()
        }
        None => cbor_to_json(&bytes)?,
    };
    let text = if compact {
        serde_json::to_string(&value)?
    } else {
        serde_json::to_string_pretty(&value)?
    };
    println!("{text}");
    Ok(())
}
