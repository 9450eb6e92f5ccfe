//! RDB parsing: a pure, streaming parser for Redis and Valkey RDB files.
//!
//! Why it exists: a base snapshot arrives as an RDB of any size (tens of GB, single keys of GB)
//! and has to be checked, summarised and later turned back into keys, without ever holding it in
//! memory. The caller pushes bytes into a [`Parser`] and gets [`Event`]s back; the parser does no
//! I/O, never treats "need more bytes" as an error, and never allocates by a size read from the
//! input beyond the bounds in [`ParserConfig`].
//!
//! # Layout
//! - `error`: [`RdbError`], what went wrong and at which file offset.
//! - `cursor`: primitive reads (lengths, the string encodings, LZF) over buffered bytes.
//! - `lzf`: LZF decompression.
//! - `containers`: listpack, ziplist, intset, zipmap and stream-node decoders.
//! - `parser`: the [`Parser`] state machine (opcodes, every value type, CRC64 trailer).
//! - [`logical`]: the logical content of an RDB as the fixtures' JSON, and its canonical JSON.
//!
//! This module also has [`crc64`] (CRC-64/Jones as Redis uses it), [`dump_payload`] (a
//! `DUMP`/`RESTORE` payload from a value's raw bytes) and [`check`] (stream a whole RDB from a
//! reader and summarise it).
//!
//! # Format
//! See `shared/reference/replication-and-rdb.md` §3. Supported: magic `REDIS` with versions
//! 1..=12, `VALKEY080`; value types 0-5, 7, 9-25 (22 is dispatched on the magic: Redis
//! `HASH_METADATA_PRE_GA`, Valkey `HASH_2`; 23-25 are Redis-only); all opcodes up to Redis 8.4
//! and Valkey 9 (`SLOT_IMPORT`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

mod containers;
mod cursor;
mod error;
pub mod logical;
mod lzf;
mod parser;
pub mod reencode;

pub use error::RdbError;
pub use parser::{Mark, Parser};

/// Which magic the file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `REDISnnnn` (Redis, and Valkey up to RDB 11).
    Redis,
    /// `VALKEYnnn` (Valkey 9+, RDB 80).
    Valkey,
}

impl fmt::Display for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Magic::Redis => "REDIS",
            Magic::Valkey => "VALKEY",
        })
    }
}

/// The logical type of a key, whatever its encoding in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueKind {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
    Module,
}

impl ValueKind {
    /// The name `TYPE` would answer (and the fixtures' `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::String => "string",
            ValueKind::List => "list",
            ValueKind::Set => "set",
            ValueKind::ZSet => "zset",
            ValueKind::Hash => "hash",
            ValueKind::Stream => "stream",
            ValueKind::Module => "module",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// From the 16-byte big-endian form used for node keys and PEL entries.
    pub fn from_be_bytes(b: [u8; 16]) -> Self {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&b[..8]);
        seq.copy_from_slice(&b[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }

    /// The 16-byte big-endian form.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Error of [`StreamId::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream id {0:?}: expected <ms>-<seq>")]
pub struct ParseStreamIdError(String);

impl FromStr for StreamId {
    type Err = ParseStreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseStreamIdError(s.to_string());
        let (ms, seq) = s.split_once('-').ok_or_else(err)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(err());
        }
        Ok(StreamId {
            ms: ms.parse().map_err(|_| err())?,
            seq: seq.parse().map_err(|_| err())?,
        })
    }
}

/// Which string of an item an [`Event::ElementChunk`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A list element or set member.
    Element,
    /// A sorted-set member.
    Member,
    /// A hash field name.
    Field,
    /// A hash value.
    Value,
}

