//! The archive's object format (written down in `docs/format.md`): a self-describing header,
//! a zstd body, and a trailer with the raw length, a hash of the raw bytes and a checksum of the
//! whole object. Segments also say how they chain to what came before, so a missing,
//! reordered or altered object is detected: in version 1 by the checksum of the object before
//! them, in version 2 by the stream sums at their start and end ([`stream_seed`], [`Link`]).
//!
//! ```text
//! preamble  magic(8) "PITRSEG\0" | "PITRSNP\0", version u16, flags u16, header_len u32
//! header    header_len bytes of little-endian fields (below)
//! check     (version 2) xxh3-64 of the preamble and header
//! body      the raw bytes as zstd: one frame (version 1 segments), or frames of
//!           `frames::FRAME_RAW` raw bytes each (snapshots; see [`crate::archive::frames`]),
//!           or the frames a version 2 segment's header lists
//! trailer   raw_len u64, raw_hash u64 (xxh3-64 of the raw bytes),
//!           checksum u64 (xxh3-64 of every object byte before this field), magic "PITREND\0"
//! ```
//!
//! Pure functions over bytes: no I/O. Snapshots are written piecewise by the store (they are
//! too large to hold), so the preamble, header and trailer are exposed separately.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::archive::names::{GenerationId, ReplId};
use crate::resp::scanner::CommandScanner;

pub const SEGMENT_MAGIC: &[u8; 8] = b"PITRSEG\0";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PITRSNP\0";
pub const TRAILER_MAGIC: &[u8; 8] = b"PITREND\0";
/// The format version this release writes.
pub const FORMAT_VERSION: u16 = 1;
/// The format versions this release reads.
pub const READS_VERSIONS: std::ops::RangeInclusive<u16> = 1..=2;
/// The length of a version 2 header check.
pub const HEADER_CHECK_LEN: usize = 8;
pub const PREAMBLE_LEN: usize = 16;
pub const TRAILER_LEN: usize = 32;
/// zstd level used for segments and snapshots.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest raw segment accepted when reading (a writer seals far below this).
pub const MAX_SEGMENT_RAW: u64 = 4 << 30;
const SEGMENT_FIXED_V2: usize = 8 * 5 + 4 * 2 + 40 + 4 + 8 * 2 + 4 + 4;
const SNAPSHOT_FIXED: usize = 8 * 3 + 40;

/// A problem with an object's bytes, with the byte offset inside the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {at}: {what}")]
pub struct FormatError {
    pub at: u64,
    pub what: String,
}

fn ferr(at: usize, what: impl Into<String>) -> FormatError {
    FormatError {
        at: at as u64,
        what: what.into(),
    }
}

/// Arrival time of the stream: all bytes before offset `end` had arrived by `ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeMark {
    pub end: u64,
    pub ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub generation: GenerationId,
    pub start: u64,
    pub end: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The database selected before the first byte, and after the last.
    pub db_start: u32,
    pub db_end: u32,
    pub replid: ReplId,
    /// How the segment chains to what came before; also says its format version.
    pub link: Link,
    /// Version 2: the level (0 = as archived, 1.. = compacted); 0 in version 1.
    pub level: u8,
    /// Version 2: the body's zstd frames, in order; empty in version 1 (one frame).
    pub frames: Vec<FrameEntry>,
    /// One mark per read of the socket (coalesced per millisecond), in offset order; the last
    /// mark's `end` is the segment's `end`.
    pub index: Vec<TimeMark>,
}

/// How a segment chains to the stream before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Version 1: the checksum of the object before this one in the generation (its snapshot,
    /// or the previous segment).
    PrevObject(u64),
    /// Version 2: the stream sums at the segment's start and end: `end` is
    /// `crc64(start, raw)`, and `start` is the end of whatever came before (or the
    /// generation's [`stream_seed`]).
    Stream { start: u64, end: u64 },
}

/// One zstd frame of a version 2 segment's body: the offset just past its last raw byte, and
/// its compressed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameEntry {
    pub raw_end: u64,
    pub stored: u64,
}

/// The stream sum of generation `g` at its first offset: the seed every version 2 chain
/// starts from, so that a segment of another generation never chains into this one.
pub fn stream_seed(g: GenerationId) -> u64 {
    let mut seed = b"PITR stream\0".to_vec();
    seed.extend_from_slice(&g.0.to_le_bytes());
    crate::rdb::crc64(0, &seed)
}

/// The stream sum after `raw`, continuing from `sum`.
pub fn stream_sum(sum: u64, raw: &[u8]) -> u64 {
    crate::rdb::crc64(sum, raw)
}

impl SegmentHeader {
    /// Whether this header says what `name` says (generation, offsets, times, replication id):
    /// an object whose header disagrees with its name is not trusted.
    pub fn matches(&self, name: &crate::archive::names::ObjectName) -> bool {
        self.generation == name.generation
            && self.start == name.start
            && self.end == name.end
            && self.first_ms == name.first_ms
            && self.last_ms == name.last_ms
            && self.replid == name.replid
            && self.version() == name.version
            && self.level == name.level
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub generation: GenerationId,
    pub offset: u64,
    pub time_ms: u64,
    pub replid: ReplId,
    /// Version 2: how it was taken; `None` in version 1 (always the generation's base).
    pub taken: Option<Taken>,
}

/// How a version 2 snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Taken {
    /// By the archiving link when its generation began.
    Base,
    /// Later, on a link of its own, at any offset of the generation.
    Scheduled,
}

