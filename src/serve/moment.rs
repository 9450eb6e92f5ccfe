//! What `pitr serve` serves: a snapshot of one generation and the archived stream after it,
//! up to a cut or (with `--follow`) as far as the archive grows. The stream is sent as
//! archived, byte for byte, so that the offsets a replica counts are the archived master's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::archive::fetch::{FetchConfig, OrderedFetch, Wanted};
use crate::archive::format::{self, Segment};
use crate::archive::names::{GenerationId, ObjectKind, ObjectName};
use crate::archive::scan::{self, Frontier};
use crate::archive::store::{Listed, Store, StoreError};
use crate::replay::cut::{self, Cutter, Limit};
use crate::replay::filter::{Filter, Verdict};
use crate::replay::plan::{Plan, PlannedObject};
use crate::replay::restore::{make_plan, segments_wanted, RestoreError};
use crate::replay::sink::RdbHeader;

use super::ServeError;

/// A snapshot and the stream after it, as a full sync serves them.
#[derive(Clone, Debug)]
pub struct Moment {
    pub generation: GenerationId,
    /// The replication id announced with `+FULLRESYNC`: the snapshot's.
    pub replid: String,
    pub snapshot: ObjectName,
    /// The snapshot's stored size.
    pub snapshot_size: u64,
    /// The segments of the plan, from the one that holds the snapshot's offset.
    pub segments: Vec<PlannedObject>,
    /// Where the served stream ends (`--to`): just past the last whole command (and whole
    /// transaction) of the cut. `None` with `--follow`.
    pub cut: Option<u64>,
    /// The arrival time of the last command before the cut (or of the snapshot).
    pub cut_ms: u64,
    /// A restore's `--db`/`--match`: served filtered, under a replication id of its own.
    pub filtered: Option<Arc<Filtered>>,
}

impl Moment {
    /// The replication id a full sync announces: the archived master's, unless the replica's
    /// offsets would part from that master's. Filtered: the moment's own. Held past the cut
    /// with `PING`s (`pings`): [`held_replid`], since the PINGs are not in the master's
    /// history; a replica must never `PSYNC` the real master with the archived id at an offset
    /// the master used for other bytes (its stream would resume inside a command).
    pub fn served_replid(&self, pings: bool) -> String {
        match (&self.filtered, self.cut) {
            (Some(f), _) => f.replid.clone(),
            (None, Some(cut)) if pings => held_replid(&self.replid, cut),
            _ => self.replid.clone(),
        }
    }
}

/// The replication id of the archived master's `replid` held at `cut` with PINGs of this
/// server's own: the same for every `pitr serve --to` of that moment (so a replica resumes
/// with `+CONTINUE` across a restart of serve), and no master's.
pub fn held_replid(replid: &str, cut: u64) -> String {
    use xxhash_rust::xxh3::xxh3_128_with_seed;
    let what = format!("pitr serve: {replid} held at offset {cut}");
    let (a, b) = (
        xxh3_128_with_seed(what.as_bytes(), 0),
        xxh3_128_with_seed(what.as_bytes(), 1),
    );
    format!("{a:032x}{:08x}", (b >> 96) as u32)
}

/// A moment served with `--db`/`--match` (a restore's): the snapshot re-encoded without the
/// unselected keys ([`crate::rdb::reencode`]), sent EOF-marked (its length is known only at
/// the end), and the stream without the commands that touch none of them. The bytes differ
/// from the archive's, so the replication id is a fresh one: a server holding a subset must
/// never partially resync from the real master.
#[derive(Debug)]
pub struct Filtered {
    pub filter: Filter,
    /// Announced with `+FULLRESYNC` instead of the archived one (40 characters).
    pub replid: String,
    /// The 40-byte `$EOF:` mark.
    pub eof_mark: String,
    /// What the last full sync served, once its stream reached the cut.
    pub served: Mutex<Option<FilteredServed>>,
}