/// What the parser reports, in file order.
///
/// Per key: one [`Event::KeyStart`], its content, one [`Event::KeyEnd`]. Content events never
/// hold a whole collection; large strings come in pieces of at most
/// [`ParserConfig::max_chunk`] bytes (see [`Event::StringChunk`] and [`Event::ElementChunk`]).
/// All `Bytes` are slices of the input buffers (no copy) except integers turned into text and
/// decompressed LZF strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The magic and version (always the first event).
    Header { magic: Magic, version: u32 },
    /// An AUX field (`redis-ver`, `ctime`, `repl-id`, ...).
    Aux { key: Bytes, value: Bytes },
    /// A MODULE_AUX record. Its payload is walked and skipped (it needs the module to read).
    ModuleAux {
        module_id: u64,
        /// The 9-character module type name encoded in the id.
        module_name: String,
        /// When it was saved (`REDISMODULE_AUX_BEFORE_RDB` = 1 / `AFTER_RDB` = 2).
        when: u64,
    },
    /// A function library (`FUNCTION2`, or the pre-GA `FUNCTION` of Redis 7.0 release
    /// candidates made into the same form): its full source, `#!lua name=...` line included.
    Function { code: Bytes },
    /// `SELECTDB`: the keys that follow belong to this database.
    SelectDb(u64),
    /// `RESIZEDB` hint for the current database.
    ResizeDb { db_size: u64, expires_size: u64 },
    /// Valkey 9 `SLOT_IMPORT`: an atomic slot migration in progress at save time.
    SlotImport {
        job_name: Bytes,
        ranges: Vec<(u64, u64)>,
    },
    /// A key starts. `type_id` is the RDB type byte; `kind` the logical type.
    KeyStart {
        db: u64,
        key: Bytes,
        type_id: u8,
        kind: ValueKind,
        /// Absolute expiry in unix ms.
        expire_ms: Option<i64>,
        /// LRU idle seconds (`IDLE` opcode).
        idle: Option<u64>,
        /// LFU counter (`FREQ` opcode).
        freq: Option<u8>,
    },
    /// A piece of a string value, in order; at least one per string key (an empty value gives
    /// one empty piece). Pieces are at most `max_chunk` bytes.
    StringChunk(Bytes),
    /// A leading piece of one string of the next item event, for strings longer than
    /// `max_chunk`: the pieces of `slot`, in order, followed by the item event whose `slot`
    /// string is the final piece. Pieces of several slots of one item come slot by slot.
    ElementChunk { slot: Slot, data: Bytes },
    /// A list element.
    ListItem(Bytes),
    /// A set member.
    SetMember(Bytes),
    /// A sorted-set member (never NaN: the parser rejects NaN scores as Redis does).
    ZSetMember { member: Bytes, score: f64 },
    /// A hash field, with its own TTL (absolute unix ms) when it has one.
    HashField {
        field: Bytes,
        value: Bytes,
        expire_ms: Option<i64>,
    },
    /// A stream entry (deleted entries are not reported).
    StreamEntry {
        id: StreamId,
        fields: Vec<(Bytes, Bytes)>,
    },
    /// Stream metadata, after all entries. `first_id`, `max_deleted_id` and `entries_added`
    /// are `None` for streams v1 (type 15), which do not store them.
    StreamMeta {
        length: u64,
        last_id: StreamId,
        first_id: Option<StreamId>,
        max_deleted_id: Option<StreamId>,
        entries_added: Option<u64>,
    },
    /// A consumer group; `pending` [`Event::StreamPending`] events follow, then its consumers.
    StreamGroup {
        name: Bytes,
        last_id: StreamId,
        /// `None` when unknown (stored as -1) or not stored (streams v1).
        entries_read: Option<u64>,
        pending: u64,
    },
    /// One entry of the current group's PEL.
    StreamPending {
        id: StreamId,
        delivery_time_ms: u64,
        delivery_count: u64,
    },
    /// A consumer of the current group; `pending` [`Event::StreamConsumerPending`] follow.
    StreamConsumer {
        name: Bytes,
        seen_time_ms: u64,
        /// Stored by streams v3 (type 21) only.
        active_time_ms: Option<u64>,
        pending: u64,
    },
    /// One id of the current consumer's PEL (it owns that group PEL entry).
    StreamConsumerPending(StreamId),
    /// A module value (type 7): the module type, before the value is walked and skipped. The
    /// value can be restored from [`Event::KeyEnd`]'s `raw` with a module loaded.
    Module {
        module_id: u64,
        module_name: String,
        encver: u16,
    },
    /// The key ends. `raw` is the exact RDB value (type byte + body) when it is at most
    /// [`ParserConfig::max_raw_value`] bytes, for [`dump_payload`].
    KeyEnd { raw: Option<Bytes> },
    /// End of the RDB. `checksum` is the stored CRC64, verified; `None` if the file has none
    /// (RDB < 5) or it is 0 (checksum disabled).
    Eof { checksum: Option<u64> },
}

