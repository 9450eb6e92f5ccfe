//! `pitr archive`: attach to a master as a replica and archive it until stopped.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use redis_pitr::archive::names::ArchiveName;
use redis_pitr::archive::store::{redact_store_url, Store, StoreError};
use redis_pitr::cluster::archive::ClusterArchive;
use redis_pitr::cluster::ClusterSource;
use redis_pitr::ingest::archiver::{ArchiveConfig, Archiver};
use redis_pitr::maintain::compact::{self, CompactConfig, Levels};
use redis_pitr::maintain::prune::Policy;
use redis_pitr::metrics;
use redis_pitr::net::sentinel::{self, SentinelAuth};
use redis_pitr::net::Source;
use redis_pitr::ship;
use tokio_util::sync::CancellationToken;

use crate::args::{
    compaction_with_run, metrics_addr, parse_duration, parse_interval, parse_levels, parse_size,
    serve_metrics, LeaseArgs, SentinelPasswordFile, SourcePasswordFile, StoreArgs, TlsArgs, Usage,
};

#[derive(Args, Debug)]
pub struct ArchiveArgs {
    /// The master: redis://[user[:password]@]host:port (rediss://… for TLS, see --tls-*);
    /// behind Sentinel,
    /// sentinel://[user[:password]@]host:port[,host:port…]/<master-name> (the credentials are
    /// the master's; the sentinels' are --sentinel-user and PITR_SENTINEL_PASSWORD or
    /// --sentinel-password-file); or a whole Redis Cluster,
    /// cluster://[user[:password]@]host:port[,host:port…] (one archive per shard, under
    /// <name>/<shard-id>). Prefer the password in PITR_SOURCE_PASSWORD or REDISCLI_AUTH, or in
    /// a file (--source-password-file), which keeps it out of the process list.
    #[arg(long, env = "PITR_SOURCE")]
    source: String,
    /// The sentinels' user, for a sentinel:// source (their password: PITR_SENTINEL_PASSWORD).
    #[arg(long, env = "PITR_SENTINEL_USER")]
    sentinel_user: Option<String>,
    /// Archive from the server --source names even when it is a replica. By default a
    /// server that answers as a replica (a FAILOVER or REPLICAOF demoted the master) is
    /// followed to its master.
    #[arg(long, env = "PITR_NO_FOLLOW")]
    no_follow: bool,
    #[command(flatten)]
    pub(crate) source_password_file: SourcePasswordFile,
    #[command(flatten)]
    pub(crate) sentinel_password_file: SentinelPasswordFile,
    #[command(flatten)]
    tls: TlsArgs,
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
    /// The most raw stream bytes one compacted object holds (a window with more is cut into
    /// several). Compaction holds about twice this, plus as much fetched ahead (at most
    /// 64 MiB): lower it to keep the archiver's memory small on a busy master.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "BYTES")]
    compaction_max_run: u64,
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
    /// error. With a cluster:// source every pitr_* series has a shard="<shard-id>" label,
    /// and /readyz is ready when every shard's archiver is (it names those that are not).
    #[arg(long, env = "PITR_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Keep a copy of the archive in a second store (another region, another provider): a
    /// shipper runs beside the archiver, as `pitr ship --follow --mirror-deletes`, a round
    /// every 5 s, under the copy's own lease; every object is checked there. A failure of the
    /// copy never stops the archiver (it is logged, counted in pitr_ship_errors, and tried
    /// again); pitr_ship_lag_seconds says how far behind the copy is. With a cluster://
    /// source, each shard's archive is copied to <also-to>/<name>/<shard-id> by a shipper of
    /// its own, and the topology records (<name>/cluster/*.json) are copied too.
    #[arg(long, value_name = "URL")]
    also_to: Option<String>,
}

