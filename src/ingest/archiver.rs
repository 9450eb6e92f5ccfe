//! `pitr archive`: ties the replica link to the segmenter and the store. Resumes from what the
//! store holds, attaches with PSYNC, streams a full sync's snapshot into the store, then feeds
//! the stream to the segmenter under a byte budget, ACKing only what is durable. Reconnects
//! with backoff after any disconnect, and shuts down cleanly on request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{info, warn};

use crate::archive::catalog::Catalog;
use crate::archive::format::{self, SnapshotHeader};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName};
use crate::archive::store::{Store, StoreError};
use crate::ingest::link::{eof_step, Connection, EofStep, LinkError, Payload, Psync};
use crate::ingest::segment::{
    Chunk, Durable, Msg, Position, SegmentError, Segmenter, SegmenterConfig,
};
use crate::net::Source;
use crate::resp::scanner::{CommandScanner, StreamError};

#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub source: Source,
    pub store: Store,
    pub flush_interval: Duration,
    pub segment_max_bytes: usize,
    pub max_buffer: usize,
    /// The port sent with `REPLCONF listening-port` (0: nothing listens, so neither Sentinel
    /// nor `FAILOVER` can pick the archiver as a master).
    pub announce_port: u16,
    /// How long a read may wait for data before the link is considered dead.
    pub read_timeout: Duration,
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
    #[error("snapshot from {addr} is not a valid RDB: {what}")]
    BadSnapshot { addr: String, what: String },
    #[error("the archive is inconsistent: {0}")]
    Archive(String),
    #[error("{addr} answered +CONTINUE to a request for a full sync")]
    UnexpectedContinue { addr: String },
}