/// What the parser does with a string value stored LZF-compressed whose decompressed size is
/// over `max_chunk`. Decompressing holds it whole (LZF is decompressed in one piece), so a
/// consumer that does not need the content can have it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LzfStrings {
    /// Decompress it and report its content (the default).
    #[default]
    Decode,
    /// Skip it when its raw bytes are captured for [`Event::KeyEnd`] (the consumer sends the
    /// value by RESTORE); decompress it otherwise.
    SkipWhenCaptured,
    /// Always skip it, and also small string values and the contents of encoded containers
    /// (listpacks, ziplists, intsets): the consumer only counts keys. No `KeyStart` is reported
    /// (the [`Summary`] counts the keys); the file's structure and checksum are still read and
    /// checked.
    Skip,
}

/// The largest input a caller should hand [`Parser::feed`] at once when it reads values: the
/// events of one call are all held until it returns, and an LZF-compressed string expands up to
/// 88 times (64 KiB in, at most about 6 MiB of string pieces out).
pub const FEED_PIECE: usize = 64 << 10;

/// Bounds on what the parser holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserConfig {
    /// Largest piece of a string value or element reported at once; longer plain strings are
    /// streamed in pieces of this size.
    pub max_chunk: usize,
    /// Largest value (type byte + body) whose raw bytes are kept for [`Event::KeyEnd`]; 0
    /// disables raw capture.
    pub max_raw_value: usize,
    /// Largest LZF-compressed string, compressed or decompressed (they are decompressed whole).
    pub max_lzf: usize,
    /// Largest string that must be held whole: keys, AUX fields, function code, and encoded
    /// containers (listpacks, ziplists, intsets, zipmaps, quicklist and stream nodes).
    pub max_blob: usize,
}

impl Default for ParserConfig {
    /// 1 MiB chunks, raw values up to 8 MiB, and Redis' own 512 MiB string limit for LZF
    /// strings and whole-held strings.
    fn default() -> Self {
        ParserConfig {
            max_chunk: 1 << 20,
            max_raw_value: 8 << 20,
            max_lzf: 512 << 20,
            max_blob: 512 << 20,
        }
    }
}

/// What a whole RDB held, in counts (cheap to keep).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// The magic (`None` only if the header was never read).
    pub magic: Option<Magic>,
    /// The RDB version.
    pub version: u32,
    /// Bytes of the file, trailer included.
    pub bytes: u64,
    /// AUX fields.
    pub aux_fields: u64,
    /// MODULE_AUX records.
    pub module_aux: u64,
    /// Function libraries.
    pub functions: u64,
    /// Keys in all databases (empty collections included; a server skips those on load).
    pub keys: u64,
    /// Keys with an expiry.
    pub keys_with_expiry: u64,
    /// Keys per database.
    pub keys_per_db: BTreeMap<u64, u64>,
    /// The stored, verified CRC64 (`None`: absent or disabled).
    pub checksum: Option<u64>,
    /// Whether the end of the file was reached.
    pub complete: bool,
}

impl Summary {
    pub(crate) fn count_key(&mut self, db: u64, expires: bool) {
        self.keys += 1;
        self.keys_with_expiry += u64::from(expires);
        match self.keys_per_db.last_entry() {
            // Keys come database by database: the last entry is almost always the one.
            Some(mut e) if *e.key() == db => *e.get_mut() += 1,
            _ => *self.keys_per_db.entry(db).or_insert(0) += 1,
        }
    }

    pub(crate) fn observe(&mut self, ev: &Event) {
        match ev {
            Event::Header { magic, version } => {
                self.magic = Some(*magic);
                self.version = *version;
            }
            Event::Aux { .. } => self.aux_fields += 1,
            Event::ModuleAux { .. } => self.module_aux += 1,
            Event::Function { .. } => self.functions += 1,
            Event::KeyStart { db, expire_ms, .. } => self.count_key(*db, expire_ms.is_some()),
            Event::Eof { checksum } => {
                self.checksum = *checksum;
                self.complete = true;
            }
            _ => {}
        }
    }
}

