//! Primitive reads over buffered input: bytes, little-endian integers, RDB lengths and strings.
//!
//! Every read either succeeds or stops with [`Stop::Need`] (the input ends before the item does;
//! the parser rolls back to the start of its current step and waits for more bytes) or
//! [`Stop::Fail`] (the bytes are wrong). Sizes read from the input are checked against the
//! configured limits before anything waits for them or allocates for them.

use bytes::Bytes;

use super::{lzf, RdbError};

/// Why a read did not produce a value.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The input must extend to at least this index of the current buffer.
    Need(usize),
    /// The input is invalid.
    Fail(RdbError),
}

impl From<RdbError> for Stop {
    fn from(e: RdbError) -> Self {
        Stop::Fail(e)
    }
}

pub(crate) type R<T> = Result<T, Stop>;

/// The bounds every read obeys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest plain string returned whole where a string may also be streamed.
    pub max_chunk: usize,
    /// Longest string that must be held whole (keys, AUX fields, encoded containers).
    pub max_blob: usize,
    /// Largest LZF string (compressed or decompressed).
    pub max_lzf: usize,
}

/// A length prefix: a length, or the 6-bit id of a special string encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Len {
    Len(u64),
    Enc(u8),
}

/// A string that is either here whole, or too long for one piece (its header consumed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Str {
    Whole(Bytes),
    Big(u64),
}

/// A top-level string value ([`Cursor::string_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrValue {
    Str(Str),
    /// An LZF string longer than `max_chunk` once decompressed: its header is read, `clen`
    /// compressed bytes follow, to be decompressed in pieces into `ulen` bytes.
    Lzf {
        clen: u64,
        ulen: u64,
    },
}

/// A string to skip: done, or `remaining` plain bytes still to skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    Done,
    Big(u64),
}

/// A read position in the current buffer. `base` is the absolute file offset of `data[0]`.
pub(crate) struct Cur<'a> {
    pub data: &'a Bytes,
    pub pos: usize,
    pub base: u64,
}

impl<'a> Cur<'a> {
    pub fn new(data: &'a Bytes, pos: usize, base: u64) -> Self {
        Cur { data, pos, base }
    }

    /// Absolute file offset of the read position.
    #[inline]
    pub fn abs(&self) -> u64 {
        self.base + self.pos as u64
    }

    #[inline]
    pub fn avail(&self) -> usize {
        self.data.len() - self.pos
    }

