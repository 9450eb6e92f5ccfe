//! `pitr restore`: rebuilds the master's state at a chosen moment. Plans from a listing
//! ([`crate::replay::plan`]), streams the snapshot through the RDB parser, then the archived commands
//! up to the cut ([`crate::replay::cut`]), into one of two destinations:
//!
//! - a live Redis ([`live`]): keys by `RESTORE` (the RDB value bytes as a DUMP payload) when
//!   the target accepts the payload's version, otherwise as ordinary commands ([`keys`]); then
//!   the commands, pipelined;
//! - files that a stock redis-server loads natively ([`files`]): `dump.rdb`, or the snapshot as
//!   the base of an AOF with the commands after it.
//!
//! Selective restore ([`filter`]) keeps a subset of databases and keys.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::archive::catalog::Catalog;
use crate::archive::format;
use crate::archive::store::{Store, StoreError};
use crate::rdb::{self, Event, ParserConfig};
use crate::replay::cut::{self, Command, Cutter, Limit};
use crate::replay::filter::{Filter, Verdict};
use crate::replay::plan::{self, Plan, PlanError, Target};
use crate::replay::{files, keys, live};

/// Where the restored state goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A live server: `redis://[user[:password]@]host:port`; the password may come from the
    /// environment instead.
    Live {
        url: String,
        password: Option<String>,
    },
    /// A directory for a stock redis-server to load.
    Files { dir: std::path::PathBuf },
}

#[derive(Clone, Debug)]
pub struct RestoreConfig {
    pub store: Store,
    pub target: Target,
    pub destination: Destination,
    pub filter: Filter,
    /// Flush a non-empty live target, or write into a non-empty directory.
    pub force: bool,
    /// Values larger than this go as batched commands instead of one RESTORE.
    pub max_restore_bytes: usize,
    /// Live target: how long connecting, and each wait for a reply, may take
    /// ([`live::DEFAULT_TIMEOUT`] by default).
    pub target_timeout: std::time::Duration,
}

/// Counters a caller may watch while a restore runs (for a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Stored bytes of the plan read so far.
    pub bytes: AtomicU64,
    /// Stored bytes the plan reads in all.
    pub total: AtomicU64,
    /// Raw RDB bytes of the snapshot processed so far.
    pub snapshot_raw: AtomicU64,
    pub keys: AtomicU64,
    pub commands: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object {object} is corrupt at byte {offset}: {what}")]
    Corrupt {
        object: String,
        offset: u64,
        what: String,
    },
    #[error(transparent)]
    Target(#[from] live::TargetError),
    #[error(transparent)]
    Convert(#[from] keys::ConvertError),
    #[error("{path}: {what}")]
    Files { path: String, what: String },
    #[error("the target holds {keys} keys: restore only into an empty server, or pass --force to flush it first")]
    TargetNotEmpty { keys: u64 },
}

/// What a restore did.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    /// The replication offset reached (just past the last command applied).
    pub offset: u64,
    /// The arrival time of the last command applied (or of the snapshot).
    pub time_ms: u64,
    pub time: String,
    pub generation: String,
    /// Keys loaded from the snapshot.
    pub keys: u64,
    /// Keys of the snapshot left out by `--db`/`--match`.
    pub keys_skipped: u64,
    /// Commands replayed after the snapshot.
    pub commands: u64,
    /// Commands left out by `--db`/`--match`.
    pub commands_skipped: u64,
    /// Replication-internal commands not replayed: PING, REPLCONF, PUBLISH.
    pub commands_internal: u64,
    /// Commands that touch selected and unselected keys, applied whole.
    pub commands_mixed: u64,
    /// Whether a transaction open at the cut was left out (it had not completed by then).
    pub transaction_left_out: bool,
    pub seconds: f64,
    /// Stored bytes read.
    pub bytes_read: u64,
    /// Keys sent by RESTORE and as commands (live target).
    pub keys_by_restore: u64,
    pub keys_by_commands: u64,
    /// Live target: keys whose expiry was moved back to its real time at the end.
    pub expiries_moved_back: u64,
    /// Live target: expiries sent as they are that lie in the range where the replay keeps the
    /// expiries it moves (see [`ExpiryShift`]); the move back may have changed them.
    pub expiries_in_reserved_range: u64,
    /// Whether any expiry was moved ahead during the replay (and so had to be moved back).
    #[serde(skip)]
    pub ttls_shifted: bool,
    /// Whether a hash field TTL was among them.
    #[serde(skip)]
    pub field_ttls_shifted: bool,
    /// For `--output-dir`: what was written and how to start a server on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<files::Written>,
}

/// Plans a restore from a listing alone.
pub async fn make_plan(store: &Store, target: Target) -> Result<Plan, RestoreError> {
    let listing = store.list().await?;
    let catalog = Catalog::from_listing(&listing);
    Ok(plan::plan(&catalog, target)?)
}

/// What the snapshot phase hands to a destination: raw RDB bytes and their events, in order.
struct SnapshotBatch {
    raw: Bytes,
    events: Vec<Event>,
    /// The RDB's magic and version, on the first batch.
    header: Option<(rdb::Magic, u32)>,
}

/// A destination of the restore.
enum Sink {
    Live(Box<live::LiveTarget>, keys::KeyConverter),
    Files(Box<files::FilesWriter>),
}

