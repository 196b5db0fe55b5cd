//! The tools for people: `check-rules` validates a rule file; `tail`, `list`, `ack`, `silence`
//! and `unsilence` talk to the running service over NATS; [`replay`] shows what rules would have
//! done over a past range.

pub mod replay;

use crate::api::{
    self, AckRequest, ErrorReply, ListRequest, ListResponse, SilenceRequest, UnsilenceRequest,
};
use crate::config::{AckArgs, ListArgs, SilenceArgs, TailArgs, UnsilenceArgs};
use crate::engine::{rules, Ack, Matcher, Silence};
use crate::nats::HEADER_SILENCED;
use anyhow::Context as _;
use citypulse_runtime::nats::NatsArgs;
use citypulse_schema::{AlertEvent, AlertState, Severity};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// `check-rules FILE`: prints a summary of a valid file, or every error with its line.
pub fn check_rules(path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match rules::load(&text) {
        Ok(set) => {
            println!(
                "{}: {} rule(s) in {} group(s), valid",
                path.display(),
                set.rule_count(),
                set.groups().len()
            );
            for g in set.groups() {
                let levels: Vec<String> = g
                    .levels
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.severity))
                    .collect();
                println!("  {}: {}", g.name, levels.join(" → "));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}:{e}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

async fn connect(args: &NatsArgs) -> anyhow::Result<async_nats::Client> {
    args.options("citypulse-alerts-cli")
        .await?
        .connection_timeout(Duration::from_secs(5))
        .connect(args.nats_url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))
}

/// Sends one request to the service and decodes its reply (or its `{"error": …}`).
pub async fn request<Req: serde::Serialize, Resp: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    req: &Req,
    timeout: Duration,
) -> anyhow::Result<Resp> {
    let body = serde_json::to_vec(req)?;
    let reply = tokio::time::timeout(timeout, client.request(subject.to_owned(), body.into()))
        .await
        .with_context(|| {
            format!("no reply on {subject} within {timeout:?}; is citypulse-alerts running?")
        })?
        .with_context(|| format!("request on {subject}"))?;
    if let Ok(e) = serde_json::from_slice::<ErrorReply>(&reply.payload) {
        anyhow::bail!("{}", e.error);
    }
    serde_json::from_slice(&reply.payload)
        .with_context(|| format!("decoding the reply on {subject}"))
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// ANSI colours by severity; resolved transitions are green.
fn paint(text: &str, state: AlertState, severity: Severity, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match (state, severity) {
        (AlertState::Resolved, _) => "32",
        (_, Severity::Critical) => "1;31",
        (_, Severity::Warning) => "33",
        (_, Severity::Info) => "36",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// One transition as a line for people.
pub fn format_event(e: &AlertEvent, silenced: bool, color: bool) -> String {
    let head = format!(
        "{:<8} {:<8}",
        e.state.as_str().to_uppercase(),
        e.severity.as_str()
    );
    let subject = match &e.sensor {
        Some(s) => format!("{}/{s}", e.district),
        None => e.district.clone(),
    };
    format!(
        "{} {} {:<7} {:<16} {}{}  [{}]",
        time(e.at),
        paint(&head, e.state, e.severity, color),
        e.kind.as_str(),
        subject,
        e.summary,
        if silenced { " (silenced)" } else { "" },
        e.id
    )
}

/// `tail`: prints transitions as they are published, filtered.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = connect(&args.nats).await?;
    let subject = format!(
        "alerts.*.{}.{}",
        args.filter
            .kind
            .map(|k| k.as_str().to_owned())
            .unwrap_or_else(|| "*".into()),
        args.filter.district.clone().unwrap_or_else(|| "*".into())
    );
    let mut sub = client.subscribe(subject.clone()).await?;
    // Once the server has the subscription, "tailing" is true: a script may act right after it.
    if let Err(e) = citypulse_runtime::nats::round_trip(&client, Duration::from_secs(5)).await {
        eprintln!("could not confirm the subscription with the server ({e:#}); transitions in the next moments may be missed");
    }
    let color = !args.no_color && std::io::stdout().is_terminal();
    eprintln!("tailing {subject} (Ctrl-C to stop)");
    let mut out = std::io::stdout().lock();
    loop {
        let msg = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            m = sub.next() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let e = match AlertEvent::decode(&msg.payload) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("{}: not an alert event ({err})", msg.subject);
                continue;
            }
        };
        if args.filter.severity.is_some_and(|s| e.severity < s) {
            continue;
        }
        let silenced = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_SILENCED))
            .is_some_and(|v| v.as_str() == "true");
        writeln!(out, "{}", format_event(&e, silenced, color))?;
        out.flush()?;
    }
}

