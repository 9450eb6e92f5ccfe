//! The `pitr` command line: parses arguments into validated configurations, runs one
//! subcommand, prints its report, and maps failures to distinct exit codes. The library never
//! prints; this file does.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use redis_pitr::archive::{ArchiveConfig, Archiver, Shutdown};
use redis_pitr::catalog::Catalog;
use redis_pitr::link::Source;
use redis_pitr::names::ArchiveName;
use redis_pitr::plan::Target;
use redis_pitr::restore::live::TargetError;
use redis_pitr::restore::{self, Destination, RestoreConfig, RestoreError};
use redis_pitr::store::{Store, StoreError};
use redis_pitr::verify;

/// Exit codes.
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_CORRUPT: u8 = 4;
const EXIT_UNREACHABLE: u8 = 5;

/// Point-in-time recovery for Redis and Valkey: archive a master's replication stream into
/// object storage, and read the archive back.
#[derive(Parser, Debug)]
#[command(name = "pitr", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PITR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to a master as a replica and archive its snapshot and every write, continuously.
    Archive(ArchiveArgs),
    /// List the archive: generations, restorable windows, snapshots, gaps.
    Ls(LsArgs),
    /// Read every object back and check checksums, the chain, continuity and the RDBs.
    Verify(LsArgs),
    /// Rebuild the master's state at a moment: into a live Redis, or as files a stock
    /// redis-server loads.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("dest").args(["target", "output_dir"])))]
struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The moment: an RFC 3339 time with any offset (2026-11-24T10:15:30.250Z), unix
    /// milliseconds, `latest`, or `offset:<N>` (a replication offset).
    #[arg(long)]
    to: Target,
    /// A live server to restore into: redis://[user[:password]@]host:port. Prefer the password
    /// in PITR_TARGET_PASSWORD. It must hold no keys unless --force.
    #[arg(long)]
    target: Option<String>,
    /// Write files a stock redis-server loads natively into this directory, and print the
    /// command line that starts one on them.
    #[arg(long)]
    output_dir: Option<std::path::PathBuf>,
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
}

#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// Where the archive lives: a path or file:///path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (credentials from the provider's standard environment variables),
    /// or memory:// (tests only).
    #[arg(long, env = "PITR_STORE", default_value = "./pitr-archive")]
    store: String,
    /// Archive name: keeps several masters apart in one store.
    #[arg(long, env = "PITR_NAME", default_value = "default")]
    name: ArchiveName,
}

#[derive(Args, Debug)]
struct ArchiveArgs {
    /// The master: redis://[user[:password]@]host:port. Prefer the password in
    /// PITR_SOURCE_PASSWORD or REDISCLI_AUTH, which keeps it out of the process list.
    #[arg(long, env = "PITR_SOURCE")]
    source: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Longest time a received write waits before its segment is sealed and uploaded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Seal a segment when it reaches this many raw bytes.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    segment_max_bytes: u64,
    /// Bytes received but not yet durable, at most; beyond it the archiver stops reading from
    /// the master (backpressure) until the store catches up.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    max_buffer: u64,
    /// Port announced with REPLCONF listening-port. 0 keeps Sentinel and FAILOVER from ever
    /// choosing the archiver as a master.
    #[arg(long, default_value_t = 0)]
    announce_port: u16,
    /// Consider the master gone after this long without data (it PINGs every 10 s by default).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    read_timeout: Duration,
}

#[derive(Args, Debug)]
struct LsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?}: must be at least 1ms"));
    }
    Ok(d)
}

/// Parses sizes such as `64MiB`, `1GiB`, `100MB`, `4096`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size like 64MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("{s:?}: unknown unit {other:?}")),
    };
    let v = n * mult;
    if !(1.0..=(1u64 << 50) as f64).contains(&v) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(v as u64)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pitr: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pitr: error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::Config { .. } => EXIT_USAGE,
                StoreError::Corrupt { .. } => EXIT_CORRUPT,
                e if e.is_not_found() => EXIT_NOT_FOUND,
                _ => EXIT_UNREACHABLE,
            };
        }
        if let Some(r) = cause.downcast_ref::<RestoreError>() {
            return match r {
                RestoreError::Plan(redis_pitr::plan::PlanError::Empty) => EXIT_NOT_FOUND,
                RestoreError::Plan(_) => EXIT_NOT_FOUND,
                RestoreError::Corrupt { .. } => EXIT_CORRUPT,
                // The target refused a command, or answered nonsense: it was reached.
                RestoreError::Target(
                    TargetError::Reply { .. }
                    | TargetError::Protocol { .. }
                    | TargetError::Version { .. },
                ) => EXIT_FAILURE,
                RestoreError::Target(TargetError::Url { .. }) => EXIT_USAGE,
                RestoreError::Target(_) => EXIT_UNREACHABLE,
                RestoreError::TargetNotEmpty { .. } => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
        }
        if let Some(a) = cause.downcast_ref::<redis_pitr::archive::ArchiveError>() {
            if matches!(a, redis_pitr::archive::ArchiveError::Link(_)) {
                return EXIT_UNREACHABLE;
            }
        }
    }
    EXIT_FAILURE
}