/// Runs a restore according to `plan`.
pub async fn restore(
    cfg: &RestoreConfig,
    plan: &Plan,
    progress: Arc<Progress>,
) -> Result<Report, RestoreError> {
    let started = Instant::now();
    let shift = ExpiryShift::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    );
    progress.total.store(plan.bytes, Ordering::Relaxed);
    let mut report = Report {
        generation: plan.generation.to_string(),
        offset: plan.snapshot.offset,
        time_ms: plan.snapshot.first_ms,
        ..Default::default()
    };

    // Segments are fetched and decoded ahead: the first one while the snapshot is copied (so
    // at most one segment more is held then), each next one while the one before is replayed.
    type Fetched = (String, format::Segment, u64);
    let (seg_tx, mut seg_rx) = mpsc::channel::<Result<Fetched, RestoreError>>(1);
    let (snapshot_done_tx, snapshot_done) = tokio::sync::oneshot::channel::<()>();
    let fetcher = {
        let store = cfg.store.clone();
        let segments = plan.segments.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut snapshot_done = Some(snapshot_done);
            for s in segments {
                let got = async {
                    let bytes = store.get(&s.object).await?;
                    progress
                        .bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let name = s.name.clone();
                    let stored = bytes.len() as u64;
                    tokio::task::spawn_blocking(move || format::decode_segment(&bytes))
                        .await
                        .expect("segment decoder panicked")
                        .map(|seg| (s.name.clone(), seg, stored))
                        .map_err(|e| RestoreError::Corrupt {
                            object: name,
                            offset: e.at,
                            what: e.what,
                        })
                }
                .await;
                let stop = got.is_err();
                if seg_tx.send(got).await.is_err() || stop {
                    return;
                }
                if let Some(done) = snapshot_done.take() {
                    if done.await.is_err() {
                        return;
                    }
                }
            }
        })
    };

    // The snapshot, parsed on a blocking thread, handed over in bounded batches.
    let (tx, mut rx) = mpsc::channel::<Result<SnapshotBatch, String>>(4);
    let parser_cfg = ParserConfig {
        max_raw_value: match &cfg.destination {
            Destination::Files { .. } if cfg.filter.is_all() => 0,
            _ => cfg.max_restore_bytes,
        },
        ..ParserConfig::default()
    };
    let snapshot_name = plan.snapshot.object;
    let store = cfg.store.clone();
    // Copying the snapshot into files needs no events: there the RDB is parsed (to check it
    // and count its keys) on a thread of its own, beside decompression and writing.
    let side_parse = matches!(cfg.destination, Destination::Files { .. }) && cfg.filter.is_all();
    let (side_tx, side) = if side_parse {
        let (stx, srx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let handle = std::thread::spawn(move || {
            let mut parser = rdb::Parser::new(parser_cfg);
            // It only counts and checks keys: large LZF strings need not be decompressed.
            parser.set_lzf_strings(rdb::LzfStrings::Skip);
            let mut events = Vec::new();
            for raw in srx {
                events.clear();
                parser.feed_bytes(raw, &mut events)?;
            }
            parser.finish()
        });
        (Some(stx), Some(handle))
    } else {
        (None, None)
    };
    // Before parsing, the reader hands over the RDB header alone and waits to learn whether
    // values go by RESTORE: large LZF strings then go as their raw bytes, never decompressed.
    let (mode_tx, mode_rx) = std::sync::mpsc::channel::<bool>();
    let mut mode_tx = Some(mode_tx);
    let reader = tokio::spawn(async move {
        let mut parser = rdb::Parser::new(parser_cfg);
        let tx2 = tx.clone();
        let mut header_seen = false;
        let r = crate::maintain::verify::read_snapshot(&store, snapshot_name, move |raw| {
            if let (false, false, Some(raw)) = (side_parse, header_seen, &raw) {
                header_seen = true;
                let (magic, version) =
                    rdb_header(raw).ok_or_else(|| "the RDB inside: no RDB header".to_string())?;
                tx2.blocking_send(Ok(SnapshotBatch {
                    raw: Bytes::new(),
                    events: Vec::new(),
                    header: Some((magic, version)),
                }))
                .map_err(|_| "restore stopped".to_string())?;
                let by_restore = mode_rx.recv().map_err(|_| "restore stopped".to_string())?;
                if by_restore {
                    parser.set_lzf_strings(rdb::LzfStrings::SkipWhenCaptured);
                }
            }
            let mut events = Vec::new();
            let mut header = None;
            let raw = match raw {
                Some(raw) if side_parse => {
                    if !header_seen {
                        // The layout only needs the magic and version.
                        header_seen = true;
                        let mv = rdb_header(&raw)
                            .ok_or_else(|| "the RDB inside: no RDB header".to_string())?;
                        header = Some(mv);
                    }
                    raw
                }
                None if side_parse => Bytes::new(),
                Some(raw) => {
                    // A batch per piece: an LZF string expands up to 88 times in the events.
                    let mut at = 0;
                    while raw.len() - at > rdb::FEED_PIECE {
                        let piece = raw.slice(at..at + rdb::FEED_PIECE);
                        at += rdb::FEED_PIECE;
                        parser
                            .feed_bytes(piece.clone(), &mut events)
                            .map_err(|e| format!("the RDB inside: {e}"))?;
                        tx2.blocking_send(Ok(SnapshotBatch {
                            raw: piece,
                            events: std::mem::take(&mut events),
                            header: None,
                        }))
                        .map_err(|_| "restore stopped".to_string())?;
                    }
                    let raw = raw.slice(at..);
                    parser
                        .feed_bytes(raw.clone(), &mut events)
                        .map_err(|e| format!("the RDB inside: {e}"))?;
                    raw
                }
                None => {
                    parser
                        .finish()
                        .map_err(|e| format!("the RDB inside: {e}"))?;
                    Bytes::new()
                }
            };
            tx2.blocking_send(Ok(SnapshotBatch {
                raw,
                events,
                header,
            }))
            .map_err(|_| "restore stopped".to_string())
        })
        .await;
        match r {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(p)) => {
                let _ = tx.send(Err(p.to_string())).await;
                Err(RestoreError::Corrupt {
                    object: p.object,
                    offset: p.offset,
                    what: p.what,
                })
            }
            Err(e) => Err(RestoreError::Store(e)),
        }
    });

    // The first batch carries the header: the RDB version decides RESTORE and file layout.
    let mut sink: Option<Sink> = None;
    let mut version = 0u32;
    let mut magic = rdb::Magic::Redis;
    let mut skipping = false;
    let mut kept: Vec<Event> = Vec::new();
    while let Some(batch) = rx.recv().await {
        let Ok(batch) = batch else {
            break;
        };
        progress
            .snapshot_raw
            .fetch_add(batch.raw.len() as u64, Ordering::Relaxed);
        if let Some(stx) = &side_tx {
            if !batch.raw.is_empty() && stx.send(batch.raw.clone()).is_err() {
                // The side parser stopped on an error: its result says which.
                break;
            }
        }
        if let Some((m, v)) = batch.header {
            magic = m;
            version = v;
        }
        if sink.is_none() {
            let (opened, restore) = open_sink(cfg, magic, version).await?;
            if let Some(t) = mode_tx.take() {
                let _ = t.send(restore);
            }
            sink = Some(opened);
        }
        let sink = sink.as_mut().expect("opened");
        // Selective restore: drop the events of unselected keys.
        kept.clear();
        for ev in batch.events {
            match &ev {
                Event::KeyStart { db, key, .. } => {
                    skipping = !cfg.filter.key_selected(*db as u32, key);
                    if skipping {
                        report.keys_skipped += 1;
                    } else {
                        report.keys += 1;
                        progress.keys.fetch_add(1, Ordering::Relaxed);
                    }
                    if !skipping {
                        kept.push(ev);
                    }
                }
                Event::KeyEnd { .. } => {
                    if !skipping {
                        kept.push(ev);
                    }
                    skipping = false;
                }
                _ if skipping => {}
                _ => kept.push(ev),
            }
        }
        match sink {
            Sink::Live(target, conv) => {
                let mut cmds = Vec::new();
                for ev in kept.iter_mut() {
                    let (ms, field) = match ev {
                        Event::KeyStart {
                            expire_ms: Some(ms),
                            ..
                        } => (ms, false),
                        Event::HashField {
                            expire_ms: Some(ms),
                            ..
                        } => (ms, true),
                        _ => continue,
                    };
                    match shift.map(*ms) {
                        Moved::To(sent) => {
                            *ms = sent;
                            report.ttls_shifted = true;
                            report.field_ttls_shifted |= field;
                        }
                        Moved::InReserved => report.expiries_in_reserved_range += 1,
                        Moved::Same => {}
                    }
                }
                for ev in &kept {
                    conv.push(ev, &mut cmds)?;
                    for c in cmds.drain(..) {
                        target.send(&c).await?;
                    }
                }
            }
            Sink::Files(w) => w.snapshot(&batch.raw, &kept).await?,
        }
    }
    drop(side_tx);
    let snap = reader.await.expect("snapshot reader task")?;
    if let Some(h) = side {
        let summary = tokio::task::spawn_blocking(move || h.join())
            .await
            .expect("joining the parser")
            .expect("the RDB parser panicked")
            .map_err(|e| RestoreError::Corrupt {
                object: plan.snapshot.name.clone(),
                offset: e.offset().unwrap_or(0),
                what: format!("the RDB inside: {e}"),
            })?;
        report.keys = summary.keys;
        progress.keys.store(summary.keys, Ordering::Relaxed);
    }
    progress
        .bytes
        .fetch_add(plan.snapshot.bytes, Ordering::Relaxed);
    let mut sink = match sink {
        Some(s) => s,
        None => {
            return Err(RestoreError::Corrupt {
                object: plan.snapshot.name.clone(),
                offset: 0,
                what: "empty snapshot".into(),
            })
        }
    };
    if let Sink::Live(target, conv) = &mut sink {
        target.sync().await?;
        target.snapshot_applied(report.keys);
        let st = conv.stats();
        report.keys_by_restore = st.keys_by_restore;
        report.keys_by_commands = st.keys_by_commands;
    }
    if let Sink::Files(w) = &mut sink {
        w.snapshot_done().await?;
    }

    let _ = snapshot_done_tx.send(());
    // The commands after the snapshot, up to the cut.
    let mut cutter = Cutter::new(
        Limit {
            time_ms: plan.cut_time_ms,
            offset: plan.cut_offset,
        },
        plan.snapshot.offset,
        plan.snapshot.first_ms,
    );
    let relative_ttls = magic == rdb::Magic::Redis && version < 10;
    let mut chain = snap.checksum;
    let mut released = Vec::new();
    let mut first = true;
    while let Some(got) = seg_rx.recv().await {
        if cutter.is_done() {
            break;
        }
        let (name, seg, stored) = got?;
        report.bytes_read += stored;
        if seg.header.prev_chain != chain {
            return Err(RestoreError::Corrupt {
                object: name,
                offset: format::PREAMBLE_LEN as u64,
                what: format!(
                    "chain broken: links to {:016x}, the object before has checksum {chain:016x}",
                    seg.header.prev_chain
                ),
            });
        }
        chain = seg.checksum;
        if first {
            first = false;
            let select = vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(seg.header.db_start.to_string()),
            ];
            match &mut sink {
                Sink::Live(t, _) => t.send(&select).await?,
                Sink::Files(w) => w.command(&select).await?,
            }
        }
        for c in cut::Commands::new(&seg) {
            let c = c.map_err(|e| RestoreError::Corrupt {
                object: name.clone(),
                offset: e.offset,
                what: e.what,
            })?;
            cutter.push(c, &mut released);
            if !released.is_empty() {
                apply(
                    cfg,
                    &mut sink,
                    &mut released,
                    relative_ttls,
                    &shift,
                    &mut report,
                    &progress,
                )
                .await?;
            }
            if cutter.is_done() {
                break;
            }
        }
    }
    fetcher.abort();
    cutter.finish();
    apply(
        cfg,
        &mut sink,
        &mut released,
        relative_ttls,
        &shift,
        &mut report,
        &progress,
    )
    .await?;
    report.offset = cutter.reached_offset;
    report.time_ms = cutter.reached_ms;
    report.transaction_left_out = cutter.dropped_open_transaction;
    match sink {
        Sink::Live(mut target, _) => {
            target.sync().await?;
            if report.ttls_shifted {
                report.expiries_moved_back = target
                    .unshift_ttls(
                        RESERVED_FROM_MS..shift.reserved_end(),
                        shift.floor,
                        report.field_ttls_shifted,
                    )
                    .await?;
            }
            if report.expiries_in_reserved_range > 0 {
                tracing::warn!(
                    count = report.expiries_in_reserved_range,
                    "{} expiries lie where a live restore keeps the expiries it moves ({} to {} ms since the epoch) and may have been moved wrongly: restore to files (--output-dir) for those",
                    report.expiries_in_reserved_range,
                    RESERVED_FROM_MS,
                    shift.reserved_end()
                );
            }
        }
        Sink::Files(w) => report.files = Some(w.finish(report.commands > 0).await?),
    }
    report.time = plan::fmt_ms(report.time_ms);
    report.bytes_read += plan.snapshot.bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Opens the destination; also says whether values go by RESTORE.
