//! Decoders for the encoded containers an RDB stores as one string each: listpack, ziplist,
//! intset, zipmap, and the stream listpack layout on top of listpack.
//!
//! Each decoder validates the container fully (sizes, end marks, back-lengths, entry counts) and
//! returns its elements borrowed from the blob; errors are plain text naming the byte position
//! inside the blob, and the caller adds the file offset.

use bytes::Bytes;

use super::cursor::{int_bytes, parse_f64};
use super::StreamId;

/// One element of a listpack or ziplist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem<'a> {
    Int(i64),
    Str(&'a [u8]),
}

impl Elem<'_> {
    /// The element as bytes: strings are sliced from `blob` (no copy), integers are formatted.
    pub fn to_bytes(self, blob: &Bytes) -> Bytes {
        match self {
            Elem::Str(&[]) => Bytes::new(),
            Elem::Str(s) => blob.slice_ref(s),
            Elem::Int(v) => int_bytes(v),
        }
    }

    /// The element as an integer (strings holding a decimal integer are accepted).
    pub fn to_i64(self) -> Option<i64> {
        match self {
            Elem::Int(v) => Some(v),
            Elem::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }

    /// The element as a score.
    pub fn to_f64(self) -> Option<f64> {
        match self {
            Elem::Int(v) => Some(v as f64),
            Elem::Str(s) => parse_f64(s),
        }
    }
}

fn get(blob: &[u8], at: usize, n: usize, what: &str) -> Result<usize, String> {
    match at.checked_add(n) {
        Some(end) if end <= blob.len() => Ok(end),
        _ => Err(format!(
            "{what} at byte {at} runs past the end of the {}-byte container",
            blob.len()
        )),
    }
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Sign-extend the low `bits` bits of `v`.
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Number of bytes of a listpack entry's back-length for an entry of `len` bytes
/// (`lpEncodeBacklen`).
fn backlen_size(len: usize) -> usize {
    if len <= 127 {
        1
    } else if len < 16383 {
        2
    } else if len < 2_097_151 {
        3
    } else if len < 268_435_455 {
        4
    } else {
        5
    }
}

/// Decode a back-length stored in `b` (read from its last byte backwards, `lpDecodeBacklen`).
fn decode_backlen(b: &[u8]) -> u64 {
    let mut val = 0u64;
    let mut shift = 0;
    for &x in b.iter().rev() {
        val |= u64::from(x & 127) << shift;
        shift += 7;
    }
    val
}

/// Checks the frame listpacks and ziplists share: a header of `header` bytes that starts with
/// the total length (`u32`), and the `0xFF` end mark. Returns the end mark's position.
fn framed(kind: &str, blob: &[u8], header: usize) -> Result<usize, String> {
    if blob.len() < header + 1 {
        return Err(format!(
            "{kind} of {} bytes is shorter than its header and end mark",
            blob.len()
        ));
    }
    let total = le_uint(&blob[0..4]) as usize;
    if total != blob.len() {
        return Err(format!(
            "{kind} header says {total} bytes, the string holds {}",
            blob.len()
        ));
    }
    let end = blob.len() - 1;
    if blob[end] != 0xff {
        return Err(format!("{kind} does not end with 0xFF"));
    }
    Ok(end)
}

/// All elements of a listpack (`u32 total bytes`, `u16 count`, entries, `0xFF`).
pub(crate) fn listpack(blob: &[u8]) -> Result<Vec<Elem<'_>>, String> {
    let end = framed("listpack", blob, 6)?;
    let count = le_uint(&blob[4..6]) as usize;
    let mut out = Vec::with_capacity(count.min((end - 6) / 2));
    let mut p = 6;
    while p < end {
        let b = blob[p];
        let (elem, enc_len) = if b & 0x80 == 0 {
            (Elem::Int(i64::from(b)), 1)
        } else if b & 0xc0 == 0x80 {
            let n = (b & 0x3f) as usize;
            let e = get(blob, p + 1, n, "listpack string")?;
            (Elem::Str(&blob[p + 1..e]), 1 + n)
        } else if b & 0xe0 == 0xc0 {
            get(blob, p, 2, "listpack integer")?;
            let v = (u64::from(b & 0x1f) << 8) | u64::from(blob[p + 1]);
            (Elem::Int(sign_extend(v, 13)), 2)
        } else if b & 0xf0 == 0xe0 {
            get(blob, p, 2, "listpack string header")?;
            let n = ((usize::from(b & 0x0f)) << 8) | usize::from(blob[p + 1]);
            let e = get(blob, p + 2, n, "listpack string")?;
            (Elem::Str(&blob[p + 2..e]), 2 + n)
        } else {
            match b {
                0xf0 => {
                    get(blob, p, 5, "listpack string header")?;
                    let n = le_uint(&blob[p + 1..p + 5]) as usize;
                    let e = get(blob, p + 5, n, "listpack string")?;
                    (Elem::Str(&blob[p + 5..e]), 5 + n)
                }
                0xf1..=0xf4 => {
                    let width = match b {
                        0xf1 => 2,
                        0xf2 => 3,
                        0xf3 => 4,
                        _ => 8,
                    };
                    get(blob, p, 1 + width, "listpack integer")?;
                    let v = le_uint(&blob[p + 1..p + 1 + width]);
                    (Elem::Int(sign_extend(v, 8 * width as u32)), 1 + width)
                }
                0xff => return Err(format!("listpack end mark at byte {p} before the end")),
                _ => return Err(format!("unknown listpack encoding 0x{b:02x} at byte {p}")),
            }
        };
        let bl = backlen_size(enc_len);
        let next = get(blob, p + enc_len, bl, "listpack back-length")?;
        if next > end {
            return Err(format!("listpack entry at byte {p} runs into the end mark"));
        }
        let stored = decode_backlen(&blob[p + enc_len..next]);
        if stored != enc_len as u64 {
            return Err(format!(
                "listpack entry at byte {p} has back-length {stored}, its size is {enc_len}"
            ));
        }
        out.push(elem);
        p = next;
    }
    if count != 65535 && out.len() != count {
        return Err(format!(
            "listpack header counts {count} entries, it holds {}",
            out.len()
        ));
    }
    Ok(out)
}

