//! `pitr ls`: the archive's generations, restorable windows, snapshots and gaps, from a
//! listing alone; and the archive's lease (who writes to it, and what it last vouched for).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use redis_pitr::archive::branch::{self, Branch};
use redis_pitr::archive::catalog::{Catalog, Coverage};
use redis_pitr::archive::lease::{Lease, LeaseInfo};
use redis_pitr::archive::names::ArchiveName;
use redis_pitr::archive::scan;
use redis_pitr::archive::stopped;
use redis_pitr::archive::store::Store;
use redis_pitr::cluster;

use crate::args::ReadArgs;
use crate::output::{fmt_bytes, fmt_time, outln, Out};
use crate::timeline;
use crate::Finding;

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// List every object, to count segments per level and show holes and forks. Without it,
    /// each generation is listed by its snapshots and newest objects only (a few LIST requests
    /// per generation, however long its history), which gives its window and snapshots.
    #[arg(long)]
    pub objects: bool,
    /// Draw the retained period: one line per generation (restorable window, snapshots,
    /// missing ranges) and its write volume per hour under it. Lists every object.
    #[arg(long)]
    pub timeline: bool,
    /// Columns of time in the --timeline drawing (terminal width by default).
    #[arg(long, value_name = "N", requires = "timeline",
          value_parser = clap::value_parser!(u16).range(*timeline::WIDTHS.start() as i64..=*timeline::WIDTHS.end() as i64))]
    pub width: Option<u16>,
}

pub struct LsConfig {
    store: Store,
    name: String,
    json: bool,
    objects: bool,
    /// `Some(width)` for `--timeline`.
    timeline: Option<usize>,
}

pub fn config(a: LsArgs) -> anyhow::Result<LsConfig> {
    Ok(LsConfig {
        store: a.read.store.open()?,
        name: a.read.store.name.as_str().to_string(),
        json: a.read.json,
        objects: a.objects,
        timeline: a.timeline.then(|| {
            a.width.map(usize::from).unwrap_or_else(|| {
                // The labels take 18 columns and the volume's peak about 20.
                std::env::var("COLUMNS")
                    .ok()
                    .and_then(|c| c.parse::<usize>().ok())
                    .map_or(timeline::DEFAULT_WIDTH, |c| c.saturating_sub(40))
                    .clamp(*timeline::WIDTHS.start(), *timeline::WIDTHS.end())
            })
        }),
    })
}

/// Prints the catalog; an empty archive is [`Finding::Empty`] (exit 3) after the report.
pub async fn run(cfg: LsConfig) -> anyhow::Result<()> {
    if let Ok(name) = cfg.name.parse::<ArchiveName>() {
        // A store that cannot be listed fails below, with the usual message and exit code.
        let records = cluster::read_records(&cfg.store, &name)
            .await
            .unwrap_or_default();
        if !records.is_empty() {
            return run_cluster(&cfg, &name, records).await;
        }
    }
    let mut catalog = if cfg.objects || cfg.timeline.is_some() {
        let listing = cfg.store.list().await.context("listing the archive")?;
        Catalog::from_listing(&listing)
    } else {
        scan::summary(&cfg.store)
            .await
            .context("listing the archive")?
            .0
    };
    // A lease that cannot be read is shown, not fatal: the listing is what ls is for.
    let lease = Lease::read(&cfg.store).await.map_err(|e| e.to_string());
    if let Some((g, o, ms)) =
        stopped::vouched_point(&cfg.store, lease.as_ref().ok().and_then(|l| l.as_ref())).await
    {
        catalog.extend_to_vouched(g, o, ms);
    }
    let branches = branches(&cfg.store).await?;
    let mut out = Out::stdout();
    match cfg.timeline {
        Some(width) => {
            let t = timeline::Timeline::new(&catalog, now_ms(), width);
            if cfg.json {
                outln!(out, "{}", serde_json::to_string_pretty(&t)?);
            } else {
                outln!(out, "archive {:?} in {}", cfg.name, cfg.store.url());
                for line in t.render() {
                    outln!(out, "{line}");
                }
            }
        }
        None => print(&mut out, &cfg, &catalog, &lease, &branches, now_ms())?,
    }
    out.flush()?;
    if catalog.generations.is_empty() {
        return Err(Finding::Empty {
            name: cfg.name,
            url: cfg.store.url().to_string(),
        }
        .into());
    }
    Ok(())
}

/// A branch record as shown: with the bytes it lost.
#[derive(serde::Serialize)]
struct BranchShown {
    #[serde(flatten)]
    branch: Branch,
    lost_bytes: u64,
}

/// The archive's branch records (failovers that left commands past the new master's history).
async fn branches(store: &Store) -> anyhow::Result<Vec<BranchShown>> {
    Ok(branch::list(store)
        .await
        .context("reading the branch records")?
        .into_iter()
        .map(|b| BranchShown {
            lost_bytes: b.lost_bytes(),
            branch: b,
        })
        .collect())
}

