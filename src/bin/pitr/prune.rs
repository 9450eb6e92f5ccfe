//! `pitr prune`: shows what the retention policy removes, and removes it with `--confirm`
//! (holding the archive's lease); `--report-only` says what a bucket lifecycle rule may
//! expire instead.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use redis_pitr::archive::catalog::Catalog;
use redis_pitr::archive::lease::{Lease, LeaseCommand, LeaseConfig};
use redis_pitr::archive::store::{redact_store_url, Store};
use redis_pitr::maintain::prune::{self, Applied, LifecycleAdvice, PlanReport, Policy};

use crate::args::{parse_duration, LeaseArgs, ReadArgs, Usage};
use crate::output::{fmt_bytes, fmt_time, outln, Out};
use crate::Finding;

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Keep every moment of this last stretch of time restorable (`30d`, `12h`).
    #[arg(long, value_parser = parse_duration)]
    retain: Option<Duration>,
    /// Keep at least this many of the newest snapshots, and everything after the oldest of them.
    #[arg(long, value_name = "N")]
    retain_snapshots: Option<usize>,
    /// Delete. Without it, only print what would be deleted.
    #[arg(long, conflicts_with = "report_only")]
    confirm: bool,
    /// For buckets that expire objects with lifecycle rules: print which objects such a rule
    /// may take without breaking the retained window, and delete nothing.
    #[arg(long)]
    report_only: bool,
    /// Also print the name of every object deleted (or to delete), in deletion order. Without
    /// it the report is a summary: per generation, per kind and level, the count, the bytes and
    /// the first and last object.
    #[arg(long)]
    list_objects: bool,
    #[command(flatten)]
    lease: LeaseArgs,
}

pub struct PruneRun {
    lease: LeaseConfig,
    store: Store,
    /// The archive's name, for the lifecycle rule's prefix.
    name: String,
    json: bool,
    policy: Policy,
    confirm: bool,
    report_only: bool,
    list_objects: bool,
}

pub fn config(a: PruneArgs) -> anyhow::Result<PruneRun> {
    if a.retain.is_none() && a.retain_snapshots.is_none() {
        return Err(Usage::new(
            "--retain",
            "give --retain, --retain-snapshots or both (without either, everything is kept)",
        )
        .into());
    }
    if a.retain_snapshots == Some(0) {
        return Err(Usage::new("--retain-snapshots", "at least 1").into());
    }
    Ok(PruneRun {
        lease: a.lease.config()?,
        store: a.read.store.open()?,
        name: a.read.store.name.as_str().to_string(),
        json: a.read.json,
        policy: Policy {
            retain: a.retain,
            retain_snapshots: a.retain_snapshots,
        },
        confirm: a.confirm,
        report_only: a.report_only,
        list_objects: a.list_objects,
    })
}

#[derive(Serialize)]
struct Report<'a> {
    deleted: bool,
    plan: PlanReport<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<&'a Applied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle: Option<&'a LifecycleAdvice>,
}

