//! A filtered copy of an RDB, streamed: the header and aux fields as they are, then for each
//! database only the keys a predicate selects, each copied as its raw bytes (the
//! `EXPIRETIME`/`IDLE`/`FREQ` opcodes before it, its type byte, name and value as stored: never
//! re-serialised), `SELECTDB` only for databases that keep a key, module aux records and
//! function libraries as they are, then `EOF` and a CRC-64 computed afresh (zero when the
//! original's was zero; none before RDB 5).
//!
//! `RESIZEDB` hints are dropped: they are sizes for the whole database, and a server that
//! loads an RDB without them sizes its tables as keys arrive (rdb.c reads them as hints only),
//! growing and rehashing them on the way (a load about a third slower at a million keys).
//! Databases kept whole ([`Reencoder::keep_resize_hints`]: a selection by database only) keep
//! theirs, which are then exact.
//!
//! How the spans are found: the [`Parser`] records a [`Mark`] where each top-level record
//! starts ([`Parser::record_marks`]); a record's bytes run to the next mark. The input is held
//! only from the first byte not yet decided (the opcodes before a key until the key is read,
//! and what the parser itself holds of an unfinished step), so memory stays bounded by the
//! parser's own bounds plus one output piece.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::parser::Mark;
use super::{crc64, Event, LzfStrings, Parser, ParserConfig, RdbError};

/// Output is handed over in pieces of about this size.
pub const OUT_PIECE: usize = 256 << 10;

/// What a re-encoding kept and left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reencoded {
    /// Keys copied.
    pub keys: u64,
    /// Keys left out.
    pub keys_skipped: u64,
    /// Bytes read and written.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The CRC-64 written (`None`: RDB before 5, or the original's checksum was zero).
    pub checksum: Option<u64>,
}

/// What happens to the bytes of the record being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Keep,
    Drop,
    /// Opcodes that belong to the next key: held until the key is read.
    Hold,
    /// A `SELECTDB`: held, written before the database's first kept key.
    Select,
}

/// Streams a filtered copy of one RDB. Feed the input in order with [`Reencoder::feed`],
/// then call [`Reencoder::finish`].
pub struct Reencoder<F> {
    parser: Parser,
    select: F,
    events: Vec<Event>,
    marks: Vec<Mark>,
    /// Input bytes from `held_at` on, not yet decided.
    held: VecDeque<Bytes>,
    held_at: u64,
    current: Decision,
    /// The last `SELECTDB` record's bytes, and whether they were written.
    select_bytes: Vec<u8>,
    select_written: bool,
    out: BytesMut,
    crc: u64,
    /// The original's `Eof` event.
    eof: Option<Option<u64>>,
    stats: Reencoded,
    /// The database of the records being read, and those kept whole (their hints kept).
    db: u64,
    whole_dbs: Vec<u64>,
}

impl<F: FnMut(u64, &[u8]) -> bool> Reencoder<F> {
    /// A re-encoder keeping the keys for which `select(db, key)` is true.
    pub fn new(select: F) -> Self {
        let mut parser = Parser::new(ParserConfig {
            max_raw_value: 0,
            ..ParserConfig::default()
        });
        parser.set_lzf_strings(LzfStrings::Decode);
        parser.record_marks();
        Reencoder {
            parser,
            select,
            events: Vec::new(),
            marks: Vec::new(),
            held: VecDeque::new(),
            held_at: 0,
            current: Decision::Keep,
            select_bytes: Vec::new(),
            select_written: true,
            out: BytesMut::new(),
            crc: 0,
            eof: None,
            stats: Reencoded::default(),
            db: 0,
            whole_dbs: Vec::new(),
        }
    }

    /// The databases `dbs` are kept whole (every key of theirs selected): their `RESIZEDB`
    /// hints are copied too, so that the server sizes their tables once.
    pub fn keep_resize_hints(mut self, dbs: Vec<u64>) -> Self {
        self.whole_dbs = dbs;
        self
    }

