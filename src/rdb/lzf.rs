//! LZF decompression (the format of `lzf_d.c`), for RDB strings encoded as `0xC3`.
//!
//! Written from the format description: a control byte below 32 starts a literal run of
//! `ctrl + 1` bytes; otherwise the top 3 bits are a length (7 = read one more byte and add it),
//! the low 5 bits and the next byte a backward distance, and `len + 2` bytes are copied from
//! `distance + 1` bytes back in the output (the regions may overlap).

/// Largest output one input byte can produce: a 3-byte back reference copies at most 264 bytes.
const MAX_EXPANSION: usize = 88;

/// Decompress `input` into exactly `out_len` bytes.
///
/// `out_len` comes from the file; it is trusted for allocation only up to what `input` can expand
/// to, so a forged length cannot make this allocate more than `input.len() * 88` bytes up front.
pub(crate) fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    let cap = out_len.min(input.len().saturating_mul(MAX_EXPANSION));
    let mut out: Vec<u8> = Vec::with_capacity(cap);
    let used = decode(input, 0, &mut out, 0, out_len as u64)?;
    if used < input.len() {
        return Err(cut_short(used, input[used], input.len()));
    }
    if out.len() != out_len {
        return Err(format!(
            "decompressed to {} bytes, the header declares {out_len}",
            out.len()
        ));
    }
    Ok(out)
}

/// What an incomplete instruction at the end of the input is.
fn cut_short(at: usize, ctrl: u8, total: usize) -> String {
    if ctrl < 32 {
        format!(
            "literal run of {} bytes at input byte {at} goes past the end of the {total} compressed bytes",
            ctrl as usize + 1
        )
    } else {
        format!("back reference at input byte {at} is cut short")
    }
}

/// Decodes the complete instructions at the start of `input` (which starts at compressed byte
/// `base`), appending to `out`. `out` holds the last `out.len()` bytes of the output; the bytes
/// before them (`dropped`, a streaming caller's history beyond the 8 KiB window) cannot be
/// referred to anyway. Returns the bytes of `input` used: an instruction cut by the end of
/// `input` is left for the next call.
fn decode(
    input: &[u8],
    base: usize,
    out: &mut Vec<u8>,
    dropped: u64,
    out_len: u64,
) -> Result<usize, String> {
    let mut i = 0usize;
    while i < input.len() {
        let at = i;
        let ctrl = input[i] as usize;
        let produced = dropped + out.len() as u64;
        if ctrl < 32 {
            let run = ctrl + 1;
            if run > input.len() - i - 1 {
                return Ok(at);
            }
            if run as u64 > out_len - produced {
                return Err(format!(
                    "output grows past the declared {out_len} bytes at input byte {}",
                    base + at
                ));
            }
            out.extend_from_slice(&input[i + 1..i + 1 + run]);
            i += 1 + run;
        } else {
            let mut len = ctrl >> 5;
            let mut j = i + 1;
            if len == 7 {
                let Some(&extra) = input.get(j) else {
                    return Ok(at);
                };
                len += extra as usize;
                j += 1;
            }
            let Some(&low) = input.get(j) else {
                return Ok(at);
            };
            i = j + 1;
            let distance = ((ctrl & 0x1f) << 8) + low as usize + 1;
            len += 2;
            if distance > out.len() {
                return Err(format!(
                    "back reference at input byte {} points {distance} bytes back, before the start of the output ({produced} bytes so far)",
                    base + at
                ));
            }
            if len as u64 > out_len - produced {
                return Err(format!(
                    "output grows past the declared {out_len} bytes at input byte {}",
                    base + at
                ));
            }
            let start = out.len() - distance;
            if distance >= len {
                out.extend_from_within(start..start + len);
            } else {
                // Overlapping copy: byte by byte, as the reference implementation does.
                for k in 0..len {
                    let b = out[start + k];
                    out.push(b);
                }
            }
        }
    }
    Ok(i)
}

/// The farthest back a reference reaches (13 bits of distance, plus one).
const WINDOW: usize = 8192;