    #[inline]
    fn ensure(&self, n: usize) -> R<()> {
        if self.avail() < n {
            Err(Stop::Need(self.pos.saturating_add(n)))
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn u8(&mut self) -> R<u8> {
        self.ensure(1)?;
        let b = self.data[self.pos];
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub fn slice(&mut self, n: usize) -> R<&'a [u8]> {
        self.ensure(n)?;
        let data: &'a Bytes = self.data;
        let s = &data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn bytes(&mut self, n: usize) -> R<Bytes> {
        self.ensure(n)?;
        let b = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    #[inline]
    pub fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.slice(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u64_le(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64_le(&mut self) -> R<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn i32_le(&mut self) -> R<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn f64_le(&mut self) -> R<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// An RDB length prefix (`rdbLoadLenByRef`): 6-bit, 14-bit, 32-bit BE, 64-bit BE, or an
    /// encoding id.
    pub fn len_enc(&mut self) -> R<Len> {
        let start = self.abs();
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok(Len::Len(u64::from(b & 0x3f))),
            1 => {
                let b2 = self.u8()?;
                Ok(Len::Len((u64::from(b & 0x3f) << 8) | u64::from(b2)))
            }
            3 => Ok(Len::Enc(b & 0x3f)),
            _ => match b {
                0x80 => Ok(Len::Len(u64::from(u32::from_be_bytes(self.array()?)))),
                0x81 => Ok(Len::Len(u64::from_be_bytes(self.array()?))),
                _ => Err(RdbError::corrupt(
                    format!("unknown length encoding byte 0x{b:02x}"),
                    start,
                )
                .into()),
            },
        }
    }

    /// A length (no special encoding allowed).
    pub fn length(&mut self, what: &str) -> R<u64> {
        let start = self.abs();
        match self.len_enc()? {
            Len::Len(n) => Ok(n),
            Len::Enc(e) => Err(RdbError::corrupt(
                format!("expected the length of {what}, found string encoding {e}"),
                start,
            )
            .into()),
        }
    }

    /// A string that must be held whole (keys, AUX fields, function code, encoded containers).
    pub fn string(&mut self, lim: &Limits, what: &str) -> R<Bytes> {
        let start = self.abs();
        match self.len_enc()? {
            Len::Len(n) => {
                check_limit(what, n, lim.max_blob, start)?;
                self.bytes(n as usize)
            }
            Len::Enc(e) => self.encoded(e, lim, what, start),
        }
    }

    /// A string that may be streamed: plain strings longer than `max_chunk` come back as
    /// [`Str::Big`] with only their header consumed.
    pub fn string_or_big(&mut self, lim: &Limits, what: &str) -> R<Str> {
        let start = self.abs();
        match self.len_enc()? {
            Len::Len(n) if n > lim.max_chunk as u64 => Ok(Str::Big(n)),
            Len::Len(n) => {
                check_limit(what, n, lim.max_blob, start)?;
                Ok(Str::Whole(self.bytes(n as usize)?))
            }
            Len::Enc(e) => Ok(Str::Whole(self.encoded(e, lim, what, start)?)),
        }
    }

    /// A string value, as [`string_or_big`](Self::string_or_big), except that an LZF string
    /// whose decompressed size exceeds `max_chunk` is skipped without being decompressed when
    /// `skip_lzf(compressed length)` says so (`Ok(None)`), and otherwise comes back as
    /// [`Str::Lzf`], to be decompressed in pieces.
    pub fn string_value(
        &mut self,
        lim: &Limits,
        what: &str,
        skip_lzf: &dyn Fn(u64) -> bool,
    ) -> R<Option<StrValue>> {
        let at = self.pos;
        let start = self.abs();
        if let Len::Enc(3) = self.len_enc()? {
            let clen = self.length(what)?;
            let ulen = self.length(what)?;
            if ulen > lim.max_chunk as u64 {
                if skip_lzf(clen) {
                    check_limit(&format!("LZF-compressed {what}"), clen, lim.max_lzf, start)?;
                    self.slice(clen as usize)?;
                    return Ok(None);
                }
                return Ok(Some(StrValue::Lzf { clen, ulen }));
            }
        }
        self.pos = at;
        self.string_or_big(lim, what)
            .map(|s| Some(StrValue::Str(s)))
    }

    /// Skip a string without decoding it (module values). Long plain or LZF strings come back as
    /// [`Skip::Big`] so they can be skipped piecewise.
    pub fn skip_string(&mut self, lim: &Limits, what: &str) -> R<Skip> {
        let start = self.abs();
        match self.len_enc()? {
            Len::Len(n) => self.skip_n(n, lim),
            Len::Enc(0) => self.slice(1).map(|_| Skip::Done),
            Len::Enc(1) => self.slice(2).map(|_| Skip::Done),
            Len::Enc(2) => self.slice(4).map(|_| Skip::Done),
            Len::Enc(3) => {
                let clen = self.length(what)?;
                let _ulen = self.length(what)?;
                self.skip_n(clen, lim)
            }
            Len::Enc(e) => Err(RdbError::corrupt(
                format!("unknown string encoding {e} for {what}"),
                start,
            )
            .into()),
        }
    }

    fn skip_n(&mut self, n: u64, lim: &Limits) -> R<Skip> {
        if n > lim.max_chunk as u64 {
            Ok(Skip::Big(n))
        } else {
            self.slice(n as usize).map(|_| Skip::Done)
        }
    }

    fn encoded(&mut self, enc: u8, lim: &Limits, what: &str, start: u64) -> R<Bytes> {
        match enc {
            0 => Ok(int_bytes(i64::from(self.u8()? as i8))),
            1 => Ok(int_bytes(i64::from(i16::from_le_bytes(self.array()?)))),
            2 => Ok(int_bytes(i64::from(self.i32_le()?))),
            3 => {
                let clen = self.length(what)?;
                let ulen = self.length(what)?;
                check_limit(&format!("LZF-compressed {what}"), clen, lim.max_lzf, start)?;
                check_limit(
                    &format!("decompressed LZF {what}"),
                    ulen,
                    lim.max_lzf,
                    start,
                )?;
                let input = self.slice(clen as usize)?;
                match lzf::decompress(input, ulen as usize) {
                    Ok(v) => Ok(Bytes::from(v)),
                    Err(msg) => Err(RdbError::corrupt(
                        format!("invalid LZF data in {what}: {msg}"),
                        start,
                    )
                    .into()),
                }
            }
            e => Err(
                RdbError::corrupt(format!("unknown string encoding {e} for {what}"), start).into(),
            ),
        }
    }

    /// A zset score in the old ASCII form (`rdbLoadDoubleValue`): a length byte (253 NaN,
    /// 254 +inf, 255 -inf), then that many characters.
    pub fn ascii_double(&mut self, what: &str) -> R<f64> {
        let start = self.abs();
        let n = self.u8()?;
        match n {
            255 => Ok(f64::NEG_INFINITY),
            254 => Ok(f64::INFINITY),
            253 => Ok(f64::NAN),
            _ => {
                let s = self.slice(n as usize)?;
                parse_f64(s).ok_or_else(|| {
                    RdbError::corrupt(
                        format!("{what} {:?} is not a number", String::from_utf8_lossy(s)),
                        start,
                    )
                    .into()
                })
            }
        }
    }
}

fn check_limit(what: &str, size: u64, limit: usize, offset: u64) -> R<()> {
    if size > limit as u64 {
        Err(RdbError::LimitExceeded {
            what: what.to_string(),
            size,
            limit: limit as u64,
            offset,
        }
        .into())
    } else {
        Ok(())
    }
}

/// The decimal text of an integer, as Redis turns integer encodings back into strings.
pub(crate) fn int_bytes(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

/// Parse a score written as text (`%.17g`, `inf`, `-inf`, ...), as `strtod` would.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?;
    s.trim().parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_chunk: 16,
        max_blob: 1024,
        max_lzf: 1024,
    };

    fn cur(data: &Bytes) -> Cur<'_> {
        Cur::new(data, 0, 100)
    }

    #[test]
    fn length_encodings() {
        let cases: &[(&[u8], u64)] = &[
            (&[0x00], 0),
            (&[0x3f], 63),
            (&[0x40, 0x40], 64),
            (&[0x7f, 0xff], 16383),
            (&[0x80, 0x00, 0x00, 0x40, 0x00], 16384),
            (&[0x80, 0xff, 0xff, 0xff, 0xff], u32::MAX as u64),
            (&[0x81, 0, 0, 0, 1, 0, 0, 0, 0], 1 << 32),
            (
                &[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX,
            ),
        ];
        for (bytes, want) in cases {
            let data = Bytes::copy_from_slice(bytes);
            let mut c = cur(&data);
            assert_eq!(c.length("x").unwrap(), *want, "{bytes:?}");
            assert_eq!(c.pos, bytes.len());
            // Every strict prefix asks for more, never fails.
            for cut in 0..bytes.len() {
                let data = Bytes::copy_from_slice(&bytes[..cut]);
                let mut c = cur(&data);
                assert!(
                    matches!(c.length("x"), Err(Stop::Need(_))),
                    "{bytes:?} cut {cut}"
                );
            }
        }
        let data = Bytes::from_static(&[0xc0]);
        assert_eq!(cur(&data).len_enc().unwrap(), Len::Enc(0));
        assert!(matches!(
            cur(&data).length("x"),
            Err(Stop::Fail(RdbError::Corrupt { offset: 100, .. }))
        ));
        let data = Bytes::from_static(&[0x82]);
        assert!(matches!(
            cur(&data).len_enc(),
            Err(Stop::Fail(RdbError::Corrupt { offset: 100, .. }))
        ));
    }

    #[test]
    fn need_reports_the_index_required() {
        let data = Bytes::from_static(&[0x05, b'a', b'b']);
        let mut c = cur(&data);
        match c.string(&LIM, "s") {
            Err(Stop::Need(n)) => assert_eq!(n, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn string_encodings() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0x03, b'a', b'b', b'c'], b"abc"),
            (&[0x00], b""),
            (&[0xc0, 0x85], b"-123"),
            (&[0xc0, 0x7f], b"127"),
            (&[0xc1, 0x39, 0x30], b"12345"),
            (&[0xc1, 0x00, 0x80], b"-32768"),
            (&[0xc2, 0x15, 0xcd, 0x5b, 0x07], b"123456789"),
            (&[0xc2, 0x00, 0x00, 0x00, 0x80], b"-2147483648"),
            (&[0xc3, 0x04, 0x06, 0x00, b'a', 0x60, 0x00], b"aaaaaa"),
        ];
        for (bytes, want) in cases {
            let data = Bytes::copy_from_slice(bytes);
            let mut c = cur(&data);
            assert_eq!(&c.string(&LIM, "s").unwrap()[..], *want, "{bytes:?}");
            assert_eq!(c.pos, bytes.len());
            let mut c = cur(&data);
            assert_eq!(
                c.string_or_big(&LIM, "s").unwrap(),
                Str::Whole(Bytes::copy_from_slice(want))
            );
            let mut c = cur(&data);
            assert_eq!(c.skip_string(&LIM, "s").unwrap(), Skip::Done);
            assert_eq!(c.pos, bytes.len());
        }
        // Unknown encoding.
        let data = Bytes::from_static(&[0xc4]);
        assert!(matches!(
            cur(&data).string(&LIM, "s"),
            Err(Stop::Fail(RdbError::Corrupt { .. }))
        ));
        // Bad LZF.
        let data = Bytes::from_static(&[0xc3, 0x02, 0x05, 0x20, 0x00]);
        assert!(matches!(
            cur(&data).string(&LIM, "s"),
            Err(Stop::Fail(RdbError::Corrupt { .. }))
        ));
    }

    #[test]
    fn big_strings_and_limits() {
        let mut v = vec![20u8];
        v.extend_from_slice(&[b'x'; 20]);
        let data = Bytes::from(v);
        let mut c = cur(&data);
        assert_eq!(c.string_or_big(&LIM, "s").unwrap(), Str::Big(20));
        assert_eq!(c.pos, 1);
        let mut c = cur(&data);
        assert_eq!(&c.string(&LIM, "s").unwrap()[..], &[b'x'; 20]);
        let mut c = cur(&data);
        assert_eq!(c.skip_string(&LIM, "s").unwrap(), Skip::Big(20));
        // A declared length over the limit fails at once, without waiting for the bytes.
        let data = Bytes::from_static(&[0x80, 0x00, 0x01, 0x00, 0x00]);
        match cur(&data).string(&LIM, "key") {
            Err(Stop::Fail(RdbError::LimitExceeded {
                size,
                limit,
                offset,
                ..
            })) => {
                assert_eq!((size, limit, offset), (65536, 1024, 100))
            }
            other => panic!("{other:?}"),
        }
        let data = Bytes::from_static(&[0xc3, 0x80, 0x00, 0x01, 0x00, 0x00, 0x01]);
        assert!(matches!(
            cur(&data).string(&LIM, "s"),
            Err(Stop::Fail(RdbError::LimitExceeded { .. }))
        ));
    }

    #[test]
    fn ascii_doubles() {
        let cases: &[(&[u8], f64)] = &[
            (&[255], f64::NEG_INFINITY),
            (&[254], f64::INFINITY),
            (&[3, b'1', b'.', b'5'], 1.5),
            (&[6, b'1', b'e', b'+', b'3', b'0', b'0'], 1e300),
            (&[2, b'-', b'7'], -7.0),
        ];
        for (bytes, want) in cases {
            let data = Bytes::copy_from_slice(bytes);
            assert_eq!(cur(&data).ascii_double("score").unwrap(), *want);
        }
        let data = Bytes::from_static(&[253]);
        assert!(cur(&data).ascii_double("score").unwrap().is_nan());
        let data = Bytes::from_static(&[2, b'x', b'y']);
        assert!(matches!(
            cur(&data).ascii_double("score"),
            Err(Stop::Fail(_))
        ));
    }
}