    /// The next piece of the original; pieces of the copy are appended to `out`.
    pub fn feed(&mut self, input: Bytes, out: &mut Vec<Bytes>) -> Result<(), RdbError> {
        self.stats.bytes_in += input.len() as u64;
        // The parser's events are held until this call returns: feed it bounded pieces.
        let mut rest = input;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(super::FEED_PIECE));
            self.held.push_back(piece.clone());
            self.events.clear();
            self.marks.clear();
            self.parser.feed_bytes(piece, &mut self.events)?;
            self.parser.take_marks(&mut self.marks);
            for i in 0..self.marks.len() {
                let m = self.marks[i];
                let end = self.marks.get(i + 1).map_or(self.events.len(), |n| n.event);
                self.settle(m.offset, out);
                self.decide(m.event, end);
            }
            let at = self.parser.offset();
            self.settle(at, out);
        }
        Ok(())
    }

    /// The end of the input: the copy's `EOF` and checksum, and what was kept.
    pub fn finish(mut self, out: &mut Vec<Bytes>) -> Result<Reencoded, RdbError> {
        let summary = self.parser.finish()?;
        self.out.extend_from_slice(&[0xff]);
        self.flush(out, true);
        if summary.version >= 5 {
            // A checksum, or zero when the original's was zero (checksums disabled).
            let c = match self.eof {
                Some(Some(_)) => self.crc,
                _ => 0,
            };
            out.push(Bytes::copy_from_slice(&c.to_le_bytes()));
            self.stats.bytes_out += 8;
            self.stats.checksum = (c != 0).then_some(c);
        }
        Ok(self.stats)
    }

    /// The record whose events are `self.events[from..to]` starts: what becomes of it.
    fn decide(&mut self, from: usize, to: usize) {
        let first = self.events.get(from).filter(|_| from < to);
        let next = match first {
            None => Decision::Hold,
            Some(Event::KeyStart { db, key, .. }) => {
                if (self.select)(*db, key) {
                    self.stats.keys += 1;
                    if !self.select_written {
                        self.select_written = true;
                        self.out.extend_from_slice(&self.select_bytes);
                    }
                    Decision::Keep
                } else {
                    self.stats.keys_skipped += 1;
                    Decision::Drop
                }
            }
            Some(Event::SelectDb(db)) => {
                self.db = *db;
                self.select_bytes.clear();
                self.select_written = false;
                Decision::Select
            }
            // Written with the SELECTDB before it, before the database's first kept key.
            Some(Event::ResizeDb { .. }) if self.whole_dbs.contains(&self.db) => Decision::Select,
            Some(Event::ResizeDb { .. }) => Decision::Drop,
            Some(Event::Eof { checksum }) => {
                self.eof = Some(*checksum);
                Decision::Drop
            }
            Some(_) => Decision::Keep,
        };
        // Held opcodes go as the record after them: with their key, or dropped with it. The
        // EOF opcode is held too, and dropped with the checksum (both are written afresh).
        self.current = next;
    }

    /// The input up to `upto` (an absolute offset) goes as the current decision says.
    fn settle(&mut self, upto: u64, out: &mut Vec<Bytes>) {
        if self.current == Decision::Hold {
            return;
        }
        while self.held_at < upto {
            let Some(front) = self.held.front_mut() else {
                break;
            };
            let n = ((upto - self.held_at) as usize).min(front.len());
            let piece = front.split_to(n);
            if front.is_empty() {
                self.held.pop_front();
            }
            self.held_at += n as u64;
            match self.current {
                Decision::Keep => self.out.extend_from_slice(&piece),
                Decision::Select => self.select_bytes.extend_from_slice(&piece),
                Decision::Drop | Decision::Hold => {}
            }
        }
        self.flush(out, false);
    }

    /// Hands over the output when a piece is full (or, at the end, whatever is left).
    fn flush(&mut self, out: &mut Vec<Bytes>, all: bool) {
        if self.out.len() >= OUT_PIECE || (all && !self.out.is_empty()) {
            let piece = self.out.split().freeze();
            self.crc = crc64(self.crc, &piece);
            self.stats.bytes_out += piece.len() as u64;
            out.push(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::logical::LogicalState;
    use crate::rdb::{write_string, Summary};

    /// Re-encodes `data` fed in pieces of varying sizes (1 to 300 bytes, or whole).
    fn reencode(
        data: &[u8],
        whole: bool,
        select: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(Vec<u8>, Reencoded), RdbError> {
        let mut r = Reencoder::new(select);
        let mut out = Vec::new();
        let all = Bytes::copy_from_slice(data);
        let (mut at, mut n) = (0, 1);
        while at < all.len() {
            let e = if whole {
                all.len()
            } else {
                (at + n).min(all.len())
            };
            r.feed(all.slice(at..e), &mut out)?;
            at = e;
            n = n % 300 + 37;
        }
        let stats = r.finish(&mut out)?;
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(bytes.len() as u64, stats.bytes_out);
        Ok((bytes, stats))
    }

    fn fixtures() -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("redis-assets")).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rdb"))
            .collect();
        files.sort();
        files
    }

    /// Every fixture the parser reads, through several selections: the copy parses with a
    /// valid CRC, holds every selected key with the same value and expiry, no other key, and
    /// the same functions.
    #[test]
    fn fixtures_round_trip_through_the_parser() {
        let files = fixtures();
        assert!(files.len() >= 5, "{files:?}");
        let mut checked = 0;
        for p in files {
            let data = std::fs::read(&p).unwrap();
            let Ok(orig) = LogicalState::from_rdb(&data, i64::MIN) else {
                continue; // the corrupt ones
            };
            let orig_summary = crate::rdb::check(&data[..]).unwrap();
            type Sel = fn(u64, &[u8]) -> bool;
            let selections: [(&str, Sel); 4] = [
                ("all", |_, _| true),
                ("none", |_, _| false),
                ("even", |_, k| {
                    k.iter().map(|&b| b as u32).sum::<u32>() % 2 == 0
                }),
                ("db0 and odd length", |db, k| db == 0 && k.len() % 2 == 1),
            ];
            for (name, sel) in selections {
                for whole in [false, true] {
                    let what = format!("{} {name} whole={whole}", p.display());
                    let (copy, stats) = reencode(&data, whole, sel).unwrap();
                    let summary: Summary =
                        crate::rdb::check(&copy[..]).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let got = LogicalState::from_rdb(&copy, i64::MIN).unwrap();
                    let mut want = orig.clone();
                    want.keys.retain(|k| sel(k.db, &k.key));
                    assert!(got == want, "{what}: {:?}\nvs\n{:?}", got.keys, want.keys);
                    // (Empty collections are keys of the file, not of the logical state.)
                    assert!(stats.keys >= want.keys.len() as u64, "{what}");
                    assert_eq!(stats.keys + stats.keys_skipped, orig_summary.keys, "{what}");
                    assert_eq!(summary.keys, stats.keys, "{what}");
                    assert_eq!(summary.aux_fields, orig_summary.aux_fields, "{what}");
                    assert_eq!(summary.functions, orig_summary.functions, "{what}");
                    // A checksum where the original had one, valid (check verified it).
                    assert_eq!(
                        summary.checksum.is_some(),
                        orig_summary.checksum.is_some(),
                        "{what}"
                    );
                    assert_eq!(summary.checksum, stats.checksum, "{what}");
                    if name == "none" {
                        assert!(summary.keys_per_db.is_empty(), "{what}");
                    }
                }
            }
            checked += 1;
        }
        assert!(checked >= 5, "{checked}");
    }

    /// Builds an RDB 10 by hand: aux, three databases with RESIZEDB hints, keys with
    /// EXPIRETIME_MS, IDLE and FREQ opcodes before them.
    fn synthetic(checksum: bool) -> (Vec<u8>, Vec<u8>) {
        let mut f = b"REDIS0010".to_vec();
        f.push(0xfa);
        write_string(&mut f, b"redis-ver");
        write_string(&mut f, b"7.0.15");
        let mut want = f.clone();
        // db 0: `a` with an expiry.
        f.extend_from_slice(&[0xfe, 0, 0xfb, 1, 1]);
        f.push(0xfc);
        f.extend_from_slice(&4_000_000_000_000i64.to_le_bytes());
        f.push(0);
        write_string(&mut f, b"a");
        write_string(&mut f, b"1");
        // db 1: `b` with IDLE, `keep:1` with FREQ.
        f.extend_from_slice(&[0xfe, 1, 0xfb, 2, 0]);
        f.extend_from_slice(&[0xf8, 7, 0]);
        write_string(&mut f, b"b");
        write_string(&mut f, b"2");
        let keep = f.len();
        f.extend_from_slice(&[0xf9, 5, 0]);
        write_string(&mut f, b"keep:1");
        write_string(&mut f, &[b'x'; 100]);
        let keep_end = f.len();
        // db 2: nothing selected.
        f.extend_from_slice(&[0xfe, 2, 0xfb, 1, 0, 0]);
        write_string(&mut f, b"c");
        write_string(&mut f, b"3");
        f.push(0xff);
        let crc = if checksum { crc64(0, &f) } else { 0 };
        f.extend_from_slice(&crc.to_le_bytes());
        want.extend_from_slice(&[0xfe, 1]);
        want.extend_from_slice(&f[keep..keep_end]);
        want.push(0xff);
        let crc = if checksum { crc64(0, &want) } else { 0 };
        want.extend_from_slice(&crc.to_le_bytes());
        (f, want)
    }

    #[test]
    fn a_key_keeps_its_opcodes_and_only_its_database_is_selected() {
        for checksum in [true, false] {
            let (f, want) = synthetic(checksum);
            crate::rdb::check(&f[..]).unwrap();
            for whole in [false, true] {
                let (copy, stats) = reencode(&f, whole, |_, k| k.starts_with(b"keep:")).unwrap();
                assert_eq!(copy, want, "checksum={checksum} whole={whole}");
                assert_eq!((stats.keys, stats.keys_skipped), (1, 3));
                assert_eq!(stats.checksum.is_some(), checksum);
                let s = crate::rdb::check(&copy[..]).unwrap();
                assert_eq!(s.keys_per_db.into_iter().collect::<Vec<_>>(), [(1, 1)]);
            }
        }
    }

    /// A database kept whole keeps its RESIZEDB hint (written after its SELECTDB); the others'
    /// hints are dropped with their keys.
    #[test]
    fn a_database_kept_whole_keeps_its_size_hint() {
        let (f, _) = synthetic(true);
        let mut r = Reencoder::new(|db, _: &[u8]| db == 1).keep_resize_hints(vec![1]);
        let mut out = Vec::new();
        r.feed(Bytes::copy_from_slice(&f), &mut out).unwrap();
        let stats = r.finish(&mut out).unwrap();
        let copy: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!((stats.keys, stats.keys_skipped), (2, 2));
        let s = crate::rdb::check(&copy[..]).unwrap();
        assert_eq!(s.keys_per_db.into_iter().collect::<Vec<_>>(), [(1, 2)]);
        // SELECTDB 1, RESIZEDB 2 0, as in the original; no other database's.
        let at = copy.windows(2).position(|w| w == [0xfe, 1]).unwrap();
        assert_eq!(&copy[at..at + 5], &[0xfe, 1, 0xfb, 2, 0]);
        assert_eq!(copy.iter().filter(|&&b| b == 0xfb).count(), 1);
    }

    #[test]
    fn a_broken_input_is_an_error() {
        let (mut f, _) = synthetic(true);
        let n = f.len();
        f[n - 3] ^= 1;
        assert!(matches!(
            reencode(&f, true, |_, _| true),
            Err(RdbError::CrcMismatch { .. })
        ));
        let (f, _) = synthetic(true);
        assert!(matches!(
            reencode(&f[..f.len() - 20], false, |_, _| true),
            Err(RdbError::Truncated { .. })
        ));
    }
}
