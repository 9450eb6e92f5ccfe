//! `pitr verify`: read every object back and check everything the format promises.

use anyhow::Context;
use clap::Args;

use redis_pitr::archive::fetch::FetchConfig;
use redis_pitr::archive::store::Store;
use redis_pitr::maintain::verify;

use crate::args::{FetchArgs, ReadArgs};
use crate::output::{fmt_bytes, outln, Out};
use crate::Finding;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    read: ReadArgs,
    #[command(flatten)]
    fetch: FetchArgs,
}

pub struct VerifyConfig {
    store: Store,
    name: String,
    json: bool,
    fetch: FetchConfig,
}

pub fn config(a: VerifyArgs) -> anyhow::Result<VerifyConfig> {
    Ok(VerifyConfig {
        store: a.read.store.open()?,
        name: a.read.store.name.as_str().to_string(),
        json: a.read.json,
        fetch: a.fetch.config(),
    })
}

/// Prints the report. An empty archive is [`Finding::Empty`] (exit 3), a broken one
/// [`Finding::Corrupt`] (exit 4).
pub async fn run(cfg: VerifyConfig) -> anyhow::Result<()> {
    let mut report = verify::verify_with(&cfg.store, cfg.fetch)
        .await
        .context("verifying the archive")?;
    let empty = report.generations == 0;
    // Nothing checked is not a sound archive.
    report.ok &= !empty;
    let mut out = Out::stdout();
    if cfg.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else if empty {
        outln!(
            out,
            "archive {:?} in {} is empty: nothing to check",
            cfg.name,
            cfg.store.url()
        );
    } else {
        outln!(
            out,
            "checked {} generations, {} snapshots, {} segments, {} commands, {} raw ({} stored)",
            report.generations,
            report.snapshots,
            report.segments,
            report.commands,
            fmt_bytes(report.raw_bytes),
            fmt_bytes(report.stored_bytes)
        );
        for p in &report.problems {
            outln!(out, "BROKEN: {p}");
        }
        if report.ok {
            outln!(out, "archive is sound");
        }
    }
    out.flush()?;
    if empty {
        return Err(Finding::Empty {
            name: cfg.name,
            url: cfg.store.url().to_string(),
        }
        .into());
    }
    if let Some(first) = report.problems.first() {
        return Err(Finding::Corrupt {
            first: first.to_string(),
        }
        .into());
    }
    Ok(())
}
