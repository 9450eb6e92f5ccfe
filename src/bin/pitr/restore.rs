//! `pitr restore`: plan a moment from the listing, then rebuild it into a live server or as
//! files, or only print the plan (`--dry-run`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use redis_pitr::archive::names::ArchiveName;
use redis_pitr::archive::store::Store;
use redis_pitr::cluster;
use redis_pitr::replay::plan::{Plan, Target};
use redis_pitr::replay::{self as restore, Destination, Progress, RestoreConfig};

use crate::args::{
    parse_duration, parse_size, FetchArgs, StoreArgs, TargetPasswordFile, TlsArgs, Usage,
};
use crate::output::{fmt_bytes, fmt_time, outln, Out};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("dest").args(["target", "output_dir"])))]
pub struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The moment: an RFC 3339 time with any offset (2026-11-24T10:15:30.250Z), unix
    /// milliseconds, `latest`, or `offset:<N>` (a replication offset).
    #[arg(long)]
    to: Target,
    /// A live server to restore into: redis://[user[:password]@]host:port, or rediss://… for
    /// TLS (the --tls-* flags apply to it). Prefer the password in PITR_TARGET_PASSWORD or in a
    /// file (--target-password-file). It must hold no keys unless --force.
    #[arg(long)]
    target: Option<String>,
    #[command(flatten)]
    pub(crate) target_password_file: TargetPasswordFile,
    #[command(flatten)]
    tls: TlsArgs,
    /// Write files a stock redis-server loads natively into this directory, and print the
    /// command line that starts one on them.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Print the plan (objects, bytes) and touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report (or the plan) as JSON.
    #[arg(long)]
    json: bool,
    /// Flush a non-empty target first (FLUSHALL), or write into a non-empty directory.
    #[arg(long)]
    force: bool,
    /// Restore only these databases (repeatable).
    #[arg(long = "db", value_name = "N")]
    dbs: Vec<u32>,
    /// Restore only keys matching this glob (repeatable; Redis glob syntax).
    #[arg(long = "match", value_name = "GLOB")]
    patterns: Vec<String>,
    /// Values larger than this are sent as batched commands instead of one RESTORE, so memory
    /// stays bounded for huge keys.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    max_restore_bytes: u64,
    /// Live target: how long connecting, and each wait for a reply, may take (through
    /// replication: each wait in which the target's sync does not move).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    target_timeout: Duration,
    /// Live target: how the moment reaches it. `replication`: the restore serves it as a
    /// master (on --listen) and the target replicates it (`REPLICAOF`), loading the snapshot
    /// natively and applying the stream as archived, then becomes a master again with its
    /// `masterauth`/`masteruser`/`repl-diskless-load` put back (a full sync replaces the target's data: --force
    /// still says that is wanted). `commands`: RESTORE and commands as an ordinary client.
    /// With --db/--match the target gets the snapshot re-encoded without the other keys and
    /// the commands the filter keeps, under a new replication id. `auto`: replication when
    /// the target can, else commands, saying why (a target that refuses REPLICAOF or CONFIG,
    /// one too old for the archived RDB, a stream with relative TTLs, or one that cannot reach
    /// the restore within 10 s). A cluster archive is always restored by commands.
    #[arg(long, value_name = "HOW", default_value = "auto", value_parser = parse_via)]
    via: restore::via::Via,
    /// With --via replication/auto: where the restore listens for the target.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// With --via replication/auto: the address the target dials (`REPLICAOF <host> <port>`)
    /// when it is not the --listen address (NAT, containers, another host).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    #[command(flatten)]
    fetch: FetchArgs,
}

fn parse_via(s: &str) -> Result<restore::via::Via, String> {
    s.parse()
}

/// A validated `pitr restore`.
pub struct RestoreCmd {
    store: Store,
    /// `--store` and `--name` as given, and `--target`/`--output-dir`: a cluster archive's
    /// shards are found from them.
    cluster: (String, ArchiveName, Option<PathBuf>),
    /// TLS to every node of a `cluster://` target (`--tls`, `--tls-*`).
    cluster_tls: Option<Arc<redis_pitr::net::Tls>>,
    to: Target,
    json: bool,
    /// `None` for `--dry-run`.
    restore: Option<RestoreConfig>,
    via: restore::via::ViaOptions,
}