impl SnapshotHeader {
    /// The format version the header is written in.
    pub fn version(&self) -> u16 {
        if self.taken.is_some() {
            2
        } else {
            1
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub raw_len: u64,
    pub raw_hash: u64,
    pub checksum: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Segment,
    Snapshot,
}

/// The preamble and header of an object in format `version`, and in version 2 the header
/// check after them: everything before the body.
pub fn preamble(kind: Kind, version: u16, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE_LEN + header.len() + HEADER_CHECK_LEN);
    out.extend_from_slice(match kind {
        Kind::Segment => SEGMENT_MAGIC,
        Kind::Snapshot => SNAPSHOT_MAGIC,
    });
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    if version >= 2 {
        let check = xxh3_64(&out);
        out.extend_from_slice(&check.to_le_bytes());
    }
    out
}

/// What a preamble says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preamble {
    pub kind: Kind,
    pub version: u16,
    /// The header's bytes in the object.
    pub header: std::ops::Range<usize>,
}

impl Preamble {
    /// Where the body starts: after the header, and in version 2 its check.
    pub fn body_start(&self) -> usize {
        self.header.end
            + if self.version >= 2 {
                HEADER_CHECK_LEN
            } else {
                0
            }
    }

    /// Checks a version 2 header check: `head` holds the object's bytes up to the body.
    pub fn check_header(&self, head: &[u8]) -> Result<(), FormatError> {
        if self.version < 2 {
            return Ok(());
        }
        let at = self.header.end;
        let Some(stored) = head.get(at..at + HEADER_CHECK_LEN) else {
            return Err(ferr(at, "header check cut short"));
        };
        let stored = u64::from_le_bytes(stored.try_into().expect("8 bytes"));
        let actual = xxh3_64(&head[..at]);
        if stored != actual {
            return Err(ferr(
                at,
                format!("header check mismatch: stored {stored:016x}, computed {actual:016x}"),
            ));
        }
        Ok(())
    }
}

/// Reads the preamble. `Ok(None)` if `buf` is too short.
pub fn parse_preamble(buf: &[u8]) -> Result<Option<Preamble>, FormatError> {
    if buf.len() < PREAMBLE_LEN {
        return Ok(None);
    }
    let kind = match &buf[..8] {
        m if m == SEGMENT_MAGIC => Kind::Segment,
        m if m == SNAPSHOT_MAGIC => Kind::Snapshot,
        m => {
            return Err(ferr(
                0,
                format!("bad magic {:?}", String::from_utf8_lossy(m)),
            ))
        }
    };
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if !READS_VERSIONS.contains(&version) {
        return Err(ferr(
            8,
            format!("format version {version}, which this release cannot read (it reads 1 and 2)"),
        ));
    }
    let len = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
    if len > 64 << 20 {
        return Err(ferr(12, format!("header of {len} bytes")));
    }
    Ok(Some(Preamble {
        kind,
        version,
        header: PREAMBLE_LEN..PREAMBLE_LEN + len,
    }))
}

/// Builds the trailer for an object whose bytes so far were fed to `object_hash`.
pub fn trailer(raw_len: u64, raw_hash: u64, object_hash: &mut Xxh3) -> ([u8; TRAILER_LEN], u64) {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(&raw_len.to_le_bytes());
    t[8..16].copy_from_slice(&raw_hash.to_le_bytes());
    object_hash.update(&t[..16]);
    let checksum = object_hash.digest();
    t[16..24].copy_from_slice(&checksum.to_le_bytes());
    t[24..32].copy_from_slice(TRAILER_MAGIC);
    (t, checksum)
}

