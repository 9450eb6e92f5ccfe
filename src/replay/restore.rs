//! `pitr restore`: rebuilds the master's state at a chosen moment. Plans from a listing
//! ([`crate::replay::plan`]); then the executor streams the snapshot through the RDB parser and
//! the archived commands up to the cut ([`crate::replay::cut`]), selected by [`filter`], into a
//! destination behind the [`Sink`] trait, without knowing which one it is:
//!
//! - a live Redis ([`live_sink`]): keys by `RESTORE` (the RDB value bytes as a DUMP payload)
//!   when the target accepts the payload's version, otherwise as ordinary commands ([`keys`]);
//!   then the commands, pipelined;
//! - files that a stock redis-server loads natively ([`files`]): `dump.rdb`, or the snapshot as
//!   the base of an AOF with the commands after it.
//!
//! Fetching, decompressing and parsing overlap with writing: the snapshot is read and parsed
//! on a blocking thread and handed over in bounded batches; segments are fetched with several
//! GETs in flight (`--parallel`, within a byte budget), decoded on blocking threads, and
//! replayed in plan order. Nothing here blocks a runtime thread.
//!
//! [`filter`]: crate::replay::filter
//! [`keys`]: crate::replay::keys
//! [`live_sink`]: crate::replay::live_sink
//! [`files`]: crate::replay::files

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};