/// What a filtered full sync served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilteredServed {
    /// Keys of the snapshot sent and left out.
    pub keys: u64,
    pub keys_skipped: u64,
    /// Bytes of the re-encoded RDB.
    pub rdb_bytes: u64,
    /// Commands sent (`Keep` and `Mixed` verdicts), left out, and among those sent, touching
    /// selected and unselected keys; replication-internal ones (never sent).
    pub commands: u64,
    pub commands_skipped: u64,
    pub commands_mixed: u64,
    /// Among those left out or sent, commands that bring keys from a database left out into
    /// one selected (see [`Filter::judge`]).
    pub commands_from_unselected: u64,
    pub commands_internal: u64,
    /// Bytes of the stream sent after the snapshot: the replica's offset ends at the
    /// snapshot's offset plus these.
    pub stream_bytes: u64,
    /// Whether the stream reached the cut (the counts are final).
    pub stream_done: bool,
}

impl Moment {
    pub fn offset(&self) -> u64 {
        self.snapshot.start
    }

    /// The end of the archived stream this moment knows of.
    pub fn known_end(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end)
            .max()
            .unwrap_or(self.snapshot.start)
            .max(self.snapshot.start)
    }
}

/// Plans `target` and, with `cut`, reads the planned segments once to find where the cut
/// falls (on a whole command, never inside `MULTI … EXEC`, as a restore cuts).
pub async fn plan_moment(
    store: &Store,
    target: crate::replay::plan::Target,
    cut: bool,
) -> Result<Moment, ServeError> {
    let plan = make_plan(store, target).await?;
    let snapshot_size = plan.snapshot.bytes;
    let (cut_at, cut_ms) = if cut {
        let (o, ms) = find_cut(store, &plan).await?;
        (Some(o), ms)
    } else {
        (None, plan.snapshot.first_ms)
    };
    Ok(Moment {
        generation: plan.generation,
        replid: plan.snapshot.object.replid.as_str().to_string(),
        snapshot: plan.snapshot.object,
        snapshot_size,
        segments: plan.segments,
        cut: cut_at,
        cut_ms,
        filtered: None,
    })
}

/// What the stream holds from the snapshot to a cut (for a restore's report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutCounts {
    /// Commands up to the cut, replication-internal ones (PING, REPLCONF, PUBLISH) aside.
    pub commands: u64,
    /// Replication-internal commands up to the cut.
    pub internal: u64,
    /// Commands with a relative TTL that a replay as commands makes absolute (an archived
    /// master older than 7.0, RDB < 10): a replica counts them from when it applies them.
    pub relative_ttls: u64,
    /// A transaction still open at the cut was left out.
    pub transaction_left_out: bool,
    /// Stored bytes of the segments read to find the cut.
    pub bytes_read: u64,
}

/// The moment `plan` names, served up to its cut, and what the stream holds up to it.
/// `relative_ttls`: whether the snapshot's RDB says its master sent relative TTLs (REDIS RDB
/// before 10), so that such commands are counted.
pub async fn moment_of_plan(
    store: &Store,
    plan: &Plan,
    relative_ttls: bool,
) -> Result<(Moment, CutCounts), ServeError> {
    let (cut_at, cut_ms, counts) = find_cut_counted(store, plan, relative_ttls).await?;
    let m = Moment {
        generation: plan.generation,
        replid: plan.snapshot.object.replid.as_str().to_string(),
        snapshot: plan.snapshot.object,
        snapshot_size: plan.snapshot.bytes,
        segments: plan.segments.clone(),
        cut: Some(cut_at),
        cut_ms,
        filtered: None,
    };
    Ok((m, counts))
}

/// The offset and arrival time of the plan's cut.
async fn find_cut(store: &Store, plan: &Plan) -> Result<(u64, u64), ServeError> {
    let (o, ms, _) = find_cut_counted(store, plan, false).await?;
    Ok((o, ms))
}

