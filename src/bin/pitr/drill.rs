//! `pitr drill`: the disaster-recovery test as one command. Restores a moment (as files into a
//! scratch directory, started on a scratch redis-server; or into a live `--target`), measures
//! the recovery time and the recovery point, counts the keys the restored server holds, checks
//! the objects the restore read as `pitr verify` does, and compares against thresholds.
//!
//! The scratch directory and server are removed however the drill ends: on success, on an
//! error, and on Ctrl-C or SIGTERM (a guard kills and reaps the server and removes the
//! directory when it is dropped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use redis_pitr::archive::fetch::{FetchConfig, OrderedFetch};
use redis_pitr::archive::store::Store;
use redis_pitr::ingest::archiver::now_ms;
use redis_pitr::maintain::verify::{self, Problem};
use redis_pitr::net::redact_url;
use redis_pitr::replay::live::{LiveTarget, TargetError};
use redis_pitr::replay::plan::{Plan, Target};
use redis_pitr::replay::{self as restore, Destination, RestoreConfig};

use crate::args::{parse_duration, FetchArgs, StoreArgs, TargetPasswordFile, TlsArgs};
use crate::output::{fmt_bytes, fmt_time, outln, Out};
use crate::Finding;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("server").args(["target", "redis_server"])))]
pub struct DrillArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The moment to restore, as for `pitr restore --to`.
    #[arg(long, default_value = "latest")]
    to: Target,
    /// Restore into this live server (redis://[user[:password]@]host:port, or rediss://… for
    /// TLS with the --tls-* flags; password in PITR_TARGET_PASSWORD or
    /// --target-password-file), which must hold no keys, instead of files and a scratch
    /// server.
    #[arg(long)]
    target: Option<String>,
    #[command(flatten)]
    pub(crate) target_password_file: TargetPasswordFile,
    /// For --target only (the scratch server is reached over plain TCP on 127.0.0.1).
    #[command(flatten)]
    tls: TlsArgs,
    /// The server binary started on the restored files (default: `redis-server` on PATH, or
    /// `valkey-server` for a Valkey archive).
    #[arg(long, value_name = "BIN")]
    redis_server: Option<PathBuf>,
    /// Fail (exit 7) when the recovery time exceeds this (`90s`, `5m`; `0` fails always).
    #[arg(long, value_name = "DUR", value_parser = parse_threshold)]
    max_rto: Option<Duration>,
    /// Fail (exit 7) when the recovery point exceeds this (`10s`, `1m`; `0` fails always).
    #[arg(long, value_name = "DUR", value_parser = parse_threshold)]
    max_rpo: Option<Duration>,
    /// How long the scratch server may take to start and load the restored files.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration)]
    load_timeout: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// What a drill found that is not a success, though nothing failed.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// RTO or RPO above its threshold (exit 7).
    #[error("drill thresholds exceeded: {0}")]
    Thresholds(String),
    /// The server binary to start on the restored files is not there (exit 2).
    #[error("{bin}: {why}: install it or pass --redis-server <path>")]
    NoServer { bin: String, why: String },
    /// Ctrl-C or SIGTERM (exit 130): the signal, and what was left.
    #[error("interrupted by {0}: {1}")]
    Interrupted(&'static str, &'static str),
}