async fn open_sink(
    cfg: &RestoreConfig,
    magic: rdb::Magic,
    version: u32,
) -> Result<(Sink, bool), RestoreError> {
    match &cfg.destination {
        Destination::Live { url, password } => {
            let mut target =
                live::LiveTarget::connect_with_timeout(url, password.clone(), cfg.target_timeout)
                    .await?;
            let n = target.key_count().await?;
            if n > 0 {
                if !cfg.force {
                    return Err(RestoreError::TargetNotEmpty { keys: n });
                }
                target.flush_all().await?;
            }
            let accepts = target.rdb_version().await?;
            let restore_version = payload_version(magic, version, accepts);
            let conv = keys::KeyConverter::new(keys::ConvertConfig {
                restore_version,
                max_restore_bytes: cfg.max_restore_bytes,
                max_batch_bytes: 1 << 20,
                // Every expiry is moved ahead during the replay, field TTLs included, and
                // those inside a payload cannot be.
                field_ttls_by_restore: false,
                // Redis 7.0+ (RDB 10) and every Valkey.
                stream_entries_added: accepts >= 10,
            });
            Ok((
                Sink::Live(Box::new(target), conv),
                restore_version.is_some(),
            ))
        }
        Destination::Files { dir } => Ok((
            Sink::Files(Box::new(
                files::FilesWriter::create(
                    dir,
                    magic,
                    version,
                    &cfg.filter,
                    cfg.force,
                    cfg.max_restore_bytes,
                )
                .await?,
            )),
            !cfg.filter.is_all(),
        )),
    }
}