/// Reads and checks a trailer: `object_hash` holds the hash of every object byte before it.
pub fn check_trailer(t: &[u8], at: u64, object_hash: &mut Xxh3) -> Result<Trailer, FormatError> {
    let at = at as usize;
    if t.len() != TRAILER_LEN {
        return Err(ferr(at, "object too short for its trailer"));
    }
    if &t[24..32] != TRAILER_MAGIC {
        return Err(ferr(
            at + 24,
            "no trailer magic: the object is truncated or corrupt",
        ));
    }
    object_hash.update(&t[..16]);
    let actual = object_hash.digest();
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(t[r].try_into().expect("8 bytes"));
    let trailer = Trailer {
        raw_len: u(0..8),
        raw_hash: u(8..16),
        checksum: u(16..24),
    };
    if trailer.checksum != actual {
        return Err(ferr(
            at + 16,
            format!(
                "object checksum mismatch: stored {:016x}, computed {actual:016x}",
                trailer.checksum
            ),
        ));
    }
    Ok(trailer)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.pos < n {
            return Err(ferr(self.base + self.pos, "header ends early"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn replid(&mut self) -> Result<ReplId, FormatError> {
        let at = self.base + self.pos;
        ReplId::from_bytes(self.take(40)?).map_err(|e| ferr(at, e.to_string()))
    }
}

impl SegmentHeader {
    /// The format version the header is written in.
    pub fn version(&self) -> u16 {
        match self.link {
            Link::PrevObject(_) => 1,
            Link::Stream { .. } => 2,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut h =
            Vec::with_capacity(SEGMENT_FIXED_V2 + 16 * (self.index.len() + self.frames.len()));
        for v in [
            self.generation.0,
            self.start,
            self.end,
            self.first_ms,
            self.last_ms,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&self.db_start.to_le_bytes());
        h.extend_from_slice(&self.db_end.to_le_bytes());
        h.extend_from_slice(self.replid.as_bytes());
        match self.link {
            Link::PrevObject(prev) => h.extend_from_slice(&prev.to_le_bytes()),
            Link::Stream { start, end } => {
                h.extend_from_slice(&u32::from(self.level).to_le_bytes());
                h.extend_from_slice(&start.to_le_bytes());
                h.extend_from_slice(&end.to_le_bytes());
                h.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
                for f in &self.frames {
                    h.extend_from_slice(&f.raw_end.to_le_bytes());
                    h.extend_from_slice(&f.stored.to_le_bytes());
                }
            }
        }
        h.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for m in &self.index {
            h.extend_from_slice(&m.end.to_le_bytes());
            h.extend_from_slice(&m.ms.to_le_bytes());
        }
        h
    }

    /// Decodes a header of format `version` found at byte `base` of its object, and checks
    /// it is consistent.
    pub fn decode(buf: &[u8], base: usize, version: u16) -> Result<SegmentHeader, FormatError> {
        let mut r = Reader { buf, pos: 0, base };
        let generation = GenerationId(r.u64()?);
        let (start, end, first_ms, last_ms) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let (db_start, db_end) = (r.u32()?, r.u32()?);
        let replid = r.replid()?;
        let (link, level, frames) = if version >= 2 {
            let at = base + r.pos;
            let level = r.u32()?;
            if level > u32::from(crate::archive::names::MAX_LEVEL) {
                return Err(ferr(at, format!("level {level}")));
            }
            let link = Link::Stream {
                start: r.u64()?,
                end: r.u64()?,
            };
            let count = r.u32()? as usize;
            if count > (buf.len() - r.pos) / 16 {
                return Err(ferr(
                    base + r.pos - 4,
                    format!("frame table of {count} frames"),
                ));
            }
            let mut frames = Vec::with_capacity(count);
            for _ in 0..count {
                frames.push(FrameEntry {
                    raw_end: r.u64()?,
                    stored: r.u64()?,
                });
            }
            (link, level as u8, frames)
        } else {
            (Link::PrevObject(r.u64()?), 0, Vec::new())
        };
        let count = r.u32()? as usize;
        if count > (buf.len() - r.pos) / 16 {
            return Err(ferr(
                base + r.pos - 4,
                format!("time index of {count} marks"),
            ));
        }
        let mut index = Vec::with_capacity(count);
        for _ in 0..count {
            index.push(TimeMark {
                end: r.u64()?,
                ms: r.u64()?,
            });
        }
        let h = SegmentHeader {
            generation,
            start,
            end,
            first_ms,
            last_ms,
            db_start,
            db_end,
            replid,
            link,
            level,
            frames,
            index,
        };
        h.check().map_err(|what| ferr(base, what))?;
        Ok(h)
    }

    fn check(&self) -> Result<(), String> {
        if self.start >= self.end {
            return Err(format!("empty range {}..{}", self.start, self.end));
        }
        if self.end - self.start > MAX_SEGMENT_RAW {
            return Err(format!("range {}..{} too large", self.start, self.end));
        }
        let (Some(first), Some(last)) = (self.index.first(), self.index.last()) else {
            return Err("empty time index".into());
        };
        if first.ms != self.first_ms || last.ms != self.last_ms || last.end != self.end {
            return Err("time index disagrees with the header".into());
        }
        let mut prev = TimeMark {
            end: self.start,
            ms: 0,
        };
        for m in &self.index {
            if m.end <= prev.end || m.ms < prev.ms {
                return Err(format!("time index not increasing at offset {}", m.end));
            }
            prev = *m;
        }
        if self.version() >= 2 {
            let mut prev = self.start;
            for f in &self.frames {
                if f.raw_end <= prev || f.stored == 0 {
                    return Err(format!(
                        "frame table not increasing at offset {}",
                        f.raw_end
                    ));
                }
                prev = f.raw_end;
            }
            if prev != self.end {
                return Err(format!(
                    "frame table ends at offset {prev}, the segment at {}",
                    self.end
                ));
            }
        }
        Ok(())
    }

    /// Arrival time of the byte just before `offset` (the completion of a command ending there).
    pub fn time_at(&self, offset: u64) -> Option<u64> {
        let i = self.index.partition_point(|m| m.end < offset);
        self.index.get(i).map(|m| m.ms)
    }
}

impl SnapshotHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(SNAPSHOT_FIXED + 4);
        for v in [self.generation.0, self.offset, self.time_ms] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(self.replid.as_bytes());
        if let Some(taken) = self.taken {
            let t: u32 = match taken {
                Taken::Base => 0,
                Taken::Scheduled => 1,
            };
            h.extend_from_slice(&t.to_le_bytes());
        }
        h
    }

    /// Decodes a header of format `version` found at byte `base` of its object.
    pub fn decode(buf: &[u8], base: usize, version: u16) -> Result<SnapshotHeader, FormatError> {
        let mut r = Reader { buf, pos: 0, base };
        let (generation, offset, time_ms) = (GenerationId(r.u64()?), r.u64()?, r.u64()?);
        let replid = r.replid()?;
        let taken = if version >= 2 {
            let at = base + r.pos;
            Some(match r.u32()? {
                0 => Taken::Base,
                1 => Taken::Scheduled,
                t => return Err(ferr(at, format!("unknown snapshot kind {t}"))),
            })
        } else {
            None
        };
        Ok(SnapshotHeader {
            generation,
            offset,
            time_ms,
            replid,
            taken,
        })
    }
}

/// A segment's body, compressed as its bytes arrive, so that sealing only finishes the zstd
/// frame and frames the object (the archiver never holds a segment's raw bytes).
pub struct SegmentBody {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    raw_hash: Xxh3,
    raw_len: u64,
    /// Version 2: the stream sum so far.
    sum: Option<u64>,
}

impl SegmentBody {
    /// A version 1 body.
    pub fn new() -> Result<SegmentBody, FormatError> {
        Self::with_sum(None)
    }

    /// A version 2 body whose stream sum at its start is `sum_start`; its frame carries its
    /// content checksum.
    pub fn new_v2(sum_start: u64) -> Result<SegmentBody, FormatError> {
        Self::with_sum(Some(sum_start))
    }

    fn with_sum(sum: Option<u64>) -> Result<SegmentBody, FormatError> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        if sum.is_some() {
            encoder
                .include_checksum(true)
                .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        }
        // One zstd worker thread: compression runs beside the segmenter (which hashes and
        // frames) instead of inside it. The frame is the same single frame either way.
        encoder
            .multithread(1)
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        Ok(SegmentBody {
            encoder,
            raw_hash: Xxh3::new(),
            raw_len: 0,
            sum,
        })
    }

    /// Compresses the next raw bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FormatError> {
        use std::io::Write;
        self.raw_hash.update(data);
        self.raw_len += data.len() as u64;
        if let Some(sum) = &mut self.sum {
            *sum = stream_sum(*sum, data);
        }
        self.encoder
            .write_all(data)
            .map_err(|e| ferr(0, format!("zstd: {e}")))
    }

    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Version 2: the stream sum after the bytes written so far.
    pub fn stream_sum(&self) -> Option<u64> {
        self.sum
    }

    /// Seals the segment. Returns the object bytes and its checksum (in version 1 the next
    /// link of the chain). `header` must describe exactly the bytes written; in version 2 its
    /// frame table is filled in here (one frame).
    pub fn seal(self, header: &SegmentHeader) -> Result<(Vec<u8>, u64), FormatError> {
        debug_assert_eq!(self.raw_len, header.end - header.start);
        let body = self
            .encoder
            .finish()
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        let encoded = match header.link {
            Link::PrevObject(_) => header.encode(),
            Link::Stream { .. } => {
                debug_assert_eq!(
                    header.link,
                    Link::Stream {
                        start: match header.link {
                            Link::Stream { start, .. } => start,
                            _ => 0,
                        },
                        end: self.sum.unwrap_or_default(),
                    }
                );
                let mut h = header.clone();
                h.frames = vec![FrameEntry {
                    raw_end: header.end,
                    stored: body.len() as u64,
                }];
                h.encode()
            }
        };
        let mut out = preamble(Kind::Segment, header.version(), &encoded);
        out.reserve(body.len() + TRAILER_LEN);
        out.extend_from_slice(&body);
        let mut hash = Xxh3::new();
        hash.update(&out);
        let (t, checksum) = trailer(self.raw_len, self.raw_hash.digest(), &mut hash);
        out.extend_from_slice(&t);
        Ok((out, checksum))
    }
}