/// `0`, or a duration such as `250ms`, `90s`, `5m`.
fn parse_threshold(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// A validated `pitr drill`.
pub struct DrillCmd {
    store: Store,
    to: Target,
    mode: Mode,
    max_rto: Option<Duration>,
    max_rpo: Option<Duration>,
    load_timeout: Duration,
    json: bool,
    fetch: FetchConfig,
}

enum Mode {
    /// Files in a scratch directory, then a scratch server: the binary given, if any.
    Scratch {
        server: Option<PathBuf>,
    },
    Live {
        destination: Destination,
    },
}

pub fn config(a: DrillArgs) -> anyhow::Result<DrillCmd> {
    a.target_password_file.check(a.target.as_deref())?;
    let store = a.store.open()?;
    let mode = match (a.target, a.redis_server) {
        (Some(url), _) => Mode::Live {
            destination: crate::restore::live_destination(url, &a.tls)?,
        },
        (None, server) => {
            if let Some(bin) = &server {
                // Before anything is read: a missing binary is found at once.
                resolve_binary(bin).map_err(|why| DrillError::NoServer {
                    bin: bin.display().to_string(),
                    why,
                })?;
            }
            Mode::Scratch { server }
        }
    };
    Ok(DrillCmd {
        store,
        to: a.to,
        mode,
        max_rto: a.max_rto,
        max_rpo: a.max_rpo,
        load_timeout: a.load_timeout,
        json: a.json,
        fetch: a.fetch.config(),
    })
}

/// The executable `bin` names: a path (with a `/`) as it is, or a name searched on PATH.
fn resolve_binary(bin: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        return match std::fs::metadata(bin) {
            Err(e) => Err(e.to_string()),
            Ok(_) if !executable(bin) => Err("not an executable file".into()),
            Ok(_) => Ok(bin.to_path_buf()),
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(bin))
        .find(|p| executable(p))
        .ok_or_else(|| "not found on PATH".to_string())
}

/// The drill's report (README, "Drill").
#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub passed: bool,
    /// `files` (scratch server) or `target`.
    pub mode: &'static str,
    /// `--to` as given.
    pub to: String,
    pub started_ms: u64,
    pub started: String,
    pub generation: String,
    pub offset: u64,
    /// Arrival time of the newest archived write the restore included (or of the snapshot).
    pub restored_ms: u64,
    pub restored: String,
    /// The moment asked for, when `--to` names a time (or `now`).
    pub target_ms: Option<u64>,
    pub target: Option<String>,
    /// `target_ms - restored_ms`: how far before the moment asked for the last write lies.
    pub target_gap_seconds: Option<f64>,
    pub rto_seconds: f64,
    /// Planning (listings) and the restore itself.
    pub restore_seconds: f64,
    /// Scratch server: from its start until `loading:0`.
    pub load_seconds: Option<f64>,
    /// `started_ms - restored_ms`.
    pub rpo_seconds: f64,
    pub thresholds: Thresholds,
    /// Keys in all databases of the restored server (`INFO keyspace`).
    pub keys: u64,
    pub keyspace: Vec<DbKeys>,
    /// Objects the plan read (its snapshot and segments), and the stored bytes read.
    pub objects: usize,
    pub bytes_read: u64,
    pub restore: restore::Report,
    pub verify: VerifyReport,
    pub server: ServerInfo,
}

#[derive(Debug, Serialize)]
pub struct Thresholds {
    pub max_rto_seconds: Option<f64>,
    pub max_rpo_seconds: Option<f64>,
    pub exceeded: Vec<Exceeded>,
}

#[derive(Debug, Serialize)]
pub struct Exceeded {
    /// `max_rto` or `max_rpo`.
    pub threshold: &'static str,
    pub limit_seconds: f64,
    pub measured_seconds: f64,
    pub over_seconds: f64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DbKeys {
    pub db: u32,
    pub keys: u64,
    pub expires: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct VerifyReport {
    pub ok: bool,
    pub objects: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize, Default)]
pub struct ServerInfo {
    /// `redis` or `valkey` (INFO server's `server_name`, when it has one).
    pub name: String,
    pub version: String,
    /// Scratch server: the binary started, and its command line.
    pub binary: Option<String>,
    pub command_line: Option<String>,
    /// Scratch server: its process id (stopped and reaped when the drill ends).
    pub pid: Option<u32>,
    /// Live target: its URL without user and password.
    pub url: Option<String>,
}

pub async fn run(cmd: DrillCmd) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // Dropping the drill (on a signal) drops its scratch guard: the server is killed and
    // reaped, the directory removed.
    let left = match cmd.mode {
        Mode::Scratch { .. } => "the scratch server and directory were removed",
        Mode::Live { .. } => {
            "the target may hold a partial restore: empty it (FLUSHALL) before the next drill"
        }
    };
    let report = tokio::select! {
        r = drill(&cmd) => r?,
        _ = tokio::signal::ctrl_c() => return Err(DrillError::Interrupted("Ctrl-C", left).into()),
        _ = term.recv() => return Err(DrillError::Interrupted("SIGTERM", left).into()),
    };
    let mut out = Out::stdout();
    if cmd.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&mut out, &report)?;
    }
    out.flush()?;
    if let Some(p) = report.verify.problems.first() {
        return Err(Finding::Corrupt {
            first: p.to_string(),
        }
        .into());
    }
    if !report.thresholds.exceeded.is_empty() {
        let what: Vec<String> = report
            .thresholds
            .exceeded
            .iter()
            .map(|e| {
                format!(
                    "{} {:.3} s > {:.3} s (by {:.3} s)",
                    e.threshold.replace('_', "-"),
                    e.measured_seconds,
                    e.limit_seconds,
                    e.over_seconds
                )
            })
            .collect();
        return Err(DrillError::Thresholds(what.join(", ")).into());
    }
    Ok(())
}