/// All elements of a ziplist (`u32 zlbytes`, `u32 zltail`, `u16 zllen`, entries, `0xFF`).
pub(crate) fn ziplist(blob: &[u8]) -> Result<Vec<Elem<'_>>, String> {
    let end = framed("ziplist", blob, 10)?;
    let zltail = le_uint(&blob[4..8]) as usize;
    let zllen = le_uint(&blob[8..10]) as usize;
    let mut out = Vec::with_capacity(zllen.min((end - 10) / 2));
    let mut p = 10;
    let mut prev_len = 0usize;
    let mut last_start = 10;
    while p < end {
        let start = p;
        let (prevlen, plen) = match blob[p] {
            0xff => return Err(format!("ziplist end mark at byte {p} before the end")),
            0xfe => {
                get(blob, p, 5, "ziplist prevlen")?;
                (le_uint(&blob[p + 1..p + 5]) as usize, 5)
            }
            b => (usize::from(b), 1),
        };
        if prevlen != prev_len {
            return Err(format!(
                "ziplist entry at byte {p} says the previous entry has {prevlen} bytes, it has {prev_len}"
            ));
        }
        p += plen;
        if p >= end {
            return Err(format!(
                "ziplist entry at byte {start} has no encoding byte"
            ));
        }
        let enc = blob[p];
        let (elem, next) = match enc >> 6 {
            0 => {
                let n = usize::from(enc & 0x3f);
                let e = get(blob, p + 1, n, "ziplist string")?;
                (Elem::Str(&blob[p + 1..e]), e)
            }
            1 => {
                get(blob, p, 2, "ziplist string header")?;
                let n = (usize::from(enc & 0x3f) << 8) | usize::from(blob[p + 1]);
                let e = get(blob, p + 2, n, "ziplist string")?;
                (Elem::Str(&blob[p + 2..e]), e)
            }
            2 => {
                if enc != 0x80 {
                    return Err(format!("unknown ziplist encoding 0x{enc:02x} at byte {p}"));
                }
                get(blob, p, 5, "ziplist string header")?;
                let n = u32::from_be_bytes([blob[p + 1], blob[p + 2], blob[p + 3], blob[p + 4]])
                    as usize;
                let e = get(blob, p + 5, n, "ziplist string")?;
                (Elem::Str(&blob[p + 5..e]), e)
            }
            _ => {
                let width = match enc {
                    0xc0 => 2,
                    0xd0 => 4,
                    0xe0 => 8,
                    0xf0 => 3,
                    0xfe => 1,
                    0xf1..=0xfd => 0,
                    _ => return Err(format!("unknown ziplist encoding 0x{enc:02x} at byte {p}")),
                };
                let e = get(blob, p + 1, width, "ziplist integer")?;
                let v = if width == 0 {
                    i64::from(enc & 0x0f) - 1
                } else {
                    sign_extend(le_uint(&blob[p + 1..e]), 8 * width as u32)
                };
                (Elem::Int(v), e)
            }
        };
        if next > end {
            return Err(format!(
                "ziplist entry at byte {start} runs into the end mark"
            ));
        }
        out.push(elem);
        prev_len = next - start;
        last_start = start;
        p = next;
    }
    if zltail != last_start {
        return Err(format!(
            "ziplist tail offset is {zltail}, the last entry starts at byte {last_start}"
        ));
    }
    if zllen != 65535 && out.len() != zllen {
        return Err(format!(
            "ziplist header counts {zllen} entries, it holds {}",
            out.len()
        ));
    }
    Ok(out)
}