use crate::archive::catalog::Catalog;
use crate::archive::fetch::{FetchConfig, OrderedFetch, Wanted};
use crate::archive::format;
use crate::archive::names::ObjectName;
use crate::archive::scan::{self, Want};
use crate::archive::store::{Store, StoreError};
use crate::maintain::verify::{Problem, SnapshotOk};
use crate::rdb::{self, Event, ParserConfig, RdbError};
use crate::replay::cut::{self, Command, Cutter, Limit};
use crate::replay::files::{self, FilesOpener};
use crate::replay::filter::{Filter, Verdict};
use crate::replay::live_sink::{ExpiryShift, LiveOpener};
use crate::replay::plan::{self, Plan, PlanError, Target};
use crate::replay::sink::{CommandSink, Opener, Outgoing, RdbHeader, Sink, SnapshotNeeds};
use crate::replay::{keys, live};
use crate::resp::commands::{Databases, Kind, RelativeTtl};
use crate::resp::scanner::StreamError;

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
    /// Segment GETs in flight, and bytes of segments held ahead of the replay.
    pub fetch: FetchConfig,
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
    /// The snapshot failed its checks (preamble, header, frames, trailer, checksums).
    #[error("object {}", .0)]
    Snapshot(Problem),
    /// The snapshot's own bytes are sound, but the RDB inside them is not.
    #[error("object {object}: the RDB inside is corrupt at byte {}: {source}", .source.offset().unwrap_or(0))]
    Rdb {
        object: String,
        #[source]
        source: RdbError,
    },
    /// The snapshot holds no RDB at all.
    #[error("object {object}: empty snapshot")]
    EmptySnapshot { object: String },
    /// A segment failed its checks.
    #[error("object {object} is corrupt {source}")]
    Segment {
        object: String,
        #[source]
        source: format::FormatError,
    },
    /// A segment whose content is not well-formed commands.
    #[error("object {object}: {source}")]
    Commands {
        object: String,
        #[source]
        source: StreamError,
    },
    /// A segment that does not follow the object before it.
    #[error("object {object} is corrupt: chain broken: links to {links_to:016x}, the object before has checksum {expected:016x}")]
    Chain {
        object: String,
        links_to: u64,
        expected: u64,
    },
    #[error(transparent)]
    Target(#[from] live::TargetError),
    #[error(transparent)]
    Convert(#[from] keys::ConvertError),
    /// Writing the output directory failed.
    #[error("{}: cannot {op}: {source}", .path.display())]
    FileIo {
        path: std::path::PathBuf,
        /// What was being done: "create", "write", "sync", "move into place", ...
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not empty: restore into an empty or new directory, or pass --force to replace what a restore writes there", .dir.display())]
    OutputNotEmpty { dir: std::path::PathBuf },
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
    /// Commands that bring keys from a database `--db` leaves out into one it selects (`MOVE`,
    /// `COPY … DB`, `SWAPDB`): the restore cannot reproduce those keys (see
    /// [`Filter::judge`]).
    pub commands_from_unselected: u64,
    /// Live target by commands: those of them the target refused (a `RENAME` from a key left
    /// out), counted as a replica would ignore them; unknown elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_mixed_failed: Option<u64>,
    /// A shard's `FLUSHALL`/`FLUSHDB` applied to the keys of its restore only (a cluster
    /// archive restored into a server or cluster the shards share).
    pub flushes_scoped: u64,
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
    /// Live target: how the restore reached it (`replication` or `commands`), when a
    /// `--via` was chosen ([`crate::replay::via`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Why that path (for `auto`: why replication was not possible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_reason: Option<String>,
    /// For `--output-dir`: what was written and how to start a server on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<files::Written>,
}

impl Report {
    /// The command side of a replay that ran beside the snapshot copy.
    fn add_commands(&mut self, c: &Report) {
        self.offset = c.offset;
        self.time_ms = c.time_ms;
        self.commands += c.commands;
        self.commands_skipped += c.commands_skipped;
        self.commands_internal += c.commands_internal;
        self.commands_mixed += c.commands_mixed;
        self.commands_from_unselected += c.commands_from_unselected;
        self.flushes_scoped += c.flushes_scoped;
        self.transaction_left_out = c.transaction_left_out;
        self.bytes_read += c.bytes_read;
    }
}

/// Counts in `count` a command that brings keys from a database `--db` leaves out into one it
/// selects ([`Filter::judge`]), and warns at the first: the restore never held
/// those keys.
pub(crate) fn count_brought_in(count: &mut u64, c: &Command) {
    if *count == 0 {
        tracing::warn!(
            command = %String::from_utf8_lossy(&c.args[0]),
            db = c.db,
            offset = c.end,
            "a command brings keys from a database left out into one selected (MOVE, COPY ... DB, SWAPDB): the restore never held them, so they are missing; restore without --db to have them (counted in commands_from_unselected)"
        );
    }
    *count += 1;
}

/// How long `--to now` waits for a running archiver to vouch for the moment the command
/// started (it renews its lease, and with it the vouched point, every few seconds).
pub const NOW_PATIENCE: std::time::Duration = std::time::Duration::from_secs(35);

/// Plans a restore from listings alone: the partitions that hold the target (see
/// `archive::scan`), and the whole archive only when those show a hole or an overlap (to be
/// sure the problem is the archive's and not the partial listing's).
///
/// `now` is the moment this function is called. It is restorable once the archive reaches it:
/// while a running archiver holds a live lease whose vouched point (or newest object) is
/// still before it, this waits for the next renewal, up to [`NOW_PATIENCE`].
pub async fn make_plan(store: &Store, target: Target) -> Result<Plan, RestoreError> {
    let asked_now = target == Target::Now;
    let now = crate::ingest::archiver::now_ms();
    let target = target.resolved(now);
    let deadline = tokio::time::Instant::now() + NOW_PATIENCE;
    loop {
        let (mut catalog, _lists) = scan::for_restore(store, Want::from(target)).await?;
        let lease = vouched_window(store, &mut catalog).await;
        let archiver_running = lease
            .as_ref()
            .is_some_and(|l| l.is_live(crate::ingest::archiver::now_ms()));
        let planned = plan::plan(&catalog, target);
        // What a partial listing shows as a hole may be the listing's: look at all of it.
        // Offsets are not placed by partition: one outside the generations looked at may be
        // in an older one.
        let trusted = !matches!(
            (&planned, target),
            (
                Err(PlanError::Hole { .. }
                    | PlanError::Overlap { .. }
                    | PlanError::NoSnapshot { .. }),
                _
            ) | (Err(PlanError::Outside { .. }), Target::Offset(_))
        );
        match planned {
            Err(PlanError::Outside { .. })
                // `now` is past the window's end: the archiver may vouch for it soon.
                if asked_now
                    && archiver_running
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            r if trusted => return Ok(r?),
            _ => {
                let listing = store.list().await?;
                let mut catalog = Catalog::from_listing(&listing);
                vouched_window(store, &mut catalog).await;
                return Ok(plan::plan(&catalog, target)?);
            }
        }
    }
}

/// Extends the newest generation's window to the point a running archiver vouches for in
/// its lease, or a stopped one left (see [`Catalog::extend_to_vouched`] and
/// [`crate::archive::stopped`]), and returns the lease. A lease that cannot
/// be read extends nothing: the window then ends at the last archived byte, as without an
/// archiver.
pub async fn vouched_window(
    store: &Store,
    catalog: &mut Catalog,
) -> Option<crate::archive::lease::LeaseInfo> {
    match crate::archive::lease::Lease::read(store).await {
        Ok(l) => {
            if let Some((g, o, ms)) =
                crate::archive::stopped::vouched_point(store, l.as_ref()).await
            {
                catalog.extend_to_vouched(g, o, ms);
            }
            l
        }
        Err(e) => {
            tracing::warn!(error = %e, "the lease cannot be read: the restorable window ends at the last archived write");
            None
        }
    }
}

/// Runs a restore according to `plan`, into the destination `cfg` names.
pub async fn restore(
    cfg: &RestoreConfig,
    plan: &Plan,
    progress: Arc<Progress>,
) -> Result<Report, RestoreError> {
    match &cfg.destination {
        Destination::Live { url, password } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let opener = LiveOpener {
                url: url.clone(),
                password: password.clone(),
                timeout: cfg.target_timeout,
                force: cfg.force,
                max_restore_bytes: cfg.max_restore_bytes,
                shift: ExpiryShift::new(now_ms),
            };
            run(cfg, plan, progress, opener).await
        }
        Destination::Files { dir } => {
            let opener = FilesOpener {
                dir: dir.clone(),
                filter: cfg.filter.clone(),
                force: cfg.force,
                max_restore_bytes: cfg.max_restore_bytes,
            };
            run(cfg, plan, progress, opener).await
        }
    }
}

/// Runs a restore according to `plan` into the destination `opener` opens (once the snapshot's
/// RDB header is read). Of `cfg` it uses the store and the filter; the destination's own
/// settings are the opener's.
pub async fn run<O: Opener>(
    cfg: &RestoreConfig,
    plan: &Plan,
    progress: Arc<Progress>,
    opener: O,
) -> Result<Report, RestoreError> {
    let started = Instant::now();
    progress.total.store(plan.bytes, Ordering::Relaxed);
    let mut report = Report {
        generation: plan.generation.to_string(),
        offset: plan.snapshot.offset,
        time_ms: plan.snapshot.first_ms,
        ..Default::default()
    };
    let (snapshot_done_tx, snapshot_done) = oneshot::channel();
    let segments =
        SegmentFetcher::start(&cfg.store, plan, cfg.fetch, progress.clone(), snapshot_done);
    let mut snapshot = SnapshotReader::start(&cfg.store, plan, opener.needs());
    // The RDB version decides RESTORE and the file layout: the destination opens once it is
    // known, and the parser then learns whether values go by RESTORE.
    let Ok(header) = (&mut snapshot.header).await else {
        return Err(snapshot.ended_without_header(plan).await);
    };
    let mut sink = opener.open(header).await?;
    if let Some(tx) = snapshot.values_by_restore.take() {
        let _ = tx.send(sink.values_by_restore());
    }
    let exec = Executor {
        filter: &cfg.filter,
        plan,
        progress: &progress,
        report: &mut report,
    };
    let fed = exec
        .feed(&mut sink, header, snapshot, segments, snapshot_done_tx)
        .await;
    match fed {
        Ok(()) => sink.finish(&mut report).await?,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    }
    report.time = plan::fmt_ms(report.time_ms);
    report.bytes_read += plan.snapshot.bytes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The executor's state while it feeds one sink.
struct Executor<'a> {
    filter: &'a Filter,
    plan: &'a Plan,
    progress: &'a Progress,
    report: &'a mut Report,
}

impl Executor<'_> {
    /// The snapshot, then the commands up to the cut, into `sink`.
    async fn feed<S: Sink>(
        mut self,
        sink: &mut S,
        header: RdbHeader,
        snapshot: SnapshotReader,
        segments: SegmentFetcher,
        snapshot_done: oneshot::Sender<()>,
    ) -> Result<(), RestoreError> {
        let Some(mut part) = sink.commands_apart() else {
            let chain = self.snapshot_whole(sink, snapshot).await?;
            let _ = snapshot_done.send(());
            self.commands(sink, header, Some(chain), segments).await?;
            return Ok(());
        };
        // The commands go to a place of their own: they are replayed while the snapshot is
        // copied, with segments fetched ahead from the start (within the fetch budget). The
        // first segment's link to the snapshot is checked once the snapshot is read; until
        // then nothing is visible (files are staged).
        let _ = snapshot_done.send(());
        let Executor {
            filter,
            plan,
            progress,
            report,
        } = self;
        let mut tally = Report::default();
        let mut snap = Executor {
            filter,
            plan,
            progress,
            report,
        };
        let mut cmds = Executor {
            filter,
            plan,
            progress,
            report: &mut tally,
        };
        let fed = tokio::try_join!(
            snap.snapshot_whole(sink, snapshot),
            cmds.commands(&mut part, header, None, segments)
        );
        sink.commands_back(part);
        let (chain, first) = fed?;
        if let Some((object, link)) = first {
            if let Err((links_to, expected)) = chain.admits(link) {
                return Err(RestoreError::Chain {
                    object,
                    links_to,
                    expected,
                });
            }
        }
        snap.report.add_commands(&tally);
        Ok(())
    }

    /// The snapshot into `sink`, and the sink told it is complete; returns what the first
    /// segment after it must link to.
    async fn snapshot_whole<S: Sink>(
        &mut self,
        sink: &mut S,
        snapshot: SnapshotReader,
    ) -> Result<format::ChainPoint, RestoreError> {
        let chain = self.snapshot(sink, snapshot).await?;
        self.progress
            .bytes
            .fetch_add(self.plan.snapshot.bytes, Ordering::Relaxed);
        sink.snapshot_done(self.report.keys, self.report).await?;
        Ok(chain)
    }

    /// Streams the snapshot's batches into `sink`; returns what the first segment after it must link to.
    async fn snapshot<S: Sink>(
        &mut self,
        sink: &mut S,
        snapshot: SnapshotReader,
    ) -> Result<format::ChainPoint, RestoreError> {
        let SnapshotReader {
            mut batches,
            task,
            side,
            ..
        } = snapshot;
        let (side_tx, side_task) = match side {
            Some(SideParse { tx, task }) => (Some(tx), Some(task)),
            None => (None, None),
        };
        let mut side_stopped = false;
        let mut skipping = false;
        let mut kept: Vec<Event> = Vec::new();
        while let Some(batch) = batches.recv().await {
            self.progress
                .snapshot_raw
                .fetch_add(batch.raw.len() as u64, Ordering::Relaxed);
            if let Some(tx) = &side_tx {
                if tx.send(batch.raw.clone()).await.is_err() {
                    // The side parse stopped on an error: its result says which.
                    side_stopped = true;
                    break;
                }
            }
            // Selective restore: drop the events of unselected keys.
            kept.clear();
            for ev in batch.events {
                match &ev {
                    Event::KeyStart { db, key, .. } => {
                        skipping = !self.filter.key_selected(*db as u32, key);
                        if skipping {
                            self.report.keys_skipped += 1;
                        } else {
                            self.report.keys += 1;
                            self.progress.keys.fetch_add(1, Ordering::Relaxed);
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
            sink.snapshot(&batch.raw, &mut kept).await?;
        }
        // The reader stops at its next batch if it has not finished.
        drop(batches);
        drop(side_tx);
        let side = match side_task {
            Some(t) => Some(joined(t.await).map_err(|e| self.rdb_corrupt(e))),
            None => None,
        };
        let read = joined(task.await);
        // When the side parse failed first, the reader may only have stopped because of it.
        let snap = match (side_stopped, side) {
            (true, Some(Err(e))) => return Err(e),
            (_, side) => {
                let snap = read?;
                if let Some(summary) = side.transpose()? {
                    self.report.keys = summary.keys;
                    self.progress.keys.store(summary.keys, Ordering::Relaxed);
                }
                snap
            }
        };
        Ok(snap.chain())
    }

    /// The commands after the snapshot, up to the cut. `chain`: what the first segment links
    /// to (the snapshot's checksum), or `None` when the snapshot is still being read: the
    /// first segment's name and link are then returned, for the caller to check.
    async fn commands<C: CommandSink>(
        &mut self,
        sink: &mut C,
        header: RdbHeader,
        mut chain: Option<format::ChainPoint>,
        mut segments: SegmentFetcher,
    ) -> Result<Option<(String, format::Link)>, RestoreError> {
        let plan = self.plan;
        let mut cutter = Cutter::new(
            Limit {
                time_ms: plan.cut_time_ms,
                offset: plan.cut_offset,
            },
            plan.snapshot.offset,
            plan.snapshot.first_ms,
        );
        let relative_ttls = header.magic == rdb::Magic::Redis && header.version < 10;
        let mut released = Vec::new();
        let mut first = true;
        let mut unchecked = None;
        while let Some(got) = segments.next().await {
            if cutter.is_done() {
                break;
            }
            let (name, seg, stored) = got?;
            self.report.bytes_read += stored;
            match chain {
                Some(point) => {
                    if let Err((links_to, expected)) = point.admits(seg.header.link) {
                        return Err(RestoreError::Chain {
                            object: name,
                            links_to,
                            expected,
                        });
                    }
                }
                None => unchecked = Some((name.clone(), seg.header.link)),
            }
            chain = Some(format::ChainPoint::after_segment(&seg.header, seg.checksum));
            // A scheduled snapshot may sit inside the first segment: the commands before its
            // offset are in it already; the database selected at its offset is the one to
            // start in.
            let mut db = seg.header.db_start;
            for c in cut::Commands::new(&seg) {
                let c = c.map_err(|source| RestoreError::Commands {
                    object: name.clone(),
                    source,
                })?;
                if c.end <= plan.snapshot.offset {
                    db = c.db;
                    continue;
                }
                if first {
                    first = false;
                    let start = c.end - c.raw.len() as u64;
                    if start < plan.snapshot.offset {
                        return Err(RestoreError::Commands {
                            object: name,
                            source: StreamError {
                                offset: plan.snapshot.offset,
                                what: format!(
                                    "the snapshot's offset falls inside the command at {start}..{}",
                                    c.end
                                ),
                            },
                        });
                    }
                    let select = [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
                    sink.command(Outgoing::Args(&select)).await?;
                }
                cutter.push(c, &mut released);
                if !released.is_empty() {
                    self.apply(sink, &mut released, relative_ttls).await?;
                }
                if cutter.is_done() {
                    break;
                }
            }
        }
        drop(segments);
        cutter.finish();
        self.apply(sink, &mut released, relative_ttls).await?;
        self.report.offset = cutter.reached_offset;
        self.report.time_ms = cutter.reached_ms;
        self.report.transaction_left_out = cutter.dropped_open_transaction;
        Ok(unchecked)
    }

    /// Filters the released commands, makes relative TTLs absolute, and hands them over.
    async fn apply<S: CommandSink>(
        &mut self,
        sink: &mut S,
        released: &mut Vec<Command>,
        relative_ttls: bool,
    ) -> Result<(), RestoreError> {
        for c in released.drain(..) {
            if c.info().kind == Kind::Internal {
                self.report.commands_internal += 1;
                continue;
            }
            let (verdict, brought_in) = self.filter.judge(c.db, &c.args);
            if brought_in {
                count_brought_in(&mut self.report.commands_from_unselected, &c);
            }
            let mixed = match verdict {
                Verdict::Drop => {
                    self.report.commands_skipped += 1;
                    continue;
                }
                Verdict::Mixed => {
                    self.report.commands_mixed += 1;
                    true
                }
                Verdict::Keep => false,
            };
            // A shard's FLUSHALL/FLUSHDB into a destination the other shards share: only
            // the keys this pass selects go.
            if let (Some(_), Kind::Databases(d @ (Databases::All | Databases::Selected))) =
                (&self.filter.slots, c.info().kind)
            {
                let db = matches!(d, Databases::Selected).then_some(c.db);
                if sink.flush_selected(db, self.filter).await? {
                    self.report.flushes_scoped += 1;
                    self.report.commands += 1;
                    self.progress.commands.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            // TRIMSLOTS/SFLUSH (Redis 8.4's atomic slot migration): the keys of those slots
            // that this restore put there go, as deletes (older servers lack the command).
            if let Kind::Databases(Databases::Slots(layout)) = c.info().kind {
                if let Some(ranges) = layout.of(&c.args) {
                    if sink.delete_slots(c.db, &ranges, self.filter).await? {
                        self.report.commands += 1;
                        self.progress.commands.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            // Handed over as archived unless a TTL has to be rewritten.
            if mixed {
                sink.tolerate_errors(true);
            }
            match relative_ttls.then(|| absolute_ttl(&c)).flatten() {
                Some(cmds) => {
                    for args in &cmds {
                        sink.command(Outgoing::Args(args)).await?;
                    }
                }
                None => {
                    sink.command(Outgoing::Archived {
                        args: &c.args,
                        raw: &c.raw,
                    })
                    .await?
                }
            }
            if mixed {
                sink.tolerate_errors(false);
            }
            self.report.commands += 1;
            self.progress.commands.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// An error of the RDB inside the snapshot.
    fn rdb_corrupt(&self, e: RdbError) -> RestoreError {
        RestoreError::Rdb {
            object: self.plan.snapshot.name.clone(),
            source: e,
        }
    }
}

/// The value of a task of this restore; a panic in the task goes on here.
fn joined<T>(r: Result<T, JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The plan's segments as [`OrderedFetch`] wants them: name, stored size and raw size.
pub fn segments_wanted(plan: &Plan) -> Vec<Wanted> {
    plan.segments
        .iter()
        .map(|s| Wanted {
            name: s.object,
            stored: s.bytes,
            raw: s.end.saturating_sub(s.offset),
        })
        .collect()
}

/// A segment fetched and decoded: its name, content and stored size.
type Fetched = (String, format::Segment, u64);

/// Fetches and decodes the plan's segments ahead of the replay, with up to
/// [`FetchConfig::parallel`] GETs in flight and at most [`FetchConfig::max_bytes`] of them held
/// ([`OrderedFetch`]); decoding runs on blocking threads. Until the executor says the
/// snapshot is done, only the first segment is fetched (so at most that one is held beside
/// the snapshot); a destination that takes the commands apart says so at once. They are
/// handed over in plan order; a failed one ends the replay there.
struct SegmentFetcher(OrderedFetch<Result<format::Segment, format::FormatError>>);

impl SegmentFetcher {
    fn start(
        store: &Store,
        plan: &Plan,
        cfg: FetchConfig,
        progress: Arc<Progress>,
        snapshot_done: oneshot::Receiver<()>,
    ) -> SegmentFetcher {
        let wanted = segments_wanted(plan);
        SegmentFetcher(OrderedFetch::start(
            store,
            wanted,
            cfg,
            Some(snapshot_done),
            move |_, bytes| {
                progress
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                format::decode_segment(&bytes)
            },
        ))
    }

    /// The next segment in plan order, or the error of that segment.
    async fn next(&mut self) -> Option<Result<Fetched, RestoreError>> {
        let got = match self.0.next().await? {
            Ok(got) => got,
            Err(e) => return Some(Err(e.into())),
        };
        let object = got.name.to_string();
        Some(match got.value {
            Ok(seg) => Ok((object, seg, got.stored)),
            Err(source) => Err(RestoreError::Segment { object, source }),
        })
    }
}

/// Why the snapshot reader stopped handing over bytes: an RDB error becomes
/// [`RestoreError::Rdb`], anything else a [`RestoreError::Snapshot`] problem naming the byte.
#[derive(Debug, thiserror::Error)]
enum ReadStop {
    #[error("the RDB inside: {0}")]
    Rdb(#[from] RdbError),
    #[error("the RDB inside: no RDB header")]
    NoHeader,
    #[error("restore stopped")]
    Stopped,
}

/// Snapshot batches waiting between the reader and the executor.
const BATCHES_QUEUED: usize = 2;

/// Raw pieces of the snapshot ([`crate::archive::frames::RAW_PIECE`] each) that may wait in
/// front of each stage that takes them on a thread of its own (the side parse, the base RDB's
/// writer). Two keep every stage busy; each one more is a MiB of peak memory per stage.
pub(crate) const PIECES_QUEUED: usize = 2;

/// Raw RDB bytes of the snapshot and their events, in order.
struct Batch {
    raw: Bytes,
    events: Vec<Event>,
}

/// The snapshot, read, checked and parsed on a blocking thread, handed over in bounded
/// batches. When the sink needs no events, the RDB is parsed on a thread of its own beside the
/// copy, only to check it and count its keys (`side`).
struct SnapshotReader {
    /// The RDB header, as soon as the first bytes are read.
    header: oneshot::Receiver<RdbHeader>,
    /// Before parsing on, the reader waits to learn whether values go by RESTORE: large LZF
    /// strings then go as their raw bytes, never decompressed.
    values_by_restore: Option<oneshot::Sender<bool>>,
    batches: mpsc::Receiver<Batch>,
    task: JoinHandle<Result<SnapshotOk, RestoreError>>,
    side: Option<SideParse>,
}

/// The parse beside a copy of the snapshot: its bytes in, its summary (or error) out.
struct SideParse {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<rdb::Summary, RdbError>>,
}

impl SnapshotReader {
    fn start(store: &Store, plan: &Plan, needs: SnapshotNeeds) -> SnapshotReader {
        let parser_cfg = ParserConfig {
            max_raw_value: needs.max_raw_value,
            ..ParserConfig::default()
        };
        let (header_tx, header) = oneshot::channel();
        let (mode_tx, mode_rx) = oneshot::channel();
        let (tx, batches) = mpsc::channel(BATCHES_QUEUED);
        let side = (!needs.events).then(|| {
            let (stx, mut srx) = mpsc::channel::<Bytes>(PIECES_QUEUED);
            let task = tokio::task::spawn_blocking(move || {
                let mut parser = rdb::Parser::new(parser_cfg);
                // It only counts and checks keys: large LZF strings need not be decompressed.
                parser.set_lzf_strings(rdb::LzfStrings::Skip);
                // Fed a small slice at a time: the events of a whole piece (a few per key,
                // thousands of keys per MiB) would take megabytes, only to be dropped.
                let mut events = Vec::new();
                while let Some(raw) = srx.blocking_recv() {
                    for at in (0..raw.len()).step_by(rdb::FEED_PIECE) {
                        events.clear();
                        let end = (at + rdb::FEED_PIECE).min(raw.len());
                        parser.feed_bytes(raw.slice(at..end), &mut events)?;
                    }
                }
                parser.finish()
            });
            SideParse { tx: stx, task }
        });
        let mut state = ReaderState {
            parser: needs.events.then(|| rdb::Parser::new(parser_cfg)),
            header_tx: Some(header_tx),
            mode_rx: needs.events.then_some(mode_rx),
            tx,
        };
        let store = store.clone();
        let name: ObjectName = plan.snapshot.object;
        let task = tokio::spawn(async move {
            // The reading API carries the reason as text; an RDB error is kept as it is.
            let rdb_error = Arc::new(std::sync::Mutex::new(None));
            let slot = rdb_error.clone();
            let read = crate::maintain::verify::read_snapshot(&store, name, move |raw| {
                state.on_raw(raw).map_err(|e| {
                    let text = e.to_string();
                    if let ReadStop::Rdb(e) = e {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                    text
                })
            })
            .await;
            let rdb_error = rdb_error.lock().unwrap_or_else(|p| p.into_inner()).take();
            match (read, rdb_error) {
                (Ok(Ok(ok)), _) => Ok(ok),
                (Ok(Err(p)), Some(source)) => Err(RestoreError::Rdb {
                    object: p.object,
                    source,
                }),
                (Ok(Err(p)), None) => Err(RestoreError::Snapshot(p)),
                (Err(e), _) => Err(RestoreError::Store(e)),
            }
        });
        SnapshotReader {
            header,
            values_by_restore: Some(mode_tx),
            batches,
            task,
            side,
        }
    }

    /// The reader ended before it read a header: its error, or an empty snapshot.
    async fn ended_without_header(self, plan: &Plan) -> RestoreError {
        drop(self.batches);
        match joined(self.task.await) {
            Err(e) => e,
            Ok(_) => RestoreError::EmptySnapshot {
                object: plan.snapshot.name.clone(),
            },
        }
    }
}

/// The reader's side of [`SnapshotReader`], on its blocking thread.
struct ReaderState {
    /// `None` when the sink needs no events (the side parse checks the RDB).
    parser: Option<rdb::Parser>,
    header_tx: Option<oneshot::Sender<RdbHeader>>,
    mode_rx: Option<oneshot::Receiver<bool>>,
    tx: mpsc::Sender<Batch>,
}

impl ReaderState {
    /// The next raw bytes of the RDB, or `None` at its end.
    fn on_raw(&mut self, raw: Option<Bytes>) -> Result<(), ReadStop> {
        let Some(raw) = raw else {
            if let Some(parser) = &mut self.parser {
                parser.finish()?;
            }
            return Ok(());
        };
        if let Some(header_tx) = self.header_tx.take() {
            let header = RdbHeader::parse(&raw).ok_or(ReadStop::NoHeader)?;
            header_tx.send(header).map_err(|_| ReadStop::Stopped)?;
            if let (Some(parser), Some(mode)) = (&mut self.parser, self.mode_rx.take()) {
                if mode.blocking_recv().map_err(|_| ReadStop::Stopped)? {
                    parser.set_lzf_strings(rdb::LzfStrings::SkipWhenCaptured);
                }
            }
        }
        let Some(parser) = &mut self.parser else {
            return self
                .tx
                .blocking_send(Batch {
                    raw,
                    events: Vec::new(),
                })
                .map_err(|_| ReadStop::Stopped);
        };
        // A batch per piece: an LZF string expands up to 88 times in the events.
        let mut at = 0;
        let mut events = Vec::new();
        while raw.len() - at > rdb::FEED_PIECE {
            let piece = raw.slice(at..at + rdb::FEED_PIECE);
            at += rdb::FEED_PIECE;
            parser.feed_bytes(piece.clone(), &mut events)?;
            self.tx
                .blocking_send(Batch {
                    raw: piece,
                    events: std::mem::take(&mut events),
                })
                .map_err(|_| ReadStop::Stopped)?;
        }
        let raw = raw.slice(at..);
        parser.feed_bytes(raw.clone(), &mut events)?;
        self.tx
            .blocking_send(Batch { raw, events })
            .map_err(|_| ReadStop::Stopped)
    }
}

/// Redis 6 and older replicate relative TTLs (`EXPIRE k 10`, `SET k v PX 500`): turn them into
/// absolute ones from the command's arrival time, so a restore does not extend them. The
/// result is one or two commands that every server since 2.6 knows (no `PXAT`, which came with
/// 6.2), so that the archived master's own version loads them from an AOF: `SET k v [NX|XX]`
/// then `PEXPIREAT k <ms>`. A replicated `SET NX` always succeeded on the master, so on a
/// faithful replay the expiry that follows it applies to the value it set.
pub fn absolute_ttl(c: &Command) -> Option<Vec<Vec<Bytes>>> {
    let num = |i: usize| {
        c.args
            .get(i)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    let at = |ms: i64| Bytes::from((c.ms as i64).saturating_add(ms).to_string());
    let b = Bytes::from_static;
    let pexpireat = |ms: i64| vec![b(b"PEXPIREAT"), c.args[1].clone(), at(ms)];
    match c.info().relative_ttl? {
        RelativeTtl::Arg { at: ttl, unit } => {
            let ms = num(ttl)?.saturating_mul(unit.ms());
            let mut v = pexpireat(ms);
            // NX/XX/GT/LT (7.0+) never come from a server that sends relative TTLs, but keep
            // whatever follows.
            v.extend(c.args.iter().skip(ttl + 1).cloned());
            Some(vec![v])
        }
        RelativeTtl::SetEx { at: ttl, unit } if c.args.len() == ttl + 2 => {
            let ms = num(ttl)?.saturating_mul(unit.ms());
            Some(vec![
                vec![b(b"SET"), c.args[1].clone(), c.args[ttl + 1].clone()],
                pexpireat(ms),
            ])
        }
        RelativeTtl::Option { from } => {
            let (i, unit) = RelativeTtl::find_option(from, &c.args)?;
            let ms = num(i + 1)?.saturating_mul(unit.ms());
            let mut set = c.args.clone();
            set.drain(i..i + 2);
            Some(vec![set, pexpireat(ms)])
        }
        // `RESTORE key ttl payload` without ABSTTL: the TTL is relative (ABSTTL: 5.0+).
        RelativeTtl::Restore(r) if r.complete(&c.args) => {
            let abs = r.absolute(&c.args);
            let n = num(r.at)?;
            if abs || n <= 0 {
                return None;
            }
            let mut v = c.args.clone();
            v[r.at] = at(n);
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

    /// What a cluster master before 7.0 propagates for a `MIGRATE` it received carries a
    /// relative TTL as `RESTORE` does, and is made absolute the same way.
    #[test]
    fn restore_asking_ttls_become_absolute_like_restore() {
        assert_eq!(
            or_same(&cmd(&["RESTORE-ASKING", "k", "50", "p"], 1000)),
            [["RESTORE-ASKING", "k", "1050", "p", "ABSTTL"]]
        );
        assert_eq!(
            or_same(&cmd(&["restore-asking", "k", "7", "p", "REPLACE"], 2000)),
            [["restore-asking", "k", "2007", "p", "REPLACE", "ABSTTL"]]
        );
        // Already absolute, no TTL, or incomplete: as archived.
        for args in [
            &["RESTORE-ASKING", "k", "50", "p", "ABSTTL"][..],
            &["RESTORE-ASKING", "k", "0", "p"],
            &["RESTORE-ASKING", "k", "50"],
        ] {
            assert_eq!(or_same(&cmd(args, 1000)), [args]);
        }
        // The same answers as RESTORE, name aside.
        for (ttl, ms) in [("1", 0), ("86400000", 1_700_000_000_000), ("-5", 10)] {
            let asking = or_same(&cmd(&["RESTORE-ASKING", "k", ttl, "p"], ms));
            let restore = or_same(&cmd(&["RESTORE", "k", ttl, "p"], ms));
            assert_eq!(asking[0][1..], restore[0][1..], "{ttl} at {ms}");
        }
    }

    mod executor {
        use std::sync::Mutex;

        use super::super::*;
        use crate::archive::fetch::counting::{self, Counts};
        use crate::archive::format::{SegmentHeader, TimeMark};
        use crate::archive::names::{test_replid, ArchiveName, GenerationId, ObjectName};
        use crate::maintain::verify::test_objects;

        /// What a sink was handed.
        #[derive(Debug, Default)]
        struct Log {
            header: Option<RdbHeader>,
            raw: Vec<u8>,
            snapshot_done: Option<u64>,
            commands: Vec<String>,
            finished: bool,
            aborted: bool,
        }

        /// A destination that records what it is handed; it refuses the command `refuse`.
        struct Recorder {
            log: Arc<Mutex<Log>>,
            refuse: Option<&'static str>,
        }

        impl Opener for Recorder {
            type Sink = Recorder;

            fn needs(&self) -> SnapshotNeeds {
                SnapshotNeeds {
                    events: true,
                    max_raw_value: 0,
                }
            }

            async fn open(self, header: RdbHeader) -> Result<Recorder, RestoreError> {
                self.log.lock().unwrap().header = Some(header);
                Ok(self)
            }
        }

        impl CommandSink for Recorder {
            async fn command(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
                let text: Vec<String> = cmd
                    .args()
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                if Some(text[0].as_str()) == self.refuse {
                    return Err(RestoreError::FileIo {
                        path: "recorder".into(),
                        op: "write",
                        source: std::io::Error::other(format!("refused {}", text[0])),
                    });
                }
                self.log.lock().unwrap().commands.push(text.join(" "));
                Ok(())
            }
        }

        impl Sink for Recorder {
            fn values_by_restore(&self) -> bool {
                false
            }

            async fn snapshot(
                &mut self,
                raw: &Bytes,
                _events: &mut [Event],
            ) -> Result<(), RestoreError> {
                self.log.lock().unwrap().raw.extend_from_slice(raw);
                Ok(())
            }

            async fn snapshot_done(
                &mut self,
                keys: u64,
                _report: &mut Report,
            ) -> Result<(), RestoreError> {
                self.log.lock().unwrap().snapshot_done = Some(keys);
                Ok(())
            }

            async fn finish(self, _report: &mut Report) -> Result<(), RestoreError> {
                self.log.lock().unwrap().finished = true;
                Ok(())
            }

            async fn abort(self) {
                self.log.lock().unwrap().aborted = true;
            }
        }

        /// An archive of the test snapshot and one segment with `SET k v`, a PING (which a
        /// restore leaves out) and `DEL k`: its store, the plan of everything, and the
        /// segment's end offset.
        async fn archive() -> (Store, Plan, u64) {
            let raw: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n";
            archive_of(&test_objects::rdb(), raw, 0).await
        }

        /// An archive of a snapshot holding `rdb` and one segment holding `raw`, whose link to
        /// the snapshot is off by `bad_link`.
        async fn archive_of(rdb: &[u8], raw: &[u8], bad_link: u64) -> (Store, Plan, u64) {
            let n: ArchiveName = "a".parse().unwrap();
            let store = Store::open("memory://", &n).unwrap();
            let sh = format::SnapshotHeader {
                generation: GenerationId(1),
                offset: 0,
                time_ms: 1000,
                replid: test_replid('a'),
                taken: None,
            };
            let snap = ObjectName::snapshot(sh.generation, 0, 1000, sh.replid);
            let mut up = store
                .snapshot_upload(&snap, &sh, std::time::Duration::ZERO)
                .await
                .unwrap();
            up.write(rdb).await.unwrap();
            let chain = up.finish().await.unwrap().checksum ^ bad_link;
            let end = raw.len() as u64;
            let h = SegmentHeader {
                generation: GenerationId(1),
                start: 0,
                end,
                first_ms: 1100,
                last_ms: 1100,
                db_start: 0,
                db_end: 0,
                replid: test_replid('a'),
                link: crate::archive::format::Link::PrevObject(chain),
                level: 0,
                frames: Vec::new(),
                index: vec![TimeMark { end, ms: 1100 }],
            };
            let (obj, _) = format::encode_segment(&h, raw).unwrap();
            let name = ObjectName::segment(h.generation, (0, end), (1100, 1100), h.replid);
            store.put_new(&name, obj.into()).await.unwrap();
            let plan = make_plan(&store, Target::Latest).await.unwrap();
            (store, plan, end)
        }

        fn config(store: Store) -> RestoreConfig {
            RestoreConfig {
                store,
                target: Target::Latest,
                destination: Destination::Files {
                    dir: "unused".into(),
                },
                filter: Filter::default(),
                force: false,
                max_restore_bytes: 1 << 20,
                target_timeout: live::DEFAULT_TIMEOUT,
                fetch: FetchConfig::default(),
            }
        }

        /// The executor hands any sink the snapshot's bytes, then the commands up to the cut,
        /// then finishes it; the report and the progress counters say what it did.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_sink_gets_the_snapshot_then_the_commands() {
            let (store, plan, end) = archive().await;
            let log = Arc::new(Mutex::new(Log::default()));
            let progress = Arc::new(Progress::default());
            let opener = Recorder {
                log: log.clone(),
                refuse: None,
            };
            let report = run(&config(store), &plan, progress.clone(), opener)
                .await
                .unwrap();
            let log = log.lock().unwrap();
            assert_eq!(
                log.header,
                Some(RdbHeader {
                    magic: rdb::Magic::Redis,
                    version: 11
                })
            );
            assert_eq!(log.raw, test_objects::rdb());
            assert_eq!(log.snapshot_done, Some(0));
            assert_eq!(log.commands, ["SELECT 0", "SET k v", "DEL k"]);
            assert!(log.finished && !log.aborted);
            assert_eq!(
                (report.commands, report.commands_internal, report.keys),
                (2, 1, 0)
            );
            assert_eq!(report.offset, end);
            assert_eq!(progress.commands.load(Ordering::Relaxed), 2);
            assert_eq!(
                progress.snapshot_raw.load(Ordering::Relaxed),
                test_objects::rdb().len() as u64
            );
            assert_eq!(progress.bytes.load(Ordering::Relaxed), plan.bytes);
            assert_eq!(report.bytes_read, plan.bytes);
        }

        /// A sink's error ends the restore with that error, and the sink is aborted, not
        /// finished.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failing_sink_is_aborted() {
            let (store, plan, _) = archive().await;
            let log = Arc::new(Mutex::new(Log::default()));
            let opener = Recorder {
                log: log.clone(),
                refuse: Some("DEL"),
            };
            let err = run(&config(store), &plan, Arc::default(), opener)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, RestoreError::FileIo { source, .. } if source.to_string() == "refused DEL"),
                "{err}"
            );
            let log = log.lock().unwrap();
            assert_eq!(log.commands, ["SELECT 0", "SET k v"]);
            assert!(log.aborted && !log.finished);
        }

        /// A scheduled snapshot inside a segment: the replay starts at its offset, in the
        /// database selected there, and leaves out the commands before it.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_restore_starts_at_a_scheduled_snapshot_inside_a_segment() {
            let n: ArchiveName = "a".parse().unwrap();
            let store = Store::open("memory://", &n).unwrap();
            let (_, seed) = test_objects::snapshot(&store, 1, 0, 1000).await;
            let mut raw = Vec::new();
            for args in [&["SELECT", "3"][..], &["SET", "a", "1"], &["SET", "b", "2"]] {
                cut::encode_args(
                    &args
                        .iter()
                        .map(|a| Bytes::from(a.to_string()))
                        .collect::<Vec<_>>(),
                    &mut raw,
                );
            }
            let inside = raw.len() as u64 - 27; // where `SET b 2` starts
            let end = raw.len() as u64;
            let h = SegmentHeader {
                generation: GenerationId(1),
                start: 0,
                end,
                first_ms: 1100,
                last_ms: 1100,
                db_start: 0,
                db_end: 3,
                replid: test_replid('a'),
                link: format::Link::Stream {
                    start: seed,
                    end: format::stream_sum(seed, &raw),
                },
                level: 0,
                frames: Vec::new(),
                index: vec![TimeMark { end, ms: 1100 }],
            };
            let (obj, _) = format::encode_segment(&h, &raw).unwrap();
            let name = ObjectName::segment(h.generation, (0, end), (1100, 1100), h.replid).v2(0);
            store.put_new(&name, obj.into()).await.unwrap();
            let sh = format::SnapshotHeader {
                generation: GenerationId(1),
                offset: inside,
                time_ms: 1050,
                replid: test_replid('a'),
                taken: Some(format::Taken::Scheduled),
            };
            let snap = ObjectName::snapshot(sh.generation, inside, 1050, sh.replid).v2(0);
            let mut up = store
                .snapshot_upload(&snap, &sh, std::time::Duration::ZERO)
                .await
                .unwrap();
            up.write(&test_objects::rdb()).await.unwrap();
            up.finish().await.unwrap();
            let plan = make_plan(&store, Target::Latest).await.unwrap();
            assert_eq!(plan.snapshot.offset, inside);
            let log = Arc::new(Mutex::new(Log::default()));
            let opener = Recorder {
                log: log.clone(),
                refuse: None,
            };
            let report = run(&config(store.clone()), &plan, Arc::default(), opener)
                .await
                .unwrap();
            assert_eq!(log.lock().unwrap().commands, ["SELECT 3", "SET b 2"]);
            assert_eq!(report.offset, end);
            // A snapshot whose offset falls inside a command is refused.
            let bad = ObjectName::snapshot(sh.generation, inside + 3, 1060, sh.replid).v2(0);
            let bh = format::SnapshotHeader {
                offset: inside + 3,
                time_ms: 1060,
                ..sh
            };
            let mut up = store
                .snapshot_upload(&bad, &bh, std::time::Duration::ZERO)
                .await
                .unwrap();
            up.write(&test_objects::rdb()).await.unwrap();
            up.finish().await.unwrap();
            let plan = make_plan(&store, Target::Latest).await.unwrap();
            let opener = Recorder {
                log: Arc::default(),
                refuse: None,
            };
            let e = run(&config(store), &plan, Arc::default(), opener)
                .await
                .unwrap_err();
            assert!(matches!(e, RestoreError::Commands { .. }), "{e}");
        }

        async fn restore_err(rdb: &[u8], raw: &[u8], bad_link: u64) -> RestoreError {
            let (store, plan, _) = archive_of(rdb, raw, bad_link).await;
            let opener = Recorder {
                log: Arc::default(),
                refuse: None,
            };
            run(&config(store), &plan, Arc::default(), opener)
                .await
                .unwrap_err()
        }

        /// Each way an archive can be bad is its own error, naming the object; the RDB's and
        /// the stream's own errors are kept as they are.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn corrupt_objects_are_typed_errors_naming_the_object() {
            let ping: &[u8] = b"*1\r\n$4\r\nPING\r\n";
            let good = test_objects::rdb();
            // An unknown value type (0x42) where a key should start.
            let mut bad_rdb = b"REDIS0011".to_vec();
            bad_rdb.extend_from_slice(b"\x42\x01k");
            match restore_err(&bad_rdb, ping, 0).await {
                RestoreError::Rdb { object, source } => {
                    assert!(object.ends_with(".snapshot"), "{object}");
                    assert_eq!(source.offset(), Some(9), "{source}");
                }
                other => panic!("expected an RDB error, got {other}"),
            }
            match restore_err(&good, ping, 1).await {
                RestoreError::Chain {
                    object,
                    links_to,
                    expected,
                } => {
                    assert!(!object.ends_with(".snapshot"), "{object}");
                    assert_eq!(links_to ^ expected, 1);
                }
                other => panic!("expected a broken chain, got {other}"),
            }
            match restore_err(&good, b"*1\r\n$4\r\nPINGxx", 0).await {
                // Where "PING" should be followed by CRLF.
                RestoreError::Commands { source, .. } => assert_eq!(source.offset, 12),
                other => panic!("expected a malformed command, got {other}"),
            }
            // A snapshot without a single RDB byte: the RDB is cut short at its first byte.
            match restore_err(b"", ping, 0).await {
                RestoreError::Rdb { source, .. } => assert_eq!(source.offset(), Some(0)),
                other => panic!("expected a truncated RDB, got {other}"),
            }
        }

        /// Files take the commands beside the snapshot copy (the AOF is a file of its own):
        /// the same files and report as one after the other; a first segment that does not
        /// link to the snapshot is refused once the snapshot is read, and nothing is left.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn files_replay_commands_beside_the_snapshot_and_check_the_link_after() {
            let raw: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n";
            let rdb = test_objects::rdb();
            let opener = |dir: &std::path::Path| FilesOpener {
                dir: dir.to_path_buf(),
                filter: Filter::default(),
                force: false,
                max_restore_bytes: 1 << 20,
            };
            let (store, plan, end) = archive_of(&rdb, raw, 0).await;
            let dir = tempfile::tempdir().unwrap();
            let report = run(&config(store), &plan, Arc::default(), opener(dir.path()))
                .await
                .unwrap();
            assert_eq!((report.offset, report.time_ms), (end, 1100));
            assert_eq!((report.commands, report.commands_internal), (1, 1));
            assert!(report.bytes_read > plan.snapshot.bytes, "{report:?}");
            let aof = dir.path().join("appendonlydir");
            assert_eq!(
                std::fs::read(aof.join("appendonly.aof.1.base.rdb")).unwrap(),
                rdb
            );
            assert_eq!(
                std::fs::read(aof.join("appendonly.aof.1.incr.aof")).unwrap(),
                b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
            );

            let (store, plan, _) = archive_of(&rdb, raw, 1).await;
            let dir = tempfile::tempdir().unwrap();
            match run(&config(store), &plan, Arc::default(), opener(dir.path())).await {
                Err(RestoreError::Chain {
                    object,
                    links_to,
                    expected,
                }) => {
                    assert_eq!(object, plan.segments[0].name);
                    assert_eq!(links_to ^ expected, 1);
                }
                other => panic!("expected a broken chain, got {other:?}"),
            }
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }

        /// A slow store (50 ms a GET) holding the test snapshot and 24 chained segments, the
        /// i-th holding `SET k<i> v` (all of one size); the one at `corrupt` (if any) has a
        /// damaged trailer. The store, its GET counts (segments only), the plan of everything
        /// and the segments' names.
        async fn slow_archive(
            corrupt: Option<usize>,
        ) -> (Store, Arc<Counts>, Plan, Vec<ObjectName>) {
            let (store, counts) = counting::slow_store(Some(".segment"));
            let (_, mut chain) = test_objects::snapshot(&store, 1, 0, 1000).await;
            let (mut start, mut names) = (0, Vec::new());
            for i in 0..24u64 {
                let raw = format!("*3\r\n$3\r\nSET\r\n$3\r\nk{i:02}\r\n$1\r\nv\r\n");
                let (end, ms) = (start + raw.len() as u64, 1100 + i);
                let h = SegmentHeader {
                    generation: GenerationId(1),
                    start,
                    end,
                    first_ms: ms,
                    last_ms: ms,
                    db_start: 0,
                    db_end: 0,
                    replid: test_replid('a'),
                    link: format::Link::Stream {
                        start: chain,
                        end: format::stream_sum(chain, raw.as_bytes()),
                    },
                    level: 0,
                    frames: Vec::new(),
                    index: vec![TimeMark { end, ms }],
                };
                let (mut obj, _) = format::encode_segment(&h, raw.as_bytes()).unwrap();
                let format::Link::Stream { end: checksum, .. } = h.link else {
                    unreachable!()
                };
                if corrupt == Some(i as usize) {
                    let last = obj.len() - 1;
                    obj[last] ^= 1;
                }
                let name =
                    ObjectName::segment(h.generation, (start, end), (ms, ms), h.replid).v2(0);
                store.put_new(&name, obj.into()).await.unwrap();
                names.push(name);
                (chain, start) = (checksum, end);
            }
            let plan = make_plan(&store, Target::Latest).await.unwrap();
            (store, counts, plan, names)
        }

        /// Replays `plan` from `store` into a recorder; the result and what it was handed.
        async fn replay(
            store: &Store,
            plan: &Plan,
            fetch: FetchConfig,
        ) -> (Result<Report, RestoreError>, Arc<Mutex<Log>>) {
            let log = Arc::new(Mutex::new(Log::default()));
            let opener = Recorder {
                log: log.clone(),
                refuse: None,
            };
            let cfg = RestoreConfig {
                fetch,
                ..config(store.clone())
            };
            (run(&cfg, plan, Arc::default(), opener).await, log)
        }

        /// `SELECT 0` and the SETs of the first `n` segments.
        fn sets(n: usize) -> Vec<String> {
            let mut v = vec!["SELECT 0".to_string()];
            v.extend((0..n).map(|i| format!("SET k{i:02} v")));
            v
        }

        /// 24 segments behind a 50 ms round trip: with `--parallel 8` eight GETs overlap
        /// (3 round trips' worth of waiting instead of 24), with 1 they come one at a time; the
        /// commands are replayed in plan order either way.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn segments_are_fetched_in_parallel_and_replayed_in_order() {
            let (store, counts, plan, _) = slow_archive(None).await;
            for parallel in [1, 3, 8] {
                counts.reset();
                let fetch = FetchConfig {
                    parallel,
                    ..Default::default()
                };
                let (report, log) = replay(&store, &plan, fetch).await;
                let report = report.unwrap();
                assert_eq!(report.commands, 24);
                assert_eq!(report.bytes_read, plan.bytes);
                let log = log.lock().unwrap();
                assert_eq!(log.commands, sets(24));
                assert!(log.finished);
                assert_eq!(counts.max(), parallel, "parallel {parallel}");
                assert_eq!(counts.started.lock().unwrap().len(), 24);
            }
        }

        /// The byte budget holds segments back even when `--parallel` allows more: a budget of
        /// two segments (stored and raw) keeps two GETs in flight.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_byte_budget_bounds_segments_in_flight() {
            let (store, counts, plan, _) = slow_archive(None).await;
            let s = &plan.segments[0];
            assert!(plan.segments.iter().all(|o| o.bytes == s.bytes));
            let one = s.bytes + (s.end - s.offset);
            let fetch = FetchConfig {
                parallel: 8,
                max_bytes: 2 * one + one / 2,
            };
            let (report, log) = replay(&store, &plan, fetch).await;
            report.unwrap();
            assert_eq!(log.lock().unwrap().commands, sets(24));
            assert_eq!(counts.max(), 2);
        }

        /// A corrupt segment in the middle ends the restore with its own error, though the
        /// segments after it were fetched meanwhile; nothing after it is applied.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_corrupt_segment_in_the_middle_stops_the_replay_there() {
            let (store, counts, plan, names) = slow_archive(Some(10)).await;
            let (report, log) = replay(&store, &plan, FetchConfig::default()).await;
            match report.unwrap_err() {
                RestoreError::Segment { object, .. } => assert_eq!(object, names[10].to_string()),
                other => panic!("expected a corrupt segment, got {other}"),
            }
            let log = log.lock().unwrap();
            assert_eq!(log.commands, sets(10));
            assert!(log.aborted && !log.finished);
            assert!(counts.started.lock().unwrap().len() > 11);
        }

        /// A GET that fails in the middle is the error of that segment, not of one fetched
        /// after it.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failed_get_in_the_middle_is_the_error_of_that_segment() {
            let (store, counts, plan, names) = slow_archive(None).await;
            *counts.fail.lock().unwrap() = Some(names[10].to_string());
            let (report, log) = replay(&store, &plan, FetchConfig::default()).await;
            let err = report.unwrap_err();
            assert!(
                matches!(&err, RestoreError::Store(e) if e.to_string().contains(&names[10].to_string())),
                "{err}"
            );
            let log = log.lock().unwrap();
            assert_eq!(log.commands, sets(10));
            assert!(log.aborted && !log.finished);
        }
    }
}
