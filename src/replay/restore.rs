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
                    match ev {
                        Event::KeyStart {
                            expire_ms: Some(ms),
                            ..
                        } => {
                            *ms = ms.saturating_add(TTL_SHIFT_MS);
                            report.ttls_shifted = true;
                        }
                        Event::HashField {
                            expire_ms: Some(ms),
                            ..
                        } => {
                            *ms = ms.saturating_add(TTL_SHIFT_MS);
                            report.ttls_shifted = true;
                            report.field_ttls_shifted = true;
                        }
                        _ => {}
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
                    .unshift_ttls(TTL_SHIFT_MS, report.field_ttls_shifted)
                    .await?;
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
            let mut target = live::LiveTarget::connect(url, password.clone()).await?;
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
async fn apply(
    cfg: &RestoreConfig,
    sink: &mut Sink,
    released: &mut Vec<Command>,
    relative_ttls: bool,
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
                    match shift_ttl(args, TTL_SHIFT_MS) {
                        Some(shifted) => {
                            report.ttls_shifted = true;
                            // HPEXPIREAT, HSETEX, HGETEX: the hash field commands.
                            report.field_ttls_shifted |=
                                shifted[0].starts_with(b"H") || shifted[0].starts_with(b"h");
                            t.send(&shifted).await?
                        }
                        None if rewritten.is_some() => t.send(args).await?,
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

/// While a live target replays, every expiry is moved this far into the future, and moved back
/// once the replay is complete. A replica never expires keys on its own: it applies the
/// master's DEL when the master expired them, and so must a replay, or a key whose TTL passed
/// between a write and the restore would be re-created by the writes that followed it on the
/// master. (Loading files needs no shift: a server does not expire keys while it loads.)
pub const TTL_SHIFT_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Moves the absolute expiry a replicated command sets by `shift` milliseconds; `None` when it
/// sets none.
pub fn shift_ttl(args: &[Bytes], shift: i64) -> Option<Vec<Bytes>> {
    let num = |a: &Bytes| {
        std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    let name = args.first()?.to_ascii_lowercase();
    let shifted =
        |v: i64, unit: i64| Bytes::from(v.saturating_mul(unit).saturating_add(shift).to_string());
    // `args` with the time at `at` (seconds when `secs`) moved and in ms, and `args[name_at]`
    // renamed to say so.
    let moved = |name_at: usize, new_name: &'static [u8], at: usize, secs: bool| {
        let v = num(&args[at])?;
        let mut out = args.to_vec();
        out[name_at] = Bytes::from_static(new_name);
        out[at] = shifted(v, if secs { 1000 } else { 1 });
        Some(out)
    };
    match name.as_slice() {
        // Key TTLs, and hash field TTLs (Redis 7.4+, Valkey 9+): `HPEXPIREAT key ms [cond]
        // FIELDS n f...`.
        b"pexpireat" | b"expireat" | b"hpexpireat" | b"hexpireat" if args.len() >= 3 => {
            let hash = name[0] == b'h';
            let secs = name == b"expireat" || name == b"hexpireat";
            moved(0, if hash { b"HPEXPIREAT" } else { b"PEXPIREAT" }, 2, secs)
        }
        // `SET key value [opts]`, `GETEX key [opts]`; `HSETEX key [opts] FIELDS n f v ...`,
        // `HGETEX key [opts] FIELDS n f ...`, whose options end at FIELDS.
        b"set" | b"getex" | b"hsetex" | b"hgetex" => {
            let from = if name == b"set" { 3 } else { 2 };
            let hash = name[0] == b'h';
            let last = args.len().saturating_sub(1);
            for (i, a) in args.iter().enumerate().take(last).skip(from) {
                let opt = a.to_ascii_lowercase();
                if hash && opt == b"fields" {
                    return None;
                }
                if opt == b"pxat" || opt == b"exat" {
                    return moved(i, b"PXAT", i + 1, opt == b"exat");
                }
            }
            None
        }
        b"restore" | b"restore-asking" if args.len() >= 4 => {
            let abs = args
                .iter()
                .skip(4)
                .any(|a| a.eq_ignore_ascii_case(b"absttl"));
            let v = num(&args[2])?;
            if !abs || v <= 0 {
                return None;
            }
            let mut out = args.to_vec();
            out[2] = shifted(v, 1);
            Some(out)
        }
        _ => None,
    }
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
    fn expiries_shift() {
        let t = |a: &[&str]| {
            let args: Vec<Bytes> = a
                .iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect();
            text(shift_ttl(&args, 1000).unwrap_or(args))
        };
        assert_eq!(
            t(&["PEXPIREAT", "k", "5", "GT"]),
            ["PEXPIREAT", "k", "1005", "GT"]
        );
        assert_eq!(t(&["EXPIREAT", "k", "5"]), ["PEXPIREAT", "k", "6000"]);
        assert_eq!(
            t(&["SET", "k", "v", "PXAT", "7"]),
            ["SET", "k", "v", "PXAT", "1007"]
        );
        assert_eq!(
            t(&["set", "k", "v", "exat", "7", "GET"]),
            ["set", "k", "v", "PXAT", "8000", "GET"]
        );
        assert_eq!(
            t(&["RESTORE", "k", "9", "payload", "ABSTTL"]),
            ["RESTORE", "k", "1009", "payload", "ABSTTL"]
        );
        assert_eq!(
            t(&["RESTORE", "k", "0", "payload", "ABSTTL"]),
            ["RESTORE", "k", "0", "payload", "ABSTTL"]
        );
        assert_eq!(t(&["SET", "pxat", "v"]), ["SET", "pxat", "v"]);
        assert_eq!(
            t(&["HPEXPIREAT", "h", "5", "FIELDS", "1", "f"]),
            ["HPEXPIREAT", "h", "1005", "FIELDS", "1", "f"]
        );
        assert_eq!(
            t(&["hexpireat", "h", "5", "NX", "FIELDS", "1", "f"]),
            ["HPEXPIREAT", "h", "6000", "NX", "FIELDS", "1", "f"]
        );
        assert_eq!(
            t(&["hsetex", "h", "FNX", "PXAT", "7", "FIELDS", "1", "f", "v"]),
            ["hsetex", "h", "FNX", "PXAT", "1007", "FIELDS", "1", "f", "v"]
        );
        assert_eq!(
            t(&["HGETEX", "h", "EXAT", "7", "FIELDS", "1", "f"]),
            ["HGETEX", "h", "PXAT", "8000", "FIELDS", "1", "f"]
        );
        // Option names after FIELDS are field names and values.
        assert_eq!(
            t(&["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]),
            ["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]
        );
        assert_eq!(t(&["HSET", "k", "PXAT", "1"]), ["HSET", "k", "PXAT", "1"]);
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