impl RestoreArgs {
    pub fn config(self) -> anyhow::Result<RestoreCmd> {
        self.target_password_file.check(self.target.as_deref())?;
        let store = self.store.open()?;
        let cluster = (
            self.store.store.clone(),
            self.store.name.clone(),
            self.output_dir.clone(),
        );
        let mut cluster_tls = None;
        if let Some(a) = &self.advertise {
            let port = a.rsplit_once(':').and_then(|(h, p)| {
                (!h.is_empty()).then_some(())?;
                p.parse::<u16>().ok().filter(|p| *p > 0)
            });
            if port.is_none() {
                return Err(Usage::new("--advertise", format!("{a:?}: expected host:port")).into());
            }
        }
        let via = restore::via::ViaOptions {
            via: self.via,
            listen: self.listen,
            advertise: self.advertise.clone(),
            link_wait: restore::via::LINK_WAIT,
        };
        let restore = if self.dry_run {
            None
        } else {
            let destination =
                match (self.target, self.output_dir) {
                    (Some(url), None) if cluster::ClusterSource::is_cluster_url(&url) => {
                        cluster_tls = self.tls.located()?;
                        cluster_destination(url)?
                    }
                    (Some(url), None) => live_destination(url, &self.tls)?,
                    (None, Some(dir)) => {
                        check_output_dir(&dir, self.force)?;
                        Destination::Files { dir }
                    }
                    _ => return Err(Usage::new(
                        "--target or --output-dir",
                        "restore needs --target <redis-url> or --output-dir <dir> (or --dry-run)",
                    )
                    .into()),
                };
            Some(RestoreConfig {
                store: store.clone(),
                target: self.to,
                destination,
                filter: restore::filter::Filter {
                    dbs: self.dbs,
                    patterns: self.patterns.into_iter().map(String::into_bytes).collect(),
                    slots: None,
                },
                force: self.force,
                max_restore_bytes: self.max_restore_bytes.min(1 << 30) as usize,
                target_timeout: self.target_timeout,
                fetch: self.fetch.config(),
            })
        };
        Ok(RestoreCmd {
            store,
            cluster,
            cluster_tls,
            to: self.to,
            json: self.json,
            restore,
            via,
        })
    }
}