/// `list`.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = connect(&args.client.nats).await?;
    let req = ListRequest {
        severity: args.filter.severity,
        district: args.filter.district,
        kind: args.filter.kind,
    };
    let resp: ListResponse = request(&client, api::SUBJECT_LIST, &req, args.client.timeout).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }
    let color = std::io::stdout().is_terminal();
    if resp.alerts.is_empty() {
        println!("no active alerts");
    }
    for a in &resp.alerts {
        let mut line = format_event(&a.event, a.silenced_by.is_some(), color);
        line.push_str(&format!("  since {}", time(a.event.started_at)));
        if let Some(ack) = &a.ack {
            line.push_str(&format!("  acked by {} at {}", ack.by, time(ack.at)));
            if !ack.comment.is_empty() {
                line.push_str(&format!(" ({})", ack.comment));
            }
        }
        if !a.published {
            line.push_str("  not published");
        }
        println!("{line}");
    }
    for s in &resp.silences {
        println!("silence {}", describe_silence(s));
    }
    Ok(())
}

fn describe_silence(s: &Silence) -> String {
    let m = &s.matcher;
    let mut parts = Vec::new();
    for (k, v) in [
        ("rule", m.rule.clone()),
        ("district", m.district.clone()),
        ("kind", m.kind.map(|k| k.to_string())),
        ("severity", m.severity.map(|k| k.to_string())),
        ("sensor", m.sensor.clone()),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    format!(
        "{} [{}] until {} by {}{}",
        s.id,
        parts.join(" "),
        time(s.ends_at),
        s.by,
        if s.comment.is_empty() {
            String::new()
        } else {
            format!(": {}", s.comment)
        }
    )
}

/// `ack`.
pub async fn ack(args: AckArgs) -> anyhow::Result<()> {
    let client = connect(&args.client.nats).await?;
    let req = AckRequest {
        id: args.id,
        by: args.by,
        comment: args.comment,
    };
    let a: Ack = request(&client, api::SUBJECT_ACK, &req, args.client.timeout).await?;
    println!("acknowledged {} by {} at {}", a.id, a.by, time(a.at));
    Ok(())
}

/// `silence`.
pub async fn silence(args: SilenceArgs) -> anyhow::Result<()> {
    let client = connect(&args.client.nats).await?;
    let req = SilenceRequest {
        matcher: Matcher {
            rule: args.rule,
            district: args.district,
            kind: args.kind,
            severity: args.severity,
            sensor: args.sensor,
        },
        duration: humantime::format_duration(args.duration).to_string(),
        by: args.by,
        comment: args.comment,
    };
    let s: Silence = request(&client, api::SUBJECT_SILENCE, &req, args.client.timeout).await?;
    println!("silence {}", describe_silence(&s));
    Ok(())
}

/// `unsilence`.
pub async fn unsilence(args: UnsilenceArgs) -> anyhow::Result<()> {
    let client = connect(&args.client.nats).await?;
    let req = UnsilenceRequest {
        id: args.id,
        by: args.by,
    };
    let s: Silence = request(&client, api::SUBJECT_UNSILENCE, &req, args.client.timeout).await?;
    println!("removed silence {}", describe_silence(&s));
    Ok(())
}

/// Runs a client subcommand to completion; errors go to stderr with exit code 1.
pub async fn run_client<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> ExitCode {
    match f.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::Kind;

    #[test]
    fn events_read_well_with_and_without_colour() {
        let e = AlertEvent {
            id: "aqi:d04:1767225900000".into(),
            rule: "aqi-unhealthy".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            kind: Kind::Air,
            district: "d04".into(),
            sensor: None,
            metric: "aqi".into(),
            value: 163.0,
            threshold: 150.0,
            started_at: 1_767_225_900_000,
            at: 1_767_225_900_000,
            summary: "AQI 163 (unhealthy) in d04".into(),
        };
        let plain = format_event(&e, false, false);
        assert_eq!(
            plain,
            "2026-01-01T00:05:00Z FIRING   critical air     d04              AQI 163 (unhealthy) in d04  [aqi:d04:1767225900000]"
        );
        let coloured = format_event(&e, true, true);
        assert!(coloured.contains("\x1b[1;31mFIRING   critical\x1b[0m"));
        assert!(coloured.contains("(silenced)"));
    }
}
