//! `pitr archive`: ties the replica link to the segmenter and the store. Resumes from what the
//! store holds, attaches with PSYNC, streams a full sync's snapshot into the store, then feeds
//! the stream to the segmenter under a byte budget, ACKing only what is durable. Reconnects
//! with backoff after any disconnect, and shuts down cleanly on request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bytes::Buf;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::archive::branch::{self, Branch};
use crate::archive::format::{self, SnapshotHeader};
use crate::archive::lease::{Lease, LeaseCommand, LeaseConfig, LeaseError, LeaseGuard, Vouched};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName};
use crate::archive::stopped;
use crate::archive::store::{SnapshotDone, SnapshotUpload, Store, StoreError};
use crate::ingest::follow::{self, Resume};
use crate::ingest::link::{eof_step, Connection, EofStep, LinkError, Payload, Psync};
use crate::ingest::scheduled::{Attached, Schedule, Scheduler};
use crate::ingest::segment::{
    Chunk, Durable, Msg, Position, SegmentError, Segmenter, SegmenterConfig,
};
use crate::maintain::compact::{self, CompactConfig};
use crate::maintain::prune::Policy;
use crate::metrics::{Cause, Upload};
use crate::net::Source;
use crate::resp::scanner::{CommandScanner, StreamError};

#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub source: Source,
    pub store: Store,
    pub flush_interval: Duration,
    pub segment_max_bytes: usize,
    pub max_buffer: usize,
    /// Follow the master when the server attached to turns out to be a replica (a `FAILOVER`
    /// or `REPLICAOF` demoted it); off: archive from it as it is.
    pub follow: bool,
    /// The port sent with `REPLCONF listening-port` (0: nothing listens, so neither Sentinel
    /// nor `FAILOVER` can pick the archiver as a master).
    pub announce_port: u16,
    /// How long the link may go without receiving a byte before it is considered dead.
    pub read_timeout: Duration,
    /// The archive's lease: its time to live, and whether to take a live one over.
    pub lease: LeaseConfig,
    /// Compaction, run beside the stream while the lease is held (`off`: none).
    pub compaction: CompactConfig,
    /// Retention, applied beside compaction about every ten minutes (default: keep everything).
    pub retention: Policy,
    /// How often to take a scheduled snapshot on a link of its own (`ingest::scheduled`),
    /// counted from the generation's newest snapshot; `None`: only when `pitr snapshot` asks.
    pub snapshot_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The lease: held by another process, lost, or not renewed in time.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("snapshot from {addr} is not a valid RDB: {what}")]
    BadSnapshot { addr: String, what: String },
    #[error("the archive is inconsistent: {0}")]
    Archive(String),
    #[error("{addr} answered +CONTINUE to a request for a full sync")]
    UnexpectedContinue { addr: String },
    /// The store failed while the RDB streamed into it, past the retries of a failed part (or
    /// at once on a local directory). The parts already stored are aborted and the master
    /// sends an RDB only once, so this snapshot cannot be completed.
    #[error("the snapshot upload of {object} failed after {received} bytes of the RDB had arrived: {source}")]
    SnapshotUpload {
        object: String,
        received: u64,
        #[source]
        source: StoreError,
    },
    /// A single command that does not fit the memory budget.
    #[error("a command of at least {bytes} bytes at offset {offset} from {addr} is larger than --max-buffer ({max_buffer} bytes)")]
    CommandTooLarge {
        addr: String,
        offset: u64,
        bytes: u64,
        max_buffer: usize,
    },
}

impl ArchiveError {
    /// A write refused because the lease was no longer held.
    fn is_refused_write(&self) -> bool {
        matches!(
            self,
            ArchiveError::Lease(LeaseError::NotHeld { .. })
                | ArchiveError::Segment(SegmentError::Lease(_))
        )
    }