/// `--target <url>`: a live destination, with the password from `PITR_TARGET_PASSWORD` unless
/// the URL holds one, and for `rediss://` the TLS settings of `tls` (installed as the
/// process's, which the restore's connection takes). A URL that does not parse, or a plain one
/// with TLS flags, is a usage error (naming it without its password).
pub fn live_destination(url: String, tls: &TlsArgs) -> Result<Destination, Usage> {
    let password = std::env::var("PITR_TARGET_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    tls.install()?;
    tls.source(&url, password.clone(), "--target")?;
    Ok(Destination::Live { url, password })
}

/// `--target cluster://…`: a slot-routed target, for a cluster archive only (checked once the
/// store is read), with the password from `PITR_TARGET_PASSWORD` unless the URL holds one.
fn cluster_destination(url: String) -> Result<Destination, Usage> {
    let password = std::env::var("PITR_TARGET_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    cluster::ClusterSource::parse(&url, password.clone())
        .map_err(|reason| Usage::new("--target", reason))?;
    Ok(Destination::Live { url, password })
}

/// `--output-dir` must be a directory, or not exist yet under a directory; writable; and
/// empty unless `--force`. Checked before anything is read, so that a restore does not fail
/// after the snapshot has been fetched. Writing the files can still fail later (disk full).
fn check_output_dir(dir: &Path, force: bool) -> Result<(), Usage> {
    let bad = |reason: String| Usage::new("--output-dir", format!("{}: {reason}", dir.display()));
    let existing = match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(bad("exists and is not a directory".into())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
            if !force && entries.next().is_some() {
                return Err(bad(
                    "not empty: restore into an empty or new directory, or pass --force to \
                     replace what a restore writes there"
                        .into(),
                ));
            }
            dir.to_path_buf()
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // The nearest existing ancestor is where the directory will be created.
            let mut a = dir;
            loop {
                match a.parent() {
                    Some(p) if p.as_os_str().is_empty() => break Path::new(".").to_path_buf(),
                    Some(p) if p.exists() => {
                        if !p.is_dir() {
                            return Err(bad(format!("{} is not a directory", p.display())));
                        }
                        break p.to_path_buf();
                    }
                    Some(p) => a = p,
                    None => break Path::new("/").to_path_buf(),
                }
            }
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    // Writable: what a restore does first there is create its staging directory.
    let probe = existing.join(format!(".pitr-write-check-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| bad(format!("cannot write in {}: {e}", existing.display())))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

pub async fn run(cmd: RestoreCmd) -> anyhow::Result<()> {
    // A store that cannot be listed fails below, with the usual message and exit code.
    let records = cluster::read_records(&cmd.store, &cmd.cluster.1)
        .await
        .unwrap_or_default();
    if !records.is_empty() {
        return run_cluster(cmd, records).await;
    }
    if let Some(Destination::Live { url, .. }) = cmd.restore.as_ref().map(|c| &c.destination) {
        if cluster::ClusterSource::is_cluster_url(url) {
            return Err(Usage::new(
                "--target",
                "a cluster:// target takes a cluster archive; restore this archive into one \
                 server (redis://)",
            )
            .into());
        }
    }
    let plan = restore::make_plan(&cmd.store, cmd.to).await?;
    let mut out = Out::stdout();
    let Some(cfg) = cmd.restore else {
        print_plan(&mut out, &cmd.to, &plan, cmd.json)?;
        return Ok(out.flush()?);
    };
    let report = execute_via(&cfg, &plan, &cmd.via, !cmd.json).await?;
    if cmd.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            out,
            "restored generation {} to offset {} at {}: {} keys, {} commands, {:.2} s",
            report.generation,
            report.offset,
            report.time,
            report.keys,
            report.commands,
            report.seconds
        );
        if let (Some(via), Some(why)) = (&report.via, &report.via_reason) {
            outln!(out, "  via {via}: {why}");
        }
        if report.keys_skipped + report.commands_skipped + report.commands_mixed > 0 {
            outln!(
                out,
                "  left out: {} keys, {} commands; applied whole though they touch unselected keys: {} commands",
                report.keys_skipped,
                report.commands_skipped,
                report.commands_mixed
            );
        }
        if report.commands_from_unselected > 0 {
            outln!(
                out,
                "  NOT restored: {} commands brought keys from a database left out into one restored (MOVE, COPY ... DB, SWAPDB); those keys are missing: restore without --db to have them",
                report.commands_from_unselected
            );
        }
        if report.transaction_left_out {
            outln!(
                out,
                "  a transaction still open at the cut was left out (it completed later)"
            );
        }
        if let Some(f) = &report.files {
            outln!(
                out,
                "  wrote {} ({}) in {}",
                f.files.join(", "),
                f.layout,
                f.dir
            );
            outln!(out, "  start a server on it with:");
            outln!(out, "    {}", f.command_line);
        }
    }
    Ok(out.flush()?)
}

/// A cluster archive (it has topology records): every shard to the same moment, as files in
/// `<dir>/<shard-id>/` with `<dir>/cluster.json`, or into one live server.
async fn run_cluster(cmd: RestoreCmd, records: Vec<cluster::Topology>) -> anyhow::Result<()> {
    use cluster::restore::{self as cr, ClusterRestoreError as E};
    let (url, name, dir) = cmd.cluster;
    let usage = |e: E| -> anyhow::Error {
        match e {
            E::Usage(reason) => Usage::new("--to", reason).into(),
            e => e.into(),
        }
    };
    let to = cr::moment(&url, &name, &records, cmd.to)
        .await
        .map_err(usage)?;
    let Some(cfg) = cmd.restore else {
        return Err(Usage::new(
            "--dry-run",
            "a cluster archive is restored with --output-dir (one directory per shard) or \
             --target (every shard into one server); plan one shard with --store \
             <store>/<name> --name <shard-id>",
        )
        .into());
    };
    let (report, place) = match (&cfg.destination, dir) {
        (Destination::Files { .. }, Some(dir)) => (
            cr::to_files(&url, &name, &records, to, dir.clone(), &cfg)
                .await
                .map_err(usage)?,
            dir.display().to_string(),
        ),
        (
            Destination::Live {
                url: target,
                password,
            },
            _,
        ) => (
            cr::to_live(
                &url,
                &name,
                &records,
                to,
                target,
                password.clone(),
                cmd.cluster_tls.clone(),
                &cfg,
            )
            .await
            .map_err(usage)?,
            redis_pitr::net::redact_url(target),
        ),
        (Destination::Files { .. }, None) => {
            return Err(anyhow::anyhow!("a files restore without --output-dir"))
        }
    };
    let mut out = Out::stdout();
    if cmd.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            out,
            "restored {} shards to {} (topology of {}) in {}",
            report.shards.len(),
            fmt_time(report.time_ms),
            fmt_time(report.topology_ms),
            place
        );
        for s in &report.shards {
            let r = &s.report;
            outln!(
                out,
                "  {}  slots {:?}  generation {} offset {}: {} keys, {} commands",
                s.id,
                s.slots,
                r.generation,
                r.offset,
                r.keys,
                r.commands
            );
            if let Some(f) = &r.files {
                outln!(out, "    {}", f.command_line);
            }
            if let Some(f) = &s.foreign {
                outln!(
                    out,
                    "    keys of slots it did not own then (moved during a resharding): {} keys, {} commands",
                    f.keys,
                    f.commands
                );
            }
        }
    }
    Ok(out.flush()?)
}

/// [`execute`] for a single archive's restore, through replication, by commands, or the one
/// the target can take, as `via` says (see [`restore::via`]).
async fn execute_via(
    cfg: &RestoreConfig,
    plan: &Plan,
    via: &restore::via::ViaOptions,
    progress: bool,
) -> anyhow::Result<restore::Report> {
    use restore::via::{self as v, ViaError};
    if via.via == v::Via::Commands || !matches!(cfg.destination, Destination::Live { .. }) {
        let mut report = execute(cfg, plan, progress).await?;
        if matches!(cfg.destination, Destination::Live { .. }) {
            report.via = Some("commands".into());
            report.via_reason = Some("--via commands".into());
        }
        return Ok(report);
    }
    match v::restore(cfg, plan, via, Arc::new(Progress::default())).await {
        Ok(r) => Ok(r),
        Err(ViaError::Restore(restore::RestoreError::Store(e))) if e.is_not_found() => {
            Err(anyhow::Error::new(e).context(
                "an object the restore planned to read is gone: a compaction or prune ran while the restore was reading (run the restore again; it plans from a new listing)",
            ))
        }
        Err(ViaError::Restore(e)) => Err(e.into()),
        Err(ViaError::Serve(e)) => Err(e.into()),
        Err(e @ ViaError::Refused(_)) => Err(e.into()),
    }
}

/// Runs the restore `plan` into `cfg`'s destination, with a progress line on stderr when
/// `progress` is asked for and stderr is a terminal. An object gone since the listing says
/// why that can happen.
pub async fn execute(
    cfg: &RestoreConfig,
    plan: &Plan,
    progress: bool,
) -> anyhow::Result<restore::Report> {
    let counters = Arc::new(Progress::default());
    let bar = (progress && std::io::stderr().is_terminal()).then(|| progress_bar(&counters));
    let result = restore::restore(cfg, plan, counters).await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    match result {
        Err(restore::RestoreError::Store(e)) if e.is_not_found() => {
            // Listed a moment ago: removed since by a compaction or a prune.
            Err(anyhow::Error::new(e).context(
                "an object the restore planned to read is gone: a compaction or prune ran while the restore was reading (run the restore again; it plans from a new listing)",
            ))
        }
        r => Ok(r?),
    }
}

fn print_plan(out: &mut Out, to: &Target, plan: &Plan, json: bool) -> anyhow::Result<()> {
    if json {
        outln!(out, "{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    outln!(
        out,
        "restore {to} from generation {}: snapshot at offset {} ({}), {} segments, {} to read",
        plan.generation,
        plan.snapshot.offset,
        fmt_time(plan.snapshot.first_ms),
        plan.segments.len(),
        fmt_bytes(plan.bytes)
    );
    outln!(
        out,
        "  {}  {}",
        plan.snapshot.name,
        fmt_bytes(plan.snapshot.bytes)
    );
    for s in &plan.segments {
        outln!(out, "  {}  {}", s.name, fmt_bytes(s.bytes));
    }
    Ok(())
}

/// `wide_msg` is cut to the terminal's width, so that the line never wraps.
const PROGRESS: &str = "restoring {bytes}/{total_bytes} stored, ETA {eta}: {wide_msg}";

/// A progress line on stderr (only on a terminal): stored bytes read of the plan, an ETA,
/// and the snapshot's raw bytes, keys and commands so far.
fn progress_bar(p: &Arc<Progress>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let style =
        ProgressStyle::with_template(PROGRESS).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(0).with_style(style);
    let ticker = {
        let (bar, p) = (bar.clone(), p.clone());
        tokio::spawn(async move {
            loop {
                bar.set_length(p.total.load(Relaxed));
                bar.set_position(p.bytes.load(Relaxed));
                bar.set_message(format!(
                    "snapshot {} read, {} keys, {} commands",
                    fmt_bytes(p.snapshot_raw.load(Relaxed)),
                    p.keys.load(Relaxed),
                    p.commands.load(Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    (bar, ticker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_template_parses() {
        assert!(ProgressStyle::with_template(PROGRESS).is_ok());
    }
}
