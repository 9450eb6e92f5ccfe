//! The segmenter: cuts the stream into segments and makes them durable. Receives whole
//! commands from the replica link, stamped with their arrival time; seals a segment when the
//! flush interval has passed since its first byte, when it reaches the size limit, or at once
//! when the master asked for an ACK (`REPLCONF GETACK`, which `WAIT` causes), then compresses,
//! checksums, chains and uploads it, retrying until the store takes it, and publishes the
//! durable offset that the link ACKs.
//!
//! Two tasks: the segmenter compresses each chunk as it arrives (a segment's raw bytes are
//! never held) and seals; an uploader puts the sealed objects in order, retrying, and publishes
//! the durable offset after each. At most one sealed segment waits while another uploads, so
//! compression of the next segment overlaps the upload of the last. Memory is bounded by the
//! link's byte budget: every chunk carries permits that are released only when its segment is
//! durable, so a slow or absent store stops the link from reading (backpressure) instead of
//! growing a queue. The chain is computed at seal time, in order, and uploads stay in order.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::archive::format::{self, SegmentBody, SegmentHeader, TimeMark};
use crate::archive::lease::{LeaseError, LeaseGuard};
use crate::archive::names::{GenerationId, ObjectName, ReplId};
use crate::archive::store::{Store, StoreError};
use crate::metrics::Upload;

/// Where the archive stands: the generation, the replication id, the offset just past the last
/// byte, the selected database there, and the stream sum there (which the next segment starts
/// from: the chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub generation: GenerationId,
    pub replid: ReplId,
    pub offset: u64,
    pub db: u32,
    pub sum: u64,
}

/// The durable point: everything in `generation` before `offset` is in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Durable {
    pub generation: GenerationId,
    pub offset: u64,
}

/// Whole commands as received: `bytes` ends at replication offset `end`, all of it had arrived
/// by `ms`.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Bytes,
    pub end: u64,
    pub ms: u64,
    pub db_after: u32,
    pub getack: bool,
    pub permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
pub enum Msg {
    /// Start a generation (after its snapshot is durable), or continue one from a position:
    /// seals what is open first. Continuing the current generation at its current offset only
    /// takes the new replication id (a failover).
    Start(Position),
    Chunk(Chunk),
    /// Seal and upload what is open, then answer with the durable point.
    Finish(oneshot::Sender<Durable>),
}

#[derive(Clone, Copy, Debug)]
pub struct SegmenterConfig {
    pub flush_interval: Duration,
    pub segment_max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Store(StoreError),
    #[error("encoding segment {object}: {source}")]
    Encode {
        object: String,
        #[source]
        source: format::FormatError,
    },
    #[error(
        "chunk ending at offset {end} does not follow offset {expected} of generation {generation}"
    )]
    Discontinuity {
        generation: GenerationId,
        expected: u64,
        end: u64,
    },
    #[error("a chunk arrived before any generation was started")]
    NoGeneration,
    #[error("the uploader stopped unexpectedly")]
    UploaderGone,
    /// The archive's lease is no longer held: nothing more may be uploaded.
    #[error(transparent)]
    Lease(Box<LeaseError>),
}

struct Open {
    body: SegmentBody,
    start: u64,
    db_start: u32,
    index: Vec<TimeMark>,
    permits: Vec<OwnedSemaphorePermit>,
    deadline: Instant,
    getack: bool,
}

/// What the segmenter hands to the uploader, in order.
enum Up {
    /// A sealed segment: put it, then publish `durable` and release the permits.
    Segment {
        name: ObjectName,
        object: Bytes,
        durable: Durable,
        permits: Vec<OwnedSemaphorePermit>,
    },
    /// Publish a durable point that needs no upload (a generation start, a resume point).
    Publish(Durable),
    /// Answer with the durable point once everything before is uploaded.
    Flush(oneshot::Sender<Durable>),
}

/// The segmenter role.
pub struct Segmenter {
    store: Store,
    cfg: SegmenterConfig,
    rx: mpsc::UnboundedReceiver<Msg>,
    durable: watch::Sender<Durable>,
    pos: Option<Position>,
    open: Option<Open>,
    /// When given, nothing is uploaded once it is no longer valid.
    lease: Option<LeaseGuard>,
}

/// The uploader's end, held by a running segmenter.
struct Uploads {
    tx: mpsc::Sender<Up>,
    /// The uploader task; taken (and awaited) once, by whoever first needs its result.
    task: Option<JoinHandle<Result<(), SegmentError>>>,
}