/// CRC-64/Jones as Redis computes it (`crc64(crc, data, len)`): reflected, polynomial
/// `0xad93d23594c935a9`, no final xor. Pass `0` to start; pass a previous result to continue, so
/// `crc64(crc64(0, a), b) == crc64(0, ab)`. Check value: `crc64(0, b"123456789")` is
/// `0xe9c6d914c4b8d9ca`. Carry-less multiplication (PCLMULQDQ, PMULL) where the CPU has it.
pub fn crc64(init: u64, data: &[u8]) -> u64 {
    // Reflected with no final xor: the register is the result, so a result continues.
    let mut d = crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc64Redis, init);
    d.update(data);
    d.finalize()
}

/// Appends an RDB length (`rdbSaveLen`): 6 bits, 14 bits, 32 or 64 bits big-endian.
pub fn write_len(out: &mut Vec<u8>, n: u64) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Appends an RDB string as `rdbSaveRawString` does without compression: length, then bytes.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A `DUMP`/`RESTORE` payload for a value: `type_and_body` (as in [`Event::KeyEnd`]'s `raw`),
/// the 2-byte little-endian RDB version, and the CRC64 of everything before it, little-endian.
pub fn dump_payload(type_and_body: &[u8], rdb_version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(type_and_body.len() + 10);
    out.extend_from_slice(type_and_body);
    out.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Stream a whole RDB from `reader` through a [`Parser`] (default bounds, no raw capture) in
/// 64 KiB reads, and summarise it. Fails on any format error, a CRC mismatch, bytes after the
/// end, or an input that stops early.
pub fn check(mut reader: impl std::io::Read) -> Result<Summary, RdbError> {
    let mut parser = Parser::new(ParserConfig {
        max_raw_value: 0,
        ..ParserConfig::default()
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut events = Vec::new();
    let mut total = 0u64;
    loop {
        let n = loop {
            match reader.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RdbError::Io {
                        offset: total,
                        message: e.to_string(),
                    })
                }
            }
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        events.clear();
        parser.feed(&buf[..n], &mut events)?;
    }
    parser.finish()
}

/// Escape bytes for messages: printable ASCII as is, everything else `\xHH`.
pub(crate) fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_check_value_and_continuation() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
        assert_eq!(crc64(0, b""), 0);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = crc64(0, &data);
        for cut in [0, 1, 15, 16, 17, 4096, 9999, 10_000] {
            assert_eq!(
                crc64(crc64(0, &data[..cut]), &data[cut..]),
                whole,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn dump_payload_of_a_small_integer() {
        // `SET mykey 10` then `DUMP mykey` on an RDB 10 server.
        let p = dump_payload(&[0x00, 0xc0, 0x0a], 10);
        assert_eq!(
            p,
            b"\x00\xc0\n\n\x00n\x9fWE\x0e\xaec\xbb".to_vec(),
            "{}",
            escape_bytes(&p)
        );
        // The CRC residue of a payload with its CRC appended is 0.
        assert_eq!(crc64(0, &p), 0);
    }

    #[test]
    fn stream_id_round_trips() {
        for id in [
            StreamId { ms: 0, seq: 0 },
            StreamId {
                ms: 1700741738426,
                seq: 3,
            },
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX,
            },
        ] {
            assert_eq!(id.to_string().parse::<StreamId>().unwrap(), id);
            assert_eq!(StreamId::from_be_bytes(id.to_be_bytes()), id);
        }
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "+1-2",
            "18446744073709551616-0",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
        assert!(StreamId { ms: 1, seq: 9 } < StreamId { ms: 2, seq: 0 });
    }

    #[test]
    fn magic_and_kind_names() {
        assert_eq!(Magic::Valkey.to_string(), "VALKEY");
        assert_eq!(ValueKind::ZSet.to_string(), "zset");
    }
}

#[cfg(test)]
mod parser_tests;
