//! `pitr archive`: attach to a master as a replica and archive it until stopped.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use redis_pitr::archive::store::redact_store_url;
use redis_pitr::ingest::archiver::{ArchiveConfig, Archiver};
use redis_pitr::maintain::compact::{self, CompactConfig, Levels};
use redis_pitr::maintain::prune::Policy;
use redis_pitr::metrics;
use redis_pitr::net::Source;
use tokio_util::sync::CancellationToken;

use crate::args::{
    parse_duration, parse_interval, parse_levels, parse_size, LeaseArgs, StoreArgs, Usage,
};

#[derive(Args, Debug)]
pub struct ArchiveArgs {
    /// The master: redis://[user[:password]@]host:port. Prefer the password in
    /// PITR_SOURCE_PASSWORD or REDISCLI_AUTH, which keeps it out of the process list.
    #[arg(long, env = "PITR_SOURCE")]
    source: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Longest time a received write waits before its segment is sealed and uploaded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Seal a segment when it reaches this many raw bytes.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    segment_max_bytes: u64,
    /// Bytes received but not yet durable, at most; beyond it the archiver stops reading from
    /// the master (backpressure) until the store catches up.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    max_buffer: u64,
    /// Port announced with REPLCONF listening-port. 0 keeps Sentinel and FAILOVER from ever
    /// choosing the archiver as a master.
    #[arg(long, default_value_t = 0)]
    announce_port: u16,
    /// Consider the master gone after this long without data (it PINGs every 10 s by default).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    read_timeout: Duration,
    #[command(flatten)]
    lease: LeaseArgs,
    /// Compaction levels: the span of each level from 1 on, each a multiple of the one before
    /// (`1m,1h,24h`: minutes, hours, days), or `off`. Every 10 s the archiver merges the
    /// segments of each closed window of a level's span into one object of that level.
    #[arg(long, default_value = compact::DEFAULT_LEVELS, value_parser = parse_levels)]
    compaction_levels: Levels,
    /// How long the objects a compaction replaced stay after the object that replaces them
    /// is written and checked, so that a restore that listed them just before can still read
    /// them (the first pass after it deletes them). `0` deletes them at once.
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    compaction_grace: Duration,
    /// Take a fresh snapshot this often, through a second replica link of its own, so that a
    /// restore replays at most this much stream. Counted from the newest snapshot of the
    /// generation (a restart does not reset it). 0 turns scheduled snapshots off (`pitr
    /// snapshot` still gets one).
    #[arg(long, default_value = "24h", value_parser = parse_interval)]
    snapshot_interval: Duration,
    /// Keep every moment of this last stretch of time restorable and remove what is older,
    /// about every 10 minutes (as `pitr prune --retain`). Default: keep everything.
    #[arg(long, value_parser = parse_duration)]
    retain: Option<Duration>,
    /// Keep at least this many of the newest snapshots (as `pitr prune --retain-snapshots`).
    #[arg(long, value_name = "N")]
    retain_snapshots: Option<usize>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this host:port; `off` serves
    /// nothing. Default: 127.0.0.1:9187, skipped with a warning when that port is taken
    /// (another archiver on the host); an address given here that cannot be bound is an
    /// error.
    #[arg(long, env = "PITR_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
}

/// What `pitr archive` runs with.
pub struct Settings {
    archive: ArchiveConfig,
    /// Where to serve the metrics, and whether the address was given; `None`: off.
    metrics_addr: Option<(String, bool)>,
}

/// The password from the environment, if any: PITR_SOURCE_PASSWORD, then REDISCLI_AUTH.
pub fn env_password() -> Option<String> {
    ["PITR_SOURCE_PASSWORD", "REDISCLI_AUTH"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl ArchiveArgs {
    /// The archiver's configuration, or the first unusable value.
    pub fn config(self) -> anyhow::Result<Settings> {
        // The message names the URL without its password.
        let source = Source::parse(&self.source, env_password())
            .map_err(|reason| Usage::new("--source", reason))?;
        if self.segment_max_bytes > (1 << 32) {
            return Err(Usage::new("--segment-max-bytes", "at most 4GiB").into());
        }
        if self.max_buffer < self.segment_max_bytes.min(1 << 20) {
            return Err(Usage::new("--max-buffer", "must be at least 1MiB").into());
        }
        if self.retain_snapshots == Some(0) {
            return Err(Usage::new("--retain-snapshots", "at least 1").into());
        }
        let metrics_addr = match self.metrics_addr.as_deref().map(str::trim) {
            None => Some((metrics::DEFAULT_ADDR.to_string(), false)),
            Some("off") => None,
            Some(a)
                if a.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Some((a.to_string(), true))
            }
            Some(a) => {
                return Err(
                    Usage::new("--metrics-addr", format!("{a:?} is not host:port or off")).into(),
                )
            }
        };
        let store = self.store.open()?;
        let archive = ArchiveConfig {
            source,
            store,
            flush_interval: self.flush_interval,
            segment_max_bytes: self.segment_max_bytes as usize,
            max_buffer: usize::try_from(self.max_buffer)
                .map_err(|_| Usage::new("--max-buffer", "too large for this machine"))?,
            announce_port: self.announce_port,
            read_timeout: self.read_timeout,
            lease: self.lease.config()?,
            compaction: CompactConfig {
                levels: self.compaction_levels,
                grace: self.compaction_grace,
                ..CompactConfig::default()
            },
            snapshot_interval: Some(self.snapshot_interval).filter(|d| !d.is_zero()),
            retention: Policy {
                retain: self.retain,
                retain_snapshots: self.retain_snapshots,
            },
        };
        Ok(Settings {
            archive,
            metrics_addr,
        })
    }
}

/// Archives until SIGTERM or SIGINT (then flushes, uploads, ACKs and returns); a second signal
/// exits at once with 130.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        archive: cfg,
        metrics_addr,
    } = settings;
    // Stopped when the archiver has returned (the process exits then anyway).
    let stop_metrics = CancellationToken::new();
    let _stop_metrics = stop_metrics.clone().drop_guard();
    if let Some((addr, given)) = metrics_addr {
        let ready: metrics::Readiness = Arc::new(|| metrics::global().archive_ready());
        match metrics::serve(&addr, ready, stop_metrics).await {
            Ok(local) => tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz"),
            Err(e) if given => return Err(Usage::new("--metrics-addr", e.to_string()).into()),
            // The default port, taken (by another archiver on this host, say): go on without.
            Err(e) => tracing::warn!(error = %e,
                "serving no metrics: the default address is taken (pass --metrics-addr HOST:PORT or off)"),
        }
    }
    tracing::info!(source = %cfg.source.addr(), store = %redact_store_url(cfg.store.url()),
        flush_interval_ms = cfg.flush_interval.as_millis() as u64, "pitr archive starting");
    let shutdown = CancellationToken::new();
    let request = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutdown requested: flushing what was received");
                request.cancel();
            } else {
                tracing::warn!("second signal: exiting without waiting for the flush");
                std::process::exit(130);
            }
        }
    });
    Archiver::run(cfg, shutdown).await?;
    Ok(())
}
