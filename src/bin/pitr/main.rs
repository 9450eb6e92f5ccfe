//! The `pitr` command line: parses arguments, turns them into a validated configuration, runs
//! one command (one file each: `archive`, `snapshot`, `ls`, `verify`, `restore`, `drill`, `compact`, `prune`, `ship`, `serve`), and maps failures to the
//! exit codes of the README through one table, [`exit_code`]. The library never prints; the
//! commands print through [`output::Out`].

mod archive;
mod args;
mod compact;
mod config;
mod drill;
mod ls;
mod output;
mod prune;
mod restore;
mod secrets;
mod serve;
mod ship;
mod snapshot;
mod timeline;
mod verify;

use std::error::Error as StdError;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use redis_pitr::archive::lease::LeaseError;
use redis_pitr::archive::store::StoreError;
use redis_pitr::ingest::archiver::ArchiveError;
use redis_pitr::ingest::link::LinkError;
use redis_pitr::ingest::segment::SegmentError;
use redis_pitr::maintain::compact::CompactError;
use redis_pitr::maintain::prune::PruneError;
use redis_pitr::replay::live::TargetError;
use redis_pitr::replay::plan::PlanError;
use redis_pitr::replay::RestoreError;

use args::Usage;

/// Exit codes (README, "Exit codes").
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_CORRUPT: u8 = 4;
pub const EXIT_UNREACHABLE: u8 = 5;
pub const EXIT_LEASE: u8 = 6;
pub const EXIT_DRILL: u8 = 7;
/// Ctrl-C or SIGTERM ended `pitr drill` (after it cleaned up), as a shell reports SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Point-in-time recovery for Redis and Valkey: archive a master's replication stream into
/// object storage, and read the archive back.
#[derive(Parser, Debug)]
#[command(name = "pitr", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PITR_LOG_FORMAT")]
    log_format: LogFormat,
    /// Read flags from this TOML file (README, "Configuration file"); the command line and the
    /// flags' environment variables override it.
    #[arg(long, global = true, env = "PITR_CONFIG", value_name = "PATH")]
    #[allow(dead_code)] // read by `config::apply`, from the matches
    config: Option<PathBuf>,
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
    Archive(archive::ArchiveArgs),
    /// Take a snapshot now: asks the running archiver for one and waits until it is stored.
    Snapshot(snapshot::SnapshotArgs),
    /// List the archive: generations, restorable windows, snapshots, gaps.
    Ls(ls::LsArgs),
    /// Read every object back and check checksums, the chain, continuity and the RDBs.
    Verify(verify::VerifyArgs),
    /// Rebuild the master's state at a moment: into a live Redis, or as files a stock
    /// redis-server loads.
    Restore(restore::RestoreArgs),
    /// The disaster-recovery test: restore a moment (into a scratch redis-server, or a live
    /// --target), measure recovery time and point, count keys, check what was read, and
    /// compare with --max-rto/--max-rpo (exit 7 when exceeded).
    Drill(drill::DrillArgs),
    /// Merge runs of small segments into fewer, larger objects by level (one pass over every
    /// generation); a running archiver does this itself and holds the lease meanwhile.
    Compact(compact::CompactArgs),
    /// Remove what the retention policy no longer needs (--retain, --retain-snapshots): prints
    /// what it would delete, deletes with --confirm; a running archiver does this itself.
    Prune(prune::PruneArgs),
    /// Copy the archive into another store (another region): every object read back and
    /// checked there; with --follow, keep copying what is new.
    Ship(ship::ShipArgs),
    /// Be a replication master from the archive: real replicas (REPLICAOF) get a full sync
    /// of the moment --to names, or (--follow) the stream as the archive grows.
    Serve(serve::ServeArgs),
}

