//! `pitr serve`: the archive as a replication master for real replicas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use redis_pitr::archive::store::redact_store_url;
use redis_pitr::replay::plan::{fmt_ms, Target};
use redis_pitr::serve::{Mode, ServeConfig, Server};

use crate::args::{parse_duration, StoreArgs, Usage};
use crate::output::{outln, Out};

/// The variable that holds the password replicas must send (`masterauth`).
pub const PASSWORD_VAR: &str = "PITR_SERVE_PASSWORD";

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where replicas connect (`REPLICAOF <host> <port>`). Loopback unless told otherwise.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6390")]
    listen: SocketAddr,
    /// Serve this moment (as `restore --to`): the snapshot before it, then the stream up to
    /// its cut; the link is then held with PINGs.
    #[arg(
        long,
        value_name = "WHEN",
        conflicts_with = "follow",
        required_unless_present = "follow"
    )]
    to: Option<Target>,
    /// Serve the newest snapshot, then the stream as the archive grows (a replica trails the
    /// archive by about --poll-interval plus the archiver's flush interval).
    #[arg(long)]
    follow: bool,
    /// Read the password replicas must send (their `masterauth`) from this file (read once,
    /// one trailing newline dropped); or set PITR_SERVE_PASSWORD. Not both.
    #[arg(long, value_name = "PATH")]
    requirepass_file: Option<PathBuf>,
    /// With --to: a PING this often once the stream reached the cut, so that replicas do not
    /// time out; `0` sends none (the replica then reconnects every repl-timeout and resumes
    /// with +CONTINUE). Each PING moves the replica's offset 14 bytes past the archived
    /// master's (see the README).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_ping)]
    repl_ping: Duration,
    /// Every network wait: a handshake command, each write, a replica's silence once its
    /// snapshot is sent (replicas acknowledge every second).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// With --follow: how often the archive is listed for what it gained.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Print what is served as JSON (one line, once listening).
    #[arg(long)]
    json: bool,
}

fn parse_ping(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

pub struct ServeRun {
    cfg: ServeConfig,
    json: bool,
}

/// The password: from PITR_SERVE_PASSWORD or --requirepass-file, never both.
fn password(file: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    let env = std::env::var(PASSWORD_VAR).ok().filter(|p| !p.is_empty());
    match (env, file) {
        (Some(_), Some(_)) => Err(Usage::new(
            "--requirepass-file",
            format!("{PASSWORD_VAR} is set too: set one of them"),
        )
        .into()),
        (Some(p), None) => Ok(Some(p)),
        (None, Some(path)) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Usage::new("--requirepass-file", format!("cannot read {path:?}: {e}"))
            })?;
            let mut text = String::from_utf8(bytes).map_err(|_| {
                Usage::new(
                    "--requirepass-file",
                    format!("{path:?} does not hold UTF-8 text"),
                )
            })?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            if text.is_empty() {
                return Err(Usage::new("--requirepass-file", format!("{path:?} is empty")).into());
            }
            Ok(Some(text))
        }
        (None, None) => Ok(None),
    }
}

pub fn config(a: ServeArgs) -> anyhow::Result<ServeRun> {
    let mode = match (a.to, a.follow) {
        (Some(t), false) => Mode::To(t),
        (None, true) => Mode::Follow,
        _ => return Err(Usage::new("--to", "give --to <when> or --follow").into()),
    };
    Ok(ServeRun {
        cfg: ServeConfig {
            store: a.store.open()?,
            mode,
            listen: a.listen,
            password: password(a.requirepass_file.as_ref())?,
            ping_interval: a.repl_ping,
            timeout: a.timeout,
            poll_interval: a.poll_interval,
        },
        json: a.json,
    })
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(r: ServeRun) -> anyhow::Result<()> {
    let store = redact_store_url(r.cfg.store.url());
    let follow = r.cfg.mode == Mode::Follow;
    let auth = r.cfg.password.is_some();
    let pings = !r.cfg.ping_interval.is_zero();
    let server = Server::bind(r.cfg).await?;
    let addr = server.local_addr()?;
    let mut out = Out::stdout();
    match server.moment() {
        Some(m) => {
            let cut = m.cut.unwrap_or(m.offset());
            tracing::info!(%store, listen = %addr, generation = %m.generation, snapshot = %m.snapshot,
                offset = m.offset(), cut, auth, "pitr serve listening");
            if r.json {
                let v = serde_json::json!({
                    "listen": addr.to_string(),
                    "generation": m.generation.to_string(),
                    "replid": m.served_replid(pings),
                    "archived_replid": m.replid,
                    "snapshot_offset": m.offset(),
                    "cut_offset": cut,
                    "cut_time_ms": m.cut_ms,
                    "follow": false,
                });
                outln!(out, "{v}");
            } else {
                outln!(
                    out,
                    "serving generation {} on {addr}: snapshot at offset {}, the stream to offset {cut} ({}), replication id {}{}",
                    m.generation,
                    m.offset(),
                    fmt_ms(m.cut_ms),
                    m.served_replid(pings),
                    if pings {
                        " (not the archived master's: PINGs past the cut; --repl-ping 0 serves the master's own)"
                    } else {
                        ""
                    }
                );
            }
        }
        None => {
            tracing::info!(%store, listen = %addr, follow, auth, "pitr serve listening");
            if r.json {
                outln!(
                    out,
                    "{}",
                    serde_json::json!({"listen": addr.to_string(), "follow": true})
                );
            } else {
                outln!(
                    out,
                    "serving the newest snapshot and the stream as the archive grows, on {addr}"
                );
            }
        }
    }
    out.flush()?;
    match server.relative_ttls().await {
        Ok(Some(why)) => tracing::warn!("{why}"),
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "the snapshot's RDB version could not be read at start")
        }
    }
    let stop = crate::args::stop_on_signal("closing the replica links");
    server.run(stop).await?;
    Ok(())
}
