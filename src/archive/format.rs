//! The archive's object format (written down in `docs/format.md`): a self-describing header,
//! a zstd body, and a trailer with the raw length, a hash of the raw bytes and a checksum of the
//! whole object. Segments also carry the checksum of the object before them (the chain), so a
//! missing, reordered or altered object is detected.
//!
//! ```text
//! preamble  magic(8) "PITRSEG\0" | "PITRSNP\0", version u16, flags u16, header_len u32
//! header    header_len bytes of little-endian fields (below)
//! body      the raw bytes as zstd: one frame (segments), or frames of
//!           `frames::FRAME_RAW` raw bytes each (snapshots; see [`crate::archive::frames`])
//! trailer   raw_len u64, raw_hash u64 (xxh3-64 of the raw bytes),
//!           checksum u64 (xxh3-64 of every object byte before this field), magic "PITREND\0"
//! ```
//!
//! Pure functions over bytes: no I/O. Snapshots are written piecewise by the store (they are
//! too large to hold), so the preamble, header and trailer are exposed separately.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::archive::names::{GenerationId, ReplId};

pub const SEGMENT_MAGIC: &[u8; 8] = b"PITRSEG\0";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PITRSNP\0";
pub const TRAILER_MAGIC: &[u8; 8] = b"PITREND\0";
pub const FORMAT_VERSION: u16 = 1;
pub const PREAMBLE_LEN: usize = 16;
pub const TRAILER_LEN: usize = 32;
/// zstd level used for segments and snapshots.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest raw segment accepted when reading (a writer seals far below this).
pub const MAX_SEGMENT_RAW: u64 = 4 << 30;
const SEGMENT_FIXED: usize = 8 * 5 + 4 * 2 + 40 + 8 + 4;
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
    /// The checksum of the object before this one in the generation (its snapshot, or the
    /// previous segment).
    pub prev_chain: u64,
    /// One mark per read of the socket (coalesced per millisecond), in offset order; the last
    /// mark's `end` is the segment's `end`.
    pub index: Vec<TimeMark>,
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
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub generation: GenerationId,
    pub offset: u64,
    pub time_ms: u64,
    pub replid: ReplId,
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

/// The preamble and header of an object.
pub fn preamble(kind: Kind, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE_LEN + header.len());
    out.extend_from_slice(match kind {
        Kind::Segment => SEGMENT_MAGIC,
        Kind::Snapshot => SNAPSHOT_MAGIC,
    });
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out
}

/// Reads the preamble: the kind and the header's byte range. `Ok(None)` if `buf` is too short.
pub fn parse_preamble(buf: &[u8]) -> Result<Option<(Kind, std::ops::Range<usize>)>, FormatError> {
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
    if version != FORMAT_VERSION {
        return Err(ferr(8, format!("unsupported format version {version}")));
    }
    let len = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
    if len > 64 << 20 {
        return Err(ferr(12, format!("header of {len} bytes")));
    }
    Ok(Some((kind, PREAMBLE_LEN..PREAMBLE_LEN + len)))
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
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(SEGMENT_FIXED + 16 * self.index.len());
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
        h.extend_from_slice(&self.prev_chain.to_le_bytes());
        h.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for m in &self.index {
            h.extend_from_slice(&m.end.to_le_bytes());
            h.extend_from_slice(&m.ms.to_le_bytes());
        }
        h
    }

    /// Decodes a header found at byte `base` of its object, and checks it is consistent.
    pub fn decode(buf: &[u8], base: usize) -> Result<SegmentHeader, FormatError> {
        let mut r = Reader { buf, pos: 0, base };
        let generation = GenerationId(r.u64()?);
        let (start, end, first_ms, last_ms) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let (db_start, db_end) = (r.u32()?, r.u32()?);
        let replid = r.replid()?;
        let prev_chain = r.u64()?;
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
            prev_chain,
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
        let mut h = Vec::with_capacity(SNAPSHOT_FIXED);
        for v in [self.generation.0, self.offset, self.time_ms] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(self.replid.as_bytes());
        h
    }

    pub fn decode(buf: &[u8], base: usize) -> Result<SnapshotHeader, FormatError> {
        let mut r = Reader { buf, pos: 0, base };
        Ok(SnapshotHeader {
            generation: GenerationId(r.u64()?),
            offset: r.u64()?,
            time_ms: r.u64()?,
            replid: r.replid()?,
        })
    }
}