    fn is_fatal(&self) -> bool {
        match self {
            ArchiveError::Link(e) => e.is_fatal(),
            ArchiveError::Segment(_) | ArchiveError::Archive(_) | ArchiveError::Lease(_) => true,
            ArchiveError::Store(StoreError::Conflict { .. }) => true,
            _ => false,
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Finds where an archive left off: the position after its newest object, and the id the next
/// generation takes.
///
/// Only the newest generation is resumed, and only when it is one intact chain from its
/// snapshot as far as is cheap to tell: the listing shows one snapshot, first, and no hole or
/// overlap after it; the snapshot's header agrees with its name; and the newest object was read
/// and checked (a segment whole, a snapshot's header and trailer). Otherwise the position is
/// `None` and a full sync starts a new generation, with a loud log naming what is wrong (the
/// objects are left for `pitr verify` to report). Also creates a local store's directory and
/// removes staging files that killed snapshot uploads left behind.
pub async fn resume_point(store: &Store) -> Result<(Option<Position>, GenerationId), ArchiveError> {
    store.create_root().await?;
    match store.remove_staging_files().await {
        Ok((0, _)) => {}
        Ok((files, bytes)) => info!(
            files,
            bytes, "removed the staging files of snapshot uploads that never finished"
        ),
        Err(e) => {
            warn!(error = %e, "could not remove the staging files of unfinished snapshot uploads")
        }
    }
    // The newest generation from its newest snapshot (archive::scan): the archiver's start
    // lists a few partitions, however long the history.
    let (catalog, newest) = crate::archive::scan::newest(store).await?;
    store.metrics().observe_catalog(&catalog, false);
    let next = match newest {
        Some(g) => g.next(),
        None => Ok(GenerationId(1)),
    }
    .map_err(|e| ArchiveError::Archive(e.to_string()))?;
    let Some(g) = catalog.last_generation() else {
        return Ok((None, next));
    };
    match resumable(store, g).await? {
        Ok(pos) => Ok((Some(pos), next)),
        Err(why) => {
            tracing::error!(
                generation = %g.id, problem = %why, next_generation = %next,
                "not resuming: the newest generation cannot be continued safely; starting a new generation with a full sync (run pitr verify to see what is wrong)"
            );
            Ok((None, next))
        }
    }
}

/// Whether generation `g` can be continued, and from where; `Err` says why not. Store errors
/// other than a missing object are errors.
async fn resumable(
    store: &Store,
    g: &crate::archive::catalog::Generation,
) -> Result<Result<Position, String>, StoreError> {
    if let Some(p) = g.problems.first() {
        return Ok(Err(p.to_string()));
    }
    let Some(base) = g.base() else {
        return Ok(Err(format!(
            "generation {} has no snapshot (its base is gone)",
            g.id
        )));
    };
    if let Some(h) = g.holes.first() {
        return Ok(Err(format!(
            "generation {} is missing offsets {}..{}",
            g.id, h.from_offset, h.to_offset
        )));
    }
    let Some(last) = g.last_object() else {
        return Ok(Err(format!("generation {} is empty", g.id)));
    };
    if base.name.version < 2 {
        return Ok(Err(format!(
            "generation {} is in archive format version 1, which this release reads but no longer writes",
            g.id
        )));
    }
    let checked = async {
        let chain = check_snapshot_ends(store, base).await?;
        let name = last.name;
        let corrupt = |what: String| -> Result<Result<Position, String>, StoreError> {
            Ok(Err(format!("object {name} is corrupt: {what}")))
        };
        if name.kind == ObjectKind::Snapshot {
            return Ok(chain.map(|_| Position {
                generation: name.generation,
                replid: name.replid,
                offset: name.start,
                db: 0,
                sum: format::stream_seed(name.generation),
            }));
        }
        if let Err(why) = chain {
            return Ok(Err(why));
        }
        let bytes = store.get(&name).await?;
        let decoded = tokio::task::spawn_blocking(move || format::decode_segment(&bytes)).await;
        let seg = match decoded {
            Ok(Ok(seg)) => seg,
            Ok(Err(e)) => return corrupt(e.to_string()),
            Err(e) => return corrupt(format!("decoding failed: {e}")),
        };
        let h = &seg.header;
        if !h.matches(&name) {
            return corrupt("its header disagrees with its name".into());
        }
        let format::Link::Stream { end: sum, .. } = h.link else {
            return corrupt("a segment of format version 1 in a version 2 generation".into());
        };
        Ok(Ok(Position {
            generation: name.generation,
            replid: h.replid,
            offset: h.end,
            db: h.db_end,
            sum,
        }))
    };
    match checked.await {
        Err(e) if e.is_not_found() => Ok(Err(format!("an object went missing: {e}"))),
        r => r,
    }
}

/// Reads a snapshot's preamble, header and trailer (not its body) and checks them against its
/// name. Returns its checksum, or what is wrong.
async fn check_snapshot_ends(
    store: &Store,
    snap: &crate::archive::store::Listed,
) -> Result<Result<u64, String>, StoreError> {
    let name = snap.name;
    let corrupt = |what: String| -> Result<Result<u64, String>, StoreError> {
        Ok(Err(format!("snapshot {name} is corrupt: {what}")))
    };
    // A version 2 header is 4 bytes longer, and followed by its check.
    let head_len =
        (format::PREAMBLE_LEN as u64 + 68 + format::HEADER_CHECK_LEN as u64).min(snap.size);
    if snap.size < head_len + format::TRAILER_LEN as u64 {
        return corrupt(format!("only {} bytes", snap.size));
    }
    let head = store.get_range(&name, 0..head_len).await?;
    let header = match format::parse_preamble(&head) {
        Ok(Some(p)) if p.kind == format::Kind::Snapshot && p.body_start() <= head.len() => p
            .check_header(&head)
            .and_then(|_| {
                SnapshotHeader::decode(&head[p.header.clone()], p.header.start, p.version)
            })
            .map_err(|e| e.to_string()),
        Ok(Some(p)) if p.kind == format::Kind::Snapshot => {
            Err("header longer than expected".into())
        }
        Ok(Some(_)) => Err("a segment where a snapshot was expected".into()),
        Ok(None) => Err("preamble cut short".into()),
        Err(e) => Err(e.to_string()),
    };
    match header {
        Ok(h)
            if h.generation == name.generation
                && h.offset == name.start
                && h.time_ms == name.first_ms
                && h.replid == name.replid => {}
        Ok(_) => return corrupt("its header disagrees with its name".into()),
        Err(what) => return corrupt(what),
    }
    let t = store
        .get_range(&name, snap.size - format::TRAILER_LEN as u64..snap.size)
        .await?;
    if t.len() != format::TRAILER_LEN || &t[24..32] != format::TRAILER_MAGIC {
        return corrupt("no trailer magic at its end".into());
    }
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&t[16..24]);
    Ok(Ok(u64::from_le_bytes(checksum)))
}

/// How often, at the least, the archiver checks that the base snapshot of the generation it
/// writes is still in the store.
pub const BASE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Whether the base snapshot of `generation` is in the store: one HEAD of `known` (its name)
/// when given, otherwise (or when it is gone) a listing of the generation's snapshots. Returns the snapshot's name, or `None`
/// when it is gone. Cheap enough to call every few seconds (lease renewal may call it too).
pub async fn check_base(
    store: &Store,
    generation: GenerationId,
    known: Option<ObjectName>,
) -> Result<Option<ObjectName>, StoreError> {
    match known {
        Some(name) if name.generation == generation && store.exists(&name).await? => Ok(Some(name)),
        // Gone, or not known yet: retention removes a base once a later snapshot (on a
        // segment boundary) replaces it, so the oldest snapshot left is the base.
        _ => Ok(store
            .generation_snapshots(generation)
            .await?
            .into_iter()
            .next()),
    }
}

/// Guards the durable point against a lost base: the point the archiver ACKs moves only after
/// the base snapshot of its generation was seen in the store (by [`check_base`]), after the
/// segmenter published it. Checks after each published point and at least every
/// [`BASE_CHECK_INTERVAL`]. Returns the guarded point and a watch that names a generation whose
/// base is gone (once per generation). The checking task runs on `tasks`; it ends when the
/// durable point's sender or every guarded receiver is gone.
fn guard_base(
    store: Store,
    mut durable: watch::Receiver<Durable>,
    tasks: &TaskTracker,
) -> (
    watch::Receiver<Durable>,
    watch::Receiver<Option<GenerationId>>,
) {
    let (guarded_tx, guarded) = watch::channel(*durable.borrow());
    let (lost_tx, lost) = watch::channel(None);
    tasks.spawn(async move {
        let mut base: Option<ObjectName> = None;
        let mut failing = false;
        let mut tick = tokio::time::interval(BASE_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = durable.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
                _ = guarded_tx.closed() => return,
            }
            let d = *durable.borrow_and_update();
            if d.generation == GenerationId::default() {
                continue;
            }
            match check_base(&store, d.generation, base).await {
                Ok(Some(name)) => {
                    base = Some(name);
                    failing = false;
                    guarded_tx.send_if_modified(|g| std::mem::replace(g, d) != d);
                }
                Ok(None) => {
                    base = None;
                    if *lost_tx.borrow() != Some(d.generation) {
                        tracing::error!(
                            generation = %d.generation, offset = d.offset, store = %store.url(),
                            "the base snapshot of the generation is gone from the store: nothing written since can be restored; not acknowledging it, starting a new generation with a full sync"
                        );
                        lost_tx.send_replace(Some(d.generation));
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(generation = %d.generation, error = %e, "cannot check the base snapshot of the generation; acknowledging nothing newer until it can be checked");
                    }
                    failing = true;
                }
            }
            tick.reset();
        }
    });
    (guarded, lost)
}

/// Resolves when `lost` names a generation (the one being written) whose base is gone.
async fn base_lost(lost: &mut watch::Receiver<Option<GenerationId>>) -> GenerationId {
    loop {
        if lost.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if let Some(g) = *lost.borrow_and_update() {
            return g;
        }
    }
}

enum SessionEnd {
    Shutdown,
}

/// The longest wait between two attempts to reach the master (or the store).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How long finding the master and connecting to it may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delays between attempts to reach the master: 100 ms doubling to at most 5 s, each with a
/// random jitter of up to its own length, so that archivers cut off together do not retry in
/// step. Started anew whenever a session is established, so a link that drops now and then
/// always gets a fast first retry (a slow one lets the master's backlog overrun, which turns a
/// partial resync into a full one).
fn retry_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The archiver role.
pub struct Archiver {
    cfg: ArchiveConfig,
    /// The received position: where the next byte from the master belongs.
    pos: Option<Position>,
    /// Archive offset less master offset in the current generation: the bytes of branches
    /// that changed no data (`archive::branch`); 0 in a generation without one.
    delta: u64,
    next_generation: GenerationId,
    tx: mpsc::UnboundedSender<Msg>,
    durable: watch::Receiver<Durable>,
    budget: Arc<Semaphore>,
    /// Set when the current session got as far as a stream (a `+CONTINUE`, or a snapshot made
    /// durable): the reconnect backoff starts again from its shortest delay.
    established: bool,
    /// The next session asks for a full sync even though the archive could be continued: the
    /// stream held a command the archiver refused to hold in memory.
    force_full_sync: bool,
    /// Whether the archive's lease is still held: nothing is completed once it is not.
    lease: LeaseGuard,
    /// What the lease's next renewal vouches for (see [`Vouched`]).
    vouch: watch::Sender<Option<Vouched>>,
    /// What the archiving link is on, for scheduled snapshots; `None` between sessions.
    attached: watch::Sender<Option<Attached>>,
}

impl Archiver {
    /// Runs until shutdown is requested (then flushes, ACKs and returns `Ok`) or an error that
    /// retrying cannot fix.
    ///
    /// Takes the archive's lease first, before anything is written (or removed), and keeps it
    /// renewed while it runs; a lease lost or not renewed in time ends the run with
    /// [`ArchiveError::Lease`]. The lease is released when the run ends otherwise.
    pub async fn run(cfg: ArchiveConfig, shutdown: CancellationToken) -> Result<(), ArchiveError> {
        cfg.store.create_root().await?;
        let lease = tokio::select! {
            r = Lease::acquire(&cfg.store, LeaseCommand::Archive, cfg.lease) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let guard = lease.guard();
        let (vouch, vouched) = watch::channel(None);
        // The last point vouched for, left behind on a clean stop (`archive::stopped`).
        let last_vouched = vouched.clone();
        let stop_renewing = CancellationToken::new();
        let mut renewer = Renewer {
            object: lease.object().to_string(),
            task: None,
        };
        renewer.task = Some(tokio::spawn(lease.keep(vouched, stop_renewing.clone())));
        let cfg_store = cfg.store.clone();
        let result = Self::run_holding(cfg, shutdown, guard, vouch, &mut renewer).await;
        // Released after everything else has ended (the last segments are uploaded).
        stop_renewing.cancel();
        let Some(task) = renewer.task.take() else {
            return result;
        };
        match task.await {
            Ok(Ok(lease)) => {
                let last = *last_vouched.borrow();
                if let (Ok(()), Some(v)) = (&result, last) {
                    if let Err(e) = stopped::put(&cfg_store, v).await {
                        warn!(error = %e, "could not leave the last vouched point: the window of the stopped archive ends at its last write");
                    }
                }
                if let Err(e) = lease.release().await {
                    warn!(error = %e, "could not release the lease: the next archiver takes it once it expires");
                }
                result
            }
            // Why the lease was lost says more than a write it refused.
            Ok(Err(e)) if result.as_ref().is_err_and(ArchiveError::is_refused_write) => {
                Err(e.into())
            }
            Ok(Err(e)) => result.and(Err(e.into())),
            Err(e) => result.and(Err(ArchiveError::Archive(format!(
                "the lease renewal failed: {e}"
            )))),
        }
    }

    /// [`run`](Archiver::run) while the lease is held.
    async fn run_holding(
        cfg: ArchiveConfig,
        shutdown: CancellationToken,
        guard: LeaseGuard,
        vouch: watch::Sender<Option<Vouched>>,
        renewer: &mut Renewer,
    ) -> Result<(), ArchiveError> {
        let (pos, next_generation) = resume_point(&cfg.store).await?;
        // The delta of the resumed generation, from its branch records.
        let delta = match &pos {
            Some(p) => branch::list(&cfg.store)
                .await?
                .iter()
                .filter(|b| b.generation == p.generation.0 && b.shifted)
                .map(|b| b.delta)
                .max()
                .unwrap_or(0),
            None => 0,
        };
        match &pos {
            Some(p) => info!(
                generation = %p.generation, replid = %p.replid, offset = p.offset, db = p.db,
                "resuming the archive"
            ),
            None => info!(store = %cfg.store.url(), "empty archive: starting with a full sync"),
        }
        let (segmenter, tx, durable) = Segmenter::new(
            cfg.store.clone(),
            SegmenterConfig {
                flush_interval: cfg.flush_interval,
                segment_max_bytes: cfg.segment_max_bytes,
            },
        );
        let segmenter = segmenter.with_lease(guard.clone());
        // Every task the archiver starts, so that it returns only once they have all ended.
        let tasks = TaskTracker::new();
        let (durable, mut lost) = guard_base(cfg.store.clone(), durable, &tasks);
        let metrics = cfg.store.metrics_handle();
        metrics.link_down("connecting to the master");
        metrics
            .retention_seconds
            .set(cfg.retention.retain.map_or(0.0, |d| d.as_secs_f64()));
        // The durable point, as acknowledged, for the metrics.
        let mut watched = durable.clone();
        let durable_metrics = metrics.clone();
        tasks.spawn(async move {
            while watched.changed().await.is_ok() {
                let d = *watched.borrow_and_update();
                durable_metrics.durable(d.generation.0, d.offset);
            }
        });
        let mut seg_task = tasks.spawn(segmenter.run());
        // Compaction: a task of its own, never in the stream's way; stopped before the tasks
        // are awaited.
        let stop_compaction = CancellationToken::new();
        if !cfg.compaction.levels.is_off() || !cfg.retention.keeps_everything() {
            tasks.spawn(compact::run_beside_archiver(
                cfg.store.clone(),
                cfg.compaction.clone(),
                cfg.retention,
                guard.clone(),
                stop_compaction.clone(),
            ));
        }
        if let Some(p) = pos {
            let _ = tx.send(Msg::Start(p));
        }
        let budget = Arc::new(Semaphore::new(cfg.max_buffer.min(Semaphore::MAX_PERMITS)));
        {
            // Read at scrape time: the bytes held against the budget, and the lease (invalid
            // once released, after the run).
            let budget = budget.clone();
            let max = cfg.max_buffer.min(Semaphore::MAX_PERMITS);
            let lease = guard.clone();
            metrics.set_sampler(move |m| {
                let held = max.saturating_sub(budget.available_permits());
                m.buffered_bytes.set(held as i64);
                m.lease_held.set(i64::from(lease.is_valid()));
            });
        }
        // Scheduled and requested snapshots, on links of their own; stopped with the sessions.
        let (attached, attached_rx) = watch::channel(None);
        let stop_snapshots = shutdown.child_token();
        tasks.spawn(
            Scheduler {
                store: cfg.store.clone(),
                source: cfg.source.clone(),
                announce_port: cfg.announce_port,
                read_timeout: cfg.read_timeout,
                lease: guard.clone(),
                attached: attached_rx,
                schedule: Schedule::new(cfg.snapshot_interval),
            }
            .run(stop_snapshots.clone()),
        );
        let mut me = Archiver {
            cfg,
            pos,
            delta,
            next_generation,
            tx,
            durable,
            budget,
            established: false,
            force_full_sync: false,
            lease: guard,
            vouch,
            attached,
        };
        let mut backoff = retry_backoff();
        // Whether `seg_task` has been awaited to its end already (a task is awaited once).
        let mut segmenter_ended = false;
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            me.established = false;
            let outcome = tokio::select! {
                r = me.session(&shutdown) => r,
                g = base_lost(&mut lost) => {
                    // Never continue a generation without a base: a full sync starts the next.
                    me.pos = None;
                    Err(StoreError::BaseLost { generation: g.to_string() }.into())
                }
                e = renewer.ended() => {
                    error!(error = %e, "the archive's lease is lost: stopping");
                    break Err(e.into());
                }
                r = &mut seg_task => {
                    segmenter_ended = true;
                    break match r {
                        Ok(Ok(())) => Err(ArchiveError::Archive("the segmenter stopped".into())),
                        Ok(Err(e)) => Err(e.into()),
                        Err(e) => Err(ArchiveError::Archive(format!("the segmenter failed: {e}"))),
                    };
                }
            };
            match outcome {
                Ok(SessionEnd::Shutdown) => break Ok(()),
                Err(e) if e.is_fatal() => break Err(e),
                Err(e) => {
                    me.attached.send_replace(None);
                    metrics.reconnect(reconnect_cause(&e));
                    metrics.link_down(e.to_string());
                    if me.established {
                        backoff = retry_backoff();
                    }
                    let delay = backoff.next().unwrap_or(MAX_RETRY_DELAY);
                    let retry_in_ms = delay.as_millis() as u64;
                    let store_failed = log_session_error(&e, retry_in_ms);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                        e = renewer.ended() => break Err(e.into()),
                    }
                    if store_failed {
                        // No new full sync (a fork on the master) while the store is down.
                        tokio::select! {
                            _ = wait_for_store(&me.cfg.store, &mut backoff, &shutdown) => {}
                            e = renewer.ended() => break Err(e.into()),
                        }
                    }
                }
            }
        };
        stop_snapshots.cancel();
        metrics.link_down(match &result {
            Ok(()) => "stopping".to_string(),
            Err(e) => format!("stopping: {e}"),
        });
        if segmenter_ended {
            // The segmenter is gone and `result` says why; nothing is left to flush.
            drop(me);
            drop(lost);
            stop_compaction.cancel();
            tasks.close();
            tasks.wait().await;
            return result;
        }
        // Flush what was received. A session that ended by shutdown has done this already;
        // doing it again is cheap.
        let (reply, done) = oneshot::channel();
        if me.tx.send(Msg::Finish(reply)).is_ok() {
            if let Ok(d) = done.await {
                info!(generation = %d.generation, offset = d.offset, "archive flushed");
            }
        }
        drop(me);
        drop(lost);
        let result = match seg_task.await {
            Ok(Err(e)) if result.is_ok() => Err(e.into()),
            _ => result,
        };
        // The segmenter has ended, so the base guard's input is closed and it ends too.
        stop_compaction.cancel();
        tasks.close();
        tasks.wait().await;
        result
    }