/// Encodes a whole segment at once, in the version its header says (in version 2, the
/// header's end sum must be the stream sum after `raw`). Returns the object bytes and its
/// checksum.
pub fn encode_segment(header: &SegmentHeader, raw: &[u8]) -> Result<(Vec<u8>, u64), FormatError> {
    let mut body = match header.link {
        Link::PrevObject(_) => SegmentBody::new()?,
        Link::Stream { start, .. } => SegmentBody::new_v2(start)?,
    };
    body.write(raw)?;
    body.seal(header)
}

/// A version 2 segment of several zstd frames, built from whole commands as they come (the
/// objects compaction joins): each frame holds about `frame_raw` raw bytes (see
/// [`crate::archive::frames::FRAME_RAW`]) and ends on a command boundary; a single command
/// larger than a frame is a frame of its own. Each frame carries its zstd content checksum.
///
/// Only compressed frames are kept: raw bytes are compressed straight from the caller's
/// slices, so what it holds is the compressed body so far plus zstd's own window.
pub struct FramedSegment {
    enc: zstd::stream::raw::Encoder<'static>,
    frame_raw: usize,
    /// Raw bytes in the frame being written.
    in_frame: usize,
    /// The frame being written, compressed so far.
    current: Vec<u8>,
    /// The frames ended so far, compressed.
    body: Vec<bytes::Bytes>,
    frames: Vec<FrameEntry>,
    start: u64,
    /// The offset just past the last byte written.
    pos: u64,
    raw_hash: Xxh3,
    sum_start: u64,
    sum: u64,
}

/// A segment object in pieces, as [`FramedSegment::finish`] makes it: everything before the
/// body, the body's frames, and the trailer. Concatenated, they are the object.
#[derive(Debug)]
pub struct SegmentParts {
    /// The header as written, its frame table filled in.
    pub header: SegmentHeader,
    /// Preamble, header and header check.
    pub head: bytes::Bytes,
    /// The compressed frames, in order.
    pub body: Vec<bytes::Bytes>,
    pub trailer: bytes::Bytes,
    /// The trailer's values.
    pub raw_len: u64,
    pub raw_hash: u64,
    pub checksum: u64,
}

impl SegmentParts {
    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        (self.head.len() + self.body.iter().map(|b| b.len()).sum::<usize>() + self.trailer.len())
            as u64
    }

    /// Never: an object has at least a preamble and a trailer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The object's pieces in order, to be written without joining them.
    pub fn chunks(&self) -> impl Iterator<Item = bytes::Bytes> + '_ {
        std::iter::once(self.head.clone())
            .chain(self.body.iter().cloned())
            .chain(std::iter::once(self.trailer.clone()))
    }

    /// The object as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() as usize);
        for c in self.chunks() {
            out.extend_from_slice(&c);
        }
        out
    }
}

impl FramedSegment {
    /// A segment starting at offset `start`, where the stream sum is `sum_start`, cut into
    /// frames of about `frame_raw` raw bytes.
    pub fn new(start: u64, sum_start: u64, frame_raw: usize) -> Result<FramedSegment, FormatError> {
        let zstd_err = |e: std::io::Error| ferr(0, format!("zstd: {e}"));
        let mut enc = zstd::stream::raw::Encoder::new(ZSTD_LEVEL).map_err(zstd_err)?;
        enc.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
            .map_err(zstd_err)?;
        Ok(FramedSegment {
            enc,
            frame_raw: frame_raw.max(1),
            in_frame: 0,
            current: Vec::new(),
            body: Vec::new(),
            frames: Vec::new(),
            start,
            pos: start,
            raw_hash: Xxh3::new(),
            sum_start,
            sum: sum_start,
        })
    }