/// [`find_cut`], counting what the stream holds up to the cut.
async fn find_cut_counted(
    store: &Store,
    plan: &Plan,
    relative_ttls: bool,
) -> Result<(u64, u64, CutCounts), ServeError> {
    let mut counts = CutCounts::default();
    let mut cutter = Cutter::new(
        Limit {
            time_ms: plan.cut_time_ms,
            offset: plan.cut_offset,
        },
        plan.snapshot.offset,
        plan.snapshot.first_ms,
    );
    let mut fetch = fetch_segments(store, segments_wanted(plan));
    let mut released = Vec::new();
    while let Some(got) = fetch.next().await {
        let stored = got.as_ref().map_or(0, |g| g.stored);
        let (name, seg) = fetched(got)?;
        counts.bytes_read += stored;
        for c in cut::Commands::new(&seg) {
            let c = c.map_err(|source| RestoreError::Commands {
                object: name.to_string(),
                source,
            })?;
            if c.end <= plan.snapshot.offset {
                continue;
            }
            cutter.push(c, &mut released);
            for c in released.drain(..) {
                if c.info().kind == crate::resp::commands::Kind::Internal {
                    counts.internal += 1;
                } else {
                    counts.commands += 1;
                    if relative_ttls && crate::replay::restore::absolute_ttl(&c).is_some() {
                        counts.relative_ttls += 1;
                    }
                }
            }
            if cutter.is_done() {
                break;
            }
        }
        if cutter.is_done() {
            break;
        }
    }
    cutter.finish();
    counts.transaction_left_out = cutter.dropped_open_transaction;
    Ok((cutter.reached_offset, cutter.reached_ms, counts))
}

type Decoded = Result<Segment, format::FormatError>;

fn fetch_segments(store: &Store, wanted: Vec<Wanted>) -> OrderedFetch<Decoded> {
    OrderedFetch::start(store, wanted, FetchConfig::default(), None, |_, bytes| {
        format::decode_segment(&bytes)
    })
}

fn fetched(
    got: Result<crate::archive::fetch::Fetched<Decoded>, StoreError>,
) -> Result<(ObjectName, Segment), ServeError> {
    let got = got?;
    match got.value {
        Ok(seg) => Ok((got.name, seg)),
        Err(source) => Err(RestoreError::Segment {
            object: got.name.to_string(),
            source,
        }
        .into()),
    }
}

/// Sends the stream of `m` from its snapshot to its cut, filtered by `filter` as a restore by
/// commands applies it: `SELECT` of the database at the snapshot first, then every command
/// the filter keeps (`Keep` and `Mixed`; `SELECT`, `MULTI` and `EXEC` always), exactly as
/// archived; replication-internal ones and those that touch no selected key are left out.
/// Counts go to `served`.
pub async fn send_filtered_stream(
    store: &Store,
    m: &Moment,
    filter: &Filter,
    out: &mpsc::Sender<Bytes>,
    served: &mut FilteredServed,
) -> Result<(), ServeError> {
    const PIECE: usize = 256 << 10;
    let from = m.offset();
    let cut = m.cut.expect("a filtered moment has a cut");
    let wanted = m
        .segments
        .iter()
        .map(|s| Wanted {
            name: s.object,
            stored: s.bytes,
            raw: s.end.saturating_sub(s.offset),
        })
        .collect();
    let mut fetch = fetch_segments(store, wanted);
    let mut buf = bytes::BytesMut::new();
    let mut first = true;
    let mut reached = from;
    'segments: while let Some(got) = fetch.next().await {
        let (name, seg) = fetched(got)?;
        let mut seg_db = seg.header.db_start;
        for c in cut::Commands::new(&seg) {
            let c = c.map_err(|source| RestoreError::Commands {
                object: name.to_string(),
                source,
            })?;
            if c.end <= from {
                seg_db = c.db;
                continue;
            }
            if c.end > cut {
                break 'segments;
            }
            if first {
                first = false;
                let start = c.end - c.raw.len() as u64;
                if start < from {
                    return Err(ServeError::Snapshot(format!(
                        "the snapshot's offset {from} falls inside the command at {start}..{} of {name}",
                        c.end
                    )));
                }
                let mut select = Vec::new();
                cut::encode_args(&["SELECT", &seg_db.to_string()], &mut select);
                buf.extend_from_slice(&select);
            }
            reached = c.end;
            if c.info().kind == crate::resp::commands::Kind::Internal {
                served.commands_internal += 1;
                continue;
            }
            let (verdict, brought_in) = filter.judge(c.db, &c.args);
            if brought_in {
                crate::replay::restore::count_brought_in(&mut served.commands_from_unselected, &c);
            }
            match verdict {
                Verdict::Drop => {
                    served.commands_skipped += 1;
                    continue;
                }
                Verdict::Mixed => served.commands_mixed += 1,
                Verdict::Keep => {}
            }
            served.commands += 1;
            buf.extend_from_slice(&c.raw);
            if buf.len() >= PIECE {
                served.stream_bytes += buf.len() as u64;
                out.send(buf.split().freeze())
                    .await
                    .map_err(|_| ServeError::Gone)?;
            }
        }
    }
    if reached < cut {
        return Err(ServeError::Snapshot(format!(
            "the archive ends at offset {reached} before the cut at {cut}"
        )));
    }
    if !buf.is_empty() {
        served.stream_bytes += buf.len() as u64;
        out.send(buf.split().freeze())
            .await
            .map_err(|_| ServeError::Gone)?;
    }
    Ok(())
}