/// LZF decompression in pieces, in bounded memory: compressed bytes go in as they arrive, the
/// output comes out in pieces, and only the last 8 KiB of output (the farthest a back reference
/// reaches) and an instruction cut by the end of a piece (at most 33 bytes) are kept.
#[derive(Debug)]
pub(crate) struct LzfStream {
    out_len: u64,
    /// Compressed bytes consumed so far.
    consumed: usize,
    /// An instruction cut by the end of the previous piece.
    pending: Vec<u8>,
    /// The window and the output not yet taken.
    buf: Vec<u8>,
    /// Where the untaken output starts in `buf`.
    fresh: usize,
    /// Output bytes dropped from the front of `buf`.
    dropped: u64,
}

impl LzfStream {
    /// A stream that must decompress to exactly `out_len` bytes.
    pub(crate) fn new(out_len: u64) -> LzfStream {
        LzfStream {
            out_len,
            consumed: 0,
            pending: Vec::new(),
            buf: Vec::new(),
            fresh: 0,
            dropped: 0,
        }
    }

    /// Decompresses the next compressed bytes.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), String> {
        if !self.pending.is_empty() {
            // Complete the cut instruction first: it is at most 34 bytes long.
            let take = input.len().min(40 - self.pending.len().min(40));
            self.pending.extend_from_slice(&input[..take]);
            let pending = std::mem::take(&mut self.pending);
            let used = decode(
                &pending,
                self.consumed,
                &mut self.buf,
                self.dropped,
                self.out_len,
            )?;
            if used == 0 {
                // Still incomplete: everything given so far is part of it.
                self.pending = pending;
                return Ok(());
            }
            let old = pending.len() - take;
            debug_assert!(used >= old);
            self.consumed += used;
            input = &input[used - old..];
        }
        let used = decode(
            input,
            self.consumed,
            &mut self.buf,
            self.dropped,
            self.out_len,
        )?;
        self.consumed += used;
        self.pending.extend_from_slice(&input[used..]);
        Ok(())
    }

    /// Output bytes ready to be taken.
    pub(crate) fn ready(&self) -> usize {
        self.buf.len() - self.fresh
    }

    /// Takes up to `max` bytes of output.
    pub(crate) fn take(&mut self, max: usize) -> bytes::Bytes {
        let end = self.fresh + max.min(self.ready());
        let piece = bytes::Bytes::copy_from_slice(&self.buf[self.fresh..end]);
        self.fresh = end;
        // Keep only the window behind what was taken.
        if self.fresh > 4 * WINDOW {
            let cut = self.fresh - WINDOW;
            self.buf.drain(..cut);
            self.fresh -= cut;
            self.dropped += cut as u64;
        }
        piece
    }

    /// All the compressed bytes went in: checks nothing is cut short and the length is right.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if let Some(&ctrl) = self.pending.first() {
            return Err(cut_short(
                self.consumed,
                ctrl,
                self.consumed + self.pending.len(),
            ));
        }
        let produced = self.dropped + self.buf.len() as u64;
        if produced != self.out_len {
            return Err(format!(
                "decompressed to {produced} bytes, the header declares {}",
                self.out_len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_overlapping_back_reference() {
        // From Redis' tests/assets/encodings.rdb: "compressible" = 137 x 'a'.
        let input = [0x01, b'a', b'a', 0xe0, 0x7c, 0x00, 0x01, b'a', b'a'];
        let out = decompress(&input, 137).unwrap();
        assert_eq!(out, vec![b'a'; 137]);
    }

    #[test]
    fn non_overlapping_back_reference() {
        // "abcdabcd": literal "abcd", then copy 4 bytes from 4 back (len field 2 -> 2+2).
        let input = [0x03, b'a', b'b', b'c', b'd', 0x40, 0x03];
        assert_eq!(decompress(&input, 8).unwrap(), b"abcdabcd");
    }

    #[test]
    fn errors_are_reported_not_panics() {
        // Literal run past the end.
        assert!(decompress(&[0x05, b'a'], 6).is_err());
        // Back reference before the start.
        assert!(decompress(&[0x20, 0x00], 3).is_err());
        // Back reference cut short.
        assert!(decompress(&[0x00, b'a', 0xe0], 10).is_err());
        assert!(decompress(&[0x00, b'a', 0x20], 10).is_err());
        // Output longer than declared.
        assert!(decompress(&[0x01, b'a', b'b'], 1).is_err());
        // Output shorter than declared.
        assert!(decompress(&[0x01, b'a', b'b'], 3).is_err());
        // Empty input, empty output is fine.
        assert_eq!(decompress(&[], 0).unwrap(), Vec::<u8>::new());
    }

    /// Every split of the input into pieces gives the same output and the same errors.
    #[test]
    fn streaming_equals_whole() {
        let mut text = Vec::new();
        for i in 0..20_000u32 {
            text.extend_from_slice(format!("{} ", i % 977).as_bytes());
        }
        // An LZF stream: literals and back references of every length and distance.
        let input = compress_for_test(&text);
        let whole = decompress(&input, text.len()).unwrap();
        assert_eq!(whole, text);
        for piece in [1, 2, 3, 7, 33, 34, 35, 1000, 65536] {
            let mut st = LzfStream::new(text.len() as u64);
            let mut got = Vec::new();
            for p in input.chunks(piece) {
                st.feed(p).unwrap();
                while st.ready() > 0 {
                    got.extend_from_slice(&st.take(5000));
                }
            }
            st.finish().unwrap();
            assert_eq!(got, text, "pieces of {piece}");
            assert!(st.buf.len() <= 4 * WINDOW + 5000 + 264 * 4096);
        }
        // Cut short, and too long a declared length.
        let mut st = LzfStream::new(text.len() as u64);
        st.feed(&input[..input.len() - 1]).unwrap();
        assert!(st.finish().is_err());
        let mut st = LzfStream::new(text.len() as u64 + 1);
        st.feed(&input).unwrap();
        assert!(st.finish().unwrap_err().contains("declares"));
        let mut st = LzfStream::new(10);
        assert!(st.feed(&input).unwrap_err().contains("past the declared"));
    }

    /// A simple LZF compressor (greedy, hash of 3 bytes), only to make test input.
    fn compress_for_test(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut table = std::collections::HashMap::new();
        let flush = |lit: &mut Vec<u8>, out: &mut Vec<u8>| {
            for c in lit.chunks(32) {
                out.push((c.len() - 1) as u8);
                out.extend_from_slice(c);
            }
            lit.clear();
        };
        let mut i = 0;
        while i < data.len() {
            if i + 3 <= data.len() {
                let h = &data[i..i + 3];
                if let Some(&p) = table.get(h) {
                    let p: usize = p;
                    let dist = i - p;
                    if (1..=WINDOW).contains(&dist) {
                        let mut len = 0;
                        while i + len < data.len() && len < 264 && data[p + len] == data[i + len] {
                            len += 1;
                        }
                        if len >= 3 {
                            flush(&mut lit, &mut out);
                            let d = dist - 1;
                            let l = len - 2;
                            if l < 7 {
                                out.push(((l << 5) | (d >> 8)) as u8);
                            } else {
                                out.push(((7 << 5) | (d >> 8)) as u8);
                                out.push((l - 7) as u8);
                            }
                            out.push((d & 0xff) as u8);
                            table.insert(h.to_vec(), i);
                            i += len;
                            continue;
                        }
                    }
                }
                table.insert(h.to_vec(), i);
            }
            lit.push(data[i]);
            i += 1;
        }
        flush(&mut lit, &mut out);
        out
    }

    #[test]
    fn forged_length_does_not_allocate_it() {
        // A 2-byte input cannot claim 1 GiB of capacity.
        let r = decompress(&[0x00, b'x'], 1 << 30);
        assert!(r.is_err());
    }
}