/// A cluster archive: each shard (its slots now, its windows) and the topology records.
async fn run_cluster(
    cfg: &LsConfig,
    name: &ArchiveName,
    records: Vec<cluster::Topology>,
) -> anyhow::Result<()> {
    let url = cfg.store.url().to_string();
    let newest = records.last().cloned();
    let mut shards = Vec::new();
    for id in cluster::all_shards(&records) {
        let store = cluster::shard_store(&url, name, &id)?;
        let mut catalog = scan::summary(&store)
            .await
            .with_context(|| format!("listing shard {id}"))?
            .0;
        let lease = Lease::read(&store).await.map_err(|e| e.to_string());
        if let Some((g, o, ms)) =
            stopped::vouched_point(&store, lease.as_ref().ok().and_then(|l| l.as_ref())).await
        {
            catalog.extend_to_vouched(g, o, ms);
        }
        let now = newest.as_ref().and_then(|t| t.shard(&id)).cloned();
        shards.push((id, now, catalog, lease));
    }
    let mut out = Out::stdout();
    let now = now_ms();
    if cfg.json {
        let v = serde_json::json!({
            "cluster": name.as_str(),
            "shards": shards.iter().map(|(id, s, c, l)| serde_json::json!({
                "id": id,
                "store": cluster::shards_url(&url, name),
                "current": s,
                "generations": c.generations,
                "gaps": c.gaps,
                "lease": lease_json(l, now),
            })).collect::<Vec<_>>(),
            "topology": records,
        });
        outln!(out, "{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            out,
            "cluster archive {:?} in {url}: {} shards (each an archive in {})",
            name.as_str(),
            shards.len(),
            cluster::shards_url(&url, name)
        );
        for (id, s, c, _) in &shards {
            outln!(out);
            match s {
                Some(s) => outln!(
                    out,
                    "shard {id}  master {} ({})  slots {}",
                    s.master.addr,
                    s.master.id,
                    slot_ranges(&s.slots)
                ),
                None => outln!(out, "shard {id}  (no longer in the cluster)"),
            }
            if c.generations.is_empty() {
                outln!(out, "  empty");
            }
            for g in &c.generations {
                outln!(
                    out,
                    "  generation {}  window {} .. {}  offsets {} .. {}",
                    g.id,
                    fmt_time(g.first_time_ms),
                    fmt_time(g.last_time_ms),
                    g.first_offset,
                    g.last_offset
                );
            }
        }
        outln!(out);
        outln!(out, "topology records (slot ownership over time):");
        for t in &records {
            let shards: Vec<String> = t
                .shards
                .iter()
                .map(|s| {
                    format!(
                        "{}@{} {}",
                        &s.id[..s.id.len().min(8)],
                        s.master.addr,
                        slot_ranges(&s.slots)
                    )
                })
                .collect();
            outln!(out, "  {}  {}", fmt_time(t.time_ms), shards.join("; "));
        }
    }
    out.flush()?;
    Ok(())
}

fn slot_ranges(slots: &[(u16, u16)]) -> String {
    slots
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The lease for `--json`: its fields, how long ago it was renewed and how long it has left
/// (negative once expired).
fn lease_json(lease: &Result<Option<LeaseInfo>, String>, now: u64) -> serde_json::Value {
    match lease {
        Ok(None) => serde_json::Value::Null,
        Ok(Some(l)) => {
            let mut v = serde_json::to_value(l).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert(
                    "renewed_ago_ms".into(),
                    (now as i64 - l.renewed_ms as i64).into(),
                );
                m.insert(
                    "expires_in_ms".into(),
                    (l.expires_ms as i64 - now as i64).into(),
                );
                m.insert("live".into(), l.is_live(now).into());
            }
            v
        }
        Err(e) => serde_json::json!({ "error": e }),
    }
}

/// A signed span between two times in milliseconds, as text: `3s`, `2m 5s`.
fn span(from: u64, to: u64) -> String {
    humantime::format_duration(Duration::from_secs(to.saturating_sub(from) / 1000)).to_string()
}

/// The lease in text: who holds it and until when, and what it vouched for.
fn print_lease(
    out: &mut Out,
    lease: &Result<Option<LeaseInfo>, String>,
    now: u64,
) -> anyhow::Result<()> {
    let l = match lease {
        Ok(None) => {
            outln!(out, "lease        none (no writer)");
            return Ok(());
        }
        Err(e) => {
            outln!(out, "lease        UNREADABLE: {e}");
            return Ok(());
        }
        Ok(Some(l)) => l,
    };
    let state = if l.is_live(now) {
        format!("expires in {}", span(now, l.expires_ms))
    } else {
        format!(
            "EXPIRED {} ago (its holder stopped without releasing it)",
            span(l.expires_ms, now)
        )
    };
    outln!(
        out,
        "lease        pitr {} pid {} on host {} (holder {}), renewed {} ago, {state}",
        l.command,
        l.pid,
        l.host,
        l.holder,
        span(l.renewed_ms, now)
    );
    if let (Some(offset), Some(ms)) = (l.vouched_offset, l.vouched_ms) {
        let generation = l
            .vouched_generation
            .map_or_else(String::new, |g| format!(" of generation {g:010}"));
        outln!(
            out,
            "  vouched    offset {offset}{generation} at {} ({} ago): nothing newer on the master then",
            fmt_time(ms),
            span(ms, now)
        );
    }
    Ok(())
}