/// What a command found that is not a success, though nothing failed.
#[derive(Debug, thiserror::Error)]
pub enum Finding {
    #[error("archive {name:?} in {url} is empty")]
    Empty { name: String, url: String },
    #[error("archive is corrupt: first broken object {first}")]
    Corrupt { first: String },
    /// `pitr snapshot` without a running archiver to take the snapshot.
    #[error("no archiver is running on archive {name:?} in {url} ({why}): pitr snapshot asks the running pitr archive for the snapshot, so one must be running")]
    NoArchiver {
        name: String,
        url: String,
        why: String,
    },
    /// `pitr snapshot` waited in vain.
    #[error("no snapshot within {secs} s: the archiver did not store one in time (see its log)")]
    SnapshotTimeout { secs: u64 },
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
    // Before the arguments are parsed: they read some of these variables.
    if let Err(e) = secrets::load() {
        let _ = writeln!(std::io::stderr(), "pitr: error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    // Before the runtime starts and before the commands read the variables they set.
    if let Err(e) = secrets::load_flags(&password_files(&cli.command)) {
        let _ = writeln!(std::io::stderr(), "pitr: error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "pitr: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr may be closed too: nothing more to do then.
            let _ = writeln!(std::io::stderr(), "pitr: error: {}", message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The command line, with the configuration file's values for what it leaves unset; or the exit
/// code after the error (or the help) is printed.
fn parse() -> Result<Cli, u8> {
    let args = std::env::args_os().collect();
    let applied = config::apply(&Cli::command(), args, &config::process_env).map_err(|e| {
        for line in e.lines() {
            let _ = writeln!(std::io::stderr(), "pitr: error: {line}");
        }
        EXIT_USAGE
    })?;
    Cli::try_parse_from(&applied.args).map_err(|e| {
        let _ = e.print();
        if !e.use_stderr() {
            return 0;
        }
        if let Some(note) = applied.note() {
            let _ = writeln!(std::io::stderr(), "{note}");
        }
        EXIT_USAGE
    })
}

/// The password flags of the command (`--source-password-file` and the like), given or not.
fn password_files(command: &Command) -> Vec<secrets::FileFlag> {
    match command {
        Command::Archive(a) => vec![
            a.source_password_file.flag(),
            a.sentinel_password_file.flag(),
        ],
        Command::Snapshot(a) => vec![a.source_password_file.flag()],
        Command::Restore(a) => vec![a.target_password_file.flag()],
        Command::Drill(a) => vec![a.target_password_file.flag()],
        _ => Vec::new(),
    }
}

/// Validates the arguments into the command's configuration (usage errors, before any work),
/// then runs it.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Archive(a) => archive::run(a.config()?).await,
        Command::Snapshot(a) => snapshot::run(snapshot::config(a)?).await,
        Command::Ls(a) => ls::run(ls::config(a)?).await,
        Command::Verify(a) => verify::run(verify::config(a)?).await,
        Command::Restore(a) => restore::run(a.config()?).await,
        Command::Drill(a) => drill::run(drill::config(a)?).await,
        Command::Compact(a) => compact::run(compact::config(a)?).await,
        Command::Prune(a) => prune::run(prune::config(a)?).await,
        Command::Ship(a) => ship::run(ship::config(a)?).await,
        Command::Serve(a) => serve::run(serve::config(a)?).await,
    }
}

/// The error and its causes, each once: an error whose message already holds its source's
/// (ours and those of the store client do) does not repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// The one table from failures to exit codes. The first cause in the chain of a kind listed
/// here decides; anything else is 1. The library's wrappers (`RestoreError::Store`,
/// `ArchiveError::Link`, …) are `#[error(transparent)]`, which hides the wrapped error from the
/// chain, so they are looked into here.
fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain().find_map(code_of).unwrap_or(EXIT_FAILURE)
}

fn code_of(e: &(dyn StdError + 'static)) -> Option<u8> {
    if e.is::<Usage>() {
        return Some(EXIT_USAGE);
    }
    if let Some(f) = e.downcast_ref::<Finding>() {
        return Some(match f {
            Finding::Empty { .. } => EXIT_NOT_FOUND,
            Finding::Corrupt { .. } => EXIT_CORRUPT,
            // Run it beside a running archiver.
            Finding::NoArchiver { .. } => EXIT_USAGE,
            Finding::SnapshotTimeout { .. } => EXIT_FAILURE,
        });
    }
    if let Some(d) = e.downcast_ref::<drill::DrillError>() {
        return Some(match d {
            drill::DrillError::Thresholds(_) => EXIT_DRILL,
            // Install it, or name it with --redis-server.
            drill::DrillError::NoServer { .. } => EXIT_USAGE,
            drill::DrillError::Interrupted(..) => EXIT_INTERRUPTED,
        });
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return Some(store_code(e));
    }
    if let Some(e) = e.downcast_ref::<PlanError>() {
        return Some(plan_code(e));
    }
    if let Some(e) = e.downcast_ref::<RestoreError>() {
        return Some(restore_code(e));
    }
    if let Some(e) = e.downcast_ref::<TargetError>() {
        return Some(target_code(e));
    }
    if let Some(e) = e.downcast_ref::<ArchiveError>() {
        return Some(archive_code(e));
    }
    if let Some(e) = e.downcast_ref::<SegmentError>() {
        return Some(segment_code(e));
    }
    if let Some(e) = e.downcast_ref::<LeaseError>() {
        return Some(lease_code(e));
    }
    if let Some(e) = e.downcast_ref::<CompactError>() {
        return Some(compact_code(e));
    }
    if let Some(e) = e.downcast_ref::<PruneError>() {
        return Some(match e {
            PruneError::Store(s) => store_code(s),
            PruneError::Lease(l) => lease_code(l),
        });
    }
    if let Some(e) = e.downcast_ref::<redis_pitr::ship::ShipError>() {
        return Some(match e {
            redis_pitr::ship::ShipError::Store(s) => store_code(s),
            redis_pitr::ship::ShipError::Lease(l) => lease_code(l),
        });
    }
    if let Some(e) = e.downcast_ref::<redis_pitr::serve::ServeError>() {
        return Some(serve_code(e));
    }
    if e.is::<LinkError>() {
        return Some(EXIT_UNREACHABLE);
    }
    None
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        // An unusable --store URL is a usage error when the store is opened (`StoreArgs::open`);
        // later it is a local failure (the compressor could not be set up).
        StoreError::Config { .. } => EXIT_FAILURE,
        StoreError::Backend { .. } if e.is_not_found() => EXIT_NOT_FOUND,
        // Cannot connect, timed out, refused the credentials.
        StoreError::Backend { .. } => EXIT_UNREACHABLE,
        // A snapshot part the store kept failing.
        StoreError::Part { .. } => EXIT_UNREACHABLE,
        // Another archiver writes to the same archive.
        StoreError::Conflict { .. } => EXIT_FAILURE,
        StoreError::Corrupt { .. } => EXIT_CORRUPT,
        // The snapshot of the generation being written is gone from the store.
        StoreError::BaseLost { .. } => EXIT_CORRUPT,
        StoreError::NoArchive { .. } => EXIT_NOT_FOUND,
    }
}

fn plan_code(e: &PlanError) -> u8 {
    match e {
        PlanError::Empty
        | PlanError::Outside { .. }
        | PlanError::InGap { .. }
        | PlanError::NoSnapshot { .. } => EXIT_NOT_FOUND,
        // Objects missing in the middle of a generation, or two chains in one: the archive
        // is damaged.
        PlanError::Hole { .. } | PlanError::Overlap { .. } => EXIT_CORRUPT,
    }
}

fn restore_code(e: &RestoreError) -> u8 {
    match e {
        RestoreError::Plan(p) => plan_code(p),
        RestoreError::Store(s) => store_code(s),
        // An object of the archive that fails its checks, or whose RDB or commands are bad.
        RestoreError::Snapshot(_)
        | RestoreError::Rdb { .. }
        | RestoreError::EmptySnapshot { .. }
        | RestoreError::Segment { .. }
        | RestoreError::Commands { .. }
        | RestoreError::Chain { .. } => EXIT_CORRUPT,
        RestoreError::Target(t) => target_code(t),
        // A value the target cannot take (a module type, …).
        RestoreError::Convert(_) => EXIT_FAILURE,
        // Writing the files failed after the directory was checked (disk full, …).
        RestoreError::FileIo { .. } => EXIT_FAILURE,
        // Checked before the restore starts; here only if the directory filled up meanwhile.
        RestoreError::OutputNotEmpty { .. } | RestoreError::TargetNotEmpty { .. } => EXIT_USAGE,
    }
}

fn target_code(e: &TargetError) -> u8 {
    match e {
        TargetError::Url { .. } => EXIT_USAGE,
        // Not reached, not answering, not speaking Redis (an HTTP server, say), refused the
        // credentials, or not ready.
        TargetError::Connect { .. }
        | TargetError::Io { .. }
        | TargetError::Closed { .. }
        | TargetError::Timeout { .. }
        | TargetError::Auth { .. }
        | TargetError::Loading { .. }
        | TargetError::Protocol { .. }
        | TargetError::Failed { .. } => EXIT_UNREACHABLE,
        // A Redis that refused a command of the restore, or whose version cannot be told.
        TargetError::Reply { .. } | TargetError::Version { .. } => EXIT_FAILURE,
    }
}

fn archive_code(e: &ArchiveError) -> u8 {
    match e {
        // The master: not reached, refused, or not speaking the replication protocol.
        ArchiveError::Link(_) => EXIT_UNREACHABLE,
        ArchiveError::Store(s) => store_code(s),
        ArchiveError::Segment(s) => segment_code(s),
        ArchiveError::SnapshotUpload { source, .. } => store_code(source),
        ArchiveError::CommandTooLarge { .. } => EXIT_FAILURE,
        ArchiveError::Lease(l) => lease_code(l),
        ArchiveError::Stream(_)
        | ArchiveError::BadSnapshot { .. }
        | ArchiveError::Archive(_)
        | ArchiveError::UnexpectedContinue { .. } => EXIT_FAILURE,
    }
}

fn segment_code(e: &SegmentError) -> u8 {
    match e {
        SegmentError::Store(s) => store_code(s),
        SegmentError::Lease(l) => lease_code(l),
        SegmentError::Encode { .. }
        | SegmentError::Discontinuity { .. }
        | SegmentError::NoGeneration
        | SegmentError::UploaderGone => EXIT_FAILURE,
    }
}

fn serve_code(e: &redis_pitr::serve::ServeError) -> u8 {
    use redis_pitr::serve::ServeError;
    match e {
        ServeError::Restore(r) => restore_code(r),
        ServeError::Store(s) => store_code(s),
        // The snapshot or a segment fails its checks.
        ServeError::Snapshot(_) => EXIT_CORRUPT,
        // The address is taken or not this host's.
        ServeError::Listen { .. } => EXIT_USAGE,
        ServeError::Gone => EXIT_FAILURE,
    }
}

fn compact_code(e: &CompactError) -> u8 {
    match e {
        CompactError::Store(s) => store_code(s),
        CompactError::Lease(l) => lease_code(l),
        // Objects that fail their checks, or a written object that does not read back.
        CompactError::Object { .. } | CompactError::ReadBack { .. } | CompactError::NotARun(_) => {
            EXIT_CORRUPT
        }
    }
}

fn lease_code(e: &LeaseError) -> u8 {
    match e {
        // Another writer holds the archive, took it over, or this one could not keep it.
        LeaseError::Held { .. }
        | LeaseError::Lost { .. }
        | LeaseError::Expired { .. }
        | LeaseError::NotHeld { .. }
        | LeaseError::Contended { .. } => EXIT_LEASE,
        // A lease object this version cannot read (`--takeover` replaces it).
        LeaseError::Unreadable { .. } => EXIT_CORRUPT,
        LeaseError::Store { source, .. } => match source {
            object_store::Error::NotFound { .. } => EXIT_NOT_FOUND,
            _ => EXIT_UNREACHABLE,
        },
        LeaseError::Timeout { .. } => EXIT_UNREACHABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use redis_pitr::archive::format::FormatError;
    use redis_pitr::archive::names::GenerationId;

    #[test]
    fn cli_parses() {
        Cli::command().debug_assert();
    }

    fn code(e: impl Into<anyhow::Error>) -> u8 {
        exit_code(&e.into())
    }

    fn backend(source: object_store::Error) -> StoreError {
        StoreError::Backend {
            op: "list",
            object: "s3://bucket/default".into(),
            source,
        }
    }

    fn unreachable() -> StoreError {
        backend(object_store::Error::Generic {
            store: "S3",
            source: "error sending request: tcp connect error: Connection refused".into(),
        })
    }

    fn format_error() -> FormatError {
        FormatError {
            at: 7,
            what: "bad checksum".into(),
        }
    }

    fn target_io() -> TargetError {
        TargetError::Io {
            addr: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionReset.into(),
            partial: String::new(),
        }
    }

    #[test]
    fn usage_and_findings() {
        assert_eq!(code(Usage::new("--to", "bad")), EXIT_USAGE);
        let empty = Finding::Empty {
            name: "default".into(),
            url: "/x".into(),
        };
        assert_eq!(code(empty), EXIT_NOT_FOUND);
        let corrupt = Finding::Corrupt { first: "o".into() };
        assert_eq!(code(corrupt), EXIT_CORRUPT);
        assert_eq!(code(anyhow::anyhow!("anything else")), EXIT_FAILURE);
        let no_archiver = Finding::NoArchiver {
            name: "default".into(),
            url: "/x".into(),
            why: "no process holds the archive's lease".into(),
        };
        assert_eq!(code(no_archiver), EXIT_USAGE);
        assert_eq!(code(Finding::SnapshotTimeout { secs: 600 }), EXIT_FAILURE);
    }

    #[test]
    fn drill_rows() {
        use drill::DrillError as D;
        let over = D::Thresholds("max-rpo 3.000 s > 1.000 s (by 2.000 s)".into());
        assert!(over.to_string().contains("max-rpo"), "{over}");
        assert_eq!(code(over), EXIT_DRILL);
        let missing = D::NoServer {
            bin: "/nonexistent/redis-server".into(),
            why: "not found".into(),
        };
        assert!(missing.to_string().contains("/nonexistent/redis-server"));
        assert_eq!(code(missing), EXIT_USAGE);
        assert_eq!(code(D::Interrupted("Ctrl-C", "")), EXIT_INTERRUPTED);
    }

    #[test]
    fn store_rows() {
        assert_eq!(code(unreachable()), EXIT_UNREACHABLE);
        let denied = backend(object_store::Error::PermissionDenied {
            path: "default".into(),
            source: "403".into(),
        });
        assert_eq!(code(denied), EXIT_UNREACHABLE);
        let missing = backend(object_store::Error::NotFound {
            path: "default/x".into(),
            source: "404".into(),
        });
        assert_eq!(code(missing), EXIT_NOT_FOUND);
        let zstd = StoreError::Config {
            url: "/x".into(),
            reason: "zstd: out of memory".into(),
        };
        assert_eq!(code(zstd), EXIT_FAILURE);
        let conflict = StoreError::Conflict { object: "o".into() };
        assert_eq!(code(conflict), EXIT_FAILURE);
        let corrupt = StoreError::Corrupt {
            object: "o".into(),
            source: format_error(),
        };
        assert_eq!(code(corrupt), EXIT_CORRUPT);
        // Under a context, as the commands add it.
        let e = anyhow::Error::from(unreachable()).context("listing the archive");
        assert_eq!(exit_code(&e), EXIT_UNREACHABLE);
    }

    #[test]
    fn an_unusable_store_url_is_a_usage_error() {
        let a = args::StoreArgs {
            store: "ftp://host/x".into(),
            name: "default".parse().unwrap(),
        };
        let e = a.open().unwrap_err();
        assert_eq!(exit_code(&e), EXIT_USAGE, "{e:#}");
    }

    #[test]
    fn plan_rows() {
        assert_eq!(code(PlanError::Empty), EXIT_NOT_FOUND);
        let outside = PlanError::Outside {
            target: "t".into(),
            nearest: vec![],
        };
        assert_eq!(code(outside), EXIT_NOT_FOUND);
        let gap = PlanError::InGap {
            target: "t".into(),
            after: GenerationId(1),
            before: GenerationId(2),
            nearest: vec![],
        };
        assert_eq!(code(gap), EXIT_NOT_FOUND);
        let no_snapshot = PlanError::NoSnapshot {
            target: "t".into(),
            generation: GenerationId(1),
        };
        assert_eq!(code(no_snapshot), EXIT_NOT_FOUND);
        let hole = PlanError::Hole {
            target: "t".into(),
            generation: GenerationId(1),
            from: 10,
            to: 20,
        };
        assert_eq!(code(hole), EXIT_CORRUPT);
        let overlap = PlanError::Overlap {
            target: "t".into(),
            generation: GenerationId(1),
            object: "o".into(),
            start: 0,
            held: 20,
        };
        assert_eq!(code(overlap), EXIT_CORRUPT);
    }

    #[test]
    fn restore_rows() {
        use RestoreError as R;
        assert_eq!(code(R::Plan(PlanError::Empty)), EXIT_NOT_FOUND);
        let hole = PlanError::Hole {
            target: "t".into(),
            generation: GenerationId(1),
            from: 10,
            to: 20,
        };
        assert_eq!(code(R::Plan(hole)), EXIT_CORRUPT);
        // The wrapped store error decides, not the wrapper.
        assert_eq!(code(R::Store(unreachable())), EXIT_UNREACHABLE);
        let object = || "o".to_string();
        let corrupt = [
            R::Snapshot(redis_pitr::maintain::verify::Problem {
                object: object(),
                offset: 3,
                what: "trailer ends early".into(),
            }),
            R::Rdb {
                object: object(),
                source: redis_pitr::rdb::RdbError::TrailingBytes { offset: 9 },
            },
            R::EmptySnapshot { object: object() },
            R::Segment {
                object: object(),
                source: redis_pitr::archive::format::FormatError {
                    at: 4,
                    what: "bad checksum".into(),
                },
            },
            R::Commands {
                object: object(),
                source: redis_pitr::resp::scanner::StreamError {
                    offset: 100,
                    what: "bad number".into(),
                },
            },
            R::Chain {
                object: object(),
                links_to: 1,
                expected: 2,
            },
        ];
        for e in corrupt {
            assert!(e.to_string().contains("object o"), "{e}");
            assert_eq!(code(e), EXIT_CORRUPT);
        }
        assert_eq!(code(R::Target(target_io())), EXIT_UNREACHABLE);
        let convert =
            R::Convert(redis_pitr::replay::keys::ConvertError::Sequence { what: "x".into() });
        assert_eq!(code(convert), EXIT_FAILURE);
        let files = R::FileIo {
            path: "/d/base.rdb".into(),
            op: "write",
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert!(
            files.to_string().starts_with("/d/base.rdb: cannot write: "),
            "{files}"
        );
        assert_eq!(code(files), EXIT_FAILURE);
        assert_eq!(code(R::OutputNotEmpty { dir: "/d".into() }), EXIT_USAGE);
        assert_eq!(code(R::TargetNotEmpty { keys: 3 }), EXIT_USAGE);
    }

    #[test]
    fn target_rows() {
        let addr = || "127.0.0.1:6390".to_string();
        let url = TargetError::Url {
            url: "x".into(),
            reason: "bad".into(),
        };
        assert_eq!(code(url), EXIT_USAGE);
        let unreachable = [
            TargetError::Connect {
                addr: addr(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            },
            target_io(),
            TargetError::Closed {
                addr: addr(),
                unanswered: 1,
                partial: String::new(),
            },
            TargetError::Timeout {
                addr: addr(),
                after: "60s".into(),
                waiting: "the reply to `PING`".into(),
                unanswered: 1,
                partial: String::new(),
            },
            TargetError::Auth {
                addr: addr(),
                reply: "WRONGPASS".into(),
            },
            TargetError::Loading { addr: addr() },
            TargetError::Protocol {
                addr: addr(),
                detail: "HTTP/1.1 400 Bad Request".into(),
            },
            TargetError::Failed {
                addr: addr(),
                cause: "reset".into(),
            },
        ];
        for e in unreachable {
            assert_eq!(code(RestoreError::Target(e)), EXIT_UNREACHABLE);
        }
        let reply = TargetError::Reply {
            addr: addr(),
            command: "SET k".into(),
            reply: "OOM".into(),
            partial: String::new(),
        };
        assert_eq!(code(reply), EXIT_FAILURE);
        let version = TargetError::Version {
            addr: addr(),
            detail: "no INFO".into(),
        };
        assert_eq!(code(version), EXIT_FAILURE);
    }

    #[test]
    fn archive_rows() {
        use ArchiveError as A;
        let link = LinkError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(code(A::Link(link)), EXIT_UNREACHABLE);
        assert_eq!(code(A::Store(unreachable())), EXIT_UNREACHABLE);
        let corrupt = StoreError::Corrupt {
            object: "o".into(),
            source: format_error(),
        };
        assert_eq!(code(A::Store(corrupt)), EXIT_CORRUPT);
        assert_eq!(
            code(A::Segment(SegmentError::Store(unreachable()))),
            EXIT_UNREACHABLE
        );
        let conflict = SegmentError::Store(StoreError::Conflict { object: "o".into() });
        assert_eq!(code(A::Segment(conflict)), EXIT_FAILURE);
        assert_eq!(code(A::Segment(SegmentError::UploaderGone)), EXIT_FAILURE);
        let encode = SegmentError::Encode {
            object: "o".into(),
            source: format_error(),
        };
        assert_eq!(code(A::Segment(encode)), EXIT_FAILURE);
        let stream = redis_pitr::resp::scanner::StreamError {
            offset: 1,
            what: "x".into(),
        };
        assert_eq!(code(A::Stream(stream)), EXIT_FAILURE);
        let bad = A::BadSnapshot {
            addr: "a".into(),
            what: "crc".into(),
        };
        assert_eq!(code(bad), EXIT_FAILURE);
        assert_eq!(code(A::Archive("x".into())), EXIT_FAILURE);
        let cont = A::UnexpectedContinue { addr: "a".into() };
        assert_eq!(code(cont), EXIT_FAILURE);
    }

    #[test]
    fn lease_rows() {
        let object = || "default/lease in s3://bucket/p".to_string();
        let held = || LeaseError::Held {
            object: object(),
            holder: "h".into(),
            host: "box".into(),
            pid: 42,
            command: "archive".into(),
            expires: "2026-01-01T00:00:00Z".into(),
        };
        let text = held().to_string();
        assert!(text.contains("pid 42 on host box"), "{text}");
        // Refused at start: the error reaches main as it is, or inside the archiver's.
        assert_eq!(code(ArchiveError::Lease(held())), EXIT_LEASE);
        let lost = LeaseError::Lost {
            object: object(),
            holder: "h".into(),
            host: "box".into(),
            pid: 42,
            command: "archive".into(),
        };
        assert_eq!(code(lost), EXIT_LEASE);
        // `pitr prune --confirm` beside a running archiver.
        assert_eq!(code(PruneError::Lease(held())), EXIT_LEASE);
        let expired = LeaseError::Expired {
            object: object(),
            since_ms: 25_000,
            ttl_ms: 30_000,
            last_error: "timeout".into(),
        };
        assert_eq!(code(ArchiveError::Lease(expired)), EXIT_LEASE);
        let refused = LeaseError::NotHeld {
            object: object(),
            writing: "segment s".into(),
        };
        assert_eq!(
            code(ArchiveError::Segment(SegmentError::Lease(Box::new(
                refused
            )))),
            EXIT_LEASE
        );
        assert_eq!(code(LeaseError::Contended { object: object() }), EXIT_LEASE);
        let unreadable = LeaseError::Unreadable {
            object: object(),
            reason: "not a lease".into(),
        };
        assert_eq!(code(unreadable), EXIT_CORRUPT);
        let timeout = LeaseError::Timeout {
            op: "get",
            object: object(),
            after: std::time::Duration::from_secs(5),
        };
        assert_eq!(code(ArchiveError::Lease(timeout)), EXIT_UNREACHABLE);
        let store = LeaseError::Store {
            op: "put",
            object: object(),
            source: object_store::Error::Generic {
                store: "S3",
                source: "connection refused".into(),
            },
        };
        assert_eq!(code(store), EXIT_UNREACHABLE);
    }

    #[test]
    fn messages_name_each_cause_once() {
        let e = anyhow::Error::from(RestoreError::Store(unreachable()));
        let m = message(&e);
        assert_eq!(m.matches("Connection refused").count(), 1, "{m}");
        assert!(m.starts_with("list s3://bucket/default"), "{m}");
    }
}