async fn drill(cmd: &DrillCmd) -> anyhow::Result<DrillReport> {
    let started_ms = now_ms();
    let t0 = Instant::now();
    let plan = restore::make_plan(&cmd.store, cmd.to).await?;
    let mut cfg = RestoreConfig {
        store: cmd.store.clone(),
        target: cmd.to,
        destination: Destination::Files {
            dir: PathBuf::new(),
        },
        filter: Default::default(),
        force: false,
        max_restore_bytes: 8 << 20,
        target_timeout: redis_pitr::replay::live::DEFAULT_TIMEOUT,
        fetch: cmd.fetch,
    };
    let (report, restore_seconds, load_seconds, probed, server) = match &cmd.mode {
        Mode::Live { destination } => {
            cfg.destination = destination.clone();
            let report = crate::restore::execute(&cfg, &plan, false).await?;
            let restore_seconds = t0.elapsed().as_secs_f64();
            let Destination::Live { url, password } = destination else {
                unreachable!("a live mode has a live destination")
            };
            let mut c = LiveTarget::connect(url, password.clone()).await?;
            let probed = probe(&mut c).await?;
            let server = ServerInfo {
                url: Some(redact_url(url)),
                ..Default::default()
            };
            (report, restore_seconds, None, probed, server)
        }
        Mode::Scratch { server } => {
            let mut scratch = Scratch::create()?;
            cfg.destination = Destination::Files {
                dir: scratch.data.clone(),
            };
            let report = crate::restore::execute(&cfg, &plan, false).await?;
            let restore_seconds = t0.elapsed().as_secs_f64();
            let written = report.files.clone().context("the restore wrote no files")?;
            let mut argv = written.args.clone();
            if argv.is_empty() {
                anyhow::bail!("the restore printed no command line");
            }
            let named = PathBuf::from(argv.remove(0));
            let bin_given = server.clone().unwrap_or(named);
            let bin = resolve_binary(&bin_given).map_err(|why| DrillError::NoServer {
                bin: bin_given.display().to_string(),
                why,
            })?;
            let loaded = Instant::now();
            let port = scratch.start(&bin, &argv)?;
            let pid = scratch.child.as_ref().map(Child::id);
            let mut c = scratch.wait_loaded(port, cmd.load_timeout).await?;
            let load_seconds = loaded.elapsed().as_secs_f64();
            let probed = probe(&mut c).await?;
            drop(c);
            scratch.remove();
            let server = ServerInfo {
                binary: Some(bin.display().to_string()),
                command_line: Some(written.command_line.clone()),
                pid,
                ..Default::default()
            };
            (report, restore_seconds, Some(load_seconds), probed, server)
        }
    };
    let server = ServerInfo {
        name: probed.name,
        version: probed.version,
        ..server
    };
    let verify = verify_plan(&cmd.store, &plan, cmd.fetch).await?;

    let rto = restore_seconds + load_seconds.unwrap_or(0.0);
    let rpo = started_ms.saturating_sub(report.time_ms) as f64 / 1000.0;
    let target_ms = match cmd.to.resolved(started_ms) {
        Target::Time(ms) => Some(ms),
        _ => None,
    };
    let mut exceeded = Vec::new();
    for (threshold, limit, measured) in
        [("max_rto", cmd.max_rto, rto), ("max_rpo", cmd.max_rpo, rpo)]
    {
        if let Some(limit) = limit {
            let limit = limit.as_secs_f64();
            if measured > limit {
                exceeded.push(Exceeded {
                    threshold,
                    limit_seconds: limit,
                    measured_seconds: measured,
                    over_seconds: measured - limit,
                });
            }
        }
    }
    Ok(DrillReport {
        passed: exceeded.is_empty() && verify.ok,
        mode: match cmd.mode {
            Mode::Live { .. } => "target",
            Mode::Scratch { .. } => "files",
        },
        to: cmd.to.to_string(),
        started_ms,
        started: fmt_time(started_ms),
        generation: report.generation.clone(),
        offset: report.offset,
        restored_ms: report.time_ms,
        restored: report.time.clone(),
        target_ms,
        target: target_ms.map(fmt_time),
        target_gap_seconds: target_ms.map(|t| (t as f64 - report.time_ms as f64) / 1000.0),
        rto_seconds: rto,
        restore_seconds,
        load_seconds,
        rpo_seconds: rpo,
        thresholds: Thresholds {
            max_rto_seconds: cmd.max_rto.map(|d| d.as_secs_f64()),
            max_rpo_seconds: cmd.max_rpo.map(|d| d.as_secs_f64()),
            exceeded,
        },
        keys: probed.keyspace.iter().map(|d| d.keys).sum(),
        keyspace: probed.keyspace,
        objects: 1 + plan.segments.len(),
        bytes_read: report.bytes_read,
        restore: report,
        verify,
        server,
    })
}

