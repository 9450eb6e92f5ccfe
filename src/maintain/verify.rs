//! `pitr verify`: reads every object of an archive back and checks it: each object's own
//! checksums and header, the chain from each object to the next, offset continuity within each
//! generation, that segments hold whole commands (and the selected database they claim), and
//! that each snapshot is a complete RDB with a valid CRC64 trailer. Snapshots are streamed,
//! never held whole. Segments are read with several GETs in flight (`--parallel`) and checked
//! alone on blocking threads as they arrive; the chain between objects is then checked in
//! order, one after the other. What the listing alone shows (a generation without a snapshot, a fork into
//! two chains, overlapping objects) is reported first, naming the objects.

use std::io::Read;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::archive::catalog::Catalog;
use crate::archive::fetch::{FetchConfig, OrderedFetch, Wanted};
use crate::archive::format::{self, ChainPoint, Kind, SnapshotHeader};
use crate::archive::names::{ObjectKind, ObjectName};
use crate::archive::store::{Listed, Store, StoreError};
use crate::resp::scanner::CommandScanner;

/// One thing wrong, with where.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    /// Byte offset inside the object, or (for stream continuity) the replication offset.
    pub offset: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}: {}", self.object, self.offset, self.what)
    }
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub ok: bool,
    pub generations: usize,
    pub snapshots: usize,
    pub segments: usize,
    pub commands: u64,
    /// Commands in objects covered by a higher level (the same commands as the higher level's).
    pub commands_covered: u64,
    /// Segments that end at or before their generation's first snapshot (left by an
    /// interrupted prune; no moment needs them, the next prune removes them), checked alone.
    pub segments_before_first_snapshot: usize,
    /// Raw bytes (RDB and stream) checked.
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub problems: Vec<Problem>,
}

/// What a checked snapshot yields for the chain.
#[derive(Clone, Debug)]
pub struct SnapshotOk {
    pub header: format::SnapshotHeader,
    pub checksum: u64,
    pub raw_len: u64,
}

impl SnapshotOk {
    /// What the segment after this snapshot must link to.
    pub fn chain(&self) -> ChainPoint {
        ChainPoint::after_snapshot(&self.header, self.checksum)
    }
}

/// Verifies the whole archive, with the default number of segment GETs in flight.
pub async fn verify(store: &Store) -> Result<Report, StoreError> {
    verify_with(store, FetchConfig::default()).await
}