/// The magic and version at the start of an RDB.
fn rdb_header(raw: &[u8]) -> Option<(rdb::Magic, u32)> {
    let h = raw.get(..9)?;
    let (magic, digits) = if h.starts_with(b"REDIS") {
        (rdb::Magic::Redis, &h[5..])
    } else if h.starts_with(b"VALKEY") {
        (rdb::Magic::Valkey, &h[6..])
    } else {
        return None;
    };
    let v = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((magic, v))
}

/// The RESTORE payload version for values of an RDB `(magic, version)` on a target that accepts
/// payloads up to `accepts`; `None` when the target cannot take them (commands instead).
pub fn payload_version(magic: rdb::Magic, version: u32, accepts: u16) -> Option<u16> {
    let v = u16::try_from(version).ok()?;
    // Valkey 9's RDB 80 and Redis' 12+ are different families: only the same family, and only
    // versions the target knows.
    let valkey_family = |x: u16| x >= 80;
    if magic == rdb::Magic::Valkey && !valkey_family(accepts) {
        return None;
    }
    if valkey_family(accepts) && (12..80).contains(&v) {
        return None;
    }
    (v <= accepts).then_some(v)
}

/// Filters, translates and sends the released commands.
#[allow(clippy::too_many_arguments)]
async fn apply(
    cfg: &RestoreConfig,
    sink: &mut Sink,
    released: &mut Vec<Command>,
    relative_ttls: bool,
    shift: &ExpiryShift,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), RestoreError> {
    for c in released.drain(..) {
        if c.name_is("ping")
            || c.name_is("replconf")
            || c.name_is("publish")
            || c.name_is("spublish")
        {
            report.commands_internal += 1;
            continue;
        }
        match cfg.filter.command(c.db, &c.args) {
            Verdict::Drop => {
                report.commands_skipped += 1;
                continue;
            }
            Verdict::Mixed => report.commands_mixed += 1,
            Verdict::Keep => {}
        }
        // Sent as received unless a TTL has to be rewritten.
        let rewritten = if relative_ttls {
            absolute_ttl(&c)
        } else {
            None
        };
        match (&mut *sink, rewritten) {
            (Sink::Live(t, _), rewritten) => {
                let one;
                let cmds: &[Vec<Bytes>] = match &rewritten {
                    Some(r) => r,
                    None => {
                        one = [c.args.clone()];
                        &one
                    }
                };
                for args in cmds {
                    let mut args = Cow::Borrowed(args);
                    if let Some(a) = stream_trim_for_client(&args) {
                        args = Cow::Owned(a);
                    }
                    let shifted = shift_ttl(&args, shift);
                    report.ttls_shifted |= shifted.moved;
                    report.field_ttls_shifted |= shifted.moved && shifted.field;
                    report.expiries_in_reserved_range += u64::from(shifted.reserved);
                    match shifted.args {
                        Some(a) => t.send(&a).await?,
                        None if rewritten.is_some() || matches!(args, Cow::Owned(_)) => {
                            t.send(&args).await?
                        }
                        None => t.send_encoded(&c.args, &c.raw).await?,
                    }
                }
            }
            (Sink::Files(w), Some(cmds)) => {
                for args in &cmds {
                    w.command(args).await?;
                }
            }
            (Sink::Files(w), None) => w.command_encoded(&c.raw).await?,
        }
        report.commands += 1;
        progress.commands.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Where a live replay puts the expiries it moves, in ms since the epoch: 2^45 + 2^44 (in the
/// year 3642), below the largest hash field expiry Redis 7.4 accepts (2^46 - 1, t_hash.c's
/// `HFE_MAX_ABS_TIME_MSEC`), and small enough for the Lua numbers (doubles) of the script that
/// moves them back to hold exactly. See [`ExpiryShift`].
pub const RESERVED_FROM_MS: i64 = (1 << 45) + (1 << 44);
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Expiries this far before the restore's start keep their exact time through the move (a
/// target whose clock is behind the restorer's may not have reached them yet); older ones are
/// all moved to the start of the reserved range, and so moved back to this far in the past.
const KEPT_PAST_MS: i64 = 366 * DAY_MS;
/// Expiries this far or further after the restore's start cannot pass while it runs: they are
/// sent as they are, never moved.
const HORIZON_MS: i64 = 10 * 366 * DAY_MS;

/// How a live replay keeps the target from expiring keys and hash fields itself.
///
/// A replica never expires keys on its own: it applies the master's DEL when the master expired
/// them, and so must a replay, or a key whose TTL passed between a write and the restore would
/// be re-created by the writes that followed it on the master. So every expiry that could pass
/// before the restore completes (earlier than [`HORIZON_MS`] after its start) is moved into a
/// reserved range [`RESERVED_FROM_MS`, `reserved_end()`), keeping its offset from `floor`, and
/// moved back exactly once the replay is complete ([`live::LiveTarget::unshift_ttls`]). Later
/// expiries are sent as they are, so nothing is ever moved near a server's limit (Redis refuses
/// field TTLs past 2^46 - 1 ms, and key TTLs past i64::MAX), and every time is computed in
/// integers. An expiry sent as it is that happens to lie in the reserved range would be moved
/// "back" too: such times are counted ([`Report::expiries_in_reserved_range`]) and warned about.
/// (Loading files needs none of this: a server does not expire keys while it loads.)
///
/// The move does not keep the order of times, so `GT`/`LT` conditions of `PEXPIREAT` (which a
/// master propagates only when they held) are dropped, and those of `HPEXPIREAT` (which Valkey
/// propagates for every field named, also those whose condition failed) are evaluated on the
/// target by a script that compares the real times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryShift {
    /// Expiries before this are moved to [`RESERVED_FROM_MS`] (they have passed: moved back,
    /// they delete their key or field, as on the master).
    pub floor: i64,
    /// Expiries at or after this are not moved.
    pub horizon: i64,
}

/// What [`ExpiryShift::map`] does with one expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Sent as it is.
    Same,
    /// Sent as it is, but it lies in the reserved range.
    InReserved,
    /// Sent as this time instead.
    To(i64),
}

impl ExpiryShift {
    /// The move for a restore that starts at `now_ms` (the restorer's clock).
    pub fn new(now_ms: i64) -> ExpiryShift {
        ExpiryShift {
            floor: now_ms.saturating_sub(KEPT_PAST_MS),
            horizon: now_ms.saturating_add(HORIZON_MS),
        }
    }

    /// The end (exclusive) of the reserved range.
    pub fn reserved_end(&self) -> i64 {
        RESERVED_FROM_MS.saturating_add(self.horizon.saturating_sub(self.floor))
    }

    /// The time to send for the absolute expiry `at` (ms).
    pub fn map(&self, at: i64) -> Moved {
        if at < self.horizon {
            Moved::To(RESERVED_FROM_MS + (at.max(self.floor) - self.floor))
        } else if at >= RESERVED_FROM_MS && at < self.reserved_end() {
            Moved::InReserved
        } else {
            Moved::Same
        }
    }

    /// The real time of a time found on the target (what the script that moves times back
    /// computes).
    pub fn unmap(&self, sent: i64) -> i64 {
        if sent >= RESERVED_FROM_MS && sent < self.reserved_end() {
            sent - RESERVED_FROM_MS + self.floor
        } else {
            sent
        }
    }
}

/// What [`shift_ttl`] did to one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shifted {
    /// The command to send instead; `None`: send it as it is.
    pub args: Option<Vec<Bytes>>,
    /// An expiry was moved into the reserved range (it must be moved back at the end).
    pub moved: bool,
    /// The expiry is a hash field's.
    pub field: bool,
    /// An expiry sent as it is lies in the reserved range.
    pub reserved: bool,
}