fn print_text(out: &mut Out, r: &DrillReport) -> anyhow::Result<()> {
    outln!(
        out,
        "drill {}: restored {} (generation {}, offset {}, last write at {}) {}",
        if r.passed { "passed" } else { "FAILED" },
        r.to,
        r.generation,
        r.offset,
        r.restored,
        match &r.server.url {
            Some(url) => format!("into the live target {url}"),
            None => "as files, started on a scratch server".to_string(),
        }
    );
    if let (Some(t), Some(gap)) = (&r.target, r.target_gap_seconds) {
        outln!(
            out,
            "  target moment {t}: last write restored {gap:.3} s before it"
        );
    }
    match r.load_seconds {
        Some(load) => outln!(
            out,
            "  RTO {:.3} s: restore {:.3} s + server start until loaded {:.3} s",
            r.rto_seconds,
            r.restore_seconds,
            load
        ),
        None => outln!(
            out,
            "  RTO {:.3} s: restore {:.3} s",
            r.rto_seconds,
            r.restore_seconds
        ),
    }
    outln!(
        out,
        "  RPO {:.3} s: the newest write restored arrived at {}, the drill started at {}",
        r.rpo_seconds,
        r.restored,
        r.started
    );
    let dbs: Vec<String> = r
        .keyspace
        .iter()
        .map(|d| format!("db{} {}", d.db, d.keys))
        .collect();
    outln!(
        out,
        "  {} keys ({}) on {} {}",
        r.keys,
        if dbs.is_empty() {
            "none".to_string()
        } else {
            dbs.join(", ")
        },
        r.server.name,
        r.server.version
    );
    outln!(
        out,
        "  read {} objects, {}; verified them again in {:.3} s: {}",
        r.objects,
        fmt_bytes(r.bytes_read),
        r.verify.seconds,
        if r.verify.ok { "sound" } else { "BROKEN" }
    );
    for p in &r.verify.problems {
        outln!(out, "  BROKEN: {p}");
    }
    let limit = |l: Option<f64>| l.map_or("none".to_string(), |s| format!("{s:.3} s"));
    outln!(
        out,
        "  thresholds: max-rto {}, max-rpo {}",
        limit(r.thresholds.max_rto_seconds),
        limit(r.thresholds.max_rpo_seconds)
    );
    for e in &r.thresholds.exceeded {
        outln!(
            out,
            "  EXCEEDED: {} {:.3} s > {:.3} s by {:.3} s",
            e.threshold.replace('_', "-"),
            e.measured_seconds,
            e.limit_seconds,
            e.over_seconds
        );
    }
    Ok(())
}