    /// Appends `raw`, the stream bytes from [`end`](Self::end) on: whole commands, and nothing
    /// else (an error otherwise, naming the replication offset, and nothing is written).
    pub fn write(&mut self, raw: &[u8]) -> Result<(), FormatError> {
        let base = self.pos;
        let whole = CommandScanner::new(0).scan(raw, base);
        if let Some(e) = whole.error {
            return Err(ferr(0, e.to_string()));
        }
        if whole.consumed != raw.len() {
            return Err(ferr(
                0,
                format!(
                    "the bytes from replication offset {base} end inside a command at {}",
                    base + raw.len() as u64
                ),
            ));
        }
        let mut rest = raw;
        while !rest.is_empty() {
            let room = self.frame_raw - self.in_frame;
            if rest.len() <= room {
                self.compress(rest)?;
                break;
            }
            // The whole commands that fit the frame's room.
            let at = self.pos;
            let fit = CommandScanner::new(0).scan(&rest[..room], at).consumed;
            let take = if fit > 0 {
                fit
            } else if self.in_frame > 0 {
                // The next command does not fit: it starts the next frame.
                self.end_frame()?;
                continue;
            } else {
                // One command larger than a frame: a frame of its own.
                CommandScanner::new(0).scan_limit(rest, at, 1).consumed
            };
            if take == 0 {
                return Err(ferr(
                    0,
                    format!("no whole command at replication offset {at}"),
                ));
            }
            self.compress(&rest[..take])?;
            rest = &rest[take..];
            self.end_frame()?;
        }
        Ok(())
    }

    /// The offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.pos
    }

    /// The stream sum after the bytes written so far.
    pub fn stream_sum(&self) -> u64 {
        self.sum
    }

    /// Compressed bytes held so far.
    pub fn stored_len(&self) -> u64 {
        (self.body.iter().map(|b| b.len()).sum::<usize>() + self.current.len()) as u64
    }

    fn compress(&mut self, data: &[u8]) -> Result<(), FormatError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        self.raw_hash.update(data);
        self.sum = stream_sum(self.sum, data);
        self.pos += data.len() as u64;
        self.in_frame += data.len();
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            self.current.reserve(64 << 10);
            let at = self.current.len();
            self.enc
                .run(
                    &mut input,
                    &mut OutBuffer::around_pos(&mut self.current, at),
                )
                .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        }
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), FormatError> {
        use zstd::stream::raw::{Operation, OutBuffer};
        if self.in_frame == 0 {
            return Ok(());
        }
        let zstd_err = |e: std::io::Error| ferr(0, format!("zstd: {e}"));
        loop {
            self.current.reserve(64 << 10);
            let at = self.current.len();
            let left = self
                .enc
                .finish(&mut OutBuffer::around_pos(&mut self.current, at), true)
                .map_err(zstd_err)?;
            if left == 0 {
                break;
            }
        }
        self.enc.reinit().map_err(zstd_err)?;
        let frame = std::mem::take(&mut self.current);
        self.frames.push(FrameEntry {
            raw_end: self.pos,
            stored: frame.len() as u64,
        });
        self.body.push(frame.into());
        self.in_frame = 0;
        Ok(())
    }

    /// Ends the last frame and frames the object. `header` must describe exactly the bytes
    /// written (its range, and in its [`Link::Stream`] the sums at both ends); its frame table
    /// is filled in here.
    pub fn finish(mut self, header: &SegmentHeader) -> Result<SegmentParts, FormatError> {
        self.end_frame()?;
        let want = Link::Stream {
            start: self.sum_start,
            end: self.sum,
        };
        if header.start != self.start || header.end != self.pos || header.link != want {
            return Err(ferr(
                PREAMBLE_LEN,
                format!(
                    "the header says offsets {}..{} with {:?}, the bytes written are {}..{} with {want:?}",
                    header.start, header.end, header.link, self.start, self.pos
                ),
            ));
        }
        let mut h = header.clone();
        h.frames = std::mem::take(&mut self.frames);
        h.check().map_err(|what| ferr(PREAMBLE_LEN, what))?;
        let head = preamble(Kind::Segment, 2, &h.encode());
        let mut hash = Xxh3::new();
        hash.update(&head);
        for f in &self.body {
            hash.update(f);
        }
        let raw_len = self.pos - self.start;
        let raw_hash = self.raw_hash.digest();
        let (t, checksum) = trailer(raw_len, raw_hash, &mut hash);
        Ok(SegmentParts {
            header: h,
            head: head.into(),
            body: self.body,
            trailer: bytes::Bytes::copy_from_slice(&t),
            raw_len,
            raw_hash,
            checksum,
        })
    }
}

/// Encodes a version 2 segment of `raw` (whole commands) as frames of about `frame_raw` raw
/// bytes, each ending on a command boundary (see [`FramedSegment`]). The header's end sum must
/// be the stream sum after `raw`; its frame table is filled in. Returns the object bytes and
/// its checksum.
pub fn encode_segment_frames(
    header: &SegmentHeader,
    raw: &[u8],
    frame_raw: usize,
) -> Result<(Vec<u8>, u64), FormatError> {
    let Link::Stream { start, .. } = header.link else {
        return Err(ferr(
            PREAMBLE_LEN,
            "a segment of several frames is version 2 only",
        ));
    };
    let mut b = FramedSegment::new(header.start, start, frame_raw)?;
    b.write(raw)?;
    let parts = b.finish(header)?;
    Ok((parts.to_vec(), parts.checksum))
}