/// Verifies the whole archive. Store errors (unreachable, permission) are errors; what is
/// wrong with the archive's content is reported as problems. Segments are fetched and checked
/// alone with up to `fetch.parallel` GETs in flight; the chain is then checked in order, one
/// object after the other. Snapshots are streamed one at a time.
pub async fn verify_with(store: &Store, fetch: FetchConfig) -> Result<Report, StoreError> {
    let listing = store.list().await?;
    let catalog = Catalog::from_listing(&listing);
    let mut report = Report {
        generations: catalog.generations.len(),
        ..Default::default()
    };
    for p in catalog.problems() {
        let mut objects = p.objects.into_iter();
        let object = objects.next().unwrap_or_default();
        let others: Vec<String> = objects.filter(|o| !o.is_empty()).collect();
        report.problems.push(Problem {
            object,
            offset: 0,
            what: if others.is_empty() {
                p.what
            } else {
                format!("{} (see also {})", p.what, others.join(", "))
            },
        });
    }
    // Every segment, in the order the loop below takes them: a generation's objects, then
    // those before its first snapshot.
    let wanted = catalog
        .generations
        .iter()
        .flat_map(|g| g.objects.iter().chain(&g.trimmed))
        .filter(|o| o.name.kind == ObjectKind::Segment)
        .map(|o| Wanted {
            name: o.name,
            stored: o.size,
            raw: o.name.end.saturating_sub(o.name.start),
        })
        .collect();
    let mut segments = OrderedFetch::start(store, wanted, fetch, None, |name, bytes| {
        inspect_segment(name, &bytes)
    });
    for g in &catalog.generations {
        // The previous object's checksum, position and database, when it checked out.
        let mut chain: Option<(ChainPoint, u64, u32)> = None;
        let mut expected = g.first_offset;
        for (i, o) in g.objects.iter().enumerate() {
            report.stored_bytes += o.size;
            match o.name.kind {
                ObjectKind::Snapshot => {
                    report.snapshots += 1;
                    // The chain starts at the generation's first snapshot; a later one
                    // (scheduled) sits inside the stream and is checked alone.
                    let first = i == 0;
                    match check_snapshot(store, o).await? {
                        Ok(s) => {
                            report.raw_bytes += s.raw_len;
                            if first {
                                chain = Some((s.chain(), o.name.start, 0));
                                expected = o.name.start;
                            }
                        }
                        Err(p) => {
                            report.problems.push(p);
                            if first {
                                chain = None;
                            }
                        }
                    }
                }
                ObjectKind::Segment if !g.on_chain(i) => {
                    // Covered by a higher level (or off the chain, reported from the listing):
                    // checked alone.
                    report.segments += 1;
                    let Some(fetched) = segments.next().await else {
                        break;
                    };
                    let fetched = fetched?;
                    match fetched.value.and_then(|alone| {
                        let commands = alone.commands;
                        alone.content.map(|()| commands)
                    }) {
                        Ok(commands) => report.commands_covered += commands,
                        Err(p) => report.problems.push(p),
                    }
                }
                ObjectKind::Segment => {
                    report.segments += 1;
                    // Starting before `expected` is an overlap, reported from the listing.
                    if o.name.start > expected {
                        report.problems.push(Problem {
                            object: o.name.to_string(),
                            offset: 0,
                            what: format!(
                                "starts at replication offset {} but the generation continues at {}: offsets {}..{} are missing",
                                o.name.start, expected, expected, o.name.start
                            ),
                        });
                    }
                    expected = o.name.end;
                    let Some(fetched) = segments.next().await else {
                        // The fetch lists every segment the loop meets.
                        break;
                    };
                    let fetched = fetched?;
                    debug_assert_eq!(fetched.name, o.name);
                    let prev = chain.take();
                    match fetched
                        .value
                        .and_then(|alone| link_segment(&o.name, alone, prev))
                    {
                        Ok((checksum, db_end, commands)) => {
                            report.raw_bytes += o.name.end - o.name.start;
                            report.commands += commands;
                            chain = Some((checksum, o.name.end, db_end));
                        }
                        Err(p) => report.problems.push(p),
                    }
                }
            }
        }
        for o in g
            .trimmed
            .iter()
            .filter(|o| o.name.kind == ObjectKind::Segment)
        {
            report.stored_bytes += o.size;
            report.segments_before_first_snapshot += 1;
            let Some(fetched) = segments.next().await else {
                break;
            };
            if let Err(p) = fetched?.value.and_then(|alone| alone.content) {
                report.problems.push(p);
            }
        }
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// What a segment shows alone: decoded, its header matching its name, its commands scanned.
#[derive(Debug)]
pub struct SegmentAlone {
    /// Where the chain stands after it.
    after: ChainPoint,
    /// How it links to what came before, where it starts, and its databases at both ends.
    link: format::Link,
    start: u64,
    db_start: u32,
    db_end: u32,
    commands: u64,
    /// What is wrong with its commands; reported after what is wrong with its link.
    content: Result<(), Problem>,
}

/// Checks one segment alone (CPU work: run it on a blocking thread): its frame, checksums, its
/// header against its name, and that it holds whole commands ending in the database its
/// header says.
pub fn inspect_segment(name: &ObjectName, bytes: &[u8]) -> Result<SegmentAlone, Problem> {
    let problem = |offset: u64, what: String| Problem {
        object: name.to_string(),
        offset,
        what,
    };
    let seg = format::decode_segment(bytes).map_err(|e| problem(e.at, e.what))?;
    let h = &seg.header;
    if !h.matches(name) {
        return Err(problem(
            format::PREAMBLE_LEN as u64,
            format!(
                "header (generation {}, offsets {}..{}, times {}..{}, replid {}) disagrees with the name",
                h.generation, h.start, h.end, h.first_ms, h.last_ms, h.replid
            ),
        ));
    }
    let mut scanner = CommandScanner::new(h.db_start);
    let s = scanner.scan(&seg.raw, h.start);
    let content = if let Some(e) = s.error {
        Err(problem(0, format!("{e} (replication offset)")))
    } else if s.consumed != seg.raw.len() {
        Err(problem(
            0,
            format!(
                "ends inside a command: the last whole command ends at replication offset {}, the segment at {}",
                h.start + s.consumed as u64,
                h.end
            ),
        ))
    } else if scanner.db() != h.db_end {
        Err(problem(
            format::PREAMBLE_LEN as u64,
            format!(
                "header says db {} at the end, the commands select db {}",
                h.db_end,
                scanner.db()
            ),
        ))
    } else {
        Ok(())
    };
    Ok(SegmentAlone {
        after: ChainPoint::after_segment(h, seg.checksum),
        link: h.link,
        start: h.start,
        db_start: h.db_start,
        db_end: h.db_end,
        commands: s.commands,
        content,
    })
}

/// Checks a segment, checked alone, against the object before it (where the chain stood, its
/// end offset and the database selected there, when it checked out). Returns where the chain
/// stands after the segment, the database selected at its end, and its command count.
pub fn link_segment(
    name: &ObjectName,
    alone: SegmentAlone,
    prev: Option<(ChainPoint, u64, u32)>,
) -> Result<(ChainPoint, u32, u64), Problem> {
    let problem = |what: String| Problem {
        object: name.to_string(),
        offset: format::PREAMBLE_LEN as u64,
        what,
    };
    if let Some((prev_chain, prev_end, prev_db)) = prev {
        if prev_end == alone.start {
            if let Err((links_to, expected)) = prev_chain.admits(alone.link) {
                return Err(problem(format!(
                    "chain broken: links to {links_to:016x} but the object before ends with {expected:016x}"
                )));
            }
        }
        if prev_end == alone.start && prev_db != alone.db_start && prev_db != 0 {
            return Err(problem(format!(
                "starts in db {} but the segment before ends in db {prev_db}",
                alone.db_start
            )));
        }
    }
    alone.content?;
    Ok((alone.after, alone.db_end, alone.commands))
}

/// Checks one segment against its name and the object before it: [`inspect_segment`] then
/// [`link_segment`]. Returns where the chain stands after it, the database selected at its
/// end, and its command count.
pub fn check_segment(
    name: &ObjectName,
    bytes: &[u8],
    prev: Option<(ChainPoint, u64, u32)>,
) -> Result<(ChainPoint, u32, u64), Problem> {
    link_segment(name, inspect_segment(name, bytes)?, prev)
}

/// Streams a snapshot: header, zstd body, trailer, and the RDB inside it (parsed whole by the
/// streaming RDB parser, so a structurally broken RDB is found too).
async fn check_snapshot(
    store: &Store,
    listed: &Listed,
) -> Result<Result<SnapshotOk, Problem>, StoreError> {
    check_snapshot_named(store, listed.name).await
}

/// [`check_snapshot`] by name: what `pitr verify` checks of one snapshot, for the commands
/// that check the objects they read or wrote (`drill`, `ship`).
pub async fn check_snapshot_named(
    store: &Store,
    name: ObjectName,
) -> Result<Result<SnapshotOk, Problem>, StoreError> {
    let mut parser = crate::rdb::Parser::new(crate::rdb::ParserConfig {
        max_raw_value: 0,
        ..Default::default()
    });
    let mut events = Vec::new();
    read_snapshot(store, name, move |raw| {
        events.clear();
        match raw {
            // In small pieces: an LZF string expands up to 88 times, and the events of one
            // feed are held until it returns.
            Some(raw) => raw.chunks(crate::rdb::FEED_PIECE).try_for_each(|piece| {
                events.clear();
                parser
                    .feed(piece, &mut events)
                    .map_err(|e| format!("the RDB inside: {e}"))
            }),
            None => parser
                .finish()
                .map(|_| ())
                .map_err(|e| format!("the RDB inside: {e}")),
        }
    })
    .await
}

/// Streams a snapshot object and checks its frame (header, name, zstd body, trailer, hashes),
/// handing the raw RDB bytes to `on_raw` in order and `None` at the end; an error from
/// `on_raw` becomes the problem. Runs on a blocking thread; the object is never held whole.
pub async fn read_snapshot<F>(
    store: &Store,
    name: ObjectName,
    on_raw: F,
) -> Result<Result<SnapshotOk, Problem>, StoreError>
where
    F: FnMut(Option<bytes::Bytes>) -> Result<(), String> + Send + 'static,
{
    let (size, stream) = store.get_stream(&name).await?;
    let handle = tokio::runtime::Handle::current();
    let checked = tokio::task::spawn_blocking(move || {
        let mut on_raw = on_raw;
        let mut reader = StreamRead {
            handle,
            stream,
            cur: bytes::Bytes::new(),
            hash: Xxh3::new(),
            pos: 0,
            error: None,
        };
        let r = check_snapshot_blocking(&name, size, &mut reader, &mut on_raw);
        match reader.error.take() {
            Some(e) => Err(e),
            None => Ok(r),
        }
    })
    .await
    .expect("snapshot reader panicked");
    match checked {
        Ok(r) => Ok(r),
        Err(source) => Err(StoreError::Backend {
            op: "get",
            object: name.to_string(),
            source,
        }),
    }
}

/// Receives a snapshot's raw RDB bytes in order, then `None`.
type RawSink<'a> = dyn FnMut(Option<bytes::Bytes>) -> Result<(), String> + 'a;

fn check_snapshot_blocking(
    name: &ObjectName,
    size: u64,
    r: &mut StreamRead,
    on_raw: &mut RawSink<'_>,
) -> Result<SnapshotOk, Problem> {
    let problem = |offset: u64, what: String| Problem {
        object: name.to_string(),
        offset,
        what,
    };
    let mut pre = [0u8; format::PREAMBLE_LEN];
    r.read_exact(&mut pre)
        .map_err(|_| problem(0, "object shorter than its preamble".into()))?;
    let p = format::parse_preamble(&pre)
        .map_err(|e| problem(e.at, e.what))?
        .expect("a whole preamble");
    if p.kind != Kind::Snapshot {
        return Err(problem(0, "a segment where a snapshot was expected".into()));
    }
    let hr = p.header.clone();
    let mut head = pre.to_vec();
    head.resize(p.body_start(), 0);
    r.read_exact(&mut head[format::PREAMBLE_LEN..])
        .map_err(|_| problem(hr.start as u64, "header ends early".into()))?;
    p.check_header(&head).map_err(|e| problem(e.at, e.what))?;
    let h = SnapshotHeader::decode(&head[hr.clone()], hr.start, p.version)
        .map_err(|e| problem(e.at, e.what))?;
    if h.generation != name.generation
        || p.version != name.version
        || h.offset != name.start
        || h.time_ms != name.first_ms
        || h.replid != name.replid
    {
        return Err(problem(
            hr.start as u64,
            "header disagrees with the name".into(),
        ));
    }
    let body_start = p.body_start() as u64;
    let Some(body_len) = size.checked_sub(body_start + format::TRAILER_LEN as u64) else {
        return Err(problem(size, "object ends before its trailer".into()));
    };
    let mut raw_hash = Xxh3::new();
    let raw_len = {
        let mut body = (&mut *r).take(body_len);
        crate::archive::frames::decompress(
            &mut body,
            crate::archive::frames::default_workers(),
            &mut |piece| {
                raw_hash.update(&piece);
                on_raw(Some(piece))
            },
        )
        .map_err(|e| problem(body_start + e.at, e.what))?
    };
    let before_trailer = r.hash.clone();
    let mut t = [0u8; format::TRAILER_LEN];
    r.read_exact(&mut t)
        .map_err(|_| problem(body_start + body_len, "trailer ends early".into()))?;
    let mut hash = before_trailer;
    let trailer = format::check_trailer(&t, body_start + body_len, &mut hash)
        .map_err(|e| problem(e.at, e.what))?;
    if trailer.raw_len != raw_len || trailer.raw_hash != raw_hash.digest() {
        return Err(problem(
            body_start,
            format!(
                "body holds {raw_len} raw bytes with hash {:016x}; the trailer says {} bytes, {:016x}",
                raw_hash.digest(),
                trailer.raw_len,
                trailer.raw_hash
            ),
        ));
    }
    on_raw(None).map_err(|what| problem(body_start, what))?;
    Ok(SnapshotOk {
        header: h,
        checksum: trailer.checksum,
        raw_len,
    })
}

/// A blocking `Read` over an object's byte stream, hashing what it yields.
struct StreamRead {
    handle: tokio::runtime::Handle,
    stream: BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
    cur: bytes::Bytes,
    hash: Xxh3,
    pos: u64,
    error: Option<object_store::Error>,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            // The spent piece's buffer is freed before the next one is read, not after.
            self.cur = bytes::Bytes::new();
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.hash.update(&buf[..n]);
        self.pos += n as u64;
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// Real objects for tests: snapshots of a tiny RDB and segments of PINGs, chained as asked.
#[cfg(test)]
pub(crate) mod test_objects {
    use crate::archive::format::{self, SegmentHeader, SnapshotHeader, TimeMark};
    use crate::archive::names::{test_replid, GenerationId, ObjectName};
    use crate::archive::store::Store;

    /// One PING as the master replicates it: 14 bytes.
    pub const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

    /// A complete, empty RDB.
    pub fn rdb() -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.push(0xff);
        let crc = crate::rdb::crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// Uploads the base snapshot of generation `g` at `offset`, arrived at `ms`, in format
    /// version 2; its name and the stream sum the first segment after it starts from.
    pub async fn snapshot(store: &Store, g: u64, offset: u64, ms: u64) -> (ObjectName, u64) {
        let h = SnapshotHeader {
            generation: GenerationId(g),
            offset,
            time_ms: ms,
            replid: test_replid('a'),
            taken: Some(format::Taken::Base),
        };
        let name = ObjectName::snapshot(h.generation, offset, ms, h.replid).v2(0);
        let mut up = store
            .snapshot_upload(&name, &h, std::time::Duration::ZERO)
            .await
            .unwrap();
        up.write(&rdb()).await.unwrap();
        up.finish().await.unwrap();
        (name, format::stream_seed(h.generation))
    }

    /// Puts a level 0 segment of `pings` PINGs of generation `g` from `start`, arrived at
    /// `ms`, whose stream sum at its start is `prev`; its name and its stream sum at its end.
    pub async fn segment(
        store: &Store,
        g: u64,
        start: u64,
        pings: usize,
        ms: u64,
        prev: u64,
    ) -> (ObjectName, u64) {
        segment_of(store, g, start, &PING.repeat(pings), ms, prev).await
    }

    /// [`segment`] of the stream bytes `raw`, in database 0.
    pub async fn segment_of(
        store: &Store,
        g: u64,
        start: u64,
        raw: &[u8],
        ms: u64,
        prev: u64,
    ) -> (ObjectName, u64) {
        let end = start + raw.len() as u64;
        let sum_end = format::stream_sum(prev, raw);
        let h = SegmentHeader {
            generation: GenerationId(g),
            start,
            end,
            first_ms: ms,
            last_ms: ms,
            db_start: 0,
            db_end: 0,
            replid: test_replid('a'),
            link: format::Link::Stream {
                start: prev,
                end: sum_end,
            },
            level: 0,
            frames: Vec::new(),
            index: vec![TimeMark { end, ms }],
        };
        let (obj, _) = format::encode_segment(&h, raw).unwrap();
        let name = ObjectName::segment(h.generation, (start, end), (ms, ms), h.replid).v2(0);
        store.put_new(&name, obj.into()).await.unwrap();
        (name, sum_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::names::{test_replid, ArchiveName, GenerationId};

    /// Segments that end before a generation's first snapshot (an interrupted prune's
    /// leftovers) are on no chain and checked alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn segments_before_the_first_snapshot_are_checked_alone() {
        use test_objects::{segment, snapshot};
        let store = store();
        let (_, seed) = snapshot(&store, 1, 28, 1000).await;
        segment(&store, 1, 0, 2, 900, 12345).await;
        segment(&store, 1, 28, 1, 1100, seed).await;
        let v = verify(&store).await.unwrap();
        assert!(v.ok, "{:?}", v.problems);
        assert_eq!((v.segments, v.segments_before_first_snapshot), (1, 1));
    }

    /// Version 2: a level 1 object over two level 0 segments (compaction before the deletes)
    /// and a scheduled snapshot inside the stream are sound; a level 1 object whose sums
    /// disagree with the chain is not.
    #[tokio::test(flavor = "multi_thread")]
    async fn levels_and_scheduled_snapshots_verify() {
        use crate::archive::format::{self, Link, SegmentHeader, SnapshotHeader, Taken, TimeMark};
        use test_objects::{segment, snapshot, PING};
        let store = store();
        let (_, seed) = snapshot(&store, 1, 0, 1000).await;
        let (_, s1) = segment(&store, 1, 0, 2, 1100, seed).await;
        let (_, s2) = segment(&store, 1, 28, 1, 1200, s1).await;
        segment(&store, 1, 42, 1, 1300, s2).await;
        let put_l1 = |start_sum: u64| {
            let store = store.clone();
            async move {
                let raw = PING.repeat(3);
                let h = SegmentHeader {
                    generation: GenerationId(1),
                    start: 0,
                    end: 42,
                    first_ms: 1100,
                    last_ms: 1200,
                    db_start: 0,
                    db_end: 0,
                    replid: test_replid('a'),
                    link: Link::Stream {
                        start: start_sum,
                        end: format::stream_sum(start_sum, &raw),
                    },
                    level: 1,
                    frames: Vec::new(),
                    index: vec![
                        TimeMark { end: 28, ms: 1100 },
                        TimeMark { end: 42, ms: 1200 },
                    ],
                };
                let (obj, _) = format::encode_segment(&h, &raw).unwrap();
                let name = ObjectName::segment(h.generation, (0, 42), (1100, 1200), h.replid).v2(1);
                store.put_new(&name, obj.into()).await.unwrap();
                name
            }
        };
        let l1 = put_l1(seed).await;
        let sh = SnapshotHeader {
            generation: GenerationId(1),
            offset: 28,
            time_ms: 1150,
            replid: test_replid('a'),
            taken: Some(Taken::Scheduled),
        };
        let snap = ObjectName::snapshot(sh.generation, 28, 1150, sh.replid).v2(0);
        let mut up = store
            .snapshot_upload(&snap, &sh, std::time::Duration::ZERO)
            .await
            .unwrap();
        up.write(&test_objects::rdb()).await.unwrap();
        up.finish().await.unwrap();
        let r = verify(&store).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.snapshots, r.segments), (2, 4));
        // The chain: the level 1 object and the last segment; the two it covers alone.
        assert_eq!((r.commands, r.commands_covered), (4, 3));
        // A level 1 object that does not chain from the seed is found.
        object_store::ObjectStoreExt::delete(store.backend(), &store.path(&l1))
            .await
            .unwrap();
        put_l1(seed ^ 1).await;
        let r = verify(&store).await.unwrap();
        assert!(!r.ok);
        assert!(
            r.problems.iter().any(|p| p.what.contains("chain broken")),
            "{r:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fork_into_two_chains_is_found_whichever_snapshot_is_listed_last() {
        use test_objects::{segment, snapshot};
        // A sound archive first.
        let store = store();
        let (_, c) = snapshot(&store, 1, 0, 1000).await;
        let (_, c) = segment(&store, 1, 0, 2, 1100, c).await;
        segment(&store, 1, 28, 1, 1200, c).await;
        let r = verify(&store).await.unwrap();
        assert!(r.ok, "{:?}", r.problems);
        assert_eq!((r.snapshots, r.segments, r.commands), (1, 2, 3));

        // Two archivers started at once: two snapshots at offset 0; the segments chain to the
        // one listed last, so that reading in listing order alone finds nothing wrong.
        let store = self::store();
        let (a, _) = snapshot(&store, 1, 0, 1000).await;
        let (b, cb) = snapshot(&store, 1, 0, 1001).await;
        segment(&store, 1, 0, 1, 1100, cb).await;
        let r = verify(&store).await.unwrap();
        assert!(!r.ok);
        let p = &r.problems[0];
        assert!(p.what.contains("fork"), "{p}");
        assert!(
            p.object == b.to_string() && p.what.contains(&a.to_string()),
            "{p}"
        );

        // A second chain of segments over the same offsets (the second archiver resumed from
        // the same object): every object is on a chain, but the chains overlap.
        let store = self::store();
        let (_, c0) = snapshot(&store, 1, 0, 1000).await;
        let (_, c1) = segment(&store, 1, 0, 1, 1100, c0).await;
        let (x, _) = segment(&store, 1, 14, 2, 1200, c1).await;
        let (y, _) = segment(&store, 1, 14, 1, 1201, c1).await;
        let r = verify(&store).await.unwrap();
        assert!(!r.ok);
        assert!(
            r.problems.iter().any(|p| {
                let (x, y) = (x.to_string(), y.to_string());
                p.what.contains("fork")
                    && ((p.object == y && p.what.contains(&x))
                        || (p.object == x && p.what.contains(&y)))
            }),
            "{:?}",
            r.problems
        );

        // Segments without their snapshot.
        let store = self::store();
        let (s, _) = segment(&store, 2, 500, 1, 1100, 7).await;
        let r = verify(&store).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.problems[0].object, s.to_string());
        assert!(
            r.problems[0].what.contains("no snapshot"),
            "{:?}",
            r.problems
        );
    }
    use std::sync::{Arc, Mutex};

    use crate::archive::frames::tests::raw_data;

    fn snapshot_name() -> (ObjectName, SnapshotHeader) {
        let h = SnapshotHeader {
            generation: GenerationId(1),
            offset: 0,
            time_ms: 5,
            replid: test_replid('a'),
            taken: None,
        };
        (ObjectName::snapshot(h.generation, 0, 5, h.replid), h)
    }

    /// A snapshot object with `body` as its compressed body, framed as the archiver frames one.
    fn object(h: &SnapshotHeader, body: &[u8], raw: &[u8]) -> Vec<u8> {
        let mut obj = format::preamble(Kind::Snapshot, 1, &h.encode());
        obj.extend_from_slice(body);
        let mut hash = Xxh3::new();
        hash.update(&obj);
        let (t, _) = format::trailer(raw.len() as u64, xxhash_rust::xxh3::xxh3_64(raw), &mut hash);
        obj.extend_from_slice(&t);
        obj
    }

    /// Reads the snapshot back: its raw pieces, or the problem.
    async fn read(store: &Store, name: ObjectName) -> Result<Vec<Bytes>, Problem> {
        let pieces = Arc::new(Mutex::new(Vec::new()));
        let p2 = pieces.clone();
        let ended = Arc::new(Mutex::new(false));
        let e2 = ended.clone();
        read_snapshot(store, name, move |raw| {
            match raw {
                Some(b) => p2.lock().unwrap().push(b),
                None => *e2.lock().unwrap() = true,
            }
            Ok(())
        })
        .await
        .unwrap()?;
        assert!(*ended.lock().unwrap(), "no end of the raw bytes");
        let v = pieces.lock().unwrap().clone();
        Ok(v)
    }

    fn store() -> Store {
        let n: ArchiveName = "a".parse().unwrap();
        Store::open("memory://", &n).unwrap()
    }

    use bytes::Bytes;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_uploaded_snapshot_reads_back_in_bounded_pieces() {
        let store = store();
        let (name, h) = snapshot_name();
        let raw = raw_data(2 * crate::archive::frames::FRAME_RAW + 12345);
        let mut up = store
            .snapshot_upload(&name, &h, std::time::Duration::ZERO)
            .await
            .unwrap();
        for piece in raw.chunks(100_000) {
            up.write(piece).await.unwrap();
        }
        up.finish().await.unwrap();
        // The body is three frames, each decompressible alone.
        let obj = store.get(&name).await.unwrap();
        let mut body =
            &obj[format::PREAMBLE_LEN + h.encode().len()..obj.len() - format::TRAILER_LEN];
        let mut frames = Vec::new();
        while !body.is_empty() {
            let n = zstd::zstd_safe::find_frame_compressed_size(body).unwrap();
            frames.push(zstd::decode_all(&body[..n]).unwrap().len());
            body = &body[n..];
        }
        let f = crate::archive::frames::FRAME_RAW;
        assert_eq!(frames, vec![f, f, 12345]);
        let pieces = read(&store, name).await.unwrap();
        assert!(pieces
            .iter()
            .all(|p| !p.is_empty() && p.len() <= crate::archive::frames::RAW_PIECE));
        assert_eq!(pieces.concat(), raw);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_body_of_several_frames_is_read_whole() {
        let store = store();
        let (name, h) = snapshot_name();
        let raw = raw_data(2 * crate::archive::frames::RAW_PIECE + 777);
        let (a, b) = raw.split_at(crate::archive::frames::RAW_PIECE / 3);
        let mut body = zstd::bulk::compress(a, 1).unwrap();
        body.extend(zstd::bulk::compress(b, 1).unwrap());
        store
            .put_new(&name, Bytes::from(object(&h, &body, &raw)))
            .await
            .unwrap();
        assert_eq!(read(&store, name).await.unwrap().concat(), raw);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cut_or_extended_body_is_a_problem_naming_the_byte() {
        let (name, h) = snapshot_name();
        let raw = raw_data(crate::archive::frames::RAW_PIECE + 99);
        let body = zstd::bulk::compress(&raw, 1).unwrap();
        // Cut inside the frame (the trailer still matches the object).
        let store = store();
        let cut = &body[..body.len() - 10];
        store
            .put_new(&name, Bytes::from(object(&h, cut, &raw)))
            .await
            .unwrap();
        let p = read(&store, name).await.unwrap_err();
        assert!(p.what.contains("ends inside a frame"), "{}", p.what);
        assert!(p.offset > 0, "{p:?}");
        // Garbage after the frame.
        let store = self::store();
        let mut longer = body.clone();
        longer.extend_from_slice(b"not a frame at all");
        store
            .put_new(&name, Bytes::from(object(&h, &longer, &raw)))
            .await
            .unwrap();
        let p = read(&store, name).await.unwrap_err();
        assert!(p.what.contains("zstd body"), "{}", p.what);
        let body_start = (format::PREAMBLE_LEN + h.encode().len()) as u64;
        assert!(p.offset >= body_start + body.len() as u64 - 1, "{p:?}");
    }

    /// A slow store (50 ms a GET) holding a snapshot and 24 chained segments of PINGs; the
    /// segment at `bad_link` (if any) links to the wrong checksum. The store, its GET counts
    /// (segments only) and the segments' names.
    async fn slow_archive(
        bad_link: Option<usize>,
    ) -> (
        Store,
        std::sync::Arc<crate::archive::fetch::counting::Counts>,
        Vec<ObjectName>,
    ) {
        use test_objects::{segment, snapshot, PING};
        let (store, counts) = crate::archive::fetch::counting::slow_store(Some(".segment"));
        let (_, mut c) = snapshot(&store, 1, 0, 1000).await;
        let mut names = Vec::new();
        for i in 0..24u64 {
            let link = if bad_link == Some(i as usize) {
                c ^ 1
            } else {
                c
            };
            let (name, next) =
                segment(&store, 1, i * 2 * PING.len() as u64, 2, 1100 + i, link).await;
            names.push(name);
            c = next;
        }
        (store, counts, names)
    }

    /// 24 segments at 8 in flight: the GETs overlap 8 at a time (3 round trips' worth instead
    /// of 24), and the report is the one of reading them one at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_are_read_in_parallel_and_checked_in_order() {
        let (store, counts, _) = slow_archive(None).await;
        let mut reports = Vec::new();
        for parallel in [1, 8] {
            counts.reset();
            let fetch = FetchConfig {
                parallel,
                ..Default::default()
            };
            let r = verify_with(&store, fetch).await.unwrap();
            assert!(r.ok, "{:?}", r.problems);
            assert_eq!((r.snapshots, r.segments, r.commands), (1, 24, 48));
            assert_eq!(counts.max(), parallel);
            assert_eq!(counts.started.lock().unwrap().len(), 24);
            reports.push(serde_json::to_string(&r).unwrap());
        }
        assert_eq!(reports[0], reports[1]);
    }

    /// A broken link in the middle is reported for that segment, whatever the parallelism;
    /// the segment after it (checked without a predecessor) is not blamed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_link_in_the_middle_names_that_segment() {
        let (store, counts, names) = slow_archive(Some(10)).await;
        for parallel in [1, 8] {
            counts.reset();
            let fetch = FetchConfig {
                parallel,
                ..Default::default()
            };
            let r = verify_with(&store, fetch).await.unwrap();
            assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
            assert_eq!(r.problems[0].object, names[10].to_string());
            assert!(
                r.problems[0].what.contains("chain broken"),
                "{}",
                r.problems[0]
            );
            assert_eq!(counts.max(), parallel);
        }
    }

    /// A segment whose GET fails is a store error naming it, though the segments after it
    /// were already being fetched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_get_in_the_middle_is_the_error_of_that_segment() {
        let (store, counts, names) = slow_archive(None).await;
        *counts.fail.lock().unwrap() = Some(names[10].to_string());
        let err = verify_with(&store, FetchConfig::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&names[10].to_string()), "{err}");
        assert!(counts.started.lock().unwrap().len() > 11);
    }
}
