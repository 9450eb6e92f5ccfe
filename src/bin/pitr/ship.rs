//! `pitr ship`: copies an archive into another store, holding the destination's lease.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use redis_pitr::archive::fetch::MAX_PARALLEL;
use redis_pitr::archive::lease::LeaseConfig;
use redis_pitr::archive::names::ArchiveName;
use redis_pitr::archive::store::{redact_store_url, Store, StoreError};
use redis_pitr::metrics;
use redis_pitr::ship::{self, Follow, ShipConfig, ShipReport};

use crate::args::{metrics_addr, parse_duration, parse_size, serve_metrics, LeaseArgs, Usage};
use crate::output::{fmt_bytes, outln, Out};
use crate::Finding;

#[derive(Args, Debug)]
pub struct ShipArgs {
    /// The source store (read only): a path, file://, s3://, gs://, az:// URL. Credentials
    /// come from the environment, as for every command (the same for both stores).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The destination store, written under its lease (as `ship`).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Archive name, the same in both stores.
    #[arg(long, env = "PITR_NAME", default_value = "default")]
    name: ArchiveName,
    /// Keep going: a round every --interval, until SIGTERM or SIGINT.
    #[arg(long)]
    follow: bool,
    /// Time between two rounds of --follow.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Objects read from the source ahead of the writes, 1 to 256.
    #[arg(
        long,
        value_name = "N",
        default_value_t = ship::DEFAULT_PARALLEL as u16,
        value_parser = clap::value_parser!(u16).range(1..=MAX_PARALLEL as i64),
    )]
    parallel: u16,
    /// Bytes per second over all copies (`50MB`, `10MiB`); no limit by default.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_rate: Option<u64>,
    /// Delete from the destination what the source no longer has (replaced by compaction,
    /// removed by retention), once what replaces it is shipped and checked.
    #[arg(long)]
    mirror_deletes: bool,
    /// Print JSON: one line per round with --follow, then the run's report.
    #[arg(long)]
    json: bool,
    /// With --follow: serve /metrics (the pitr_ship_* series: lag, copies, errors), /healthz
    /// and /readyz (ready once a round succeeded, and while the last one did) on this
    /// host:port; `off` serves nothing. Default with --follow: 127.0.0.1:9188 (not the
    /// archiver's 9187), skipped with a warning when taken; without --follow: off.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    #[command(flatten)]
    lease: LeaseArgs,
}

/// Where `pitr ship --follow` serves its metrics by default.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9188";

pub struct ShipRun {
    src: Store,
    dst: Store,
    cfg: ShipConfig,
    lease: LeaseConfig,
    follow: Option<Follow>,
    json: bool,
    metrics_addr: Option<(String, bool)>,
}

fn open(flag: &'static str, url: &str, name: &ArchiveName) -> anyhow::Result<Store> {
    match Store::open(url, name) {
        Ok(s) => Ok(s),
        Err(StoreError::Config { reason, .. }) => {
            Err(Usage::new(flag, format!("{:?}: {reason}", redact_store_url(url))).into())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn config(a: ShipArgs) -> anyhow::Result<ShipRun> {
    if a.from == a.to {
        return Err(Usage::new("--to", "the same store as --from").into());
    }
    Ok(ShipRun {
        src: open("--from", &a.from, &a.name)?,
        dst: open("--to", &a.to, &a.name)?,
        cfg: ShipConfig {
            parallel: usize::from(a.parallel),
            max_rate: a.max_rate,
            mirror_deletes: a.mirror_deletes,
            ..ShipConfig::default()
        },
        lease: a.lease.config()?,
        follow: a.follow.then_some(Follow {
            interval: a.interval,
        }),
        json: a.json,
        metrics_addr: metrics_addr(
            a.metrics_addr.as_deref(),
            a.follow.then_some(DEFAULT_METRICS_ADDR),
        )?,
    })
}

fn print(out: &mut Out, r: &ShipReport, json: bool) -> anyhow::Result<()> {
    if json {
        outln!(out, "{}", serde_json::to_string(r)?);
    } else {
        outln!(
            out,
            "copied {} objects ({}), skipped {} ({}), checked {}, deleted {} ({}), {} errors, lag {} objects ({}) {:.1} s, {:.1} s",
            r.objects_copied,
            fmt_bytes(r.bytes_copied),
            r.objects_skipped,
            fmt_bytes(r.bytes_skipped),
            r.objects_checked,
            r.objects_deleted,
            fmt_bytes(r.bytes_deleted),
            r.errors.len(),
            r.lag.objects,
            fmt_bytes(r.lag.bytes),
            r.lag.seconds,
            r.seconds
        );
        for e in &r.errors {
            outln!(out, "NOT SHIPPED: {e}");
        }
    }
    out.flush()?;
    Ok(())
}

/// Ships once, or with --follow until SIGTERM or SIGINT (the round in progress stops between
/// two objects). Objects that fail their checks are [`Finding::Corrupt`] (exit 4).
pub async fn run(cfg: ShipRun) -> anyhow::Result<()> {
    tracing::info!(from = %redact_store_url(cfg.src.url()), to = %redact_store_url(cfg.dst.url()),
        follow = cfg.follow.is_some(), "pitr ship starting");
    let stop = crate::args::stop_on_signal("stopping after the object being shipped");
    let stop_metrics = CancellationToken::new();
    let _stop_metrics = stop_metrics.clone().drop_guard();
    let ready: metrics::Readiness = Arc::new(|| metrics::global().ship_ready());
    serve_metrics(cfg.metrics_addr, ready, stop_metrics).await?;
    let mut out = Out::stdout();
    let json = cfg.json;
    let following = cfg.follow.is_some();
    let report = ship::run(
        cfg.src,
        cfg.dst,
        cfg.cfg,
        cfg.lease,
        cfg.follow,
        stop,
        |r| {
            if following {
                let _ = print(&mut Out::stdout(), r, json);
            }
        },
    )
    .await?;
    print(&mut out, &report, json)?;
    if let Some(first) = report.errors.first() {
        return Err(Finding::Corrupt {
            first: first.to_string(),
        }
        .into());
    }
    Ok(())
}