/// Sets hash field TTLs with `GT`/`LT` as the master did: compares the real new time with each
/// field's real current time (times in the reserved range are moved back first), and sets the
/// time to send on the fields where the condition holds. KEYS[1]: the hash; ARGV: reserved
/// range start and end, floor, `GT` or `LT`, the real time, the time to send, the fields.
const FIELD_CONDITION_SCRIPT: &str = r#"
local lo, hi, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cond, new = ARGV[4], tonumber(ARGV[5])
local n = 0
for i = 7, #ARGV do
  local t = redis.call('HPEXPIRETIME', KEYS[1], 'FIELDS', 1, ARGV[i])[1]
  if t >= lo and t < hi then t = t - lo + floor end
  local ok
  if cond == 'GT' then ok = t >= 0 and new > t else ok = t == -1 or (t >= 0 and new < t) end
  if ok then
    redis.call('HPEXPIREAT', KEYS[1], ARGV[6], 'FIELDS', 1, ARGV[i])
    n = n + 1
  end
end
return n
"#;

/// For a live target: the command that sets the same expiry as `args` with the expiry moved
/// as `shift` says (see [`ExpiryShift`]): key TTLs (`PEXPIREAT`, `EXPIREAT`, `SET … PXAT|EXAT`,
/// `GETEX`, `RESTORE … ABSTTL`) and hash field TTLs (`HPEXPIREAT`, `HEXPIREAT`, `HSETEX`,
/// `HGETEX`). Seconds become milliseconds when the time is moved.
pub fn shift_ttl(args: &[Bytes], shift: &ExpiryShift) -> Shifted {
    let num = |a: &Bytes| {
        std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    let Some(name) = args.first().map(|a| a.to_ascii_lowercase()) else {
        return Shifted::default();
    };
    let hash = name.first() == Some(&b'h');
    // The time at `args[at]` (seconds when `secs`), moved: the command with `args[name_at]`
    // renamed to `new_name` (milliseconds) when it is.
    let moved = |name_at: usize, new_name: &'static [u8], at: usize, secs: bool| -> Shifted {
        let Some(ms) = num(&args[at]).and_then(|v| v.checked_mul(if secs { 1000 } else { 1 }))
        else {
            return Shifted::default();
        };
        match shift.map(ms) {
            Moved::Same => Shifted::default(),
            Moved::InReserved => Shifted {
                reserved: true,
                ..Shifted::default()
            },
            Moved::To(sent) => {
                let mut out = args.to_vec();
                out[name_at] = Bytes::from_static(new_name);
                out[at] = Bytes::from(sent.to_string());
                Shifted {
                    args: Some(out),
                    moved: true,
                    field: hash,
                    reserved: false,
                }
            }
        }
    };
    match name.as_slice() {
        // `PEXPIREAT key ms [NX|XX|GT|LT]...`: a master propagates it only when its condition
        // held, so GT/LT (which the move can invert) are dropped.
        b"pexpireat" | b"expireat" if args.len() >= 3 => {
            let mut r = moved(0, b"PEXPIREAT", 2, name == b"expireat");
            let base = r.args.take().unwrap_or_else(|| args.to_vec());
            let kept: Vec<Bytes> = base
                .iter()
                .enumerate()
                .filter(|(i, a)| {
                    *i < 3 || !(a.eq_ignore_ascii_case(b"gt") || a.eq_ignore_ascii_case(b"lt"))
                })
                .map(|(_, a)| a.clone())
                .collect();
            if r.moved || kept.len() != args.len() {
                r.args = Some(kept);
            }
            r
        }
        // `HPEXPIREAT key ms [NX|XX|GT|LT] FIELDS n f...` (Redis 7.4+, Valkey 9+).
        b"hpexpireat" | b"hexpireat" if args.len() >= 3 => {
            let secs = name == b"hexpireat";
            let mut r = moved(0, b"HPEXPIREAT", 2, secs);
            let cond = args
                .get(3)
                .filter(|a| a.eq_ignore_ascii_case(b"gt") || a.eq_ignore_ascii_case(b"lt"));
            let (Some(cond), Some(real)) = (
                cond,
                num(&args[2]).and_then(|v| v.checked_mul(if secs { 1000 } else { 1 })),
            ) else {
                return r;
            };
            // FIELDS n f...: the fields start at index 6.
            let sent = r
                .args
                .as_ref()
                .map_or_else(|| Bytes::from(real.to_string()), |a| a[2].clone());
            let mut eval = vec![
                Bytes::from_static(b"EVAL"),
                Bytes::from_static(FIELD_CONDITION_SCRIPT.as_bytes()),
                Bytes::from_static(b"1"),
                args[1].clone(),
                Bytes::from(RESERVED_FROM_MS.to_string()),
                Bytes::from(shift.reserved_end().to_string()),
                Bytes::from(shift.floor.to_string()),
                Bytes::from(cond.to_ascii_uppercase()),
                Bytes::from(real.to_string()),
                sent,
            ];
            eval.extend(args.iter().skip(6).cloned());
            r.args = Some(eval);
            r.field = true;
            r
        }
        // `SET key value [opts]`, `GETEX key [opts]`; `HSETEX key [opts] FIELDS n f v ...`,
        // `HGETEX key [opts] FIELDS n f ...`, whose options end at FIELDS.
        b"set" | b"getex" | b"hsetex" | b"hgetex" => {
            let from = if name == b"set" { 3 } else { 2 };
            let last = args.len().saturating_sub(1);
            for (i, a) in args.iter().enumerate().take(last).skip(from) {
                let opt = a.to_ascii_lowercase();
                if hash && opt == b"fields" {
                    return Shifted::default();
                }
                if opt == b"pxat" || opt == b"exat" {
                    return moved(i, b"PXAT", i + 1, opt == b"exat");
                }
            }
            Shifted::default()
        }
        b"restore" | b"restore-asking" if args.len() >= 4 => {
            let abs = args
                .iter()
                .skip(4)
                .any(|a| a.eq_ignore_ascii_case(b"absttl"));
            if !abs || num(&args[2]).is_none_or(|v| v <= 0) {
                return Shifted::default();
            }
            let mut r = moved(0, b"RESTORE", 2, false);
            // Keep the command's own name.
            if let Some(a) = &mut r.args {
                a[0] = args[0].clone();
            }
            r
        }
        _ => Shifted::default(),
    }
}