/// What `pitr archive` runs with.
pub struct Settings {
    archive: ArchiveConfig,
    /// Where to serve the metrics, and whether the address was given; `None`: off.
    metrics_addr: Option<(String, bool)>,
    /// `--also-to`: the store that keeps a copy.
    also_to: Option<Store>,
    /// A `cluster://` source: the cluster, and `--store` and `--name` as given.
    cluster: Option<(ClusterSource, String, ArchiveName)>,
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
        // TLS: rediss:// for one server; --tls (or any --tls-* flag) for sentinel:// and
        // cluster://, whose every connection then uses it.
        let located_tls = self.tls.located()?;
        let cluster = if ClusterSource::is_cluster_url(&self.source) {
            let mut c = ClusterSource::parse(&self.source, env_password())
                .map_err(|reason| Usage::new("--source", reason))?;
            c.tls = located_tls.clone();
            Some((c, self.store.store.clone(), self.store.name.clone()))
        } else {
            None
        };
        let source = match &cluster {
            // Each shard's archiver gets a source of its own.
            Some((c, _, _)) => c.node(&c.seeds[0].0, c.seeds[0].1),
            None if self.source.starts_with("sentinel://") => {
                let auth = SentinelAuth {
                    user: self.sentinel_user.clone(),
                    password: std::env::var("PITR_SENTINEL_PASSWORD")
                        .ok()
                        .filter(|p| !p.is_empty()),
                };
                let template = Source {
                    tls: located_tls.clone(),
                    ..Source::default()
                };
                sentinel::parse(&self.source, env_password(), auth, &template)
                    .map_err(|reason| Usage::new("--source", reason))?
            }
            None => self.tls.source(&self.source, env_password(), "--source")?,
        };
        if self.segment_max_bytes > (1 << 32) {
            return Err(Usage::new("--segment-max-bytes", "at most 4GiB").into());
        }
        if self.max_buffer < self.segment_max_bytes.min(1 << 20) {
            return Err(Usage::new("--max-buffer", "must be at least 1MiB").into());
        }
        if self.retain_snapshots == Some(0) {
            return Err(Usage::new("--retain-snapshots", "at least 1").into());
        }
        let metrics_addr = metrics_addr(self.metrics_addr.as_deref(), Some(metrics::DEFAULT_ADDR))?;
        let also_to = match &self.also_to {
            None => None,
            Some(url) => {
                let name = &self.store.name;
                let dst = Store::open(url, name).map_err(|e| match e {
                    StoreError::Config { reason, .. } => Usage::new(
                        "--also-to",
                        format!("{:?}: {reason}", redact_store_url(url)),
                    )
                    .into(),
                    e => anyhow::Error::from(e),
                })?;
                Some(dst)
            }
        };
        let store = self.store.open()?;
        if also_to.as_ref().is_some_and(|d| d.url() == store.url()) {
            return Err(Usage::new("--also-to", "the same store as --store").into());
        }
        let archive = ArchiveConfig {
            source,
            store,
            flush_interval: self.flush_interval,
            segment_max_bytes: self.segment_max_bytes as usize,
            max_buffer: usize::try_from(self.max_buffer)
                .map_err(|_| Usage::new("--max-buffer", "too large for this machine"))?,
            follow: !self.no_follow,
            announce_port: self.announce_port,
            read_timeout: self.read_timeout,
            lease: self.lease.config()?,
            compaction: compaction_with_run(
                CompactConfig {
                    levels: self.compaction_levels,
                    grace: self.compaction_grace,
                    ..CompactConfig::default()
                },
                self.compaction_max_run,
                "--compaction-max-run",
            )?,
            snapshot_interval: Some(self.snapshot_interval).filter(|d| !d.is_zero()),
            retention: Policy {
                retain: self.retain,
                retain_snapshots: self.retain_snapshots,
            },
        };
        Ok(Settings {
            archive,
            metrics_addr,
            also_to,
            cluster,
        })
    }
}

/// Archives until SIGTERM or SIGINT (then flushes, uploads, ACKs and returns); a second signal
/// exits at once with 130.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        archive: cfg,
        metrics_addr,
        also_to,
        cluster,
    } = settings;
    // Stopped when the archiver has returned (the process exits then anyway).
    let stop_metrics = CancellationToken::new();
    let _stop_metrics = stop_metrics.clone().drop_guard();
    let ready: metrics::Readiness = if cluster.is_some() {
        // Each shard's series get a `shard` label; ready when every shard's archiver is.
        metrics::use_shard_labels();
        Arc::new(metrics::shards_ready)
    } else {
        Arc::new(|| metrics::global().archive_ready())
    };
    serve_metrics(metrics_addr, ready, stop_metrics).await?;
    tracing::info!(source = %cfg.source.addr(), store = %redact_store_url(cfg.store.url()),
        flush_interval_ms = cfg.flush_interval.as_millis() as u64, "pitr archive starting");
    let shutdown = crate::args::stop_on_signal("flushing what was received");
    if let Some((source, store_url, name)) = cluster {
        tracing::info!(seeds = ?source.seeds, "archiving a Redis Cluster: one archive per shard");
        let c = ClusterArchive {
            source,
            store_url,
            name,
            store: cfg.store.clone(),
            also_to,
            template: cfg,
        };
        redis_pitr::cluster::archive::run(c, shutdown).await?;
        return Ok(());
    }
    let copy = also_to.map(|dst| {
        let stop = CancellationToken::new();
        let task = tokio::spawn(ship::keep_copy(
            cfg.store.clone(),
            dst,
            cfg.lease,
            stop.clone(),
        ));
        (stop, task)
    });
    let archived = Archiver::run(cfg, shutdown).await;
    if let Some((stop, task)) = copy {
        stop.cancel();
        let _ = task.await;
    }
    archived?;
    Ok(())
}