async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Archive(a) => archive(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Verify(a) => verify_cmd(a).await,
        Command::Restore(a) => restore_cmd(a).await,
    }
}

fn env_password() -> Option<String> {
    ["PITR_SOURCE_PASSWORD", "REDISCLI_AUTH"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

async fn archive(a: ArchiveArgs) -> anyhow::Result<u8> {
    let source = match Source::parse(&a.source, env_password()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pitr: error: --source {e}");
            return Ok(EXIT_USAGE);
        }
    };
    if a.segment_max_bytes > (1 << 32) {
        eprintln!("pitr: error: --segment-max-bytes: at most 4GiB");
        return Ok(EXIT_USAGE);
    }
    if a.max_buffer < a.segment_max_bytes.min(1 << 20) {
        eprintln!("pitr: error: --max-buffer must be at least 1MiB");
        return Ok(EXIT_USAGE);
    }
    let store = Store::open(&a.store.store, &a.store.name)?;
    let cfg = ArchiveConfig {
        source,
        store,
        flush_interval: a.flush_interval,
        segment_max_bytes: a.segment_max_bytes as usize,
        max_buffer: a.max_buffer as usize,
        announce_port: a.announce_port,
        read_timeout: a.read_timeout,
    };
    tracing::info!(source = %cfg.source.addr(), store = %cfg.store.url(), name = %a.store.name,
        flush_interval_ms = cfg.flush_interval.as_millis() as u64, "pitr archive starting");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutdown requested: flushing what was received");
                let _ = tx.send(true);
            } else {
                eprintln!("pitr: second signal: exiting without waiting for the flush");
                std::process::exit(130);
            }
        }
    });
    Archiver::run(cfg, Shutdown(rx)).await?;
    Ok(0)
}

fn fmt_time(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn ls(a: LsArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.store.store, &a.store.name)?;
    let listing = store.list().await.context("listing the archive")?;
    let catalog = Catalog::from_listing(&listing);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else if catalog.generations.is_empty() {
        println!(
            "archive {:?} in {}: empty",
            a.store.name.as_str(),
            store.url()
        );
    } else {
        println!("archive {:?} in {}", a.store.name.as_str(), store.url());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for (i, g) in catalog.generations.iter().enumerate() {
            println!();
            println!("generation {}  replid {}", g.id, g.replid);
            if g.replids.len() > 1 {
                let ids: Vec<String> = g.replids.iter().map(|r| r.to_string()).collect();
                println!("  replids      {}", ids.join(" -> "));
            }
            println!(
                "  offsets      {} .. {} ({} of stream)",
                g.first_offset,
                g.last_offset,
                fmt_bytes(g.last_offset - g.first_offset)
            );
            println!(
                "  window       {} .. {}{}",
                fmt_time(g.first_time_ms),
                fmt_time(g.last_time_ms),
                if i + 1 == catalog.generations.len() {
                    format!(
                        "  (last write archived {} ago)",
                        humantime::format_duration(Duration::from_secs(
                            now.saturating_sub(g.last_time_ms) / 1000
                        ))
                    )
                } else {
                    String::new()
                }
            );
            for s in &g.snapshots {
                println!(
                    "  snapshot     offset {} at {} ({})",
                    s.offset,
                    fmt_time(s.time_ms),
                    fmt_bytes(s.bytes)
                );
            }
            println!("  segments     {}", g.segments);
            println!(
                "  stored       {} (snapshots and segments)",
                fmt_bytes(g.bytes)
            );
            for h in &g.holes {
                println!(
                    "  MISSING      offsets {} .. {} (run pitr verify)",
                    h.from_offset, h.to_offset
                );
            }
        }
        for gap in &catalog.gaps {
            println!();
            println!(
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
            println!();
            println!(
                "{} other objects under the prefix are not part of the archive",
                catalog.foreign.len()
            );
        }
    }
    Ok(if catalog.generations.is_empty() {
        EXIT_NOT_FOUND
    } else {
        0
    })
}

async fn verify_cmd(a: LsArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.store.store, &a.store.name)?;
    let report = verify::verify(&store)
        .await
        .context("verifying the archive")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} generations, {} snapshots, {} segments, {} commands, {} raw ({} stored)",
            report.generations,
            report.snapshots,
            report.segments,
            report.commands,
            fmt_bytes(report.raw_bytes),
            fmt_bytes(report.stored_bytes)
        );
        for p in &report.problems {
            println!("BROKEN: {p}");
        }
        if report.ok {
            println!("archive is sound");
        }
    }
    if report.generations == 0 {
        eprintln!(
            "pitr: error: archive {:?} in {} is empty",
            a.store.name.as_str(),
            store.url()
        );
        return Ok(EXIT_NOT_FOUND);
    }
    if let Some(first) = report.problems.first() {
        eprintln!("pitr: error: archive is corrupt: first broken object {first}");
        return Ok(EXIT_CORRUPT);
    }
    Ok(0)
}