/// The snapshot's RDB bytes, read and checked on a blocking thread, handed over in pieces.
pub struct SnapshotBytes {
    /// The raw RDB length, from the object's trailer.
    pub raw_len: u64,
    pub rx: mpsc::Receiver<Bytes>,
    pub task: JoinHandle<Result<(), ServeError>>,
}

/// Starts reading `name`: its raw length first (one range GET of the trailer), then its body.
pub async fn read_snapshot(
    store: &Store,
    name: ObjectName,
    size: u64,
) -> Result<SnapshotBytes, ServeError> {
    let tl = format::TRAILER_LEN as u64;
    if size < tl {
        return Err(ServeError::Snapshot(format!("{name}: only {size} bytes")));
    }
    let t = store.get_range(&name, size - tl..size).await?;
    if t.len() != format::TRAILER_LEN || &t[24..32] != format::TRAILER_MAGIC {
        return Err(ServeError::Snapshot(format!("{name}: no trailer magic")));
    }
    let raw_len = u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let store = store.clone();
    let task = tokio::spawn(async move {
        let read = crate::maintain::verify::read_snapshot(&store, name, move |raw| match raw {
            Some(b) => tx
                .blocking_send(b)
                .map_err(|_| "the replica is gone".to_string()),
            None => Ok(()),
        })
        .await?;
        match read {
            Ok(_) => Ok(()),
            Err(p) => Err(ServeError::Snapshot(p.to_string())),
        }
    });
    Ok(SnapshotBytes { raw_len, rx, task })
}

/// The RDB header of the first piece of a snapshot.
pub fn rdb_header(first: &[u8]) -> Option<RdbHeader> {
    RdbHeader::parse(first)
}

/// The RDB header of the stored snapshot `name` (its first piece, read from the store);
/// `None` when it holds no RDB header.
pub async fn snapshot_header(
    store: &Store,
    name: ObjectName,
    size: u64,
) -> Result<Option<RdbHeader>, ServeError> {
    let mut snap = read_snapshot(store, name, size).await?;
    let first = snap.rx.recv().await;
    // The reader stops at its next piece.
    drop(snap.rx);
    match first.as_deref().and_then(rdb_header) {
        Some(h) => Ok(Some(h)),
        None => match snap.task.await {
            Ok(Err(e)) => Err(e),
            _ => Ok(None),
        },
    }
}

/// Whether the master that wrote a snapshot of this RDB propagated relative TTLs (`EXPIRE k
/// 10`, `SET k v EX 10`, `SETEX`) as sent: `REDIS` RDB before version 10, Redis before 7.0,
/// which began to propagate them as absolute `PEXPIREAT`/`PXAT`. A replica applies a
/// relative TTL from when it receives it.
pub fn sends_relative_ttls(h: RdbHeader) -> bool {
    h.magic == crate::rdb::Magic::Redis && h.version < 10
}

/// Where a replica's stream stands, and how it gets more of it.
pub struct Cursor {
    pub pos: u64,
    generation: GenerationId,
    /// Objects known to hold the stream from `pos` on, in offset order.
    queue: Vec<Listed>,
    frontier: Frontier,
    poll: Duration,
}