/// Plans from a listing; with `--confirm`, takes the lease (refused beside a running archiver,
/// which prunes itself when given a policy), lists again under it, and deletes. Generations
/// left alone for their problems are [`Finding::Corrupt`] (exit 4) once the rest is done.
pub async fn run(cfg: PruneRun) -> anyhow::Result<()> {
    let now = redis_pitr::ingest::archiver::now_ms();
    let (plan, applied) = if cfg.confirm {
        let run = &cfg;
        let (plan, applied) = Lease::hold_while(
            &cfg.store,
            LeaseCommand::Prune,
            cfg.lease,
            |guard| async move {
                prune::prune_pass(&run.store, &run.policy, &guard, now)
                    .await
                    .context("pruning the archive")
            },
        )
        .await?;
        (plan, Some(applied))
    } else {
        let listing = cfg.store.list().await?;
        let catalog = Catalog::from_listing(&listing);
        (prune::plan_prune(&catalog, now, &cfg.policy), None)
    };
    let lifecycle = if cfg.report_only {
        let catalog = Catalog::from_listing(&cfg.store.list().await?);
        prune::lifecycle(&catalog, &plan, now)
    } else {
        None
    };
    let mut out = Out::stdout();
    if cfg.json {
        let r = Report {
            deleted: applied.is_some(),
            plan: plan.report(cfg.list_objects),
            applied: applied.as_ref(),
            lifecycle: lifecycle.as_ref(),
        };
        outln!(out, "{}", serde_json::to_string_pretty(&r)?);
    } else {
        let verb = if applied.is_some() {
            "deleted"
        } else {
            "would delete"
        };
        outln!(
            out,
            "{verb} {} objects ({})",
            plan.objects(),
            fmt_bytes(plan.bytes())
        );
        for g in &plan.generations {
            outln!(
                out,
                "  generation {}: {} objects ({}){}",
                g.generation,
                g.objects,
                fmt_bytes(g.bytes),
                if g.whole {
                    ", the whole generation"
                } else {
                    ""
                }
            );
            for k in g.kinds() {
                let what = match k.level {
                    Some(l) => format!("level {l} segments"),
                    None => "snapshots".to_string(),
                };
                let names = if k.objects == 1 {
                    k.first
                } else {
                    format!("{} .. {}", k.first, k.last)
                };
                outln!(
                    out,
                    "    {what}: {} ({}), {} .. {}: {names}",
                    k.objects,
                    fmt_bytes(k.bytes),
                    fmt_time(k.from_ms),
                    fmt_time(k.to_ms)
                );
            }
            if cfg.list_objects {
                for o in &g.delete {
                    outln!(out, "      {}", o.name);
                }
            }
        }
        if let Some(k) = &plan.kept {
            outln!(
                out,
                "kept from snapshot {} (generation {}, offset {}, {})",
                k.snapshot,
                k.generation,
                k.offset,
                fmt_time(k.time_ms)
            );
            for b in &k.because {
                outln!(out, "  because {}", b.describe());
            }
        }
        if let Some(w) = plan.window_before {
            outln!(
                out,
                "window before: {} .. {}",
                fmt_time(w.from_ms),
                fmt_time(w.to_ms)
            );
        }
        if let Some(w) = plan.window_after {
            outln!(
                out,
                "window after:  {} .. {}",
                fmt_time(w.from_ms),
                fmt_time(w.to_ms)
            );
        }
        if let Some(t) = plan.new_window_start_ms {
            outln!(out, "restorable from {} on", fmt_time(t));
        }
        if let Some(a) = &lifecycle {
            outln!(
                out,
                "lifecycle: a rule expiring objects under {}/{}/ older than {} days takes none that is kept now (the oldest kept object holds {}); the newest object it may take: {}",
                redact_store_url(cfg.store.url()).trim_end_matches('/'),
                cfg.name,
                a.safe_days,
                fmt_time(a.oldest_kept_ms),
                a.newest_takeable.as_deref().unwrap_or("none")
            );
            outln!(
                out,
                "lifecycle: this holds at the time of this report; as the archive grows the kept point moves on, so a rule is safe while its age is at least the retained window plus the snapshot interval (objects are stored no earlier than the moments they hold; compacted ones later)"
            );
        } else if cfg.report_only {
            outln!(out, "lifecycle: no object may be expired by a rule now");
        }
        if applied.is_none() && !cfg.report_only && plan.objects() > 0 {
            outln!(out, "nothing deleted: run again with --confirm to delete");
        }
        for p in &plan.problems {
            outln!(out, "LEFT ALONE: {p}");
        }
    }
    out.flush()?;
    if let Some(first) = plan.problems.first() {
        return Err(Finding::Corrupt {
            first: first.clone(),
        }
        .into());
    }
    Ok(())
}
