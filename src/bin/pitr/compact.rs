//! `pitr compact`: one compaction pass over every generation of an archive, holding its lease.

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use redis_pitr::archive::lease::{Lease, LeaseCommand, LeaseConfig};
use redis_pitr::archive::store::Store;
use redis_pitr::maintain::compact::{self, CompactConfig, Levels, Skip};

use crate::args::{parse_levels, ReadArgs};
use crate::output::{fmt_bytes, outln, Out};
use crate::Finding;

#[derive(Args, Debug)]
pub struct CompactArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Compaction levels: the span of each level from 1 on, each a multiple of the one before
    /// (`1m,1h,24h`: minutes, hours, days), or `off`.
    #[arg(long, default_value = compact::DEFAULT_LEVELS, value_parser = parse_levels)]
    levels: Levels,
}

pub struct CompactRun {
    store: Store,
    json: bool,
    compaction: CompactConfig,
}

pub fn config(a: CompactArgs) -> anyhow::Result<CompactRun> {
    Ok(CompactRun {
        store: a.read.store.open()?,
        json: a.read.json,
        compaction: CompactConfig {
            levels: a.levels,
            ..CompactConfig::default()
        },
    })
}

/// Takes the lease (refused while an archiver runs: it compacts on its own), runs one pass,
/// gives the lease back and prints what was done. Runs that were not compacted because of
/// their content are [`Finding::Corrupt`] (exit 4).
pub async fn run(cfg: CompactRun) -> anyhow::Result<()> {
    let lease = Lease::acquire(&cfg.store, LeaseCommand::Compact, LeaseConfig::default()).await?;
    let guard = lease.guard();
    let (_vouch, vouched) = watch::channel(None);
    let stop = CancellationToken::new();
    let keeper = tokio::spawn(lease.keep(vouched, stop.clone()));
    let now = redis_pitr::ingest::archiver::now_ms();
    let result = compact::compact_pass(
        &cfg.store,
        &cfg.compaction,
        &guard,
        now,
        &mut Skip::default(),
    )
    .await
    .context("compacting the archive");
    stop.cancel();
    match keeper.await {
        Ok(Ok(lease)) => {
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "could not release the lease: it expires on its own");
            }
        }
        Ok(Err(e)) => {
            result?;
            return Err(e.into());
        }
        Err(e) => tracing::warn!(error = %e, "the lease renewal failed"),
    }
    let report = result?;
    let mut out = Out::stdout();
    if cfg.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            out,
            "read {} objects ({}), wrote {} objects, deleted {} objects ({}); {} raw compacted",
            report.objects_read,
            fmt_bytes(report.bytes_read),
            report.objects_written(),
            report.objects_deleted,
            fmt_bytes(report.bytes_deleted),
            fmt_bytes(report.raw_bytes)
        );
        for c in &report.written {
            outln!(
                out,
                "  level {}: {} objects ({})",
                c.level,
                c.objects,
                fmt_bytes(c.bytes)
            );
        }
        for p in &report.problems {
            outln!(out, "NOT COMPACTED: {p}");
        }
    }
    out.flush()?;
    if let Some(first) = report.problems.first() {
        return Err(Finding::Corrupt {
            first: first.clone(),
        }
        .into());
    }
    Ok(())
}