impl ArchiveError {
    fn is_fatal(&self) -> bool {
        match self {
            ArchiveError::Link(e) => e.is_fatal(),
            ArchiveError::Segment(_) | ArchiveError::Archive(_) => true,
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
    let listing = store.list().await?;
    let catalog = Catalog::from_listing(&listing);
    let next = catalog
        .next_generation_id()
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
    let checked = async {
        let chain = check_snapshot_ends(store, base).await?;
        let name = last.name;
        let corrupt = |what: String| -> Result<Result<Position, String>, StoreError> {
            Ok(Err(format!("object {name} is corrupt: {what}")))
        };
        if name.kind == ObjectKind::Snapshot {
            return Ok(chain.map(|chain| Position {
                generation: name.generation,
                replid: name.replid,
                offset: name.start,
                db: 0,
                chain,
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
        if h.generation != name.generation
            || h.start != name.start
            || h.end != name.end
            || h.first_ms != name.first_ms
            || h.last_ms != name.last_ms
            || h.replid != name.replid
        {
            return corrupt("its header disagrees with its name".into());
        }
        Ok(Ok(Position {
            generation: name.generation,
            replid: h.replid,
            offset: h.end,
            db: h.db_end,
            chain: seg.checksum,
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
    let head_len = (format::PREAMBLE_LEN as u64 + 64).min(snap.size);
    if snap.size < head_len + format::TRAILER_LEN as u64 {
        return corrupt(format!("only {} bytes", snap.size));
    }
    let head = store.get_range(&name, 0..head_len).await?;
    let header = match format::parse_preamble(&head) {
        Ok(Some((format::Kind::Snapshot, r))) if r.end <= head.len() => {
            SnapshotHeader::decode(&head[r.clone()], r.start).map_err(|e| e.to_string())
        }
        Ok(Some((format::Kind::Snapshot, _))) => Err("header longer than expected".into()),
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
/// when given, otherwise a listing of the generation. Returns the snapshot's name, or `None`
/// when it is gone. Cheap enough to call every few seconds (lease renewal may call it too).
pub async fn check_base(
    store: &Store,
    generation: GenerationId,
    known: Option<ObjectName>,
) -> Result<Option<ObjectName>, StoreError> {
    match known {
        Some(name) if name.generation == generation => {
            Ok(store.exists(&name).await?.then_some(name))
        }
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
/// base is gone (once per generation).
fn guard_base(
    store: Store,
    mut durable: watch::Receiver<Durable>,
) -> (
    watch::Receiver<Durable>,
    watch::Receiver<Option<GenerationId>>,
) {
    let (guarded_tx, guarded) = watch::channel(*durable.borrow());
    let (lost_tx, lost) = watch::channel(None);
    tokio::spawn(async move {
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

/// A shutdown request: a watch that turns true.
#[derive(Clone)]
pub struct Shutdown(pub watch::Receiver<bool>);

impl Shutdown {
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

enum SessionEnd {
    Shutdown,
}

/// The archiver role.
pub struct Archiver {
    cfg: ArchiveConfig,
    /// The received position: where the next byte from the master belongs.
    pos: Option<Position>,
    next_generation: GenerationId,
    tx: mpsc::UnboundedSender<Msg>,
    durable: watch::Receiver<Durable>,
    budget: Arc<Semaphore>,
}

impl Archiver {
    /// Runs until shutdown is requested (then flushes, ACKs and returns `Ok`) or an error that
    /// retrying cannot fix.
    pub async fn run(cfg: ArchiveConfig, mut shutdown: Shutdown) -> Result<(), ArchiveError> {
        let (pos, next_generation) = resume_point(&cfg.store).await?;
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
        let (durable, mut lost) = guard_base(cfg.store.clone(), durable);
        let mut seg_task = tokio::spawn(segmenter.run());
        if let Some(p) = pos {
            let _ = tx.send(Msg::Start(p));
        }
        let budget = Arc::new(Semaphore::new(cfg.max_buffer.min(Semaphore::MAX_PERMITS)));
        let mut me = Archiver {
            cfg,
            pos,
            next_generation,
            tx,
            durable,
            budget,
        };
        let mut backoff = Duration::from_millis(200);
        let result = loop {
            if shutdown.requested() {
                break Ok(());
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                r = me.session(&mut shutdown) => r,
                g = base_lost(&mut lost) => {
                    // Never continue a generation without a base: a full sync starts the next.
                    me.pos = None;
                    Err(StoreError::BaseLost { generation: g.to_string() }.into())
                }
                r = &mut seg_task => {
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
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(200);
                    }
                    warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "link to the master lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        // Flush what was received. A session that ended by shutdown has done this already;
        // doing it again is cheap.
        let (reply, done) = oneshot::channel();
        if me.tx.send(Msg::Finish(reply)).is_ok() {
            if let Ok(d) = done.await {
                info!(generation = %d.generation, offset = d.offset, "archive flushed");
            }
        }
        drop(me);
        match seg_task.await {
            Ok(Err(e)) if result.is_ok() => Err(e.into()),
            _ => result,
        }
    }

    /// One connection: handshake, PSYNC, the snapshot if any, then the stream until the link
    /// fails or shutdown is requested.
    async fn session(&mut self, shutdown: &mut Shutdown) -> Result<SessionEnd, ArchiveError> {
        let source = self.cfg.source.clone();
        let mut conn = Connection::connect(&source, Duration::from_secs(10)).await?;
        conn.read_timeout = self.cfg.read_timeout;
        conn.handshake(&source, self.cfg.announce_port).await?;
        let resume = self.pos.map(|p| (p.replid, p.offset));
        let reply = conn.psync(resume).await?;
        let mut floor = None;
        match reply {
            Psync::FullResync { replid, offset } => {
                let generation = self.next_generation;
                match self.pos {
                    Some(p) => warn!(
                        previous_generation = %p.generation, previous_offset = p.offset,
                        %generation, %replid, offset,
                        "the master refused to continue: full resync, new generation; the archive has a gap"
                    ),
                    None => info!(%generation, %replid, offset, "full sync: new generation"),
                }
                let time_ms = now_ms();
                let chain = self
                    .snapshot(&mut conn, generation, replid, offset, time_ms, shutdown)
                    .await?;
                self.next_generation = generation
                    .next()
                    .map_err(|e| ArchiveError::Archive(e.to_string()))?;
                let p = Position {
                    generation,
                    replid,
                    offset,
                    db: 0,
                    chain,
                };
                let _ = self.tx.send(Msg::Start(p));
                self.pos = Some(p);
                floor = Some(offset);
                conn.ack(offset).await?;
            }
            Psync::Continue { replid } => {
                let Some(p) = self.pos.as_mut() else {
                    return Err(ArchiveError::UnexpectedContinue {
                        addr: conn.addr().to_string(),
                    });
                };
                if let Some(id) = replid.filter(|id| *id != p.replid) {
                    info!(generation = %p.generation, old = %p.replid, new = %id, offset = p.offset,
                        "partial resync under a new replication id (failover): same generation");
                    p.replid = id;
                    let _ = self.tx.send(Msg::Start(*p));
                } else {
                    info!(generation = %p.generation, offset = p.offset, "partial resync: continuing");
                }
            }
        }
        self.stream(&mut conn, floor, shutdown).await
    }

    /// Receives the full-sync payload into a snapshot object. Returns its checksum.
    async fn snapshot(
        &mut self,
        conn: &mut Connection,
        generation: GenerationId,
        replid: crate::archive::names::ReplId,
        offset: u64,
        time_ms: u64,
        shutdown: &mut Shutdown,
    ) -> Result<u64, ArchiveError> {
        let payload = conn.payload_header().await?;
        let name = ObjectName::snapshot(generation, offset, time_ms, replid);
        let header = SnapshotHeader {
            generation,
            offset,
            time_ms,
            replid,
        };
        let started = Instant::now();
        let mut upload = self.cfg.store.snapshot_upload(&name, &header).await?;
        let mut check = RdbCheck::default();
        let addr = conn.addr().to_string();
        let received: Result<(), ArchiveError> = async {
            match payload {
                Payload::Len(len) => {
                    let mut left = len;
                    while left > 0 {
                        if conn.buffer().is_empty() {
                            tokio::select! {
                                r = conn.read_more("receiving the snapshot") => { r?; }
                                _ = shutdown.wait() => return Err(ArchiveError::Archive("shutdown during the full sync".into())),
                            }
                        }
                        let take = (conn.buffer().len() as u64).min(left) as usize;
                        let piece = conn.buffer().split_to(take);
                        check.update(&piece);
                        upload.write(&piece).await?;
                        left -= take as u64;
                    }
                }
                Payload::Eof(mark) => loop {
                    match eof_step(conn.buffer(), &mark) {
                        EofStep::Done(n) => {
                            let piece = conn.buffer().split_to(n);
                            check.update(&piece);
                            upload.write(&piece).await?;
                            conn.buffer().advance(40);
                            break;
                        }
                        EofStep::Forward(n) => {
                            if n > 0 {
                                let piece = conn.buffer().split_to(n);
                                check.update(&piece);
                                upload.write(&piece).await?;
                            }
                            tokio::select! {
                                r = conn.read_more("receiving the snapshot") => { r?; }
                                _ = shutdown.wait() => return Err(ArchiveError::Archive("shutdown during the full sync".into())),
                            }
                        }
                    }
                },
            }
            check.finish().map_err(|what| ArchiveError::BadSnapshot {
                addr: addr.clone(),
                what,
            })
        }
        .await;
        if let Err(e) = received {
            upload.abort().await;
            return Err(e);
        }
        let done = upload.finish().await?;
        let secs = started.elapsed().as_secs_f64();
        info!(
            %generation, object = %name, bytes = done.raw_len, stored = done.stored,
            seconds = format!("{secs:.2}"),
            mb_per_s = format!("{:.1}", done.raw_len as f64 / 1e6 / secs.max(1e-6)),
            "snapshot durable"
        );
        Ok(done.checksum)
    }

    /// The stream: read, frame whole commands, stamp them, hand them to the segmenter within
    /// the byte budget, and ACK the durable offset after every flush, on GETACK and every
    /// second.
    async fn stream(
        &mut self,
        conn: &mut Connection,
        floor: Option<u64>,
        shutdown: &mut Shutdown,
    ) -> Result<SessionEnd, ArchiveError> {
        let mut pos = self.pos.expect("a position after PSYNC");
        let generation = pos.generation;
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
        // Bytes that came with the snapshot (a `$len` payload is followed by the stream at once).
        let (mut pending, mut early_error) = take_commands(&mut scanner, conn, &mut pos);
        self.pos = Some(pos);
        let mut last_acked = 0u64;
        let mut paused = false;
        let result: Result<SessionEnd, ArchiveError> = loop {
            if let Some(e) = early_error.take() {
                break Err(e.into());
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    let (reply, done) = oneshot::channel();
                    if let Some(c) = pending.take() {
                        let _ = self.tx.send(Msg::Chunk(c));
                    }
                    let _ = self.tx.send(Msg::Finish(reply));
                    if let Ok(d) = done.await {
                        let _ = conn.ack(ack_value(&d)).await;
                        info!(generation = %d.generation, offset = d.offset, "flushed and acknowledged; stopping");
                    }
                    break Ok(SessionEnd::Shutdown);
                }
                r = durable.changed() => {
                    if r.is_ok() {
                        let v = ack_value(&durable.borrow_and_update());
                        if v != last_acked {
                            if let Err(e) = conn.ack(v).await {
                                break Err(e.into());
                            }
                            last_acked = v;
                        }
                    }
                }
                _ = ack_tick.tick() => {
                    let v = ack_value(&durable.borrow());
                    if let Err(e) = conn.ack(v).await {
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
                }
                r = conn.read_more("streaming"), if pending.is_none() => {
                    if let Err(e) = r {
                        break Err(e.into());
                    }
                    let (chunk, error) = take_commands(&mut scanner, conn, &mut pos);
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

/// Takes the whole commands at the front of the link's buffer as one chunk, stamped now, and
/// the error that follows them if the bytes after them are not a command.
fn take_commands(
    scanner: &mut CommandScanner,
    conn: &mut Connection,
    pos: &mut Position,
) -> (Option<Chunk>, Option<StreamError>) {
    let s = scanner.scan(conn.buffer(), pos.offset);
    let chunk = (s.consumed > 0).then(|| {
        let bytes = conn.buffer().split_to(s.consumed).freeze();
        pos.offset += s.consumed as u64;
        pos.db = scanner.db();
        Chunk {
            bytes,
            end: pos.offset,
            ms: now_ms(),
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
        assert_eq!(p.map(|p| (p.offset, p.chain)), Some((0, c)));
        let (_, c) = segment(&store, 1, 0, 2, 1100, c).await;
        let (p, next) = resume_point(&store).await.unwrap();
        let p = p.unwrap();
        assert_eq!((p.generation, p.offset, p.chain), (GenerationId(1), 28, c));
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

    #[tokio::test(flavor = "multi_thread")]
    async fn the_durable_point_waits_for_the_base_and_a_lost_base_is_reported() {
        let store = memory();
        let (snap, c) = snapshot(&store, 1, 0, 1000).await;
        let (_, c) = segment(&store, 1, 0, 1, 1100, c).await;
        let (tx, rx) = watch::channel(Durable::default());
        let (mut guarded, mut lost) = guard_base(store.clone(), rx);
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
