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
    let mut i = 0usize;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            if run > input.len() - i {
                return Err(format!(
                    "literal run of {run} bytes at input byte {} goes past the end of the {} compressed bytes",
                    i - 1,
                    input.len()
                ));
            }
            if run > out_len - out.len() {
                return Err(format!(
                    "output grows past the declared {out_len} bytes at input byte {}",
                    i - 1
                ));
            }
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        } else {
            let at = i - 1;
            let mut len = ctrl >> 5;
            if len == 7 {
                let Some(&extra) = input.get(i) else {
                    return Err(format!("back reference at input byte {at} is cut short"));
                };
                len += extra as usize;
                i += 1;
            }
            let Some(&low) = input.get(i) else {
                return Err(format!("back reference at input byte {at} is cut short"));
            };
            i += 1;
            let distance = ((ctrl & 0x1f) << 8) + low as usize + 1;
            len += 2;
            if distance > out.len() {
                return Err(format!(
                    "back reference at input byte {at} points {distance} bytes back, before the start of the output ({} bytes so far)",
                    out.len()
                ));
            }
            if len > out_len - out.len() {
                return Err(format!(
                    "output grows past the declared {out_len} bytes at input byte {at}"
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
    if out.len() != out_len {
        return Err(format!(
            "decompressed to {} bytes, the header declares {out_len}",
            out.len()
        ));
    }
    Ok(out)
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

    #[test]
    fn forged_length_does_not_allocate_it() {
        // A 2-byte input cannot claim 1 GiB of capacity.
        let r = decompress(&[0x00, b'x'], 1 << 30);
        assert!(r.is_err());
    }
}