/// Where a chain stands after an object: what the next segment must link to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainPoint {
    /// Version 1: the checksum of the object before.
    Object(u64),
    /// Version 2: the stream sum at the next segment's start.
    Stream(u64),
    /// Not known (a version 2 scheduled snapshot, which sits inside the stream): the next
    /// segment's own start sum is taken as it is.
    Any,
}

impl ChainPoint {
    /// After a snapshot with `header` and object checksum `checksum`.
    pub fn after_snapshot(header: &SnapshotHeader, checksum: u64) -> ChainPoint {
        match header.taken {
            None => ChainPoint::Object(checksum),
            Some(Taken::Base) => ChainPoint::Stream(stream_seed(header.generation)),
            Some(Taken::Scheduled) => ChainPoint::Any,
        }
    }

    /// After a segment with `header` and object checksum `checksum`.
    pub fn after_segment(header: &SegmentHeader, checksum: u64) -> ChainPoint {
        match header.link {
            Link::PrevObject(_) => ChainPoint::Object(checksum),
            Link::Stream { end, .. } => ChainPoint::Stream(end),
        }
    }

    /// Whether a segment whose header has `link` follows; if not, what it links to and what
    /// was expected.
    pub fn admits(&self, link: Link) -> Result<(), (u64, u64)> {
        match (*self, link) {
            (ChainPoint::Any, _) => Ok(()),
            (ChainPoint::Object(want), Link::PrevObject(got))
            | (ChainPoint::Stream(want), Link::Stream { start: got, .. }) => {
                if want == got {
                    Ok(())
                } else {
                    Err((got, want))
                }
            }
            // A version change inside a chain: never written, so never followed.
            (ChainPoint::Object(want), Link::Stream { start: got, .. })
            | (ChainPoint::Stream(want), Link::PrevObject(got)) => Err((got, want)),
        }
    }
}

/// A decoded and fully checked segment.
#[derive(Debug)]
pub struct Segment {
    pub header: SegmentHeader,
    pub raw: bytes::Bytes,
    pub checksum: u64,
}