/// A segment's body, compressed as its bytes arrive, so that sealing only finishes the zstd
/// frame and frames the object (the archiver never holds a segment's raw bytes).
pub struct SegmentBody {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    raw_hash: Xxh3,
    raw_len: u64,
}

impl SegmentBody {
    pub fn new() -> Result<SegmentBody, FormatError> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        // One zstd worker thread: compression runs beside the segmenter (which hashes and
        // frames) instead of inside it. The frame is the same single frame either way.
        encoder
            .multithread(1)
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        Ok(SegmentBody {
            encoder,
            raw_hash: Xxh3::new(),
            raw_len: 0,
        })
    }

    /// Compresses the next raw bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FormatError> {
        use std::io::Write;
        self.raw_hash.update(data);
        self.raw_len += data.len() as u64;
        self.encoder
            .write_all(data)
            .map_err(|e| ferr(0, format!("zstd: {e}")))
    }

    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Seals the segment. Returns the object bytes and its checksum (the next link of the
    /// chain). `header` must describe exactly the bytes written.
    pub fn seal(self, header: &SegmentHeader) -> Result<(Vec<u8>, u64), FormatError> {
        debug_assert_eq!(self.raw_len, header.end - header.start);
        let body = self
            .encoder
            .finish()
            .map_err(|e| ferr(0, format!("zstd: {e}")))?;
        let mut out = preamble(Kind::Segment, &header.encode());
        out.reserve(body.len() + TRAILER_LEN);
        out.extend_from_slice(&body);
        let mut hash = Xxh3::new();
        hash.update(&out);
        let (t, checksum) = trailer(self.raw_len, self.raw_hash.digest(), &mut hash);
        out.extend_from_slice(&t);
        Ok((out, checksum))
    }
}

/// Encodes a whole segment at once. Returns the object bytes and its checksum.
pub fn encode_segment(header: &SegmentHeader, raw: &[u8]) -> Result<(Vec<u8>, u64), FormatError> {
    let mut body = SegmentBody::new()?;
    body.write(raw)?;
    body.seal(header)
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
    let Some((kind, hr)) = parse_preamble(obj)? else {
        return Err(ferr(obj.len(), "object shorter than its preamble"));
    };
    if kind != Kind::Segment {
        return Err(ferr(0, "a snapshot where a segment was expected"));
    }
    if obj.len() < hr.end + TRAILER_LEN {
        return Err(ferr(obj.len(), "object ends before its trailer"));
    }
    let tstart = obj.len() - TRAILER_LEN;
    let mut hash = Xxh3::new();
    hash.update(&obj[..tstart]);
    let trailer = check_trailer(&obj[tstart..], tstart as u64, &mut hash)?;
    let header = SegmentHeader::decode(&obj[hr.clone()], hr.start)?;
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
    let raw = zstd::bulk::decompress(&obj[hr.end..tstart], trailer.raw_len as usize)
        .map_err(|e| ferr(hr.end, format!("zstd body: {e}")))?;
    if raw.len() as u64 != trailer.raw_len {
        return Err(ferr(
            hr.end,
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
            hr.end,
            format!(
                "raw hash mismatch: stored {:016x}, computed {h:016x}",
                trailer.raw_hash
            ),
        ));
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
            prev_chain: 77,
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

    #[test]
    fn snapshot_header_round_trips() {
        let h = SnapshotHeader {
            generation: GenerationId(4),
            offset: 99,
            time_ms: 123,
            replid: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
        };
        let p = preamble(Kind::Snapshot, &h.encode());
        let (kind, r) = parse_preamble(&p).unwrap().unwrap();
        assert_eq!(kind, Kind::Snapshot);
        assert_eq!(SnapshotHeader::decode(&p[r.clone()], r.start).unwrap(), h);
        assert!(parse_preamble(&p[..10]).unwrap().is_none());
        assert!(parse_preamble(b"NOTMAGICxxxxxxxxxxxx").is_err());
    }
}
