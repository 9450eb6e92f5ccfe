//! The segmenter: cuts the stream into segments and makes them durable. Receives whole
//! commands from the replica link, stamped with their arrival time; seals a segment when the
//! flush interval has passed since its first byte, when it reaches the size limit, or at once
//! when the master asked for an ACK (`REPLCONF GETACK`, which `WAIT` causes), then compresses,
//! checksums, chains and uploads it, retrying until the store takes it, and publishes the
//! durable offset that the link ACKs.
//!
//! Memory is bounded by the link's byte budget: every chunk carries permits that are released
//! only when its segment is durable, so a slow or absent store stops the link from reading
//! (backpressure) instead of growing a queue. One role, one task: uploads are sequential,
//! which keeps the chain and the durable offset trivially in order.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::format::{self, SegmentHeader, TimeMark};
use crate::names::{GenerationId, ObjectKind, ObjectName, ReplId};
use crate::store::{Store, StoreError};

/// Where the archive stands: the generation, the replication id, the offset just past the last
/// byte, the selected database there, and the checksum of the last object (the chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub generation: GenerationId,
    pub replid: ReplId,
    pub offset: u64,
    pub db: u32,
    pub chain: u64,
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
}

struct Open {
    bytes: BytesMut,
    start: u64,
    db_start: u32,
    index: Vec<TimeMark>,
    permits: Vec<OwnedSemaphorePermit>,
    deadline: Instant,
    getack: bool,
}

/// The segmenter role.
pub struct Segmenter {
    store: Store,
    cfg: SegmenterConfig,
    rx: mpsc::UnboundedReceiver<Msg>,
    durable: watch::Sender<Durable>,
    pos: Option<Position>,
    open: Option<Open>,
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
            },
            tx,
            drx,
        )
    }

    /// Runs until every sender is dropped. Fails only on errors that retrying cannot fix.
    pub async fn run(mut self) -> Result<(), SegmentError> {
        loop {
            let deadline = self.open.as_ref().map(|o| o.deadline);
            let msg = tokio::select! {
                m = self.rx.recv() => m,
                _ = sleep_until(deadline) => {
                    self.seal().await?;
                    continue;
                }
            };
            let Some(msg) = msg else {
                self.seal().await?;
                return Ok(());
            };
            match msg {
                Msg::Chunk(c) => {
                    self.append(c)?;
                    let open = self.open.as_ref().expect("append opened a segment");
                    if open.getack || open.bytes.len() >= self.cfg.segment_max_bytes {
                        // Take everything already queued into the same segment (group commit).
                        while let Ok(m) = self.rx.try_recv() {
                            match m {
                                Msg::Chunk(c) => self.append(c)?,
                                other => {
                                    self.seal().await?;
                                    self.control(other)?;
                                    break;
                                }
                            }
                            if self
                                .open
                                .as_ref()
                                .is_some_and(|o| o.bytes.len() >= self.cfg.segment_max_bytes)
                            {
                                self.seal().await?;
                            }
                        }
                        self.seal().await?;
                    }
                }
                other => {
                    self.seal().await?;
                    self.control(other)?;
                }
            }
        }
    }

    /// Handles a control message; the open segment has been sealed.
    fn control(&mut self, m: Msg) -> Result<(), SegmentError> {
        match m {
            Msg::Start(p) => {
                match &mut self.pos {
                    Some(cur) if cur.generation == p.generation && cur.offset == p.offset => {
                        cur.replid = p.replid;
                    }
                    _ => {
                        self.pos = Some(p);
                        self.durable.send_replace(Durable {
                            generation: p.generation,
                            offset: p.offset,
                        });
                    }
                }
                Ok(())
            }
            Msg::Finish(reply) => {
                let _ = reply.send(*self.durable.borrow());
                Ok(())
            }
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
        let open = self.open.get_or_insert_with(|| Open {
            bytes: BytesMut::with_capacity(c.bytes.len().max(64 * 1024)),
            start: pos.offset,
            db_start: pos.db,
            index: Vec::new(),
            permits: Vec::new(),
            deadline: Instant::now() + self.cfg.flush_interval,
            getack: false,
        });
        open.bytes.extend_from_slice(&c.bytes);
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

    /// Seals the open segment, if any, and uploads it until the store takes it.
    async fn seal(&mut self) -> Result<(), SegmentError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let pos = self.pos.as_mut().ok_or(SegmentError::NoGeneration)?;
        let (first, last) = (open.index[0], *open.index.last().expect("non-empty"));
        let header = SegmentHeader {
            generation: pos.generation,
            start: open.start,
            end: pos.offset,
            first_ms: first.ms,
            last_ms: last.ms,
            db_start: open.db_start,
            db_end: pos.db,
            replid: pos.replid,
            prev_chain: pos.chain,
            index: open.index,
        };
        let name = ObjectName {
            kind: ObjectKind::Segment,
            generation: header.generation,
            start: header.start,
            end: header.end,
            first_ms: header.first_ms,
            last_ms: header.last_ms,
            replid: header.replid,
        };
        let raw = open.bytes.freeze();
        let (object, checksum) =
            tokio::task::spawn_blocking(move || format::encode_segment(&header, &raw))
                .await
                .expect("segment encoder panicked")
                .map_err(|source| SegmentError::Encode {
                    object: name.to_string(),
                    source,
                })?;
        let object = Bytes::from(object);
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            match self.store.put_new(&name, object.clone()).await {
                Ok(()) => break,
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
        pos.chain = checksum;
        tracing::debug!(object = %name, raw = name.end - name.start, stored = object.len(), "segment durable");
        self.durable.send_replace(Durable {
            generation: pos.generation,
            offset: pos.offset,
        });
        drop(open.permits);
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