impl Uploads {
    async fn send(&mut self, up: Up) -> Result<(), SegmentError> {
        if self.tx.send(up).await.is_ok() {
            return Ok(());
        }
        // The uploader stopped: it failed; report why (once: a task is awaited only once).
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) | Err(_) => Err(SegmentError::UploaderGone),
            },
            None => Err(SegmentError::UploaderGone),
        }
    }
}

impl Segmenter {
    pub fn new(
        store: Store,
        cfg: SegmenterConfig,
    ) -> (
        Segmenter,
        mpsc::UnboundedSender<Msg>,
        watch::Receiver<Durable>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (dtx, drx) = watch::channel(Durable::default());
        (
            Segmenter {
                store,
                cfg,
                rx,
                durable: dtx,
                pos: None,
                open: None,
                lease: None,
            },
            tx,
            drx,
        )
    }

    /// Uploads only while `lease` is valid: the first segment found after it lapsed ends the
    /// segmenter with [`SegmentError::Lease`].
    pub fn with_lease(mut self, lease: LeaseGuard) -> Segmenter {
        self.lease = Some(lease);
        self
    }

    /// Runs until every sender is dropped. Fails only on errors that retrying cannot fix.
    pub async fn run(mut self) -> Result<(), SegmentError> {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(upload_loop(
            self.store.clone(),
            rx,
            self.durable.clone(),
            self.lease.clone(),
        ));
        let mut up = Uploads {
            tx,
            task: Some(task),
        };
        let r = self.run_with(&mut up).await;
        let Uploads { tx, task } = up;
        // Closing the channel lets the uploader finish what is queued and end.
        drop(tx);
        let uploaded = match task {
            Some(task) => task.await.unwrap_or(Err(SegmentError::UploaderGone)),
            // Joined already by a failed send: its error is `r`.
            None => Ok(()),
        };
        r.and(uploaded)
    }

    async fn run_with(&mut self, up: &mut Uploads) -> Result<(), SegmentError> {
        loop {
            let deadline = self.open.as_ref().map(|o| o.deadline);
            let msg = tokio::select! {
                m = self.rx.recv() => m,
                _ = sleep_until(deadline) => {
                    self.seal(up).await?;
                    continue;
                }
            };
            let Some(msg) = msg else {
                return self.seal(up).await;
            };
            match msg {
                Msg::Chunk(c) => {
                    self.append(c)?;
                    let open = self.open.as_ref().expect("append opened a segment");
                    if open.getack || open.body.raw_len() >= self.cfg.segment_max_bytes as u64 {
                        // Take everything already queued into the same segment (group commit).
                        while let Ok(m) = self.rx.try_recv() {
                            match m {
                                Msg::Chunk(c) => self.append(c)?,
                                other => {
                                    self.seal(up).await?;
                                    self.control(other, up).await?;
                                    break;
                                }
                            }
                            if self.open.as_ref().is_some_and(|o| {
                                o.body.raw_len() >= self.cfg.segment_max_bytes as u64
                            }) {
                                self.seal(up).await?;
                            }
                        }
                        self.seal(up).await?;
                    }
                }
                other => {
                    self.seal(up).await?;
                    self.control(other, up).await?;
                }
            }
        }
    }

    /// Handles a control message; the open segment has been sealed.
    async fn control(&mut self, m: Msg, up: &mut Uploads) -> Result<(), SegmentError> {
        match m {
            Msg::Start(p) => match &mut self.pos {
                Some(cur) if cur.generation == p.generation && cur.offset == p.offset => {
                    cur.replid = p.replid;
                    Ok(())
                }
                _ => {
                    self.pos = Some(p);
                    up.send(Up::Publish(Durable {
                        generation: p.generation,
                        offset: p.offset,
                    }))
                    .await
                }
            },
            Msg::Finish(reply) => up.send(Up::Flush(reply)).await,
            Msg::Chunk(c) => self.append(c),
        }
    }