fn print(
    out: &mut Out,
    cfg: &LsConfig,
    catalog: &Catalog,
    lease: &Result<Option<LeaseInfo>, String>,
    branches: &[BranchShown],
    now: u64,
) -> anyhow::Result<()> {
    let url = cfg.store.url();
    if cfg.json {
        let mut v = serde_json::to_value(catalog)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("lease".into(), lease_json(lease, now));
            m.insert("branches".into(), serde_json::to_value(branches)?);
        }
        outln!(out, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if catalog.generations.is_empty() {
        outln!(out, "archive {:?} in {url}: empty", cfg.name);
        print_lease(out, lease, now)?;
        return Ok(());
    }
    outln!(out, "archive {:?} in {url}", cfg.name);
    print_lease(out, lease, now)?;
    for (i, g) in catalog.generations.iter().enumerate() {
        outln!(out);
        outln!(out, "generation {}  replid {}", g.id, g.replid);
        if g.replids.len() > 1 {
            let ids: Vec<String> = g.replids.iter().map(|r| r.to_string()).collect();
            outln!(out, "  replids      {}", ids.join(" -> "));
        }
        outln!(
            out,
            "  offsets      {} .. {} ({} of stream)",
            g.first_offset,
            g.last_offset,
            fmt_bytes(g.last_offset.saturating_sub(g.first_offset))
        );
        let age = if i + 1 == catalog.generations.len() {
            format!(
                "  (last write archived {} ago)",
                humantime::format_duration(Duration::from_secs(
                    now.saturating_sub(g.last_time_ms) / 1000
                ))
            )
        } else {
            String::new()
        };
        outln!(
            out,
            "  window       {} .. {}{age}",
            fmt_time(g.first_time_ms),
            fmt_time(g.last_time_ms)
        );
        for s in &g.snapshots {
            outln!(
                out,
                "  snapshot     offset {} at {} ({})",
                s.offset,
                fmt_time(s.time_ms),
                fmt_bytes(s.bytes)
            );
        }
        if g.listed == Coverage::Ends {
            outln!(
                out,
                "  segments     not counted (pitr ls --objects lists every object)"
            );
        } else if g.segments_by_level.len() > 1 {
            let levels: Vec<String> = g
                .segments_by_level
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(l, n)| format!("level {l}: {n}"))
                .collect();
            outln!(out, "  segments     {} ({})", g.segments, levels.join(", "));
        } else {
            outln!(out, "  segments     {}", g.segments);
        }
        if g.listed != Coverage::Ends {
            outln!(
                out,
                "  stored       {} (snapshots and segments)",
                fmt_bytes(g.bytes)
            );
        }
        for h in &g.holes {
            outln!(
                out,
                "  MISSING      offsets {} .. {} (run pitr verify)",
                h.from_offset,
                h.to_offset
            );
        }
        for p in &g.problems {
            outln!(out, "  BROKEN       {p} (run pitr verify)");
        }
    }
    for b in branches {
        let r = &b.branch;
        let count =
            |n: Option<u64>| n.map_or_else(|| "an unknown number of".into(), |n| n.to_string());
        outln!(out);
        if r.shifted {
            outln!(
                out,
                "branch in generation {:010} at offset {}: the failover to {} (found at {}) left {} commands of the old master ({}) past the promotion, none of which changes data; the generation goes on, its offsets from there on the master's plus {}",
                r.generation,
                r.archive_at,
                r.new_master,
                fmt_time(r.found_ms),
                count(r.lost_commands),
                fmt_bytes(b.lost_bytes),
                r.delta
            );
        } else {
            outln!(
                out,
                "branch in generation {:010} at offset {}: the failover to {} (found at {}) lost {} commands ({} of them writes, {}) that the old master had taken; they restore only for moments before it, and the archive goes on in generation {:010}",
                r.generation,
                r.archive_at,
                r.new_master,
                fmt_time(r.found_ms),
                count(r.lost_commands),
                count(r.lost_data_commands),
                fmt_bytes(b.lost_bytes),
                r.continued_in
            );
        }
    }
    for gap in &catalog.gaps {
        outln!(out);
        outln!(
            out,
            "gap between generation {} and {}: from offset {} at {} (replid {}) to a full resync at offset {} at {} (replid {}); writes in between were not archived",
            gap.after_generation,
            gap.before_generation,
            gap.from_offset,
            fmt_time(gap.from_time_ms),
            gap.from_replid,
            gap.to_offset,
            fmt_time(gap.to_time_ms),
            gap.to_replid
        );
    }
    if !catalog.foreign.is_empty() {
        outln!(out);
        outln!(
            out,
            "{} other objects under the prefix are not part of the archive",
            catalog.foreign.len()
        );
    }
    Ok(())
}