impl Cursor {
    /// A cursor at `pos` of `moment`'s generation, knowing the moment's segments.
    pub fn new(moment: &Moment, pos: u64, poll: Duration) -> Cursor {
        let queue: Vec<Listed> = moment
            .segments
            .iter()
            .map(|s| Listed {
                name: s.object,
                size: s.bytes,
            })
            .collect();
        let mut frontier = Frontier::of(&queue);
        frontier.generation = Some(moment.generation);
        Cursor {
            pos,
            generation: moment.generation,
            queue,
            frontier,
            poll,
        }
    }

    /// The next objects that carry the stream on from `pos`, one chain (the object with the
    /// furthest end among those holding `pos`, then on from its end). Empty when the queue
    /// holds nothing at `pos`.
    fn chain(&mut self) -> Result<Vec<Listed>, ServeError> {
        let mut out: Vec<Listed> = Vec::new();
        let mut at = self.pos;
        loop {
            let next = self
                .queue
                .iter()
                .filter(|o| {
                    o.name.kind == ObjectKind::Segment
                        && o.name.generation == self.generation
                        && o.name.start <= at
                        && o.name.end > at
                })
                .max_by_key(|o| (o.name.end, o.name.level));
            match next {
                Some(o) => {
                    at = o.name.end;
                    out.push(o.clone());
                }
                None => break,
            }
        }
        self.queue.retain(|o| o.name.end > at);
        Ok(out)
    }

    /// Sends the stream from `pos` to `end` (or as far as the known objects go, without an
    /// end) through `out`; returns once `pos` reached `end`, or the known objects ran out.
    pub async fn send_known(
        &mut self,
        store: &Store,
        end: Option<u64>,
        out: &mpsc::Sender<Bytes>,
    ) -> Result<(), ServeError> {
        loop {
            if end.is_some_and(|e| self.pos >= e) {
                return Ok(());
            }
            let chain = self.chain()?;
            if chain.is_empty() {
                return Ok(());
            }
            let wanted = chain
                .iter()
                .map(|o| Wanted {
                    name: o.name,
                    stored: o.size,
                    raw: o.name.end - o.name.start,
                })
                .collect();
            let mut fetch = fetch_segments(store, wanted);
            while let Some(got) = fetch.next().await {
                let (name, seg) = match fetched(got) {
                    Ok(s) => s,
                    Err(ServeError::Store(e)) if e.is_not_found() => {
                        // Replaced by compaction meanwhile: list again from here.
                        tracing::debug!(error = %e, "an object went away; listing again");
                        self.frontier.partitions.clear();
                        self.queue.clear();
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let (s, e) = (seg.header.start, seg.header.end);
                if s > self.pos || e <= self.pos {
                    return Err(ServeError::Snapshot(format!(
                        "object {name} holds {s}..{e}, not offset {}",
                        self.pos
                    )));
                }
                let stop = end.map_or(e, |c| c.min(e));
                let from = (self.pos - s) as usize;
                let to = (stop - s) as usize;
                if to > from {
                    out.send(seg.raw.slice(from..to))
                        .await
                        .map_err(|_| ServeError::Gone)?;
                }
                self.pos = stop;
                if end.is_some_and(|c| self.pos >= c) {
                    return Ok(());
                }
            }
        }
    }

    /// Lists what the archive gained since the last look. Returns `false` when the served
    /// generation ended (a newer one exists and nothing more of this one is archived).
    pub async fn refresh(&mut self, store: &Store) -> Result<bool, ServeError> {
        let (objects, frontier, _) = scan::newer(store, &self.frontier).await?;
        self.frontier = frontier;
        let newer_generation = objects.iter().any(|o| o.name.generation > self.generation);
        let mut gained = false;
        for o in objects {
            if o.name.generation == self.generation
                && o.name.kind == ObjectKind::Segment
                && o.name.end > self.pos
                && !self.queue.contains(&o)
            {
                gained |= o.name.start <= self.pos;
                self.queue.push(o);
            }
        }
        self.queue.sort_by_key(|o| (o.name.start, o.name.end));
        Ok(gained || !newer_generation)
    }

    pub fn poll(&self) -> Duration {
        self.poll
    }
}