    fn append(&mut self, c: Chunk) -> Result<(), SegmentError> {
        let pos = self.pos.as_mut().ok_or(SegmentError::NoGeneration)?;
        let expected_end = pos.offset + c.bytes.len() as u64;
        if c.end != expected_end {
            return Err(SegmentError::Discontinuity {
                generation: pos.generation,
                expected: pos.offset,
                end: c.end,
            });
        }
        let open = match &mut self.open {
            Some(o) => o,
            None => self.open.insert(Open {
                body: SegmentBody::new_v2(pos.sum).map_err(|source| SegmentError::Encode {
                    object: format!("segment at offset {}", pos.offset),
                    source,
                })?,
                start: pos.offset,
                db_start: pos.db,
                index: Vec::new(),
                permits: Vec::new(),
                deadline: Instant::now() + self.cfg.flush_interval,
                getack: false,
            }),
        };
        open.body
            .write(&c.bytes)
            .map_err(|source| SegmentError::Encode {
                object: format!("segment at offset {}", open.start),
                source,
            })?;
        match open.index.last_mut() {
            Some(m) if m.ms >= c.ms => m.end = c.end,
            _ => open.index.push(TimeMark {
                end: c.end,
                ms: c.ms,
            }),
        }
        open.getack |= c.getack;
        open.permits.extend(c.permit);
        pos.offset = c.end;
        pos.db = c.db_after;
        Ok(())
    }

    /// Seals the open segment, if any, chains it, and hands it to the uploader.
    async fn seal(&mut self, up: &mut Uploads) -> Result<(), SegmentError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let pos = self.pos.as_mut().ok_or(SegmentError::NoGeneration)?;
        let (first, last) = (open.index[0], *open.index.last().expect("non-empty"));
        let sum_end = open.body.stream_sum().unwrap_or_default();
        let header = SegmentHeader {
            generation: pos.generation,
            start: open.start,
            end: pos.offset,
            first_ms: first.ms,
            last_ms: last.ms,
            db_start: open.db_start,
            db_end: pos.db,
            replid: pos.replid,
            link: format::Link::Stream {
                start: pos.sum,
                end: sum_end,
            },
            level: 0,
            frames: Vec::new(),
            index: open.index,
        };
        let name = ObjectName::segment(
            header.generation,
            (header.start, header.end),
            (header.first_ms, header.last_ms),
            header.replid,
        )
        .v2(0);
        let (object, _checksum) =
            open.body
                .seal(&header)
                .map_err(|source| SegmentError::Encode {
                    object: name.to_string(),
                    source,
                })?;
        pos.sum = sum_end;
        let durable = Durable {
            generation: pos.generation,
            offset: pos.offset,
        };
        up.send(Up::Segment {
            name,
            object: Bytes::from(object),
            durable,
            permits: open.permits,
        })
        .await
    }
}

/// The uploader: puts sealed segments in order, retrying until the store takes each, and
/// publishes the durable point after each.
async fn upload_loop(
    store: Store,
    mut rx: mpsc::Receiver<Up>,
    durable: watch::Sender<Durable>,
    lease: Option<LeaseGuard>,
) -> Result<(), SegmentError> {
    while let Some(up) = rx.recv().await {
        match up {
            Up::Publish(d) => {
                durable.send_replace(d);
            }
            Up::Flush(reply) => {
                let _ = reply.send(*durable.borrow());
            }
            Up::Segment {
                name,
                object,
                durable: d,
                permits,
            } => {
                put_until_stored(&store, &name, object, lease.as_ref()).await?;
                durable.send_replace(d);
                drop(permits);
            }
        }
    }
    Ok(())
}

