//! `pitr ls`: the archive's generations, restorable windows, snapshots and gaps, from a
//! listing alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use redis_pitr::archive::catalog::Catalog;
use redis_pitr::archive::store::Store;

use crate::args::ReadArgs;
use crate::output::{fmt_bytes, fmt_time, outln, Out};
use crate::Finding;

pub struct LsConfig {
    store: Store,
    name: String,
    json: bool,
}

pub fn config(a: ReadArgs) -> anyhow::Result<LsConfig> {
    Ok(LsConfig {
        store: a.store.open()?,
        name: a.store.name.as_str().to_string(),
        json: a.json,
    })
}

/// Prints the catalog; an empty archive is [`Finding::Empty`] (exit 3) after the report.
pub async fn run(cfg: LsConfig) -> anyhow::Result<()> {
    let listing = cfg.store.list().await.context("listing the archive")?;
    let catalog = Catalog::from_listing(&listing);
    let mut out = Out::stdout();
    print(&mut out, &cfg, &catalog)?;
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

fn print(out: &mut Out, cfg: &LsConfig, catalog: &Catalog) -> anyhow::Result<()> {
    let url = cfg.store.url();
    if cfg.json {
        outln!(out, "{}", serde_json::to_string_pretty(catalog)?);
        return Ok(());
    }
    if catalog.generations.is_empty() {
        outln!(out, "archive {:?} in {url}: empty", cfg.name);
        return Ok(());
    }
    outln!(out, "archive {:?} in {url}", cfg.name);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
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
        outln!(out, "  segments     {}", g.segments);
        outln!(
            out,
            "  stored       {} (snapshots and segments)",
            fmt_bytes(g.bytes)
        );
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