/// All members of an intset (`u32 encoding` 2/4/8, `u32 length`, sorted little-endian integers).
pub(crate) fn intset(blob: &[u8]) -> Result<Vec<i64>, String> {
    if blob.len() < 8 {
        return Err(format!(
            "intset of {} bytes is shorter than its header",
            blob.len()
        ));
    }
    let enc = le_uint(&blob[0..4]) as usize;
    if !matches!(enc, 2 | 4 | 8) {
        return Err(format!("intset encoding {enc} is not 2, 4 or 8"));
    }
    let len = le_uint(&blob[4..8]) as usize;
    let want = len.checked_mul(enc).and_then(|n| n.checked_add(8));
    if want != Some(blob.len()) {
        return Err(format!(
            "intset of {len} {enc}-byte members needs {} bytes, the string holds {}",
            want.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            blob.len()
        ));
    }
    let mut out: Vec<i64> = Vec::with_capacity(len);
    for chunk in blob[8..].chunks_exact(enc) {
        let v = sign_extend(le_uint(chunk), 8 * enc as u32);
        if let Some(&last) = out.last() {
            if v <= last {
                return Err(format!(
                    "intset members are not strictly increasing at member {}",
                    out.len()
                ));
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// Field/value pairs borrowed from a container.
pub(crate) type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// All field/value pairs of a zipmap (Redis < 2.6 small hashes).
pub(crate) fn zipmap(blob: &[u8]) -> Result<Pairs<'_>, String> {
    if blob.len() < 2 {
        return Err(format!("zipmap of {} bytes is too short", blob.len()));
    }
    let zmlen = usize::from(blob[0]);
    let mut p = 1;
    let mut out = Vec::new();
    let len_at = |p: &mut usize| -> Result<Option<usize>, String> {
        match blob.get(*p) {
            None => Err(format!("zipmap has no end mark (entry at byte {p})")),
            Some(0xff) => Ok(None),
            Some(0xfe) => {
                get(blob, *p, 5, "zipmap length")?;
                let n = le_uint(&blob[*p + 1..*p + 5]) as usize;
                *p += 5;
                Ok(Some(n))
            }
            Some(&b) => {
                *p += 1;
                Ok(Some(usize::from(b)))
            }
        }
    };
    loop {
        let at = p;
        let Some(klen) = len_at(&mut p)? else {
            p += 1;
            break;
        };
        let ke = get(blob, p, klen, "zipmap field")?;
        let field = &blob[p..ke];
        p = ke;
        let Some(vlen) = len_at(&mut p)? else {
            return Err(format!("zipmap field at byte {at} has no value"));
        };
        get(blob, p, 1, "zipmap free byte")?;
        let free = usize::from(blob[p]);
        p += 1;
        let ve = get(blob, p, vlen, "zipmap value")?;
        let value = &blob[p..ve];
        p = get(blob, ve, free, "zipmap free space")?;
        out.push((field, value));
    }
    if p != blob.len() {
        return Err(format!(
            "zipmap has {} bytes after its end mark",
            blob.len() - p
        ));
    }
    if zmlen < 254 && out.len() != zmlen {
        return Err(format!(
            "zipmap header counts {zmlen} entries, it holds {}",
            out.len()
        ));
    }
    Ok(out)
}

/// One entry of a stream listpack node.
pub(crate) struct StreamItem {
    pub id: StreamId,
    pub deleted: bool,
    pub fields: Vec<(Bytes, Bytes)>,
}

const STREAM_ITEM_FLAG_DELETED: i64 = 1;
const STREAM_ITEM_FLAG_SAMEFIELDS: i64 = 2;

/// Decode a stream node: the listpack `blob` whose entries are delta-encoded against `master`.
///
/// Layout (`t_stream.c`): master entry `count, deleted, num-fields, field..., 0`, then per entry
/// `flags, ms-diff, seq-diff`, then either `value...` (flag SAMEFIELDS: the master's fields) or
/// `num-fields, (field, value)...`, then `lp-count`.
pub(crate) fn stream_node(master: StreamId, blob: &Bytes) -> Result<Vec<StreamItem>, String> {
    let elems = listpack(blob)?;
    let mut it = elems.into_iter();
    let mut n = 0usize;
    let mut int = |it: &mut std::vec::IntoIter<Elem<'_>>, what: &str| -> Result<i64, String> {
        n += 1;
        match it.next() {
            None => Err(format!(
                "stream listpack ends before its {what} (element {n})"
            )),
            Some(e) => e
                .to_i64()
                .ok_or_else(|| format!("stream listpack {what} (element {n}) is not an integer")),
        }
    };
    let count = int(&mut it, "valid entry count")?;
    let deleted = int(&mut it, "deleted entry count")?;
    let nfields = int(&mut it, "master field count")?;
    if nfields < 0 || nfields as usize > it.len() {
        return Err(format!("stream master entry claims {nfields} fields"));
    }
    let mut master_fields = Vec::with_capacity(nfields as usize);
    for _ in 0..nfields {
        master_fields.push(it.next().map(|e| e.to_bytes(blob)).unwrap_or_default());
    }
    if int(&mut it, "master entry terminator")? != 0 {
        return Err("stream master entry is not terminated by 0".to_string());
    }
    let mut out: Vec<StreamItem> = Vec::new();
    let (mut valid, mut dead) = (0i64, 0i64);
    while it.len() > 0 {
        let flags = int(&mut it, "entry flags")?;
        let ms = int(&mut it, "entry id ms delta")?;
        let seq = int(&mut it, "entry id seq delta")?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms as u64),
            seq: master.seq.wrapping_add(seq as u64),
        };
        let mut fields = Vec::new();
        if flags & STREAM_ITEM_FLAG_SAMEFIELDS != 0 {
            if master_fields.len() > it.len() {
                return Err(format!("stream entry {id} is cut short"));
            }
            for f in &master_fields {
                let v = it.next().map(|e| e.to_bytes(blob)).unwrap_or_default();
                fields.push((f.clone(), v));
            }
        } else {
            let nf = int(&mut it, "entry field count")?;
            if nf < 0 || (nf as u64).saturating_mul(2) > it.len() as u64 {
                return Err(format!("stream entry {id} claims {nf} fields"));
            }
            fields.reserve(nf as usize);
            for _ in 0..nf {
                let f = it.next().map(|e| e.to_bytes(blob)).unwrap_or_default();
                let v = it.next().map(|e| e.to_bytes(blob)).unwrap_or_default();
                fields.push((f, v));
            }
        }
        let _lp_count = int(&mut it, "entry lp-count")?;
        let is_deleted = flags & STREAM_ITEM_FLAG_DELETED != 0;
        if is_deleted {
            dead += 1;
        } else {
            valid += 1;
        }
        out.push(StreamItem {
            id,
            deleted: is_deleted,
            fields,
        });
    }
    if valid != count || dead != deleted {
        return Err(format!(
            "stream master entry counts {count} live and {deleted} deleted entries, the node holds {valid} and {dead}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A listpack entry in the smallest encoding that holds it, as `lpAppend` would pick for
    /// strings and `lpAppendInteger` for integers.
    #[derive(Debug)]
    pub(crate) enum LpIn<'a> {
        I(i64),
        S(&'a [u8]),
    }

    pub(crate) fn lp_encode(items: &[LpIn<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for it in items {
            let mut e = Vec::new();
            match it {
                LpIn::I(v) => {
                    let v = *v;
                    if (0..=127).contains(&v) {
                        e.push(v as u8);
                    } else if (-4096..=4095).contains(&v) {
                        let u = (v as u64) & 0x1fff;
                        e.push(0xc0 | (u >> 8) as u8);
                        e.push(u as u8);
                    } else {
                        wide_int(&mut e, v, [0xf1, 0xf2, 0xf3, 0xf4]);
                    }
                }
                LpIn::S(s) => {
                    let n = s.len();
                    if n < 64 {
                        e.push(0x80 | n as u8);
                    } else if n < 4096 {
                        e.push(0xe0 | (n >> 8) as u8);
                        e.push(n as u8);
                    } else {
                        e.push(0xf0);
                        e.extend_from_slice(&(n as u32).to_le_bytes());
                    }
                    e.extend_from_slice(s);
                }
            }
            let l = e.len();
            let bl: Vec<u8> = match backlen_size(l) {
                1 => vec![l as u8],
                2 => vec![(l >> 7) as u8, (l & 127) as u8 | 128],
                3 => vec![
                    (l >> 14) as u8,
                    ((l >> 7) & 127) as u8 | 128,
                    (l & 127) as u8 | 128,
                ],
                _ => unreachable!("test entries are small"),
            };
            body.extend_from_slice(&e);
            body.extend_from_slice(&bl);
        }
        let total = 6 + body.len() + 1;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(items.len().min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xff);
        out
    }

    /// An integer in the smallest of 16, 24, 32 and 64 bits, little-endian, after the tag
    /// (listpack and ziplist use the same widths, with their own tags).
    fn wide_int(e: &mut Vec<u8>, v: i64, tags: [u8; 4]) {
        let (tag, width) = if i16::try_from(v).is_ok() {
            (tags[0], 2)
        } else if (-(1 << 23)..(1 << 23)).contains(&v) {
            (tags[1], 3)
        } else if i32::try_from(v).is_ok() {
            (tags[2], 4)
        } else {
            (tags[3], 8)
        };
        e.push(tag);
        e.extend_from_slice(&v.to_le_bytes()[..width]);
    }

    /// A ziplist in the encodings Redis picks.
    pub(crate) fn zl_encode(items: &[LpIn<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prev = 0usize;
        let mut last = 10usize;
        for it in items {
            let mut e = Vec::new();
            if prev < 254 {
                e.push(prev as u8);
            } else {
                e.push(0xfe);
                e.extend_from_slice(&(prev as u32).to_le_bytes());
            }
            match it {
                LpIn::I(v) => {
                    let v = *v;
                    if (0..=12).contains(&v) {
                        e.push(0xf1 + v as u8);
                    } else if i8::try_from(v).is_ok() {
                        e.push(0xfe);
                        e.push(v as i8 as u8);
                    } else {
                        wide_int(&mut e, v, [0xc0, 0xf0, 0xd0, 0xe0]);
                    }
                }
                LpIn::S(s) => {
                    let n = s.len();
                    if n < 64 {
                        e.push(n as u8);
                    } else if n < 16384 {
                        e.push(0x40 | (n >> 8) as u8);
                        e.push(n as u8);
                    } else {
                        e.push(0x80);
                        e.extend_from_slice(&(n as u32).to_be_bytes());
                    }
                    e.extend_from_slice(s);
                }
            }
            last = 10 + body.len();
            prev = e.len();
            body.extend_from_slice(&e);
        }
        let total = 10 + body.len() + 1;
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(last as u32).to_le_bytes());
        out.extend_from_slice(&(items.len().min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xff);
        out
    }

    /// Decoded elements equal the encoded items, integers as integers.
    fn assert_same_elems(got: &[Elem], items: &[LpIn<'_>]) {
        assert_eq!(got.len(), items.len());
        for (g, want) in got.iter().zip(items) {
            match (g, want) {
                (Elem::Int(a), LpIn::I(b)) => assert_eq!(a, b),
                (Elem::Str(a), LpIn::S(b)) => assert_eq!(a, b),
                _ => panic!("kind mismatch: {g:?} for {want:?}"),
            }
        }
    }

    fn ints() -> Vec<i64> {
        vec![
            0,
            1,
            12,
            13,
            127,
            128,
            -1,
            -128,
            -129,
            4095,
            -4096,
            4096,
            -4097,
            32767,
            -32768,
            32768,
            -32769,
            (1 << 23) - 1,
            -(1 << 23),
            1 << 23,
            i32::MAX as i64,
            i32::MIN as i64,
            i32::MAX as i64 + 1,
            i64::MAX,
            i64::MIN,
        ]
    }

    #[test]
    fn listpack_every_integer_width_and_string_length() {
        let long63 = vec![b'a'; 63];
        let long64 = vec![b'b'; 64];
        let long4095 = vec![b'c'; 4095];
        let long4096 = vec![b'd'; 4096];
        let mut items: Vec<LpIn> = ints().into_iter().map(LpIn::I).collect();
        for s in [
            &b""[..],
            b"x",
            &long63,
            &long64,
            &long4095,
            &long4096,
            b"\x00\xff\r\n",
        ] {
            items.push(LpIn::S(s));
        }
        let blob = lp_encode(&items);
        let got = listpack(&blob).unwrap();
        assert_same_elems(&got, &items);
        // The encodings chosen really are the width under test.
        let one = |v: i64| lp_encode(&[LpIn::I(v)])[6];
        assert_eq!(one(5), 5);
        assert_eq!(one(-5) & 0xe0, 0xc0);
        assert_eq!(one(30000), 0xf1);
        assert_eq!(one(1 << 20), 0xf2);
        assert_eq!(one(1 << 30), 0xf3);
        assert_eq!(one(1 << 40), 0xf4);
    }

    #[test]
    fn listpack_rejects_damage() {
        let blob = lp_encode(&[LpIn::S(b"hello"), LpIn::I(1000)]);
        assert!(listpack(&blob[..blob.len() - 1]).is_err());
        let mut bad = blob.clone();
        bad[0] = bad[0].wrapping_add(1);
        assert!(listpack(&bad).is_err());
        let mut bad = blob.clone();
        bad[4] = 3; // count
        assert!(listpack(&bad).is_err());
        let mut bad = blob.clone();
        bad[12] = 9; // back-length of "hello"
        assert!(listpack(&bad).is_err());
        let mut bad = blob.clone();
        bad[6] = 0xf7; // unknown encoding
        assert!(listpack(&bad).is_err());
        let mut bad = blob.clone();
        bad[6] = 0xbf; // 63-byte string: past the end
        assert!(listpack(&bad).is_err());
        // Count 65535 means "unknown": accepted.
        let mut ok = blob.clone();
        ok[4] = 0xff;
        ok[5] = 0xff;
        assert_eq!(listpack(&ok).unwrap().len(), 2);
        assert!(listpack(&[]).is_err());
    }

    #[test]
    fn ziplist_every_encoding() {
        let long = vec![b'z'; 300];
        let long2 = vec![b'y'; 20000];
        let mut items: Vec<LpIn> = ints().into_iter().map(LpIn::I).collect();
        for s in [&b""[..], b"abc", &long, &long2] {
            items.push(LpIn::S(s));
        }
        let blob = zl_encode(&items);
        let got = ziplist(&blob).unwrap();
        assert_same_elems(&got, &items);
        let mut bad = blob.clone();
        bad[4] ^= 1; // tail offset
        assert!(ziplist(&bad).is_err());
        let mut bad = blob.clone();
        bad[8] ^= 1; // count
        assert!(ziplist(&bad).is_err());
        assert!(ziplist(b"xxxxx").is_err());
        let empty = zl_encode(&[]);
        assert!(ziplist(&empty).unwrap().is_empty());
    }

    #[test]
    fn ziplist_from_redis_2_x() {
        // list_zipped from tests/assets/encodings.rdb.
        let blob: &[u8] = &[
            0x30, 0, 0, 0, 0x25, 0, 0, 0, 8, 0, 0, 0xc0, 1, 0, 4, 0xc0, 2, 0, 4, 0xc0, 3, 0, 4, 1,
            b'a', 3, 1, b'b', 3, 1, b'c', 3, 0xd0, 0xa0, 0x86, 1, 0, 6, 0xe0, 0, 0xbc, 0xa0, 0x65,
            1, 0, 0, 0, 0xff,
        ];
        let got = ziplist(blob).unwrap();
        assert_eq!(
            got,
            vec![
                Elem::Int(1),
                Elem::Int(2),
                Elem::Int(3),
                Elem::Str(b"a"),
                Elem::Str(b"b"),
                Elem::Str(b"c"),
                Elem::Int(100000),
                Elem::Int(6000000000)
            ]
        );
    }

    #[test]
    fn intsets() {
        for (enc, vals) in [
            (2usize, vec![-32768i64, -1, 0, 5, 32767]),
            (4, vec![i32::MIN as i64, 0, i32::MAX as i64]),
            (8, vec![i64::MIN, -5, 1 << 40, i64::MAX]),
        ] {
            let mut blob = Vec::new();
            blob.extend_from_slice(&(enc as u32).to_le_bytes());
            blob.extend_from_slice(&(vals.len() as u32).to_le_bytes());
            for v in &vals {
                blob.extend_from_slice(&v.to_le_bytes()[..enc]);
            }
            assert_eq!(intset(&blob).unwrap(), vals);
            assert!(intset(&blob[..blob.len() - 1]).is_err());
            let mut bad = blob.clone();
            bad[0] = 3;
            assert!(intset(&bad).is_err());
        }
        let unsorted = [2u8, 0, 0, 0, 2, 0, 0, 0, 5, 0, 1, 0];
        assert!(intset(&unsorted).is_err());
        let huge = [8u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(intset(&huge).is_err());
    }

    #[test]
    fn zipmaps() {
        // From tests/assets/hash-zipmap.rdb.
        let blob: &[u8] = b"\x02\x02f1\x02\x00v1\x02f2\x02\x00v2\xff";
        assert_eq!(
            zipmap(blob).unwrap(),
            vec![(&b"f1"[..], &b"v1"[..]), (&b"f2"[..], &b"v2"[..])]
        );
        // Free space after a value, and a 254+ length.
        let mut blob = vec![1u8, 1, b'k', 0xfe];
        blob.extend_from_slice(&300u32.to_le_bytes());
        blob.push(2);
        blob.extend_from_slice(&[b'v'; 300]);
        blob.extend_from_slice(&[0, 0, 0xff]);
        let got = zipmap(&blob).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 300);
        assert!(zipmap(&blob[..blob.len() - 1]).is_err());
        assert!(zipmap(b"\x02\x02f1\x02\x00v1\xff").is_err()); // count mismatch
        assert!(zipmap(b"\x01\x02f1\xff").is_err()); // field without value
        assert!(zipmap(b"\x00\xff\x00").is_err()); // bytes after the end
    }

    #[test]
    fn stream_nodes() {
        let master = StreamId { ms: 1000, seq: 5 };
        let items = [
            // master entry: 2 valid, 1 deleted, fields a, b
            LpIn::I(2),
            LpIn::I(1),
            LpIn::I(2),
            LpIn::S(b"a"),
            LpIn::S(b"b"),
            LpIn::I(0),
            // entry 1: same fields
            LpIn::I(2),
            LpIn::I(0),
            LpIn::I(0),
            LpIn::S(b"1"),
            LpIn::I(2),
            LpIn::I(5),
            // entry 2: deleted, same fields
            LpIn::I(3),
            LpIn::I(1),
            LpIn::I(0),
            LpIn::S(b"x"),
            LpIn::S(b"y"),
            LpIn::I(5),
            // entry 3: own fields
            LpIn::I(0),
            LpIn::I(2),
            LpIn::I(-5),
            LpIn::I(1),
            LpIn::S(b"other"),
            LpIn::I(77),
            LpIn::I(6),
        ];
        let blob = Bytes::from(lp_encode(&items));
        let got = stream_node(master, &blob).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].id, StreamId { ms: 1000, seq: 5 });
        assert_eq!(
            got[0].fields,
            vec![
                (Bytes::from("a"), Bytes::from("1")),
                (Bytes::from("b"), Bytes::from("2"))
            ]
        );
        assert!(got[1].deleted);
        assert_eq!(got[1].id, StreamId { ms: 1001, seq: 5 });
        assert_eq!(got[2].id, StreamId { ms: 1002, seq: 0 });
        assert_eq!(
            got[2].fields,
            vec![(Bytes::from("other"), Bytes::from("77"))]
        );
        // Wrong counts in the master entry.
        let mut wrong = lp_encode(&items);
        wrong[6] = 3;
        assert!(stream_node(master, &Bytes::from(wrong)).is_err());
        // Cut short.
        let short = lp_encode(&items[..items.len() - 2]);
        assert!(stream_node(master, &Bytes::from(short)).is_err());
    }
}