/// Decodes a whole segment object and checks everything it can check alone: magic, version,
/// header consistency, checksum, raw length and raw hash.
pub fn decode_segment(obj: &[u8]) -> Result<Segment, FormatError> {
    let Some(pre) = parse_preamble(obj)? else {
        return Err(ferr(obj.len(), "object shorter than its preamble"));
    };
    if pre.kind != Kind::Segment {
        return Err(ferr(0, "a snapshot where a segment was expected"));
    }
    let hr = pre.header.clone();
    let body_start = pre.body_start();
    if obj.len() < body_start + TRAILER_LEN {
        return Err(ferr(obj.len(), "object ends before its trailer"));
    }
    let tstart = obj.len() - TRAILER_LEN;
    let mut hash = Xxh3::new();
    hash.update(&obj[..tstart]);
    let trailer = check_trailer(&obj[tstart..], tstart as u64, &mut hash)?;
    pre.check_header(obj)?;
    let header = SegmentHeader::decode(&obj[hr.clone()], hr.start, pre.version)?;
    let body = &obj[body_start..tstart];
    if header.version() >= 2 {
        let stored: u64 = header.frames.iter().map(|f| f.stored).sum();
        if stored != body.len() as u64 {
            return Err(ferr(
                body_start,
                format!(
                    "frame table says {stored} stored bytes, the body holds {}",
                    body.len()
                ),
            ));
        }
    }
    if trailer.raw_len != header.end - header.start {
        return Err(ferr(
            tstart,
            format!(
                "raw length {} but the range {}..{} holds {}",
                trailer.raw_len,
                header.start,
                header.end,
                header.end - header.start
            ),
        ));
    }
    let raw = zstd::bulk::decompress(body, trailer.raw_len as usize)
        .map_err(|e| ferr(body_start, format!("zstd body: {e}")))?;
    if raw.len() as u64 != trailer.raw_len {
        return Err(ferr(
            body_start,
            format!(
                "body holds {} bytes, trailer says {}",
                raw.len(),
                trailer.raw_len
            ),
        ));
    }
    let h = xxh3_64(&raw);
    if h != trailer.raw_hash {
        return Err(ferr(
            body_start,
            format!(
                "raw hash mismatch: stored {:016x}, computed {h:016x}",
                trailer.raw_hash
            ),
        ));
    }
    if let Link::Stream { start, end } = header.link {
        let sum = stream_sum(start, &raw);
        if sum != end {
            return Err(ferr(
                hr.start,
                format!("stream sum after the raw bytes is {sum:016x}, the header says {end:016x}"),
            ));
        }
    }
    Ok(Segment {
        header,
        raw: raw.into(),
        checksum: trailer.checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::names::test_replid;

    fn header(raw: &[u8]) -> SegmentHeader {
        SegmentHeader {
            generation: GenerationId(2),
            start: 1000,
            end: 1000 + raw.len() as u64,
            first_ms: 5,
            last_ms: 9,
            db_start: 0,
            db_end: 3,
            replid: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            link: crate::archive::format::Link::PrevObject(77),
            level: 0,
            frames: Vec::new(),
            index: vec![
                TimeMark { end: 1004, ms: 5 },
                TimeMark {
                    end: 1000 + raw.len() as u64,
                    ms: 9,
                },
            ],
        }
    }

    #[test]
    fn segment_round_trips() {
        let raw = b"*1\r\n$4\r\nPING\r\n".repeat(10);
        let h = header(&raw);
        let (obj, checksum) = encode_segment(&h, &raw).unwrap();
        let seg = decode_segment(&obj).unwrap();
        assert_eq!(seg.header, h);
        assert_eq!(seg.raw, raw);
        assert_eq!(seg.checksum, checksum);
        assert_eq!(h.time_at(1004), Some(5));
        assert_eq!(h.time_at(1005), Some(9));
        assert_eq!(h.time_at(h.end + 1), None);
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let raw = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n".repeat(3);
        let (obj, _) = encode_segment(&header(&raw), &raw).unwrap();
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x40;
            assert!(decode_segment(&bad).is_err(), "flip at {i} not detected");
        }
        for n in 0..obj.len() {
            let e = decode_segment(&obj[..n]).unwrap_err();
            assert!(e.at <= n as u64, "truncation at {n}: {e}");
        }
    }

    #[test]
    fn inconsistent_header_is_rejected() {
        let raw = b"*1\r\n$4\r\nPING\r\n".to_vec();
        let mut h = header(&raw);
        h.index[0].end = 2000;
        let (obj, _) = encode_segment(&h, &raw).unwrap();
        let e = decode_segment(&obj).unwrap_err();
        assert!(e.what.contains("time index"), "{e}");
    }

    /// The test header in version 2, chained from `sum_start`, at `level`.
    fn header_v2(raw: &[u8], sum_start: u64, level: u8) -> SegmentHeader {
        SegmentHeader {
            link: Link::Stream {
                start: sum_start,
                end: stream_sum(sum_start, raw),
            },
            level,
            ..header(raw)
        }
    }

    #[test]
    fn version_2_segment_round_trips_with_its_frame_table() {
        let raw = b"*1\r\n$4\r\nPING\r\n".repeat(10);
        let h = header_v2(&raw, 1234, 2);
        let (obj, checksum) = encode_segment(&h, &raw).unwrap();
        assert_eq!(&obj[8..10], &2u16.to_le_bytes());
        let seg = decode_segment(&obj).unwrap();
        assert_eq!(seg.raw, raw);
        assert_eq!(seg.checksum, checksum);
        assert_eq!(seg.header.version(), 2);
        assert_eq!(seg.header.level, 2);
        assert_eq!(seg.header.link, h.link);
        assert_eq!(seg.header.frames.len(), 1);
        assert_eq!(seg.header.frames[0].raw_end, h.end);
        assert_eq!(
            SegmentHeader {
                frames: Vec::new(),
                ..seg.header
            },
            h
        );
    }

    /// Every flipped byte and every truncation of a segment object fails to decode.
    fn every_flip_and_truncation_is_detected(obj: &[u8]) {
        for i in 0..obj.len() {
            let mut bad = obj.to_vec();
            bad[i] ^= 0x40;
            assert!(decode_segment(&bad).is_err(), "flip at {i} not detected");
        }
        for n in 0..obj.len() {
            assert!(decode_segment(&obj[..n]).is_err(), "truncation at {n}");
        }
    }

    #[test]
    fn version_2_every_flipped_byte_and_truncation_is_detected() {
        let raw = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n".repeat(3);
        let (obj, _) = encode_segment(&header_v2(&raw, 7, 0), &raw).unwrap();
        every_flip_and_truncation_is_detected(&obj);
    }

    #[test]
    fn a_stream_sum_that_does_not_follow_from_the_bytes_is_refused() {
        let raw = b"*1\r\n$4\r\nPING\r\n".to_vec();
        let mut h = header_v2(&raw, 7, 0);
        h.link = Link::Stream { start: 7, end: 8 };
        let (obj, _) = encode_segment(&h, &raw).unwrap();
        let e = decode_segment(&obj).unwrap_err();
        assert!(e.what.contains("stream sum"), "{e}");
    }

    /// Sums continue across any split of the stream: one object replacing a run of objects
    /// chains exactly as the run did.
    #[test]
    fn the_chain_is_over_the_stream_not_over_objects() {
        let g = GenerationId(5);
        let seed = stream_seed(g);
        assert_ne!(seed, stream_seed(GenerationId(6)));
        let a = b"*1\r\n$4\r\nPING\r\n".to_vec();
        let b = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n".to_vec();
        let ha = header_v2(&a, seed, 0);
        let Link::Stream { end: after_a, .. } = ha.link else {
            unreachable!()
        };
        let hb = header_v2(&b, after_a, 0);
        let whole = [a.clone(), b.clone()].concat();
        let hab = header_v2(&whole, seed, 1);
        assert_eq!(
            hab.link,
            Link::Stream {
                start: seed,
                end: match hb.link {
                    Link::Stream { end, .. } => end,
                    _ => unreachable!(),
                },
            }
        );
        let base = SnapshotHeader {
            generation: g,
            offset: 0,
            time_ms: 1,
            replid: test_replid('a'),
            taken: Some(Taken::Base),
        };
        let start = ChainPoint::after_snapshot(&base, 99);
        assert_eq!(start.admits(ha.link), Ok(()));
        assert_eq!(start.admits(hab.link), Ok(()));
        assert!(start.admits(hb.link).is_err());
        assert_eq!(ChainPoint::after_segment(&ha, 0).admits(hb.link), Ok(()));
        // A scheduled snapshot sits inside the stream: the next segment starts the check.
        let scheduled = SnapshotHeader {
            taken: Some(Taken::Scheduled),
            ..base
        };
        assert_eq!(
            ChainPoint::after_snapshot(&scheduled, 99).admits(hb.link),
            Ok(())
        );
        // Versions never mix inside a chain.
        assert!(ChainPoint::Object(0).admits(ha.link).is_err());
    }

    /// A small stream of varied commands: PINGs, SELECTs, SETs, and one command of
    /// `big` bytes of value.
    fn mixed_commands(big: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        for i in 0..40 {
            match i % 4 {
                0 => raw.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
                1 => raw.extend_from_slice(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"),
                _ => {
                    let v = format!("value-{i}");
                    raw.extend_from_slice(
                        format!(
                            "*3\r\n$3\r\nSET\r\n$3\r\nk{:02}\r\n${}\r\n{v}\r\n",
                            i,
                            v.len()
                        )
                        .as_bytes(),
                    );
                }
            }
            if i == 20 {
                let v = "x".repeat(big);
                raw.extend_from_slice(
                    format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{v}\r\n", v.len()).as_bytes(),
                );
            }
        }
        raw
    }

    #[test]
    fn segment_of_frames_round_trips_with_frames_on_command_boundaries() {
        let raw = mixed_commands(300);
        let h = header_v2(&raw, 99, 1);
        let (obj, checksum) = encode_segment_frames(&h, &raw, 64).unwrap();
        let seg = decode_segment(&obj).unwrap();
        assert_eq!(seg.raw, raw);
        assert_eq!(seg.checksum, checksum);
        assert_eq!(seg.header.link, h.link);
        assert_eq!(seg.header.level, 1);
        assert_eq!(seg.header.index, h.index);
        let frames = &seg.header.frames;
        assert!(frames.len() > 5, "{frames:?}");
        let ends: Vec<u64> = crate::resp::scanner::command_ends(&raw, 0)
            .unwrap()
            .into_iter()
            .map(|e| h.start + e as u64)
            .collect();
        let mut prev = h.start;
        let mut big_frames = 0;
        for f in frames {
            assert!(
                ends.contains(&f.raw_end),
                "frame ends at {} inside a command",
                f.raw_end
            );
            let len = f.raw_end - prev;
            if len > 64 {
                // Only the one command larger than a frame has a frame of its own.
                big_frames += 1;
                assert!(len > 300, "frame of {len} bytes");
                assert_eq!(
                    ends.iter().filter(|&&e| e > prev && e <= f.raw_end).count(),
                    1
                );
            }
            prev = f.raw_end;
        }
        assert_eq!(big_frames, 1);
        // Each frame is a zstd frame of its own, with its content checksum.
        let mut at =
            obj.len() - TRAILER_LEN - frames.iter().map(|f| f.stored as usize).sum::<usize>();
        let mut prev = h.start;
        for f in frames {
            let one = &obj[at..at + f.stored as usize];
            assert_eq!(one[4] & 0x04, 0x04, "content checksum flag");
            let r = zstd::bulk::decompress(one, 1 << 20).unwrap();
            assert_eq!(
                &r[..],
                &raw[(prev - h.start) as usize..(f.raw_end - h.start) as usize]
            );
            at += f.stored as usize;
            prev = f.raw_end;
        }
        // The builder fed in pieces (whole commands each) makes the same object.
        let mut b = FramedSegment::new(h.start, 99, 64).unwrap();
        let ends_local = crate::resp::scanner::command_ends(&raw, 0).unwrap();
        let mut from = 0;
        for e in ends_local
            .iter()
            .step_by(7)
            .chain(std::iter::once(&raw.len()))
        {
            b.write(&raw[from..*e]).unwrap();
            from = *e;
        }
        let parts = b.finish(&h).unwrap();
        assert_eq!(parts.to_vec(), obj);
        assert_eq!(parts.len(), obj.len() as u64);
    }

    #[test]
    fn a_segment_of_frames_refuses_partial_commands_and_a_wrong_header() {
        let raw = mixed_commands(10);
        let mut b = FramedSegment::new(1000, 99, 64).unwrap();
        assert!(b.write(&raw[..raw.len() - 1]).is_err());
        b.write(&raw).unwrap();
        let mut h = header_v2(&raw, 99, 1);
        h.link = Link::Stream { start: 99, end: 1 };
        assert!(b.finish(&h).is_err());
    }

    #[test]
    fn segment_of_frames_every_flipped_byte_and_truncation_is_detected() {
        let raw = mixed_commands(40);
        let (obj, _) = encode_segment_frames(&header_v2(&raw, 7, 1), &raw, 48).unwrap();
        assert!(decode_segment(&obj).unwrap().header.frames.len() > 3);
        every_flip_and_truncation_is_detected(&obj);
    }

    #[test]
    fn version_2_snapshot_header_round_trips_behind_its_check() {
        for taken in [Taken::Base, Taken::Scheduled] {
            let h = SnapshotHeader {
                generation: GenerationId(4),
                offset: 99,
                time_ms: 123,
                replid: test_replid('c'),
                taken: Some(taken),
            };
            let p = preamble(Kind::Snapshot, h.version(), &h.encode());
            let pre = parse_preamble(&p).unwrap().unwrap();
            assert_eq!(pre.version, 2);
            assert_eq!(pre.body_start(), p.len());
            pre.check_header(&p).unwrap();
            let r = pre.header.clone();
            assert_eq!(
                SnapshotHeader::decode(&p[r.clone()], r.start, 2).unwrap(),
                h
            );
            let mut bad = p.clone();
            bad[20] ^= 1;
            assert!(pre.check_header(&bad).is_err());
        }
        let mut p = preamble(Kind::Snapshot, 2, b"");
        p[8] = 3;
        let e = parse_preamble(&p).unwrap_err();
        assert!(e.what.contains("version 3"), "{e}");
    }

    #[test]
    fn snapshot_header_round_trips() {
        let h = SnapshotHeader {
            generation: GenerationId(4),
            offset: 99,
            time_ms: 123,
            replid: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            taken: None,
        };
        let p = preamble(Kind::Snapshot, 1, &h.encode());
        let pre = parse_preamble(&p).unwrap().unwrap();
        let r = pre.header.clone();
        assert_eq!((pre.kind, pre.version), (Kind::Snapshot, 1));
        assert_eq!(
            SnapshotHeader::decode(&p[r.clone()], r.start, 1).unwrap(),
            h
        );
        assert!(parse_preamble(&p[..10]).unwrap().is_none());
        assert!(parse_preamble(b"NOTMAGICxxxxxxxxxxxx").is_err());
    }
}