/// Reads the plan's objects again and checks them as `pitr verify` does: each one's checksums
/// and header against its name, that segments hold whole commands, the chain from the
/// snapshot through the segments, and the snapshot's RDB parsed whole. The restore checks
/// much of this as it reads (frames, checksums, the chain, the RDB), but not a segment's
/// header against its name, nor the database its header says it ends in, nor the commands of
/// the last segment past the cut.
async fn verify_plan(
    store: &Store,
    plan: &Plan,
    fetch: FetchConfig,
) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let mut report = VerifyReport {
        objects: 1 + plan.segments.len(),
        bytes: plan.bytes,
        ..Default::default()
    };
    let snap = verify::check_snapshot_named(store, plan.snapshot.object)
        .await
        .context("verifying the snapshot the restore read")?;
    // The chain starts at the snapshot; a scheduled snapshot inside the first segment is not
    // at that segment's start, so that link is not checked (as `pitr verify` does).
    let mut prev = match snap {
        Ok(s) => Some((s.chain(), plan.snapshot.offset, 0)),
        Err(p) => {
            report.problems.push(p);
            None
        }
    };
    let wanted = redis_pitr::replay::restore::segments_wanted(plan);
    let mut segments = OrderedFetch::start(store, wanted, fetch, None, |name, bytes| {
        verify::inspect_segment(name, &bytes)
    });
    while let Some(got) = segments.next().await {
        let got = got.context("verifying the segments the restore read")?;
        let end = got.name.end;
        match got
            .value
            .and_then(|alone| verify::link_segment(&got.name, alone, prev.take()))
        {
            Ok((chain, db_end, _)) => prev = Some((chain, end, db_end)),
            Err(p) => report.problems.push(p),
        }
    }
    report.ok = report.problems.is_empty();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The scratch directory (`<tmp>/pitr-drill-<pid>-<n>/`: `data/` for the files, the server's
/// log beside it) and the server started there. Dropping it kills and reaps the server and
/// removes the directory.
struct Scratch {
    root: PathBuf,
    data: PathBuf,
    child: Option<Child>,
}

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let tmp = std::env::temp_dir();
        for n in 0..100u32 {
            let root = tmp.join(format!("pitr-drill-{}-{n}", std::process::id()));
            match std::fs::create_dir(&root) {
                Ok(()) => {
                    return Ok(Scratch {
                        data: root.join("data"),
                        root,
                        child: None,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating a scratch directory in {}", tmp.display())
                    })
                }
            }
        }
        anyhow::bail!("no free scratch directory name in {}", tmp.display())
    }

    /// Starts `bin args…` on a free loopback port; returns the port.
    fn start(&mut self, bin: &Path, args: &[String]) -> anyhow::Result<u16> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let out = std::fs::File::create(self.root.join("server.out"))
            .context("creating the scratch server's output file")?;
        let err = out.try_clone()?;
        let child = std::process::Command::new(bin)
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.root.join("server.log"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| DrillError::NoServer {
                bin: bin.display().to_string(),
                why: format!("cannot start it: {e}"),
            })?;
        self.child = Some(child);
        Ok(port)
    }

    /// Waits until the server has loaded the files: it answers `PING` (a loading server
    /// answers `-LOADING`, and a multi-part AOF is loaded file by file); an error (with the
    /// end of its log) if it exits first or takes longer than `timeout`.
    async fn wait_loaded(&mut self, port: u16, timeout: Duration) -> anyhow::Result<LiveTarget> {
        let deadline = Instant::now() + timeout;
        let url = format!("redis://127.0.0.1:{port}");
        loop {
            if let Some(child) = &mut self.child {
                if let Some(st) = child.try_wait()? {
                    anyhow::bail!(
                        "the scratch server exited with {st} before it loaded the files:\n{}",
                        self.log_tail()
                    );
                }
            }
            match LiveTarget::connect_with_timeout(&url, None, Duration::from_secs(1)).await {
                Ok(t) => return Ok(t),
                Err(
                    TargetError::Loading { .. }
                    | TargetError::Connect { .. }
                    | TargetError::Timeout { .. },
                ) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the scratch server did not load the files within {} (--load-timeout):\n{}",
                    humantime::format_duration(timeout),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for f in ["server.out", "server.log"] {
            let body = std::fs::read_to_string(self.root.join(f)).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            for l in &lines[lines.len().saturating_sub(20)..] {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }

    /// Kills and reaps the server, removes the directory.
    fn remove(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.root.display(), error = %e, "cannot remove the scratch directory");
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What the restored server says about itself.
struct Probed {
    name: String,
    version: String,
    keyspace: Vec<DbKeys>,
}

/// The restored server's name, version and keys per database.
async fn probe(t: &mut LiveTarget) -> anyhow::Result<Probed> {
    let server = t.info("server").await?;
    let keyspace = t.info("keyspace").await?;
    let name = info_field(&server, "server_name").unwrap_or("redis");
    let version = info_field(&server, "valkey_version")
        .or_else(|| info_field(&server, "redis_version"))
        .unwrap_or("unknown");
    Ok(Probed {
        name: name.to_string(),
        version: version.to_string(),
        keyspace: parse_keyspace(&keyspace),
    })
}

fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// `db3:keys=10,expires=2,avg_ttl=0` lines.
fn parse_keyspace(info: &str) -> Vec<DbKeys> {
    let mut dbs = BTreeMap::new();
    for line in info.lines() {
        let Some((db, rest)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(db) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let field = |name: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        dbs.insert(
            db,
            DbKeys {
                db,
                keys: field("keys"),
                expires: field("expires"),
            },
        );
    }
    dbs.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines_parse() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb12:keys=7,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            parse_keyspace(info),
            [
                DbKeys {
                    db: 0,
                    keys: 3,
                    expires: 1
                },
                DbKeys {
                    db: 12,
                    keys: 7,
                    expires: 0
                }
            ]
        );
        assert_eq!(info_field("a:1\r\nloading:0\r\n", "loading"), Some("0"));
        assert_eq!(info_field("loading_x:1\r\n", "loading"), None);
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_threshold("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_threshold("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_threshold("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_threshold("soon").is_err());
    }
}