/// For a live target: `XADD`/`XTRIM` with an exact trim and `LIMIT` without it, or `None` to
/// send the command as it is.
///
/// A master propagates an approximate trim (`MAXLEN ~ 10 LIMIT 5`) as an exact one with the
/// stream's resulting length or first id (`MAXLEN = 7 LIMIT 5`, t_stream.c's
/// `streamRewriteTrimArgument`). Replicas and AOF loading accept that and ignore the `LIMIT`
/// (`mustObeyClient`: the limit is set to 0, no limit), but an ordinary client is refused
/// ("LIMIT cannot be used without the special ~ option"). An exact trim from a client has no
/// limit either, so dropping `LIMIT n` trims exactly what the replica trims.
pub fn stream_trim_for_client(args: &[Bytes]) -> Option<Vec<Bytes>> {
    let name = args.first()?.to_ascii_lowercase();
    let xadd = match name.as_slice() {
        b"xadd" => true,
        b"xtrim" => false,
        _ => return None,
    };
    let mut approx = false;
    let mut limit = None;
    // The option parser of t_stream.c's streamParseAddOrTrimArgsOrReply.
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args[i].to_ascii_lowercase();
        if xadd && opt == b"*" {
            break;
        } else if (opt == b"maxlen" || opt == b"minid") && more > 0 {
            if more >= 2 && (args[i + 1].as_ref() == b"~" || args[i + 1].as_ref() == b"=") {
                approx = args[i + 1].as_ref() == b"~";
                i += 1;
            }
            i += 2;
        } else if opt == b"limit" && more > 0 {
            limit = Some(i);
            i += 2;
        } else if xadd && opt == b"nomkstream" {
            i += 1;
        } else {
            // XADD: the id; XTRIM: nothing else may follow.
            break;
        }
    }
    let at = limit.filter(|_| !approx)?;
    let mut out = args.to_vec();
    out.drain(at..at + 2);
    Some(out)
}

