//! `pitr snapshot`: a fresh snapshot now, taken by the running archiver. The archiver holds the
//! archive's lease, so this command writes nothing but a request (`archive::request`) that the
//! archiver polls for, then waits until a snapshot taken at or after the request is in the
//! archive's newest generation, and prints it.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use object_store::ObjectStoreExt;
use serde::Serialize;

use redis_pitr::archive::format::{self, SnapshotHeader, Taken};
use redis_pitr::archive::lease::{Lease, LeaseCommand};
use redis_pitr::archive::names::{GenerationId, ObjectName};
use redis_pitr::archive::request::{self, Found, SnapshotRequest};
use redis_pitr::archive::store::Store;
use redis_pitr::ingest::archiver::now_ms;

use crate::args::{parse_duration, ReadArgs, SourcePasswordFile, TlsArgs};
use crate::output::{fmt_bytes, fmt_time, outln, Out};
use crate::Finding;

/// How often the archive is looked at while waiting.
const POLL: Duration = Duration::from_secs(1);
/// How often, while waiting, the lease is read to see that the archiver still runs.
const LEASE_CHECK: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The master the running archiver archives: redis://host:port. Optional; it is recorded
    /// in the request (without credentials) and the archiver logs a mismatch. The snapshot is
    /// always taken of the master the archiver archives.
    #[arg(long, env = "PITR_SOURCE")]
    source: Option<String>,
    /// Accepted (and checked) as for `pitr archive`, so that both can share their settings;
    /// `pitr snapshot` itself never connects to the master.
    #[command(flatten)]
    pub(crate) source_password_file: SourcePasswordFile,
    /// Checked against --source as `pitr archive` does (a redis:// source with TLS flags is
    /// refused), so that the archiver's arguments can be reused as they are.
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    read: ReadArgs,
    /// How long to wait for the snapshot.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
}

pub struct SnapshotConfig {
    store: Store,
    name: String,
    json: bool,
    timeout: Duration,
    /// `host:port` of `--source`.
    source: Option<String>,
}

pub fn config(a: SnapshotArgs) -> anyhow::Result<SnapshotConfig> {
    let source = match &a.source {
        // Only the address goes into the request, so the password is not needed.
        Some(url) => {
            a.tls.install()?;
            Some(a.tls.source(url, None, "--source")?.addr())
        }
        None => None,
    };
    Ok(SnapshotConfig {
        store: a.read.store.open()?,
        name: a.read.store.name.as_str().to_string(),
        json: a.read.json,
        timeout: a.timeout,
        source,
    })
}

/// The snapshot that answered, as printed.
#[derive(Debug, Serialize)]
struct Answer {
    object: String,
    generation: u64,
    offset: u64,
    time_ms: u64,
    time: String,
    /// `base` (a new generation began meanwhile) or `scheduled`.
    kind: Option<Taken>,
    /// Raw RDB bytes.
    bytes: u64,
    stored_bytes: u64,
}

/// Whether an archiver holds a live lease on the archive; `Err` says why not.
async fn archiver_running(cfg: &SnapshotConfig) -> anyhow::Result<Result<(), String>> {
    let lease = Lease::read(&cfg.store)
        .await
        .context("reading the archive's lease")?;
    Ok(match lease {
        None => Err("no process holds the archive's lease".into()),
        Some(l) if !l.is_live(now_ms()) => Err(format!(
            "the lease of {} (pid {} on {}) expired at {}",
            l.command,
            l.pid,
            l.host,
            fmt_time(l.expires_ms)
        )),
        Some(l) if l.command != LeaseCommand::Archive.as_str() => Err(format!(
            "the lease is held by {} (pid {} on {}), not by an archiver",
            l.command, l.pid, l.host
        )),
        Some(_) => Ok(()),
    })
}

fn no_archiver(cfg: &SnapshotConfig, why: String) -> anyhow::Error {
    Finding::NoArchiver {
        name: cfg.name.clone(),
        url: cfg.store.url().to_string(),
        why,
    }
    .into()
}

