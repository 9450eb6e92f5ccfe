//! `pitr compact`: one compaction pass over every generation of an archive, holding its lease.

use anyhow::Context;
use clap::Args;

use redis_pitr::archive::lease::{Lease, LeaseCommand, LeaseConfig};
use redis_pitr::archive::store::Store;
use redis_pitr::maintain::compact::{self, CompactConfig, Levels, Skip};

use crate::args::{compaction_with_run, parse_levels, parse_size, LeaseArgs, ReadArgs};
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
    /// The most raw stream bytes one compacted object holds, as `pitr archive
    /// --compaction-max-run`: the pass holds about twice this, plus as much fetched ahead.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "BYTES")]
    max_run: u64,
    #[command(flatten)]
    lease: LeaseArgs,
}

pub struct CompactRun {
    lease: LeaseConfig,
    store: Store,
    json: bool,
    compaction: CompactConfig,
}

pub fn config(a: CompactArgs) -> anyhow::Result<CompactRun> {
    Ok(CompactRun {
        lease: a.lease.config()?,
        store: a.read.store.open()?,
        json: a.read.json,
        compaction: compaction_with_run(
            CompactConfig {
                levels: a.levels,
                ..CompactConfig::default()
            },
            a.max_run,
            "--max-run",
        )?,
    })
}

/// Takes the lease (refused while an archiver runs: it compacts on its own), runs one pass,
/// gives the lease back and prints what was done. Runs that were not compacted because of
/// their content are [`Finding::Corrupt`] (exit 4).
pub async fn run(cfg: CompactRun) -> anyhow::Result<()> {
    let now = redis_pitr::ingest::archiver::now_ms();
    let run = &cfg;
    let report = Lease::hold_while(
        &cfg.store,
        LeaseCommand::Compact,
        cfg.lease,
        |guard| async move {
            compact::compact_pass(
                &run.store,
                &run.compaction,
                &guard,
                now,
                &mut Skip::default(),
            )
            .await
            .context("compacting the archive")
        },
    )
    .await?;
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