/// Redis 6 and older replicate relative TTLs (`EXPIRE k 10`, `SET k v PX 500`): turn them into
/// absolute ones from the command's arrival time, so a restore does not extend them. The
/// result is one or two commands that every server since 2.6 knows (no `PXAT`, which came with
/// 6.2), so that the archived master's own version loads them from an AOF: `SET k v [NX|XX]`
/// then `PEXPIREAT k <ms>`. A replicated `SET NX` always succeeded on the master, so on a
/// faithful replay the expiry that follows it applies to the value it set.
pub fn absolute_ttl(c: &Command) -> Option<Vec<Vec<Bytes>>> {
    let name = c.args[0].to_ascii_lowercase();
    let num = |i: usize| {
        c.args
            .get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    let at = |ms: i64| Bytes::from((c.ms as i64).saturating_add(ms).to_string());
    let b = Bytes::from_static;
    let pexpireat = |ms: i64| vec![b(b"PEXPIREAT"), c.args[1].clone(), at(ms)];
    match name.as_slice() {
        b"expire" | b"pexpire" => {
            let n = num(2)?;
            let ms = if name == b"expire" {
                n.saturating_mul(1000)
            } else {
                n
            };
            let mut v = pexpireat(ms);
            // NX/XX/GT/LT (7.0+) never come from a server that sends relative TTLs, but keep
            // whatever follows.
            v.extend(c.args.iter().skip(3).cloned());
            Some(vec![v])
        }
        b"setex" | b"psetex" if c.args.len() == 4 => {
            let n = num(2)?;
            let ms = if name == b"setex" {
                n.saturating_mul(1000)
            } else {
                n
            };
            Some(vec![
                vec![b(b"SET"), c.args[1].clone(), c.args[3].clone()],
                pexpireat(ms),
            ])
        }
        b"set" => {
            for i in 3..c.args.len().saturating_sub(1) {
                let unit = c.args[i].to_ascii_lowercase();
                if unit == b"ex" || unit == b"px" {
                    let n = num(i + 1)?;
                    let ms = if unit == b"ex" {
                        n.saturating_mul(1000)
                    } else {
                        n
                    };
                    let mut set = c.args.clone();
                    set.drain(i..i + 2);
                    return Some(vec![set, pexpireat(ms)]);
                }
            }
            None
        }
        // `RESTORE key ttl payload` without ABSTTL: the TTL is relative (ABSTTL: 5.0+).
        b"restore" if c.args.len() >= 4 => {
            let abs = c
                .args
                .iter()
                .skip(4)
                .any(|a| a.eq_ignore_ascii_case(b"absttl"));
            let n = num(2)?;
            if abs || n <= 0 {
                return None;
            }
            let mut v = c.args.clone();
            v[2] = at(n);
            v.push(b(b"ABSTTL"));
            Some(vec![v])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], ms: u64) -> Command {
        Command {
            raw: Bytes::new(),
            args: args
                .iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect(),
            end: 0,
            ms,
            db: 0,
        }
    }

    fn or_same(c: &Command) -> Vec<Vec<String>> {
        absolute_ttl(c)
            .unwrap_or_else(|| vec![c.args.clone()])
            .into_iter()
            .map(text)
            .collect()
    }

    fn text(v: Vec<Bytes>) -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn relative_ttls_become_absolute() {
        assert_eq!(
            or_same(&cmd(&["EXPIRE", "k", "10"], 1000)),
            [["PEXPIREAT", "k", "11000"]]
        );
        assert_eq!(
            or_same(&cmd(&["SET", "k", "v", "PX", "500"], 1000)),
            [vec!["SET", "k", "v"], vec!["PEXPIREAT", "k", "1500"]]
        );
        assert_eq!(
            or_same(&cmd(&["set", "k", "v", "NX", "ex", "2"], 1000)),
            [vec!["set", "k", "v", "NX"], vec!["PEXPIREAT", "k", "3000"]]
        );
        assert_eq!(
            or_same(&cmd(&["SETEX", "k", "2", "v"], 1000)),
            [vec!["SET", "k", "v"], vec!["PEXPIREAT", "k", "3000"]]
        );
        assert_eq!(
            or_same(&cmd(&["SET", "k", "v", "PXAT", "5"], 1000)),
            [["SET", "k", "v", "PXAT", "5"]]
        );
        assert_eq!(
            or_same(&cmd(&["RESTORE", "k", "50", "p", "REPLACE"], 1000)),
            [["RESTORE", "k", "1050", "p", "REPLACE", "ABSTTL"]]
        );
        assert_eq!(
            or_same(&cmd(&["RESTORE", "k", "50", "p", "ABSTTL"], 1000)),
            [["RESTORE", "k", "50", "p", "ABSTTL"]]
        );
        assert_eq!(
            or_same(&cmd(&["RESTORE", "k", "0", "p"], 1000)),
            [["RESTORE", "k", "0", "p"]]
        );
    }

    #[test]
    fn expiries_that_may_pass_during_the_replay_are_moved() {
        let now = 1_700_000_000_000i64;
        let sh = ExpiryShift::new(now);
        let near = now + 5000;
        let m = |at: i64| (RESERVED_FROM_MS + at - sh.floor).to_string();
        let args = |a: &[&str]| -> Vec<Bytes> {
            a.iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        let t = |a: &[&str]| {
            let a = args(a);
            text(shift_ttl(&a, &sh).args.unwrap_or(a))
        };
        let (n, ns) = (near.to_string(), (near / 1000).to_string());
        assert_eq!(t(&["PEXPIREAT", "k", &n]), ["PEXPIREAT", "k", &m(near)]);
        assert_eq!(
            t(&["EXPIREAT", "k", &ns]),
            ["PEXPIREAT", "k", &m(near / 1000 * 1000)]
        );
        assert_eq!(
            t(&["SET", "k", "v", "PXAT", &n]),
            ["SET", "k", "v", "PXAT", &m(near)]
        );
        assert_eq!(
            t(&["set", "k", "v", "exat", &ns, "GET"]),
            ["set", "k", "v", "PXAT", &m(near / 1000 * 1000), "GET"]
        );
        assert_eq!(
            t(&["RESTORE", "k", &n, "payload", "ABSTTL"]),
            ["RESTORE", "k", &m(near), "payload", "ABSTTL"]
        );
        assert_eq!(
            t(&["RESTORE", "k", "0", "payload", "ABSTTL"]),
            ["RESTORE", "k", "0", "payload", "ABSTTL"]
        );
        assert_eq!(t(&["SET", "pxat", "v"]), ["SET", "pxat", "v"]);
        assert_eq!(
            t(&["HPEXPIREAT", "h", &n, "FIELDS", "1", "f"]),
            ["HPEXPIREAT", "h", &m(near), "FIELDS", "1", "f"]
        );
        assert_eq!(
            t(&["hexpireat", "h", &ns, "NX", "FIELDS", "1", "f"]),
            [
                "HPEXPIREAT",
                "h",
                &m(near / 1000 * 1000),
                "NX",
                "FIELDS",
                "1",
                "f"
            ]
        );
        assert_eq!(
            t(&["hsetex", "h", "FNX", "PXAT", &n, "FIELDS", "1", "f", "v"]),
            [
                "hsetex",
                "h",
                "FNX",
                "PXAT",
                &m(near),
                "FIELDS",
                "1",
                "f",
                "v"
            ]
        );
        assert_eq!(
            t(&["HGETEX", "h", "EXAT", &ns, "FIELDS", "1", "f"]),
            [
                "HGETEX",
                "h",
                "PXAT",
                &m(near / 1000 * 1000),
                "FIELDS",
                "1",
                "f"
            ]
        );
        // Option names after FIELDS are field names and values.
        assert_eq!(
            t(&["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]),
            ["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]
        );
        assert_eq!(t(&["HSET", "k", "PXAT", "1"]), ["HSET", "k", "PXAT", "1"]);
        // Moved back, each time is the real one again; times long past are moved back to the
        // floor (they delete their key), never into the reserved range.
        for at in [sh.floor, now - 1, now, near, sh.horizon - 1] {
            assert_eq!(sh.map(at), Moved::To(m(at).parse().unwrap()));
            assert_eq!(sh.unmap(m(at).parse().unwrap()), at);
        }
        assert_eq!(sh.map(1), Moved::To(RESERVED_FROM_MS));
        assert_eq!(sh.map(i64::MIN), Moved::To(RESERVED_FROM_MS));
        assert!(sh.reserved_end() < (1 << 46) - 1 && sh.reserved_end() < 1 << 53);
        // A shifted command says so; a field's too.
        let r = shift_ttl(&args(&["PEXPIREAT", "k", &n]), &sh);
        assert!(r.moved && !r.field && !r.reserved);
        let r = shift_ttl(&args(&["HPEXPIREAT", "h", &n, "FIELDS", "1", "f"]), &sh);
        assert!(r.moved && r.field);
    }

    /// The values the Redis test suite found changed by the old 100-year shift: far expiries
    /// are sent exactly as they are, and never near a server's limit.
    #[test]
    fn expiries_near_the_limits_are_sent_exactly() {
        let sh = ExpiryShift::new(1_700_000_000_000);
        for a in [
            &["PEXPIREAT", "a", "9007199254740993"][..],
            &["PEXPIREAT", "b", "9223372036854775807"],
            &["HPEXPIREAT", "h", "70368744176664", "FIELDS", "1", "f"],
            &["SET", "k", "v", "PXAT", "9223372036854775807"],
            &["EXPIREAT", "k", "9223372036854775"],
        ] {
            let args: Vec<Bytes> = a
                .iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect();
            assert_eq!(shift_ttl(&args, &sh), Shifted::default(), "{a:?}");
        }
        // Inside the reserved range: sent as it is, and counted.
        let args: Vec<Bytes> = ["PEXPIREAT", "k", &(RESERVED_FROM_MS + 7).to_string()]
            .iter()
            .map(|x| Bytes::copy_from_slice(x.as_bytes()))
            .collect();
        let r = shift_ttl(&args, &sh);
        assert!(r.reserved && r.args.is_none() && !r.moved);
    }

    #[test]
    fn expiry_conditions_survive_the_move() {
        let sh = ExpiryShift::new(1_700_000_000_000);
        let args = |a: &[&str]| -> Vec<Bytes> {
            a.iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        // Keys: GT/LT dropped (a master propagates the command only when its condition held).
        let r = shift_ttl(&args(&["PEXPIREAT", "k", "9000000000000000", "GT"]), &sh);
        assert_eq!(
            text(r.args.unwrap()),
            ["PEXPIREAT", "k", "9000000000000000"]
        );
        let r = shift_ttl(&args(&["PEXPIREAT", "k", "1700000001000", "XX", "lt"]), &sh);
        assert_eq!(
            text(r.args.unwrap()),
            [
                "PEXPIREAT",
                "k",
                &(RESERVED_FROM_MS + 366 * DAY_MS + 1000).to_string(),
                "XX"
            ]
        );
        // Fields: a script that compares the real times.
        let r = shift_ttl(
            &args(&[
                "HPEXPIREAT",
                "h",
                "1700000001000",
                "gt",
                "FIELDS",
                "2",
                "f",
                "g",
            ]),
            &sh,
        );
        let a = text(r.args.unwrap());
        assert_eq!(a[0], "EVAL");
        assert_eq!(a[2..4], ["1", "h"]);
        assert_eq!(
            a[4..],
            [
                RESERVED_FROM_MS.to_string(),
                sh.reserved_end().to_string(),
                sh.floor.to_string(),
                "GT".to_string(),
                "1700000001000".to_string(),
                (RESERVED_FROM_MS + 366 * DAY_MS + 1000).to_string(),
                "f".to_string(),
                "g".to_string()
            ]
        );
        assert!(r.moved && r.field);
    }

    #[test]
    fn exact_stream_trims_lose_their_limit() {
        let t = |a: &[&str]| -> Option<Vec<String>> {
            let args: Vec<Bytes> = a
                .iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect();
            stream_trim_for_client(&args).map(text)
        };
        assert_eq!(
            t(&["XADD", "s", "MAXLEN", "=", "7", "LIMIT", "5", "1-1", "f", "v"]).unwrap(),
            ["XADD", "s", "MAXLEN", "=", "7", "1-1", "f", "v"]
        );
        assert_eq!(
            t(&["xtrim", "s", "maxlen", "=", "0", "limit", "100"]).unwrap(),
            ["xtrim", "s", "maxlen", "=", "0"]
        );
        assert_eq!(
            t(&[
                "XADD",
                "s",
                "NOMKSTREAM",
                "MINID",
                "=",
                "5-0",
                "LIMIT",
                "5",
                "6-0",
                "a",
                "b"
            ])
            .unwrap(),
            [
                "XADD",
                "s",
                "NOMKSTREAM",
                "MINID",
                "=",
                "5-0",
                "6-0",
                "a",
                "b"
            ]
        );
        // Fields named LIMIT, approximate trims, and no trim at all stay as they are.
        assert_eq!(t(&["XADD", "s", "1-1", "LIMIT", "5"]), None);
        assert_eq!(
            t(&["XADD", "s", "MAXLEN", "~", "7", "LIMIT", "5", "*", "f", "v"]),
            None
        );
        assert_eq!(t(&["XADD", "s", "MAXLEN", "7", "1-1", "f", "v"]), None);
        assert_eq!(t(&["SET", "LIMIT", "5"]), None);
    }

    #[test]
    fn payload_versions() {
        use rdb::Magic::*;
        assert_eq!(payload_version(Redis, 10, 10), Some(10));
        assert_eq!(payload_version(Redis, 11, 10), None);
        assert_eq!(payload_version(Redis, 9, 12), Some(9));
        assert_eq!(payload_version(Redis, 12, 80), None);
        assert_eq!(payload_version(Redis, 11, 80), Some(11));
        assert_eq!(payload_version(Valkey, 80, 12), None);
        assert_eq!(payload_version(Valkey, 80, 80), Some(80));
    }
}