    /// One connection: handshake, PSYNC, the snapshot if any, then the stream until the link
    /// fails or shutdown is requested.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<SessionEnd, ArchiveError> {
        let source = self.cfg.source.clone();
        let read_timeout = self.cfg.read_timeout;
        let announce_port = self.cfg.announce_port;
        // In the master's offsets: the archive's less the generation's delta (see
        // `archive::branch`).
        let delta = self.delta;
        let resume = match self.force_full_sync {
            true => None,
            false => self.pos.map(|p| (p.replid, p.offset.saturating_sub(delta))),
        };
        let follow = self.cfg.follow;
        let attach = async {
            // Where the master is now, and how the archive continues there.
            let found = follow::find(&source, resume, follow, CONNECT_TIMEOUT).await?;
            let decision = found.standing.as_ref().map(|s| s.resume(resume));
            let mut conn = Connection::connect(&found.source, CONNECT_TIMEOUT).await?;
            conn.read_timeout = read_timeout;
            conn.handshake(&found.source, announce_port).await?;
            Ok::<_, LinkError>((conn, decision))
        };
        let (mut conn, decision) = tokio::select! {
            r = attach => r?,
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        };
        // A failover that left the archive past the new master's history: a branch.
        let mut branch = None;
        let mut psync_from = resume;
        if let (Some(Resume::Branch { at, archived_end }), Some(p), Some(_)) =
            (decision, self.pos, resume)
        {
            let b = self
                .examine_branch(p, at, archived_end, conn.addr())
                .await?;
            psync_from = b.shifted.then_some((p.replid, at));
            if b.shifted {
                // Written before the PSYNC: a restart after it must know the delta.
                self.lease.check(&"a branch record")?;
                branch::put(&self.cfg.store, &b).await?;
            }
            branch = Some(b);
        }
        let reply = tokio::select! {
            r = conn.psync(psync_from) => r?,
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        };
        let mut floor = None;
        match reply {
            Psync::FullResync { replid, offset } => {
                let generation = self.next_generation;
                match self.pos {
                    Some(p) if self.force_full_sync => warn!(
                        previous_generation = %p.generation, previous_offset = p.offset,
                        %generation, %replid, offset,
                        "full sync after the refused command: new generation; the archive has a gap"
                    ),
                    Some(p) => {
                        if let Some(mut b) = branch.take().filter(|b| !b.shifted) {
                            b.new_replid = replid.to_string();
                            b.continued_in = generation.0;
                            error!(
                                generation = %p.generation, archive_at = b.archive_at, lost_bytes = b.lost_bytes(),
                                lost_commands = ?b.lost_commands, lost_data_commands = ?b.lost_data_commands,
                                new_master = %b.new_master, continued_in = %generation,
                                "the failover lost writes: the archive holds commands past the promoted replica's history; they stay restorable for moments before the failover, and the archive goes on in a new generation from a full sync"
                            );
                            self.lease.check(&"a branch record")?;
                            branch::put(&self.cfg.store, &b).await?;
                        } else {
                            warn!(
                                previous_generation = %p.generation, previous_offset = p.offset,
                                %generation, %replid, offset,
                                "the master refused to continue: full resync, new generation; the archive has a gap"
                            )
                        }
                    }
                    None => info!(%generation, %replid, offset, "full sync: new generation"),
                }
                if self.pos.is_some() {
                    self.cfg.store.metrics().reconnect(Cause::FullResync);
                }
                self.cfg.store.metrics().link_down(format!(
                    "receiving the full sync snapshot from {}",
                    conn.addr()
                ));
                let time_ms = now_ms();
                if self
                    .snapshot(&mut conn, generation, replid, offset, time_ms, shutdown)
                    .await?
                    .is_none()
                {
                    return Ok(SessionEnd::Shutdown);
                }
                self.next_generation = generation
                    .next()
                    .map_err(|e| ArchiveError::Archive(e.to_string()))?;
                self.force_full_sync = false;
                self.established = true;
                self.delta = 0;
                let p = Position {
                    generation,
                    replid,
                    offset,
                    db: 0,
                    sum: format::stream_seed(generation),
                };
                let _ = self.tx.send(Msg::Start(p));
                self.pos = Some(p);
                self.attached.send_replace(Some(Attached {
                    generation,
                    replid,
                    delta: 0,
                }));
                floor = Some(offset);
                conn.ack(offset).await?;
            }
            Psync::Continue { replid } => {
                let Some(p) = self.pos.as_mut().filter(|_| resume.is_some()) else {
                    return Err(ArchiveError::UnexpectedContinue {
                        addr: conn.addr().to_string(),
                    });
                };
                self.established = true;
                if let Some(b) = branch.take().filter(|b| b.shifted) {
                    warn!(
                        generation = %p.generation, archive_at = b.archive_at, lost_bytes = b.lost_bytes(),
                        lost_commands = ?b.lost_commands, delta = b.delta, new_master = %b.new_master,
                        "the failover left no-op commands of the old master past the promotion (a branch that changes no data): same generation, its offsets now the master's plus the delta"
                    );
                    self.delta = b.delta;
                }
                if let Some(id) = replid.filter(|id| *id != p.replid) {
                    info!(generation = %p.generation, old = %p.replid, new = %id, offset = p.offset,
                        "partial resync under a new replication id (failover): same generation");
                    p.replid = id;
                    let _ = self.tx.send(Msg::Start(*p));
                } else {
                    info!(generation = %p.generation, offset = p.offset, "partial resync: continuing");
                }
                self.attached.send_replace(Some(Attached {
                    generation: p.generation,
                    replid: p.replid,
                    delta: self.delta,
                }));
            }
        }
        self.stream(&mut conn, floor, shutdown).await
    }

    /// What a failover to `new_master` left past its history: the archive at `p` holds the
    /// master offsets `[at, archived_end)` the new master never had. The received bytes are
    /// made durable and read back, so that the record says what they were: only no-ops, and
    /// the generation goes on from `at` (`shifted`), or writes, and a full sync starts the
    /// next one. A range that cannot be read counts as writes.
    async fn examine_branch(
        &self,
        p: Position,
        at: u64,
        archived_end: u64,
        new_master: &str,
    ) -> Result<Branch, ArchiveError> {
        let archive_at = at + self.delta;
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Finish(reply)).is_ok() {
            let _ = done.await;
        }
        let counted = tokio::time::timeout(
            Duration::from_secs(60),
            branch::count_commands(&self.cfg.store, p.generation.0, archive_at, p.offset),
        )
        .await
        .unwrap_or_else(|_| Err("reading the lost range took more than 60 s".into()));
        let (lost_commands, lost_data_commands) = match counted {
            Ok((all, data)) => (Some(all), Some(data)),
            Err(e) => {
                warn!(generation = %p.generation, archive_at, end = p.offset, error = %e,
                    "cannot read what the failover lost: taken as writes");
                (None, None)
            }
        };
        let shifted = lost_data_commands == Some(0);
        let lost = archived_end.saturating_sub(at);
        Ok(Branch {
            generation: p.generation.0,
            at,
            archived_end,
            replid: p.replid.to_string(),
            new_replid: String::new(),
            new_master: new_master.to_string(),
            found_ms: now_ms(),
            continued_in: p.generation.0,
            shifted,
            archive_at,
            delta: if shifted { self.delta + lost } else { 0 },
            lost_commands,
            lost_data_commands,
        })
    }

    /// Receives the full-sync payload into the generation's base snapshot. Returns its
    /// checksum, or `None` when shutdown was requested before it was complete (the upload is
    /// then aborted: nothing of it is visible).
    async fn snapshot(
        &mut self,
        conn: &mut Connection,
        generation: GenerationId,
        replid: crate::archive::names::ReplId,
        offset: u64,
        time_ms: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<u64>, ArchiveError> {
        let header = SnapshotHeader {
            generation,
            offset,
            time_ms,
            replid,
            taken: Some(format::Taken::Base),
        };
        let received = receive_snapshot(
            conn,
            &self.cfg.store,
            &self.lease,
            &header,
            self.cfg.read_timeout,
            &|| Ok(()),
            shutdown,
        )
        .await?;
        match received {
            Received::Stored { done, secs } => {
                info!(
                    %generation, object = %snapshot_name(&header), bytes = done.raw_len, stored = done.stored,
                    seconds = format!("{secs:.2}"),
                    mb_per_s = format!("{:.1}", done.raw_len as f64 / 1e6 / secs.max(1e-6)),
                    "snapshot durable"
                );
                Ok(Some(done.checksum))
            }
            Received::Shutdown { received } => {
                info!(%generation, offset, received,
                    "shutdown during the full sync: snapshot abandoned (its upload aborted, nothing of it stored)");
                Ok(None)
            }
            Received::Discarded { why } => Err(ArchiveError::Archive(why)),
        }
    }

    /// The stream: read, frame whole commands, stamp them, hand them to the segmenter within
    /// the byte budget, and ACK the durable offset after every flush, on GETACK and every
    /// second.
    async fn stream(
        &mut self,
        conn: &mut Connection,
        floor: Option<u64>,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, ArchiveError> {
        let mut pos = self.pos.expect("a position after PSYNC");
        let generation = pos.generation;
        let metrics = self.cfg.store.metrics_handle();
        metrics.stream_at(generation.0, pos.offset);
        metrics.link_attached();
        let mut scanner = CommandScanner::new(pos.db);
        let mut durable = self.durable.clone();
        let ack_value = |d: &Durable| -> u64 {
            let f = floor.unwrap_or(0);
            if d.generation == generation {
                d.offset.max(f)
            } else {
                f
            }
        };
        let mut ack_tick = tokio::time::interval(Duration::from_secs(1));
        ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Sentinel or the cluster saying the master moved: the link lets go at once.
        let locate = self.cfg.source.locate.clone();
        let mut moved = locate.as_ref().and_then(|l| l.moved());
        if let Some(m) = moved.as_mut() {
            m.borrow_and_update();
        }
        // Bytes that came with the snapshot (a `$len` payload is followed by the stream at once).
        let (mut pending, mut early_error) = take_commands(&mut scanner, conn, &mut pos, &metrics);
        self.pos = Some(pos);
        let mut last_acked = 0u64;
        let mut paused = false;
        let result: Result<SessionEnd, ArchiveError> = loop {
            if let Some(e) = early_error.take() {
                break Err(e.into());
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let (reply, done) = oneshot::channel();
                    if let Some(c) = pending.take() {
                        let _ = self.tx.send(Msg::Chunk(c));
                    }
                    let _ = self.tx.send(Msg::Finish(reply));
                    if let Ok(d) = done.await {
                        self.vouch_if_idle(&d, &pos, conn.buffer().is_empty());
                        let _ = conn.ack(ack_value(&d).saturating_sub(self.delta)).await;
                        info!(generation = %d.generation, offset = d.offset, "flushed and acknowledged; stopping");
                    }
                    break Ok(SessionEnd::Shutdown);
                }
                r = async { moved.as_mut().expect("guarded").changed().await }, if moved.is_some() => {
                    if r.is_err() {
                        moved = None;
                        continue;
                    }
                    break Err(LinkError::Moved {
                        addr: conn.addr().to_string(),
                        what: locate.as_ref().map(|l| l.describe()).unwrap_or_default(),
                    }
                    .into());
                }
                r = durable.changed() => {
                    if r.is_ok() {
                        let d = *durable.borrow_and_update();
                        self.vouch_if_idle(&d, &pos, pending.is_none() && conn.buffer().is_empty());
                        let v = ack_value(&d);
                        if v != last_acked {
                            if let Err(e) = conn.ack(v.saturating_sub(self.delta)).await {
                                break Err(e.into());
                            }
                            last_acked = v;
                        }
                    }
                }
                _ = ack_tick.tick() => {
                    let d = *durable.borrow();
                    self.vouch_if_idle(&d, &pos, pending.is_none() && conn.buffer().is_empty());
                    let v = ack_value(&d);
                    if let Err(e) = conn.ack(v.saturating_sub(self.delta)).await {
                        break Err(e.into());
                    }
                    last_acked = v;
                }
                permit = self.budget.clone().acquire_many_owned(
                    pending.as_ref().map_or(0, |c| budget_permits(c.bytes.len(), self.cfg.max_buffer))
                ), if pending.is_some() => {
                    let mut c = pending.take().expect("guarded");
                    c.permit = Some(permit.expect("the budget is never closed"));
                    let _ = self.tx.send(Msg::Chunk(c));
                    // Not reading while the chunk waited for budget is not silence of the master.
                    conn.restart_read_clock();
                }
                r = conn.read_more("streaming"), if pending.is_none() => {
                    if let Err(e) = r {
                        break Err(e.into());
                    }
                    let (chunk, error) = take_commands(&mut scanner, conn, &mut pos, &metrics);
                    if let Some(c) = &chunk {
                        let need = budget_permits(c.bytes.len(), self.cfg.max_buffer) as usize;
                        let waiting = self.cfg.max_buffer - self.budget.available_permits();
                        if !paused && self.budget.available_permits() < need {
                            paused = true;
                            warn!(not_durable = waiting, max_buffer = self.cfg.max_buffer,
                                "buffer full: pausing reads from the master until the store catches up");
                        } else if paused && self.budget.available_permits() >= need {
                            paused = false;
                            info!("the store caught up: reading from the master again");
                        }
                    }
                    pending = chunk;
                    self.pos = Some(pos);
                    if let Some(e) = error {
                        break Err(e.into());
                    }
                    // A command that alone exceeds the budget would have to be held whole in
                    // the read buffer: refuse it as soon as its size is known.
                    let need = scanner.pending_len();
                    if need > self.cfg.max_buffer as u64 {
                        self.force_full_sync = true;
                        break Err(ArchiveError::CommandTooLarge {
                            addr: conn.addr().to_string(),
                            offset: pos.offset,
                            bytes: need,
                            max_buffer: self.cfg.max_buffer,
                        });
                    }
                }
            }
        };
        // Whole commands received before the link failed are archived all the same (the
        // resume asks for the byte after them), even beyond the budget: it is one read.
        if let Some(c) = pending.take() {
            let _ = self.tx.send(Msg::Chunk(c));
        }
        result
    }
}