/// Puts one segment, retrying with backoff until the store takes it. Checks the lease, when
/// given, before every attempt.
async fn put_until_stored(
    store: &Store,
    name: &ObjectName,
    object: Bytes,
    lease: Option<&LeaseGuard>,
) -> Result<(), SegmentError> {
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        if let Some(lease) = lease {
            lease
                .wait_valid(&format!("segment {name}"))
                .await
                .map_err(|e| SegmentError::Lease(Box::new(e)))?;
        }
        let started = Instant::now();
        match store.put_new(name, object.clone()).await {
            Ok(()) => {
                let m = store.metrics();
                m.uploaded(Upload::Segment, object.len() as u64, started.elapsed());
                m.restorable_until(name.last_ms);
                break;
            }
            Err(e @ StoreError::Conflict { .. }) => return Err(SegmentError::Store(e)),
            Err(e) => {
                attempts += 1;
                tracing::warn!(
                    object = %name,
                    attempt = attempts,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = %e,
                    "upload failed; keeping the segment and retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    if attempts > 0 {
        tracing::info!(object = %name, attempts, "upload succeeded after retries");
    }
    tracing::debug!(object = %name, raw = name.end - name.start, stored = object.len(), "segment durable");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::names::test_replid;

    fn chunk(bytes: &'static [u8], end: u64, ms: u64) -> Chunk {
        Chunk {
            bytes: Bytes::from_static(bytes),
            end,
            ms,
            db_after: 0,
            getack: true,
            permit: None,
        }
    }

    /// Once the lease is no longer valid, nothing is uploaded: the segmenter ends with the
    /// lease error naming the segment it did not write.
    #[tokio::test]
    async fn nothing_is_uploaded_after_the_lease_lapsed() {
        use crate::archive::lease::{Lease, LeaseCommand, LeaseConfig};
        let store = Store::open("memory://", &"a".parse().unwrap()).unwrap();
        let lease = Lease::acquire(&store, LeaseCommand::Archive, LeaseConfig::default())
            .await
            .unwrap();
        let guard = lease.guard();
        let (segmenter, tx, durable) = Segmenter::new(
            store.clone(),
            SegmenterConfig {
                flush_interval: Duration::from_secs(60),
                segment_max_bytes: 1 << 20,
            },
        );
        let segmenter = segmenter.with_lease(guard);
        let task = tokio::spawn(segmenter.run());
        let replid = test_replid('a');
        tx.send(Msg::Start(Position {
            generation: GenerationId(1),
            replid,
            offset: 0,
            db: 0,
            sum: 0,
        }))
        .unwrap();
        let cmd: &[u8] = b"*1\r\n$4\r\nPING\r\n";
        let len = cmd.len() as u64;
        tx.send(Msg::Chunk(chunk(cmd, len, 7))).unwrap();
        let mut d = durable.clone();
        tokio::time::timeout(Duration::from_secs(10), d.wait_for(|d| d.offset == len))
            .await
            .expect("uploaded while the lease is valid")
            .unwrap();
        // Released (as when taken over): the next segment is refused.
        lease.release().await.unwrap();
        tx.send(Msg::Chunk(chunk(cmd, 2 * len, 8))).unwrap();
        drop(tx);
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the segmenter ends")
            .unwrap();
        match r {
            Err(SegmentError::Lease(e)) => {
                assert!(e.to_string().contains("not writing segment"), "{e}")
            }
            other => panic!("expected the lease error, got {other:?}"),
        }
        let listing = store.list().await.unwrap();
        assert_eq!(listing.objects.len(), 1);
        assert_eq!(
            *durable.borrow(),
            Durable {
                generation: GenerationId(1),
                offset: len
            }
        );
    }

    /// A segment name taken by other bytes (a second archiver on the same archive) is a
    /// conflict the uploader cannot retry. The segmenter must return that error, not panic by
    /// awaiting the finished uploader a second time.
    #[tokio::test]
    async fn upload_conflict_is_returned_not_a_join_handle_panic() {
        let store = Store::open("memory://", &"a".parse().unwrap()).unwrap();
        let replid = test_replid('a');
        let cmd: &[u8] = b"*1\r\n$4\r\nPING\r\n";
        let len = cmd.len() as u64;
        let taken = ObjectName::segment(GenerationId(1), (0, len), (7, 7), replid).v2(0);
        store
            .put_new(&taken, Bytes::from_static(b"someone else's segment"))
            .await
            .unwrap();
        let (segmenter, tx, _durable) = Segmenter::new(
            store,
            SegmenterConfig {
                flush_interval: Duration::from_secs(60),
                segment_max_bytes: 1 << 20,
            },
        );
        tx.send(Msg::Start(Position {
            generation: GenerationId(1),
            replid,
            offset: 0,
            db: 0,
            sum: 0,
        }))
        .unwrap();
        // The chunk carries a GETACK, so it is sealed and sent to the uploader at once; the
        // flush after it is sent to the uploader too, and finds it gone (failed).
        tx.send(Msg::Chunk(chunk(cmd, len, 7))).unwrap();
        let (reply, _answer) = oneshot::channel();
        tx.send(Msg::Finish(reply)).unwrap();
        drop(tx);
        let task = tokio::spawn(segmenter.run());
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the segmenter ends");
        match r {
            Ok(Err(SegmentError::Store(StoreError::Conflict { object }))) => {
                assert_eq!(object, taken.to_string())
            }
            other => panic!("expected the conflict, got {other:?}"),
        }
    }
}