/// Asks the running archiver for a snapshot and waits for it; prints it.
pub async fn run(cfg: SnapshotConfig) -> anyhow::Result<()> {
    if let Err(why) = archiver_running(&cfg).await? {
        return Err(no_archiver(&cfg, why));
    }
    let mut generation = redis_pitr::archive::scan::newest_generation(&cfg.store)
        .await
        .context("listing the archive")?;
    let req = SnapshotRequest::new(now_ms(), cfg.source.clone());
    request::put(&cfg.store, &req)
        .await
        .context("writing the snapshot request")?;
    let started = tokio::time::Instant::now();
    let deadline = started + cfg.timeout;
    let mut lease_checked = started;
    let found = loop {
        if let Some(name) = answer(&cfg.store, &mut generation, &req).await? {
            break name;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            if let Err(e) = request::delete_if_same(&cfg.store, &req).await {
                tracing::warn!(error = %e, "could not remove the snapshot request");
            }
            return Err(Finding::SnapshotTimeout {
                secs: cfg.timeout.as_secs(),
            }
            .into());
        }
        if now.duration_since(lease_checked) >= LEASE_CHECK {
            lease_checked = now;
            if let Err(why) = archiver_running(&cfg).await? {
                if let Err(e) = request::delete_if_same(&cfg.store, &req).await {
                    tracing::warn!(error = %e, "could not remove the snapshot request");
                }
                return Err(no_archiver(&cfg, why));
            }
            // The archiver removes the request once answered, and a later request of another
            // requester may have removed this one with it: make it again while unanswered.
            if matches!(
                request::get(&cfg.store)
                    .await
                    .context("reading the snapshot request")?,
                Found::None
            ) {
                request::put(&cfg.store, &req)
                    .await
                    .context("writing the snapshot request")?;
            }
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    };
    let taken = describe(&cfg.store, found)
        .await
        .with_context(|| format!("reading snapshot {found}"))?;
    let mut out = Out::stdout();
    if cfg.json {
        outln!(out, "{}", serde_json::to_string_pretty(&taken)?);
    } else {
        outln!(
            out,
            "snapshot {}: generation {}, offset {}, taken {}, {} ({} stored)",
            taken.object,
            found.generation,
            taken.offset,
            taken.time,
            fmt_bytes(taken.bytes),
            fmt_bytes(taken.stored_bytes)
        );
    }
    out.flush()?;
    Ok(())
}

/// A snapshot of the newest generation (`generation`, followed to the next one when it
/// begins) taken at or after the request.
async fn answer(
    store: &Store,
    generation: &mut Option<GenerationId>,
    req: &SnapshotRequest,
) -> anyhow::Result<Option<ObjectName>> {
    let g = match *generation {
        Some(g) => g,
        None => {
            let listing = store.list().await.context("listing the archive")?;
            match listing.objects.last() {
                Some(o) => o.name.generation,
                None => return Ok(None),
            }
        }
    };
    *generation = Some(g);
    if let Ok(next) = g.next() {
        let later = store
            .generation_snapshots(next)
            .await
            .context("listing the archive")?;
        if !later.is_empty() {
            *generation = Some(next);
            return Ok(later.into_iter().find(|n| req.answered_by(n.first_ms)));
        }
    }
    let names = store
        .generation_snapshots(g)
        .await
        .context("listing the archive")?;
    Ok(names.into_iter().find(|n| req.answered_by(n.first_ms)))
}

/// What the snapshot holds: its size, raw and stored, and how it was taken.
async fn describe(store: &Store, name: ObjectName) -> anyhow::Result<Answer> {
    let meta = store.backend().head(&store.path(&name)).await?;
    let size = meta.size;
    let head_len = (format::PREAMBLE_LEN as u64 + 68 + format::HEADER_CHECK_LEN as u64).min(size);
    let head = store.get_range(&name, 0..head_len).await?;
    let kind = match format::parse_preamble(&head) {
        Ok(Some(p)) if p.body_start() <= head.len() => {
            SnapshotHeader::decode(&head[p.header.clone()], p.header.start, p.version)
                .ok()
                .and_then(|h| h.taken)
        }
        _ => None,
    };
    let trailer_len = format::TRAILER_LEN as u64;
    let bytes = if size >= trailer_len {
        let t = store.get_range(&name, size - trailer_len..size).await?;
        t.get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    } else {
        0
    };
    Ok(Answer {
        object: name.to_string(),
        generation: name.generation.0,
        offset: name.start,
        time_ms: name.first_ms,
        time: fmt_time(name.first_ms),
        kind,
        bytes,
        stored_bytes: size,
    })
}