impl Archiver {
    /// Vouches, for the lease's next renewal, that the master had nothing beyond the durable
    /// offset now: when everything received (`pos`) is durable and nothing more waits on the
    /// link (`idle`: no chunk held back, no part of a command in the read buffer). Otherwise
    /// the previous vouched point stays.
    fn vouch_if_idle(&self, durable: &Durable, pos: &Position, idle: bool) {
        if idle && durable.generation == pos.generation && durable.offset == pos.offset {
            self.vouch.send_replace(Some(Vouched {
                generation: durable.generation.0,
                offset: durable.offset,
                ms: now_ms(),
            }));
        }
    }
}

/// The task that keeps the lease renewed; awaited once, by whoever sees it end first.
struct Renewer {
    task: Option<tokio::task::JoinHandle<Result<Lease, LeaseError>>>,
    /// The lease object, for messages.
    object: String,
}

impl Renewer {
    /// Resolves when the renewal ended with an error (lost, or not renewed in time); never
    /// otherwise.
    async fn ended(&mut self) -> LeaseError {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let r = task.await;
        self.task = None;
        match r {
            Ok(Err(e)) => e,
            // Stopped (which only happens once the archiver is done), or the task failed:
            // nothing renews the lease any more.
            Ok(Ok(_)) => LeaseError::NotHeld {
                object: self.object.clone(),
                writing: "anything more: its renewal stopped".into(),
            },
            Err(e) => LeaseError::NotHeld {
                object: self.object.clone(),
                writing: format!("anything more: its renewal failed ({e})"),
            },
        }
    }
}