async fn restore_cmd(a: RestoreArgs) -> anyhow::Result<u8> {
    let store = Store::open(&a.store.store, &a.store.name)?;
    let plan = restore::make_plan(&store, a.to).await?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "restore {} from generation {}: snapshot at offset {} ({}), {} segments, {} to read",
                a.to,
                plan.generation,
                plan.snapshot.offset,
                fmt_time(plan.snapshot.first_ms),
                plan.segments.len(),
                fmt_bytes(plan.bytes)
            );
            println!(
                "  {}  {}",
                plan.snapshot.name,
                fmt_bytes(plan.snapshot.bytes)
            );
            for s in &plan.segments {
                println!("  {}  {}", s.name, fmt_bytes(s.bytes));
            }
        }
        return Ok(0);
    }
    let destination = match (&a.target, &a.output_dir) {
        (Some(url), None) => Destination::Live {
            url: url.clone(),
            password: std::env::var("PITR_TARGET_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        },
        (None, Some(dir)) => Destination::Files { dir: dir.clone() },
        _ => {
            eprintln!("pitr: error: restore needs --target <redis-url> or --output-dir <dir> (or --dry-run)");
            return Ok(EXIT_USAGE);
        }
    };
    let cfg = RestoreConfig {
        store,
        target: a.to,
        destination,
        filter: restore::filter::Filter {
            dbs: a.dbs.clone(),
            patterns: a.patterns.iter().map(|p| p.as_bytes().to_vec()).collect(),
        },
        force: a.force,
        max_restore_bytes: a.max_restore_bytes.min(1 << 30) as usize,
    };
    let progress = std::sync::Arc::new(restore::Progress::default());
    let ticker = (!a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| tokio::spawn(progress_bar(progress.clone())));
    let result = restore::restore(&cfg, &plan, progress).await;
    if let Some(t) = ticker {
        t.abort();
        eprint!("\r\x1b[2K");
    }
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored generation {} to offset {} at {}: {} keys, {} commands, {:.2} s",
            report.generation,
            report.offset,
            report.time,
            report.keys,
            report.commands,
            report.seconds
        );
        if report.keys_skipped + report.commands_skipped + report.commands_mixed > 0 {
            println!(
                "  left out: {} keys, {} commands; applied whole though they touch unselected keys: {} commands",
                report.keys_skipped, report.commands_skipped, report.commands_mixed
            );
        }
        if report.transaction_left_out {
            println!("  a transaction still open at the cut was left out (it completed later)");
        }
        if let Some(f) = &report.files {
            println!("  wrote {} ({}) in {}", f.files.join(", "), f.layout, f.dir);
            println!("  start a server on it with:");
            println!("    {}", f.command_line);
        }
    }
    Ok(0)
}

/// A one-line progress display on stderr (only on a terminal).
async fn progress_bar(p: std::sync::Arc<restore::Progress>) {
    use std::sync::atomic::Ordering::Relaxed;
    let start = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (done, total) = (p.bytes.load(Relaxed), p.total.load(Relaxed));
        let raw = p.snapshot_raw.load(Relaxed);
        let secs = start.elapsed().as_secs_f64();
        let eta = if done > 0 && total > done {
            format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(
                    ((total - done) as f64 * secs / done as f64) as u64
                ))
            )
        } else {
            String::new()
        };
        eprint!(
            "\r\x1b[2Krestoring: snapshot {} read, {} / {} stored, {} keys, {} commands{}",
            fmt_bytes(raw),
            fmt_bytes(done),
            fmt_bytes(total),
            p.keys.load(Relaxed),
            p.commands.load(Relaxed),
            eta
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn cli_parses() {
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