/// The `cause` label of `pitr_link_reconnects_total` for why a session ended.
fn reconnect_cause(e: &ArchiveError) -> Cause {
    use std::io::ErrorKind as K;
    match e {
        ArchiveError::Link(l) => match l {
            LinkError::Timeout { .. } => Cause::Timeout,
            LinkError::Closed { .. } => Cause::Closed,
            LinkError::Connect { source, .. } | LinkError::Io { source, .. } => {
                match source.kind() {
                    K::ConnectionRefused => Cause::Refused,
                    K::TimedOut => Cause::Timeout,
                    K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof => Cause::Closed,
                    _ => Cause::Other,
                }
            }
            LinkError::Refused { .. }
            | LinkError::Auth { .. }
            | LinkError::NotReady { .. }
            | LinkError::Locate { .. }
            | LinkError::LocateDenied { .. } => Cause::Refused,
            LinkError::Protocol { .. } => Cause::Protocol,
            LinkError::Moved { .. } => Cause::Failover,
        },
        ArchiveError::Stream(_)
        | ArchiveError::BadSnapshot { .. }
        | ArchiveError::UnexpectedContinue { .. } => Cause::Protocol,
        ArchiveError::Store(_) | ArchiveError::SnapshotUpload { .. } => Cause::Store,
        _ => Cause::Other,
    }
}

/// Logs why a session ended and that the archiver reconnects. Returns whether the store
/// failed (then the archiver waits for it before asking the master for anything).
fn log_session_error(e: &ArchiveError, retry_in_ms: u64) -> bool {
    let error = e.to_string();
    match e {
        ArchiveError::SnapshotUpload {
            object, received, ..
        } => {
            warn!(%error, %object, received, retry_in_ms,
                "store error during the full sync, past the retries of the failed part: the snapshot cannot be completed, because the master sends its RDB only once; its upload is abandoned (nothing of it is visible) and a new full sync follows once the store answers");
            true
        }
        ArchiveError::Store(_) => {
            warn!(%error, retry_in_ms, "store error; reconnecting to the master once the store answers");
            true
        }
        ArchiveError::CommandTooLarge { .. } => {
            error!(%error, retry_in_ms,
                "refusing the command: holding it would exceed the memory bound; the archive has a gap from here and a new generation starts with a full sync (raise --max-buffer above the largest command to archive such commands)");
            false
        }
        _ => {
            warn!(%error, retry_in_ms, "link to the master lost; reconnecting");
            false
        }
    }
}

/// Waits until the store answers a listing (or shutdown is requested), with backoff.
async fn wait_for_store(
    store: &Store,
    backoff: &mut ExponentialBackoff,
    shutdown: &CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Err(e) = store.list().await else {
            return;
        };
        let delay = backoff.next().unwrap_or(MAX_RETRY_DELAY);
        warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
            "the store does not answer; waiting for it before asking the master for a full sync");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// Starts the upload of a snapshot, retrying store errors with backoff for up to `patience`:
/// meanwhile the payload waits in the socket, so nothing is lost. A name that is taken is a
/// conflict, returned at once. `Ok(None)`: shutdown was requested.
///
/// A part of the upload that fails later is sent again for up to `patience` too (by the
/// upload itself): meanwhile the master's bytes queue in the socket and in the master's output
/// buffer for the archiver, which the master bounds (`client-output-buffer-limit replica`).
async fn start_snapshot_upload(
    store: &Store,
    name: &ObjectName,
    header: &SnapshotHeader,
    patience: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<SnapshotUpload>, ArchiveError> {
    let started = tokio::time::Instant::now();
    let mut backoff = retry_backoff();
    let mut attempts = 0u32;
    loop {
        match store.snapshot_upload(name, header, patience).await {
            Ok(upload) => {
                if attempts > 0 {
                    info!(object = %name, attempts = attempts + 1, "snapshot upload started after retries");
                }
                return Ok(Some(upload));
            }
            Err(e @ StoreError::Conflict { .. }) => return Err(e.into()),
            Err(e) => {
                attempts += 1;
                let delay = backoff.next().unwrap_or(MAX_RETRY_DELAY);
                if started.elapsed() + delay > patience {
                    warn!(object = %name, attempts, error = %e,
                        "store error starting the snapshot upload; giving up on this full sync");
                    return Err(e.into());
                }
                warn!(object = %name, attempt = attempts, retry_in_ms = delay.as_millis() as u64, error = %e,
                    "store error starting the snapshot upload; the payload waits on the link, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
            }
        }
    }
}

/// Writes one piece of the RDB into the snapshot's upload. `Ok(false)`: shutdown was requested
/// while the store held the piece back (backpressure).
async fn put_piece(
    upload: &mut SnapshotUpload,
    name: &ObjectName,
    piece: &[u8],
    shutdown: &CancellationToken,
) -> Result<bool, ArchiveError> {
    let received = upload.raw_len() + piece.len() as u64;
    tokio::select! {
        r = upload.write(piece) => r.map(|()| true).map_err(|source| ArchiveError::SnapshotUpload {
            object: name.to_string(),
            received,
            source,
        }),
        _ = shutdown.cancelled() => Ok(false),
    }
}

/// The name of the version 2 snapshot object that `header` heads.
pub(crate) fn snapshot_name(header: &SnapshotHeader) -> ObjectName {
    ObjectName::snapshot(
        header.generation,
        header.offset,
        header.time_ms,
        header.replid,
    )
    .v2(0)
}

/// What became of a full sync's RDB streamed by [`receive_snapshot`].
pub(crate) enum Received {
    /// Complete, checked and visible; `secs` since its upload started.
    Stored { done: SnapshotDone, secs: f64 },
    /// Shutdown was requested after `received` bytes: the upload is aborted, nothing visible.
    Shutdown { received: u64 },
    /// Complete, but `keep` refused it (`why`): the upload is aborted, nothing visible.
    Discarded { why: String },
}

/// Streams the RDB payload that follows `+FULLRESYNC` on `conn` (its `$<len>` or `$EOF:<mark>`
/// framing read here) into the store as the snapshot `header` describes: a multipart upload,
/// each part retried for up to `patience`, so that memory stays at the upload's parts. Checks
/// that the RDB is whole, then asks `keep` whether it is still wanted, waits for a valid lease,
/// and only then completes the upload. Every failure aborts the upload. Reads nothing past the
/// RDB's end: after an `$EOF:` mark the master sends nothing until an ACK, after a `$<len>`
/// payload the stream's first bytes stay in `conn`'s buffer.
pub(crate) async fn receive_snapshot(
    conn: &mut Connection,
    store: &Store,
    lease: &LeaseGuard,
    header: &SnapshotHeader,
    patience: Duration,
    keep: &(dyn Fn() -> Result<(), String> + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<Received, ArchiveError> {
    let payload = tokio::select! {
        r = conn.payload_header() => r?,
        _ = shutdown.cancelled() => return Ok(Received::Shutdown { received: 0 }),
    };
    let name = snapshot_name(header);
    let started = Instant::now();
    let Some(mut upload) = start_snapshot_upload(store, &name, header, patience, shutdown).await?
    else {
        return Ok(Received::Shutdown { received: 0 });
    };
    // The payload waited in the socket while the upload started.
    conn.restart_read_clock();
    let mut check = RdbCheck::default();
    let addr = conn.addr().to_string();
    // `Ok(false)`: shutdown was requested before the payload was complete.
    let received: Result<bool, ArchiveError> = async {
        match payload {
            Payload::Len(len) => {
                let mut left = len;
                while left > 0 {
                    if conn.buffer().is_empty() {
                        tokio::select! {
                            r = conn.read_more("receiving the snapshot") => { r?; }
                            _ = shutdown.cancelled() => return Ok(false),
                        }
                    }
                    let take = (conn.buffer().len() as u64).min(left) as usize;
                    let piece = conn.buffer().split_to(take);
                    check.update(&piece);
                    if !put_piece(&mut upload, &name, &piece, shutdown).await? {
                        return Ok(false);
                    }
                    conn.restart_read_clock();
                    left -= take as u64;
                }
            }
            Payload::Eof(mark) => loop {
                match eof_step(conn.buffer(), &mark) {
                    EofStep::Done(n) => {
                        let piece = conn.buffer().split_to(n);
                        check.update(&piece);
                        if !put_piece(&mut upload, &name, &piece, shutdown).await? {
                            return Ok(false);
                        }
                        conn.buffer().advance(40);
                        break;
                    }
                    EofStep::Forward(n) => {
                        if n > 0 {
                            let piece = conn.buffer().split_to(n);
                            check.update(&piece);
                            if !put_piece(&mut upload, &name, &piece, shutdown).await? {
                                return Ok(false);
                            }
                            conn.restart_read_clock();
                        }
                        tokio::select! {
                            r = conn.read_more("receiving the snapshot") => { r?; }
                            _ = shutdown.cancelled() => return Ok(false),
                        }
                    }
                }
            },
        }
        check
            .finish()
            .map(|()| true)
            .map_err(|what| ArchiveError::BadSnapshot {
                addr: addr.clone(),
                what,
            })
    }
    .await;
    match received {
        Ok(true) => {}
        Ok(false) => {
            let received = upload.raw_len();
            upload.abort().await;
            return Ok(Received::Shutdown { received });
        }
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    }
    if let Err(why) = keep() {
        upload.abort().await;
        return Ok(Received::Discarded { why });
    }
    // Not completed (made visible) while the lease is lapsed, nor once it is gone.
    let writing = format!("snapshot {name}");
    let valid = tokio::select! {
        r = lease.wait_valid(&writing) => r,
        _ = shutdown.cancelled() => {
            let received = upload.raw_len();
            upload.abort().await;
            return Ok(Received::Shutdown { received });
        }
    };
    if let Err(e) = valid {
        upload.abort().await;
        return Err(e.into());
    }
    let done = finish_snapshot(upload, &name).await?;
    let metrics = store.metrics();
    metrics.uploaded(Upload::Snapshot, done.stored, started.elapsed());
    metrics.snapshot_at(header.time_ms);
    Ok(Received::Stored {
        done,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Completes the snapshot's upload: the object becomes visible, whole.
async fn finish_snapshot(
    upload: SnapshotUpload,
    name: &ObjectName,
) -> Result<SnapshotDone, ArchiveError> {
    let received = upload.raw_len();
    upload
        .finish()
        .await
        .map_err(|source| ArchiveError::SnapshotUpload {
            object: name.to_string(),
            received,
            source,
        })
}

/// Takes the whole commands at the front of the link's buffer as one chunk, stamped now, and
/// the error that follows them if the bytes after them are not a command.
fn take_commands(
    scanner: &mut CommandScanner,
    conn: &mut Connection,
    pos: &mut Position,
    metrics: &crate::metrics::Metrics,
) -> (Option<Chunk>, Option<StreamError>) {
    let s = scanner.scan(conn.buffer(), pos.offset);
    let chunk = (s.consumed > 0).then(|| {
        let bytes = conn.buffer().split_to(s.consumed).freeze();
        pos.offset += s.consumed as u64;
        pos.db = scanner.db();
        let ms = now_ms();
        metrics.received(pos.generation.0, pos.offset, ms);
        Chunk {
            bytes,
            end: pos.offset,
            ms,
            db_after: pos.db,
            getack: s.getack,
            permit: None,
        }
    });
    (chunk, s.error)
}

fn budget_permits(len: usize, max: usize) -> u32 {
    len.clamp(1, max.clamp(1, Semaphore::MAX_PERMITS))
        .min(u32::MAX as usize) as u32
}

/// Checks, as the snapshot streams past, that it is a complete RDB: the magic, the EOF opcode
/// and the CRC64 trailer (skipped when the master wrote 0, `rdbchecksum no`).
struct RdbCheck {
    crc: u64,
    head: Vec<u8>,
    /// The last 9 bytes seen (EOF opcode + checksum), not yet fed to the digest.
    tail: Vec<u8>,
    /// The last byte fed to the digest: the EOF opcode once the file is complete.
    last_fed: u8,
    len: u64,
}

impl Default for RdbCheck {
    fn default() -> Self {
        RdbCheck {
            crc: 0,
            head: Vec::with_capacity(9),
            tail: Vec::with_capacity(32),
            last_fed: 0,
            len: 0,
        }
    }
}

impl RdbCheck {
    fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        if self.head.len() < 9 {
            let n = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        // Everything but the last 8 bytes seen goes to the CRC; only those 8 are kept.
        let total = self.tail.len() + data.len();
        if total <= 8 {
            self.tail.extend_from_slice(data);
            return;
        }
        let feed = total - 8;
        let from_tail = feed.min(self.tail.len());
        if from_tail > 0 {
            self.crc = crate::rdb::crc64(self.crc, &self.tail[..from_tail]);
            self.last_fed = self.tail[from_tail - 1];
        }
        let from_data = feed - from_tail;
        if from_data > 0 {
            self.crc = crate::rdb::crc64(self.crc, &data[..from_data]);
            self.last_fed = data[from_data - 1];
        }
        self.tail.drain(..from_tail);
        self.tail.extend_from_slice(&data[from_data..]);
    }

    fn finish(self) -> Result<(), String> {
        let version = match &self.head[..] {
            h if h.len() == 9 && h.starts_with(b"REDIS") => std::str::from_utf8(&h[5..])
                .ok()
                .and_then(|v| v.parse::<u32>().ok()),
            h if h.len() == 9 && h.starts_with(b"VALKEY") => std::str::from_utf8(&h[6..])
                .ok()
                .and_then(|v| v.parse::<u32>().ok()),
            _ => None,
        };
        let Some(version) = version else {
            return Err(format!(
                "no RDB magic at the start ({:?})",
                String::from_utf8_lossy(&self.head)
            ));
        };
        if version < 5 {
            // No checksum before RDB 5: the last byte is the EOF opcode.
            return if self.tail.last() == Some(&0xff) {
                Ok(())
            } else {
                Err(format!(
                    "no EOF opcode at byte {}",
                    self.len.saturating_sub(1)
                ))
            };
        }
        if self.len < 18 || self.tail.len() != 8 {
            return Err(format!("only {} bytes", self.len));
        }
        if self.last_fed != 0xff {
            return Err(format!(
                "no EOF opcode before the checksum at byte {} (truncated)",
                self.len - 9
            ));
        }
        let stored = u64::from_le_bytes(self.tail[..8].try_into().expect("8 bytes"));
        let computed = self.crc;
        if stored != 0 && stored != computed {
            return Err(format!(
                "CRC64 mismatch: trailer says {stored:016x}, content gives {computed:016x} (truncated or corrupt)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintain::verify::test_objects::{segment, snapshot};
    use object_store::ObjectStoreExt;

    fn memory() -> Store {
        Store::open("memory://", &"a".parse().unwrap()).unwrap()
    }

    async fn put_raw(store: &Store, name: &str, bytes: &'static [u8]) {
        let name: ObjectName = name.parse().unwrap();
        store
            .put_new(&name, bytes::Bytes::from_static(bytes))
            .await
            .unwrap();
    }

    const REPLID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[tokio::test(flavor = "multi_thread")]
    async fn resume_continues_only_a_checked_chain() {
        let store = memory();
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(1)));
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        let (p, _) = resume_point(&store).await.unwrap();
        assert_eq!(p.map(|p| (p.offset, p.sum)), Some((0, c)));
        let (_, c) = segment(&store, 1, 0, 2, 1100, c).await;
        let (p, next) = resume_point(&store).await.unwrap();
        let p = p.unwrap();
        assert_eq!((p.generation, p.offset, p.sum), (GenerationId(1), 28, c));
        assert_eq!(next, GenerationId(2));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_corrupt_newest_segment_starts_a_new_generation() {
        let store = memory();
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        let (_, c) = segment(&store, 1, 0, 1, 1100, c).await;
        let (name, _) = segment(&store, 1, 14, 1, 1200, c).await;
        let mut bytes = store.get(&name).await.unwrap().to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        store
            .backend()
            .put(&store.path(&name), bytes::Bytes::from(bytes).into())
            .await
            .unwrap();
        // Not an error: no resume from it, a new generation after it.
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(2)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_generation_without_its_base_is_not_resumed() {
        let store = memory();
        let (snap, c) = snapshot(&store, 1, 0, 1000).await;
        segment(&store, 1, 0, 1, 1100, c).await;
        store.backend().delete(&store.path(&snap)).await.unwrap();
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(2)));
        // A fork (two snapshots) is not resumed either.
        let store = memory();
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        snapshot(&store, 1, 0, 1001).await;
        segment(&store, 1, 0, 1, 1100, c).await;
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(2)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stray_objects_are_never_resumed_from_by_name() {
        // A good generation 1, and garbage named like a snapshot of generation 7.
        let store = memory();
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        segment(&store, 1, 0, 1, 1100, c).await;
        let garbage: &[u8] = b"not an archive object at all, but long enough to hold a trailer";
        put_raw(
            &store,
            &format!("0000000007/00000000000000000000-00000000000000000000-0000000001000-0000000001000-{REPLID}.snapshot"),
            garbage,
        )
        .await;
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(8)));
        // A segment copied under another generation's name: its header disagrees.
        let store = memory();
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        let (seg, _) = segment(&store, 1, 0, 1, 1100, c).await;
        let bytes = store.get(&seg).await.unwrap();
        let mut copy = seg;
        copy.generation = GenerationId(1);
        copy.start = 14;
        copy.end = 28;
        store.put_new(&copy, bytes).await.unwrap();
        assert_eq!(resume_point(&store).await.unwrap(), (None, GenerationId(2)));
        // The last generation id a name can hold: no generation can follow it, and that is a
        // clear error rather than objects every reader takes for foreign ones.
        let store = memory();
        put_raw(
            &store,
            &format!("9999999999/00000000000000000000-00000000000000000000-0000000001000-0000000001000-{REPLID}.snapshot"),
            garbage,
        )
        .await;
        let e = resume_point(&store).await.unwrap_err().to_string();
        assert!(e.contains("9999999999") && e.contains("last id"), "{e}");
    }

    /// Retention removes a base once a later snapshot replaces it: that one is the base then.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_base_pruned_after_a_later_snapshot_is_not_lost() {
        let store = memory();
        let (first, c) = snapshot(&store, 1, 0, 1000).await;
        segment(&store, 1, 0, 1, 1100, c).await;
        let (later, _) = snapshot(&store, 1, 14, 1200).await;
        store.delete(&first).await.unwrap();
        assert_eq!(
            check_base(&store, GenerationId(1), Some(first))
                .await
                .unwrap(),
            Some(later)
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_durable_point_waits_for_the_base_and_a_lost_base_is_reported() {
        let store = memory();
        let (snap, c) = snapshot(&store, 1, 0, 1000).await;
        let (_, c) = segment(&store, 1, 0, 1, 1100, c).await;
        let (tx, rx) = watch::channel(Durable::default());
        let tasks = TaskTracker::new();
        let (mut guarded, mut lost) = guard_base(store.clone(), rx, &tasks);
        let d1 = Durable {
            generation: GenerationId(1),
            offset: 14,
        };
        tx.send_replace(d1);
        let wait = Duration::from_secs(60);
        tokio::time::timeout(wait, guarded.wait_for(|d| *d == d1))
            .await
            .expect("the guarded point follows while the base exists")
            .unwrap();
        // The store is emptied; the archiver writes on.
        store.backend().delete(&store.path(&snap)).await.unwrap();
        segment(&store, 1, 14, 1, 1200, c).await;
        tx.send_replace(Durable {
            generation: GenerationId(1),
            offset: 28,
        });
        let g = tokio::time::timeout(wait, base_lost(&mut lost))
            .await
            .expect("the lost base is reported");
        assert_eq!(g, GenerationId(1));
        assert_eq!(*guarded.borrow_and_update(), d1, "offset 28 has no base");
        assert_eq!(
            check_base(&store, GenerationId(1), Some(snap))
                .await
                .unwrap(),
            None
        );
        // A new generation with a base moves the point again.
        snapshot(&store, 2, 28, 2000).await;
        let d2 = Durable {
            generation: GenerationId(2),
            offset: 28,
        };
        tx.send_replace(d2);
        tokio::time::timeout(wait, guarded.wait_for(|d| *d == d2))
            .await
            .expect("the new generation's point is passed on")
            .unwrap();
    }

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use object_store::memory::InMemory;
    use object_store::multipart::{MultipartStore, PartId};
    use object_store::path::Path;
    use object_store::{
        MultipartId, MultipartUpload, ObjectStore, PutMultipartOptions, PutPayload, PutResult,
        UploadPart,
    };

    use crate::archive::fault_store::{injected, FaultStore, Faults};
    use crate::archive::store::PART_SIZE;

    /// A store that fails on demand, through both its upload interfaces: the next
    /// `fail_starts` multipart uploads fail to start; while `fail_parts` is set every part
    /// fails; the `put_part` calls numbered in `fail_part_calls` (from 1) fail; while
    /// `fail_complete` is set completions fail.
    #[derive(Debug, Default)]
    struct Faulty {
        fail_starts: AtomicUsize,
        starts: AtomicUsize,
        fail_parts: Arc<AtomicBool>,
        fail_part_calls: Mutex<Vec<usize>>,
        fail_complete: AtomicBool,
        /// Every `put_part` call of the indexed interface: the part index, and whether it
        /// failed.
        part_calls: Mutex<Vec<(usize, bool)>>,
        aborts: AtomicUsize,
    }

    impl Faulty {
        /// Counts an upload start; whether it is to fail.
        fn start_fails(&self) -> bool {
            self.starts.fetch_add(1, Ordering::SeqCst);
            self.fail_starts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
    }

    #[derive(Debug)]
    struct FaultyUpload {
        inner: Box<dyn MultipartUpload>,
        fail_parts: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl MultipartUpload for FaultyUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            if self.fail_parts.load(Ordering::SeqCst) {
                return Box::pin(async { Err(injected()) });
            }
            self.inner.put_part(data)
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            self.inner.complete().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.inner.abort().await
        }
    }

    #[async_trait::async_trait]
    impl Faults for Faulty {
        async fn put_multipart_opts(
            &self,
            inner: &dyn ObjectStore,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            if self.start_fails() {
                return Err(injected());
            }
            let inner = inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(FaultyUpload {
                inner,
                fail_parts: self.fail_parts.clone(),
            }))
        }
        async fn create_multipart(
            &self,
            inner: &dyn MultipartStore,
            path: &Path,
        ) -> object_store::Result<MultipartId> {
            if self.start_fails() {
                return Err(injected());
            }
            inner.create_multipart(path).await
        }
        async fn put_part(
            &self,
            inner: &dyn MultipartStore,
            path: &Path,
            id: &MultipartId,
            part_idx: usize,
            data: PutPayload,
        ) -> object_store::Result<PartId> {
            let fail = {
                let mut calls = self.part_calls.lock().unwrap();
                let n = calls.len() + 1;
                let fail = self.fail_parts.load(Ordering::SeqCst)
                    || self.fail_part_calls.lock().unwrap().contains(&n);
                calls.push((part_idx, fail));
                fail
            };
            if fail {
                return Err(injected());
            }
            inner.put_part(path, id, part_idx, data).await
        }
        async fn complete_multipart(
            &self,
            inner: &dyn MultipartStore,
            path: &Path,
            id: &MultipartId,
            parts: Vec<PartId>,
        ) -> object_store::Result<PutResult> {
            if self.fail_complete.load(Ordering::SeqCst) {
                return Err(injected());
            }
            inner.complete_multipart(path, id, parts).await
        }
        async fn abort_multipart(
            &self,
            inner: &dyn MultipartStore,
            path: &Path,
            id: &MultipartId,
        ) -> object_store::Result<()> {
            self.aborts.fetch_add(1, Ordering::SeqCst);
            inner.abort_multipart(path, id).await
        }
    }

    /// A faulty store as a cloud store is used: snapshot parts through explicit indices.
    fn faulty_store() -> (Store, Arc<Faulty>) {
        let faulty = Arc::new(Faulty::default());
        let backend = Arc::new(FaultStore::new(InMemory::new(), faulty.clone()));
        let store = Store::with_multipart_backend(
            backend.clone(),
            backend,
            "memory://",
            &"a".parse().unwrap(),
        );
        (store, faulty)
    }

    /// A faulty store as a local directory is used: snapshot parts through object_store's
    /// upload, each sent once.
    fn faulty_upload_store() -> (Store, Arc<Faulty>) {
        let faulty = Arc::new(Faulty::default());
        let backend = Arc::new(FaultStore::new(InMemory::new(), faulty.clone()));
        let store = Store::with_backend(backend, "memory://", &"a".parse().unwrap());
        (store, faulty)
    }

    /// `len` incompressible bytes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64 ^ seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The raw bytes of a stored snapshot, read back and checked as `pitr verify` does.
    async fn read_back(store: &Store, name: ObjectName) -> Vec<u8> {
        let raw = Arc::new(Mutex::new(Vec::new()));
        let sink = raw.clone();
        crate::maintain::verify::read_snapshot(store, name, move |piece| {
            if let Some(p) = piece {
                sink.lock().unwrap().extend_from_slice(&p);
            }
            Ok(())
        })
        .await
        .expect("the snapshot reads")
        .expect("the snapshot checks");
        let raw = std::mem::take(&mut *raw.lock().unwrap());
        raw
    }

    fn snapshot_name() -> (ObjectName, SnapshotHeader) {
        let replid = crate::archive::names::test_replid('a');
        let generation = GenerationId(1);
        (
            ObjectName::snapshot(generation, 100, 42, replid),
            SnapshotHeader {
                generation,
                offset: 100,
                time_ms: 42,
                replid,
                taken: None,
            },
        )
    }

    fn no_shutdown() -> CancellationToken {
        CancellationToken::new()
    }

    /// A store error when a snapshot's upload starts is retried with backoff (the payload
    /// waits on the link): the snapshot is stored, no new full sync is needed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_upload_start_is_retried_on_store_errors() {
        let (store, faulty) = faulty_store();
        faulty.fail_starts.store(3, Ordering::SeqCst);
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let mut upload =
            start_snapshot_upload(&store, &name, &header, Duration::from_secs(60), &shutdown)
                .await
                .expect("retried until the store answers")
                .expect("no shutdown");
        assert_eq!(faulty.starts.load(Ordering::SeqCst), 4);
        let rdb = b"REDIS0011\xff\0\0\0\0\0\0\0\0";
        assert!(put_piece(&mut upload, &name, rdb, &shutdown).await.unwrap());
        finish_snapshot(upload, &name).await.unwrap();
        let listing = store.list().await.unwrap();
        assert_eq!(listing.objects.len(), 1);
        assert_eq!(listing.objects[0].name, name);
    }

    /// A store that keeps failing longer than the link can wait gives a store error (not a
    /// link error), naming the object.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_upload_start_gives_up_with_a_store_error() {
        let (store, faulty) = faulty_store();
        faulty.fail_starts.store(usize::MAX, Ordering::SeqCst);
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let r = start_snapshot_upload(
            &store,
            &name,
            &header,
            Duration::from_millis(500),
            &shutdown,
        )
        .await;
        match r {
            Err(ArchiveError::Store(e)) => {
                assert!(e.to_string().contains(&name.to_string()), "{e}")
            }
            Err(e) => panic!("expected a store error, got {e}"),
            Ok(_) => panic!("expected a store error"),
        }
        assert!(faulty.starts.load(Ordering::SeqCst) >= 2, "not retried");
    }

    /// A part that fails through object_store's upload (a local directory's way) is not sent
    /// again: the error is a store error of the snapshot, naming the object and how much had
    /// arrived, and nothing becomes visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_snapshot_part_is_a_store_error_and_leaves_nothing() {
        let (store, faulty) = faulty_upload_store();
        faulty.fail_parts.store(true, Ordering::SeqCst);
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let mut upload =
            start_snapshot_upload(&store, &name, &header, Duration::from_secs(5), &shutdown)
                .await
                .unwrap()
                .unwrap();
        // Incompressible bytes, more than a part.
        let piece = noise(1 << 20, 0);
        let mut written = 0u64;
        let mut failed = None;
        for _ in 0..12 {
            match put_piece(&mut upload, &name, &piece, &shutdown).await {
                Ok(true) => written += piece.len() as u64,
                Ok(false) => unreachable!("no shutdown"),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = match failed {
            Some(e) => e,
            None => finish_snapshot(upload, &name).await.unwrap_err(),
        };
        match &e {
            ArchiveError::SnapshotUpload {
                object, received, ..
            } => {
                assert_eq!(object, &name.to_string());
                assert!(*received >= written && *received > 0, "{e}");
            }
            other => panic!("expected a snapshot store error, got {other}"),
        }
        assert!(!e.is_fatal());
        assert!(store.list().await.unwrap().objects.is_empty());
    }

    /// A part that fails is sent again under its own index, while later parts go on: the
    /// snapshot completes and reads back byte for byte, with no new full sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_snapshot_part_is_sent_again_and_the_snapshot_completes() {
        let (store, faulty) = faulty_store();
        *faulty.fail_part_calls.lock().unwrap() = vec![2, 3];
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let mut upload =
            start_snapshot_upload(&store, &name, &header, Duration::from_secs(60), &shutdown)
                .await
                .unwrap()
                .unwrap();
        // Incompressible: three whole parts and a last one.
        let raw = noise(3 * PART_SIZE + 12345, 1);
        for piece in raw.chunks(1 << 20) {
            assert!(put_piece(&mut upload, &name, piece, &shutdown)
                .await
                .expect("failed parts are sent again"));
        }
        let done = finish_snapshot(upload, &name).await.unwrap();
        assert_eq!(done.raw_len, raw.len() as u64);
        let calls = faulty.part_calls.lock().unwrap().clone();
        let parts = done.stored.div_ceil(PART_SIZE as u64) as usize;
        assert_eq!(parts, 4);
        assert_eq!(calls.len(), parts + 2, "{calls:?}");
        // Every index stored once, each failed one sent again under the same index.
        let mut stored: Vec<usize> = calls.iter().filter(|c| !c.1).map(|c| c.0).collect();
        stored.sort_unstable();
        assert_eq!(stored, (0..parts).collect::<Vec<_>>());
        for (i, (idx, failed)) in calls.iter().enumerate() {
            if *failed {
                assert!(calls[i + 1..].contains(&(*idx, false)), "{calls:?}");
            }
        }
        assert_eq!(faulty.aborts.load(Ordering::SeqCst), 0);
        assert_eq!(read_back(&store, name).await, raw);
        assert_eq!(store.list().await.unwrap().objects.len(), 1);
    }

    /// A part that keeps failing longer than the patience: the upload gives up with a store
    /// error naming the object and the part, aborts, and nothing becomes visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_part_failing_past_the_patience_gives_up_and_leaves_nothing() {
        let (store, faulty) = faulty_store();
        faulty.fail_parts.store(true, Ordering::SeqCst);
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let patience = Duration::from_millis(800);
        let mut upload = start_snapshot_upload(&store, &name, &header, patience, &shutdown)
            .await
            .unwrap()
            .unwrap();
        let started = Instant::now();
        let piece = noise(1 << 20, 2);
        let mut failed = None;
        for _ in 0..4 * PART_SIZE / piece.len() {
            if let Err(e) = put_piece(&mut upload, &name, &piece, &shutdown).await {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => {
                // As the archiver does with a failed snapshot.
                upload.abort().await;
                e
            }
            None => finish_snapshot(upload, &name).await.unwrap_err(),
        };
        match &e {
            ArchiveError::SnapshotUpload {
                object,
                source:
                    StoreError::Part {
                        object: part_object,
                        part,
                        attempts,
                        ..
                    },
                ..
            } => {
                assert_eq!(object, &name.to_string());
                assert!(part_object.ends_with(&name.to_string()), "{e}");
                assert!(*part >= 1 && *attempts >= 2, "{e}");
            }
            other => panic!("expected a snapshot part error, got {other}"),
        }
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "not retried"
        );
        assert!(!e.is_fatal());
        assert_eq!(faulty.aborts.load(Ordering::SeqCst), 1);
        assert!(store.list().await.unwrap().objects.is_empty());
        assert!(!store.exists(&name).await.unwrap());
    }

    /// A completion that fails aborts the upload: nothing becomes visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_snapshot_completion_aborts_and_leaves_nothing() {
        let (store, faulty) = faulty_store();
        faulty.fail_complete.store(true, Ordering::SeqCst);
        let (name, header) = snapshot_name();
        let shutdown = no_shutdown();
        let mut upload =
            start_snapshot_upload(&store, &name, &header, Duration::from_secs(5), &shutdown)
                .await
                .unwrap()
                .unwrap();
        let rdb = b"REDIS0011\xff\0\0\0\0\0\0\0\0";
        assert!(put_piece(&mut upload, &name, rdb, &shutdown).await.unwrap());
        let e = finish_snapshot(upload, &name).await.unwrap_err();
        assert!(e.to_string().contains("complete"), "{e}");
        assert_eq!(faulty.aborts.load(Ordering::SeqCst), 1);
        assert!(store.list().await.unwrap().objects.is_empty());
    }

    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.extend_from_slice(body);
        v.push(0xff);
        let crc = crate::rdb::crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn crc64_check_value() {
        assert_eq!(crate::rdb::crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        // Continued over pieces of every size, against the plain bitwise definition.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let bitwise = data.iter().fold(0u64, |mut crc, &b| {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x95ac9329ac4bc9b5
                } else {
                    crc >> 1
                };
            }
            crc
        });
        for piece in [1, 3, 16, 63, 64, 65, 255, 4096, 5000] {
            let crc = data.chunks(piece).fold(0, crate::rdb::crc64);
            assert_eq!(crc, bitwise, "pieces of {piece}");
        }
    }

    #[test]
    fn rdb_check_accepts_whole_files_at_any_split() {
        let file = rdb(b"\xfa\x09redis-ver\x057.0.0\xfe\x00\x00\x01k\x01v");
        for split in 0..=file.len() {
            let mut c = RdbCheck::default();
            c.update(&file[..split]);
            c.update(&file[split..]);
            c.finish().unwrap();
        }
    }

    #[test]
    fn rdb_check_rejects_truncation_and_garbage() {
        let file = rdb(b"\xfe\x00\x00\x01k\x01v");
        for n in 0..file.len() {
            let mut c = RdbCheck::default();
            c.update(&file[..n]);
            assert!(c.finish().is_err(), "truncated at {n} accepted");
        }
        let mut bad = file.clone();
        bad[12] ^= 1;
        let mut c = RdbCheck::default();
        c.update(&bad);
        assert!(c.finish().unwrap_err().contains("CRC64"));
        let mut c = RdbCheck::default();
        c.update(b"HELLO WORLD, NOT AN RDB AT ALL");
        assert!(c.finish().unwrap_err().contains("magic"));
    }
}
