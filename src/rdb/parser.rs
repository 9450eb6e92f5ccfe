//! The RDB state machine: the caller pushes bytes, the parser appends [`Event`]s.
//!
//! How it streams with bounded memory: input is appended to one buffer; parsing proceeds in
//! atomic *steps* (an opcode with its arguments, a key with a small value, one collection item,
//! one encoded container, one piece of a long string). A step either completes, or stops because
//! the input ends inside it; then everything it did is rolled back (its events are truncated
//! away), the parser records how many bytes the step needs and waits until that many are
//! buffered before trying again. So a byte is copied at most twice (into the buffer, and once
//! more if it belongs to a step cut by the end of an input block), events never depend on how
//! the input was split, and the buffer never holds more than one step: at most one
//! `max_chunk` piece per string of an item, or one whole-held string (`max_blob`, `max_lzf`).

use bytes::{Bytes, BytesMut};

use super::containers::{self, Elem};
use super::cursor::{int_bytes, Cur, Limits, Skip, Stop, Str, StrValue, R};
use super::{
    crc64, escape_bytes, Event, Magic, ParserConfig, RdbError, Slot, StreamId, Summary, ValueKind,
};

const OP_SLOT_IMPORT: u8 = 0xf3;
const OP_SLOT_INFO: u8 = 0xf4;
const OP_FUNCTION2: u8 = 0xf5;
const OP_FUNCTION_PRE_GA: u8 = 0xf6;
const OP_MODULE_AUX: u8 = 0xf7;
const OP_IDLE: u8 = 0xf8;
const OP_FREQ: u8 = 0xf9;
const OP_AUX: u8 = 0xfa;
const OP_RESIZEDB: u8 = 0xfb;
const OP_EXPIRETIME_MS: u8 = 0xfc;
const OP_EXPIRETIME: u8 = 0xfd;
const OP_SELECTDB: u8 = 0xfe;
const OP_EOF: u8 = 0xff;

/// Largest field expiry Redis accepts (`EB_EXPIRE_TIME_MAX`, 2^48 - 1 ms).
const FIELD_EXPIRE_MAX: u64 = (1 << 48) - 1;

/// A streaming RDB parser. See the module documentation of [`crate::rdb`].
///
/// ```
/// use redis_pitr::rdb::{Event, Parser, ParserConfig};
/// let mut file = b"REDIS0009\xfe\x00\x00\x01k\x01v\xff".to_vec();
/// file.extend_from_slice(&redis_pitr::rdb::crc64(0, &file).to_le_bytes());
/// let mut p = Parser::new(ParserConfig::default());
/// let mut events = Vec::new();
/// for piece in file.chunks(3) {
///     p.feed(piece, &mut events).unwrap();
/// }
/// let summary = p.finish().unwrap();
/// assert_eq!(summary.keys, 1);
/// assert!(events.contains(&Event::StringChunk("v".into())));
/// ```
pub struct Parser {
    core: Core,
    state: State,
}

struct Core {
    cfg: ParserConfig,
    lim: Limits,
    /// Bytes not yet consumed (the tail of the last input that did not complete a step).
    buf: BytesMut,
    /// Absolute file offset of the first unconsumed byte.
    base: u64,
    /// Bytes that must be buffered before the next step can complete.
    need: usize,
    magic: Magic,
    version: u32,
    db: u64,
    pending: KeyMeta,
    crc: u64,
    /// Where in the current buffer the bytes not yet hashed start; `None` once the EOF byte
    /// has been hashed.
    crc_from: Option<usize>,
    raw: RawCap,
    /// The key whose value is being read, for error messages.
    key: Option<KeyCtx>,
    summary: Summary,
    failed: Option<RdbError>,
    lzf_strings: super::LzfStrings,
    /// With [`Parser::record_marks`]: where each top-level record starts.
    marks: Option<Vec<Mark>>,
}

/// Where a top-level record (an opcode with its arguments, or a key with its value) starts in
/// the file, and the index in the caller's event vector of its first event (it may have none:
/// `EXPIRETIME`/`IDLE`/`FREQ`, `SLOT_INFO`, the `EOF` opcode). A record's bytes run to the
/// next mark; the last one's, to [`Parser::offset`] or beyond (a value still being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub event: usize,
    pub offset: u64,
}

#[derive(Default, Clone, Copy)]
struct KeyMeta {
    expire_ms: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
}

struct KeyCtx {
    key: Bytes,
    type_id: u8,
    offset: u64,
}

enum State {
    Magic,
    Top,
    Value(Body),
    ModuleAux(ModWalk),
    Checksum,
    Done,
}

enum Body {
    /// A plain string value longer than `max_chunk`: bytes still to report.
    Str {
        remaining: u64,
    },
    /// An LZF string value longer than `max_chunk` decompressed: decompressed in pieces, so
    /// that neither its compressed nor its decompressed bytes are held whole.
    Lzf(Box<LzfBody>),
    Seq(Seq),
    Quicklist(Quicklist),
    Stream(Box<StreamSt>),
    Module(ModWalk),
}

struct LzfBody {
    /// Compressed bytes still to read.
    left: u64,
    dec: super::lzf::LzfStream,
    /// Offset of the compressed bytes in the file (errors name it).
    at: u64,
}

/// Compressed bytes fed to an LZF stream per step: up to 88 times that comes out.
const LZF_PIECE: u64 = 64 << 10;

/// What a type byte means for this file.
#[derive(Debug, Clone, Copy)]
enum Kind {
    String,
    Seq(SeqKind),
    Blob(BlobKind),
    Quicklist { v2: bool },
    Stream { ver: u8 },
    Module,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqKind {
    List,
    Set,
    ZSetAscii,
    ZSetBin,
    Hash,
    /// Valkey 9 `HASH_2`: field, value, 8-byte expiry (-1 = none).
    HashTtl8,
    /// Redis `HASH_METADATA_PRE_GA` (22): absolute TTL as a length, field, value.
    HashMetaAbs,
    /// Redis `HASH_METADATA` (24): minExpire, then relative TTL as a length, field, value.
    HashMetaRel,
}

#[derive(Debug, Clone, Copy)]
enum BlobKind {
    Zipmap,
    ZiplistList,
    Intset,
    ZiplistZSet,
    ZiplistHash,
    ListpackHash,
    ListpackZSet,
    ListpackSet,
    /// Hash listpack with (field, value, ttl) triples; `min_expire`: an 8-byte prefix (25).
    ListpackHashEx {
        min_expire: bool,
    },
}

fn classify(magic: Magic, t: u8) -> Option<(Kind, ValueKind)> {
    use ValueKind as V;
    Some(match (t, magic) {
        (0, _) => (Kind::String, V::String),
        (1, _) => (Kind::Seq(SeqKind::List), V::List),
        (2, _) => (Kind::Seq(SeqKind::Set), V::Set),
        (3, _) => (Kind::Seq(SeqKind::ZSetAscii), V::ZSet),
        (4, _) => (Kind::Seq(SeqKind::Hash), V::Hash),
        (5, _) => (Kind::Seq(SeqKind::ZSetBin), V::ZSet),
        (7, _) => (Kind::Module, V::Module),
        (9, _) => (Kind::Blob(BlobKind::Zipmap), V::Hash),
        (10, _) => (Kind::Blob(BlobKind::ZiplistList), V::List),
        (11, _) => (Kind::Blob(BlobKind::Intset), V::Set),
        (12, _) => (Kind::Blob(BlobKind::ZiplistZSet), V::ZSet),
        (13, _) => (Kind::Blob(BlobKind::ZiplistHash), V::Hash),
        (14, _) => (Kind::Quicklist { v2: false }, V::List),
        (15, _) => (Kind::Stream { ver: 1 }, V::Stream),
        (16, _) => (Kind::Blob(BlobKind::ListpackHash), V::Hash),
        (17, _) => (Kind::Blob(BlobKind::ListpackZSet), V::ZSet),
        (18, _) => (Kind::Quicklist { v2: true }, V::List),
        (19, _) => (Kind::Stream { ver: 2 }, V::Stream),
        (20, _) => (Kind::Blob(BlobKind::ListpackSet), V::Set),
        (21, _) => (Kind::Stream { ver: 3 }, V::Stream),
        (22, Magic::Valkey) => (Kind::Seq(SeqKind::HashTtl8), V::Hash),
        (22, Magic::Redis) => (Kind::Seq(SeqKind::HashMetaAbs), V::Hash),
        (23, Magic::Redis) => (
            Kind::Blob(BlobKind::ListpackHashEx { min_expire: false }),
            V::Hash,
        ),
        (24, Magic::Redis) => (Kind::Seq(SeqKind::HashMetaRel), V::Hash),
        (25, Magic::Redis) => (
            Kind::Blob(BlobKind::ListpackHashEx { min_expire: true }),
            V::Hash,
        ),
        _ => return None,
    })
}

/// One string or number of a collection item, in file order.
#[derive(Debug, Clone, Copy)]
enum F {
    /// A string, stored in part `.1` of the item.
    S(Slot, usize),
    AsciiScore,
    BinScore,
    TtlLen,
    Ttl8,
}

fn layout(k: SeqKind) -> &'static [F] {
    match k {
        SeqKind::List | SeqKind::Set => &[F::S(Slot::Element, 0)],
        SeqKind::ZSetAscii => &[F::S(Slot::Member, 0), F::AsciiScore],
        SeqKind::ZSetBin => &[F::S(Slot::Member, 0), F::BinScore],
        SeqKind::Hash => &[F::S(Slot::Field, 0), F::S(Slot::Value, 1)],
        SeqKind::HashTtl8 => &[F::S(Slot::Field, 0), F::S(Slot::Value, 1), F::Ttl8],
        SeqKind::HashMetaAbs | SeqKind::HashMetaRel => {
            &[F::TtlLen, F::S(Slot::Field, 0), F::S(Slot::Value, 1)]
        }
    }
}

fn slot_what(slot: Slot) -> &'static str {
    match slot {
        Slot::Element => "element",
        Slot::Member => "zset member",
        Slot::Field => "hash field",
        Slot::Value => "hash value",
    }
}

/// A collection stored item by item (types 1-5, 22, 24).
struct Seq {
    kind: SeqKind,
    started: bool,
    remaining: u64,
    min_expire: u64,
    /// Next entry of the item layout to read.
    stage: usize,
    parts: [Bytes; 2],
    ttl: Option<i64>,
    /// A string of the current item being streamed: (slot, part, bytes left).
    big: Option<(Slot, usize, u64)>,
}

struct Quicklist {
    v2: bool,
    started: bool,
    remaining: u64,
    /// A PLAIN node's element being streamed: bytes left.
    big: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SStage {
    Start,
    Nodes,
    Meta,
    Groups,
    Pel,
    Consumers,
    ConsumerPel,
}

struct StreamSt {
    ver: u8,
    stage: SStage,
    /// Items left in the current loop (nodes, PEL entries, consumer PEL entries).
    left: u64,
    groups_left: u64,
    consumers_left: u64,
}

/// Walks an opcode-tagged module value (`rdbLoadCheckModuleValue`) without the module.
struct ModWalk {
    /// Whether the module id has been read (always true for MODULE_AUX).
    started: bool,
    /// Bytes of a long string still to skip.
    skipping: u64,
}

/// The raw bytes of the value being read, kept across input blocks for [`Event::KeyEnd`].
#[derive(Default)]
struct RawCap {
    open: bool,
    keep: bool,
    type_id: u8,
    parts: Vec<Bytes>,
    len: usize,
    /// Start of the bytes not yet captured, in the current buffer.
    from: usize,
}

impl RawCap {
    fn open(&mut self, type_id: u8, from: usize, max: usize) {
        self.open = true;
        self.keep = max > 0;
        self.type_id = type_id;
        self.parts.clear();
        self.len = 0;
        self.from = from;
    }

    /// Capture `data[from..upto]` at the end of an input block.
    fn flush(&mut self, data: &Bytes, upto: usize, max: usize) {
        if !self.open {
            return;
        }
        if self.keep && upto > self.from {
            self.len += upto - self.from;
            if 1 + self.len > max {
                self.keep = false;
                self.parts.clear();
            } else {
                self.parts.push(data.slice(self.from..upto));
            }
        }
        self.from = 0;
    }

    fn close(&mut self, data: &Bytes, upto: usize, max: usize) -> Option<Bytes> {
        let was_open = std::mem::replace(&mut self.open, false);
        if !was_open || !self.keep {
            self.parts.clear();
            return None;
        }
        let tail = &data[self.from.min(upto)..upto];
        let total = 1 + self.len + tail.len();
        if total > max {
            self.parts.clear();
            return None;
        }
        let mut v = Vec::with_capacity(total);
        v.push(self.type_id);
        for p in self.parts.drain(..) {
            v.extend_from_slice(&p);
        }
        v.extend_from_slice(tail);
        Some(Bytes::from(v))
    }
}

fn raw_single(type_id: u8, body: &[u8], max: usize) -> Option<Bytes> {
    if body.len() + 1 > max {
        return None;
    }
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(type_id);
    v.extend_from_slice(body);
    Some(Bytes::from(v))
}

/// The module type name encoded in a module id (`moduleTypeNameByID`).
pub(crate) fn module_name(id: u64) -> String {
    const CSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = [0u8; 9];
    let mut id = id >> 10;
    for c in name.iter_mut().rev() {
        *c = CSET[(id & 63) as usize];
        id >>= 6;
    }
    name.iter().map(|&c| c as char).collect()
}

impl Parser {
    /// A parser for one RDB file, waiting for its first byte.
    pub fn new(cfg: ParserConfig) -> Self {
        let cfg = ParserConfig {
            max_chunk: cfg.max_chunk.max(1),
            ..cfg
        };
        Parser {
            core: Core {
                lim: Limits {
                    max_chunk: cfg.max_chunk,
                    max_blob: cfg.max_blob,
                    max_lzf: cfg.max_lzf,
                },
                cfg,
                buf: BytesMut::new(),
                base: 0,
                need: 0,
                magic: Magic::Redis,
                version: 0,
                db: 0,
                pending: KeyMeta::default(),
                crc: 0,
                crc_from: Some(0),
                raw: RawCap::default(),
                key: None,
                summary: Summary::default(),
                failed: None,
                lzf_strings: super::LzfStrings::Decode,
                marks: None,
            },
            state: State::Magic,
        }
    }

    /// Push more input. Events are appended to `out`. Returns `Ok(())` also when more bytes are
    /// needed. After an error the parser stays failed and returns the same error.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), RdbError> {
        self.precheck(input.len())?;
        if input.is_empty() {
            return Ok(());
        }
        self.core.buf.extend_from_slice(input);
        if self.core.buf.len() < self.core.need {
            return Ok(());
        }
        let data = self.core.buf.split().freeze();
        self.run(data, out)
    }

    /// Like [`Parser::feed`], but takes the input by value: when nothing is buffered the events
    /// slice `input` itself and nothing is copied.
    pub fn feed_bytes(&mut self, mut input: Bytes, out: &mut Vec<Event>) -> Result<(), RdbError> {
        self.precheck(input.len())?;
        // An item begun in an earlier input is completed with just the bytes it needs; the
        // rest of `input` is then parsed where it is, not copied behind it.
        while !self.core.buf.is_empty() && !input.is_empty() {
            let want = self.core.need.saturating_sub(self.core.buf.len()).max(1);
            let head = input.split_to(want.min(input.len()));
            self.core.buf.extend_from_slice(&head);
            if self.core.buf.len() < self.core.need {
                return Ok(());
            }
            let data = self.core.buf.split().freeze();
            self.run(data, out)?;
        }
        if input.is_empty() {
            return Ok(());
        }
        if input.len() >= self.core.need {
            return self.run(input, out);
        }
        self.core.buf.extend_from_slice(&input);
        Ok(())
    }

    /// Call at the end of the input: the summary if the RDB was complete, else
    /// [`RdbError::Truncated`] naming what was expected and the offset of the incomplete item.
    pub fn finish(&mut self) -> Result<Summary, RdbError> {
        if let Some(e) = &self.core.failed {
            return Err(e.clone());
        }
        match self.state {
            State::Done => {
                let mut s = self.core.summary.clone();
                s.bytes = self.core.base;
                Ok(s)
            }
            _ => Err(RdbError::Truncated {
                expected: self.expected(),
                offset: self.core.base,
            }),
        }
    }

    /// Bytes consumed so far: the offset of the first byte not yet parsed.
    pub fn offset(&self) -> u64 {
        self.core.base
    }

    /// Bytes held waiting for the rest of an item.
    pub fn buffered(&self) -> usize {
        self.core.buf.len()
    }

    /// The RDB version (0 before the header is read).
    pub fn version(&self) -> u32 {
        self.core.version
    }

    /// The magic (meaningful once the header is read).
    pub fn magic(&self) -> Magic {
        self.core.magic
    }

    /// Whether the end of the RDB (and its trailer) has been read.
    /// Sets what happens to large LZF-compressed string values from now on.
    pub fn set_lzf_strings(&mut self, mode: super::LzfStrings) {
        self.core.lzf_strings = mode;
    }

    /// From now on, record a [`Mark`] for each top-level record (and the checksum trailer);
    /// [`Parser::take_marks`] hands them over. Their `event` indices are into the vector given
    /// to `feed`, as it was when the record was parsed.
    pub fn record_marks(&mut self) {
        self.core.marks.get_or_insert_with(Vec::new);
    }

    /// The marks recorded since the last call, appended to `out`.
    pub fn take_marks(&mut self, out: &mut Vec<Mark>) {
        if let Some(m) = &mut self.core.marks {
            out.append(m);
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn precheck(&mut self, n: usize) -> Result<(), RdbError> {
        if let Some(e) = &self.core.failed {
            return Err(e.clone());
        }
        if n > 0 && matches!(self.state, State::Done) {
            let e = RdbError::TrailingBytes {
                offset: self.core.base,
            };
            self.core.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    fn expected(&self) -> String {
        match &self.state {
            State::Magic => "the 9-byte magic (REDISnnnn or VALKEYnnn)".to_string(),
            State::Top => {
                let p = self.core.pending;
                if p.expire_ms.is_some() || p.idle.is_some() || p.freq.is_some() {
                    "the key that the preceding EXPIRETIME/IDLE/FREQ opcode belongs to".to_string()
                } else {
                    "an opcode or a value type (the file has no 0xFF end marker yet)".to_string()
                }
            }
            State::Value(_) => match &self.core.key {
                Some(k) => format!(
                    "the rest of the value of key \"{}\" (type {}) that starts at offset {}",
                    escape_bytes(&k.key),
                    k.type_id,
                    k.offset
                ),
                None => "the rest of a value".to_string(),
            },
            State::ModuleAux(_) => "the rest of a MODULE_AUX payload".to_string(),
            State::Checksum => "the 8-byte CRC64 trailer after the 0xFF end marker".to_string(),
            State::Done => "nothing".to_string(),
        }
    }

    fn run(&mut self, data: Bytes, out: &mut Vec<Event>) -> Result<(), RdbError> {
        let first = out.len();
        let result = run_steps(&mut self.core, &mut self.state, &data, out);
        for ev in &out[first..] {
            self.core.summary.observe(ev);
        }
        result.inspect_err(|e| self.core.failed = Some(e.clone()))
    }
}

fn run_steps(
    core: &mut Core,
    state: &mut State,
    data: &Bytes,
    out: &mut Vec<Event>,
) -> Result<(), RdbError> {
    if core.crc_from.is_some() {
        core.crc_from = Some(0);
    }
    core.raw.from = 0;
    let mut pos = 0usize;
    let result = loop {
        if matches!(state, State::Done) {
            if pos < data.len() {
                break Err(RdbError::TrailingBytes {
                    offset: core.base + pos as u64,
                });
            }
            core.need = 0;
            break Ok(());
        }
        let mark = out.len();
        let marks = core.marks.as_ref().map_or(0, Vec::len);
        let mut cur = Cur::new(data, pos, core.base);
        if let (Some(m), State::Top | State::Checksum) = (&mut core.marks, &*state) {
            m.push(Mark {
                event: mark,
                offset: cur.abs(),
            });
        }
        match step(core, state, &mut cur, out) {
            Ok(()) => pos = cur.pos,
            Err(Stop::Need(n)) => {
                out.truncate(mark);
                if let Some(m) = &mut core.marks {
                    m.truncate(marks);
                }
                core.need = n - pos;
                break Ok(());
            }
            Err(Stop::Fail(e)) => {
                out.truncate(mark);
                if let Some(m) = &mut core.marks {
                    m.truncate(marks);
                }
                break Err(e);
            }
        }
    };
    if result.is_ok() {
        if let Some(f) = core.crc_from {
            core.crc = crc64(core.crc, &data[f..pos]);
        }
        core.raw.flush(data, pos, core.cfg.max_raw_value);
        core.base += pos as u64;
        core.buf.extend_from_slice(&data[pos..]);
    }
    result
}

fn step(core: &mut Core, state: &mut State, cur: &mut Cur<'_>, out: &mut Vec<Event>) -> R<()> {
    match state {
        State::Magic => {
            let (magic, version) = read_magic(cur)?;
            core.magic = magic;
            core.version = version;
            out.push(Event::Header { magic, version });
            *state = State::Top;
            Ok(())
        }
        State::Top => step_top(core, state, cur, out),
        State::Value(body) => {
            if step_value(core, body, cur, out)? {
                end_key(core, cur, out);
                *state = State::Top;
            }
            Ok(())
        }
        State::ModuleAux(walk) => {
            if step_module_walk(core, walk, cur)? {
                *state = State::Top;
            }
            Ok(())
        }
        State::Checksum => {
            let at = cur.abs();
            let stored = cur.u64_le()?;
            if stored != 0 && stored != core.crc {
                return Err(RdbError::CrcMismatch {
                    expected: stored,
                    actual: core.crc,
                    offset: at,
                }
                .into());
            }
            out.push(Event::Eof {
                checksum: (stored != 0).then_some(stored),
            });
            *state = State::Done;
            Ok(())
        }
        State::Done => Ok(()),
    }
}

fn read_magic(cur: &mut Cur<'_>) -> R<(Magic, u32)> {
    // Reject a wrong prefix as soon as it is visible.
    let seen = &cur.data[cur.pos..cur.pos + cur.avail().min(9)];
    let fits = |m: &[u8]| seen.iter().zip(m).all(|(a, b)| a == b);
    if !fits(b"REDIS") && !fits(b"VALKEY") {
        return Err(RdbError::BadMagic {
            found: escape_bytes(seen),
        }
        .into());
    }
    if seen.len() < 9 {
        // Look again at every new byte, so the answer does not depend on how input is split.
        return Err(Stop::Need(cur.pos + seen.len() + 1));
    }
    let m = cur.slice(9)?;
    let digits = |d: &[u8]| -> Option<u32> {
        if d.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(d).ok()?.parse().ok()
        } else {
            None
        }
    };
    let bad = || RdbError::BadMagic {
        found: escape_bytes(m),
    };
    if m.starts_with(b"REDIS") {
        let version = digits(&m[5..]).ok_or_else(bad)?;
        if !(1..=12).contains(&version) {
            return Err(RdbError::UnsupportedVersion {
                magic: Magic::Redis,
                version,
            }
            .into());
        }
        Ok((Magic::Redis, version))
    } else {
        let version = digits(&m[6..]).ok_or_else(bad)?;
        if version != 80 {
            return Err(RdbError::UnsupportedVersion {
                magic: Magic::Valkey,
                version,
            }
            .into());
        }
        Ok((Magic::Valkey, version))
    }
}

fn step_top(core: &mut Core, state: &mut State, cur: &mut Cur<'_>, out: &mut Vec<Event>) -> R<()> {
    let at = cur.abs();
    let op = cur.u8()?;
    match op {
        OP_AUX => {
            let key = cur.string(&core.lim, "AUX field name")?;
            let value = cur.string(&core.lim, "AUX field value")?;
            out.push(Event::Aux { key, value });
        }
        OP_SELECTDB => {
            let db = cur.length("SELECTDB database number")?;
            core.db = db;
            out.push(Event::SelectDb(db));
        }
        OP_RESIZEDB => {
            let db_size = cur.length("RESIZEDB database size")?;
            let expires_size = cur.length("RESIZEDB expires size")?;
            out.push(Event::ResizeDb {
                db_size,
                expires_size,
            });
        }
        OP_EXPIRETIME_MS => {
            // Before RDB 9 this was native-endian; every server that wrote one was little-endian
            // in practice.
            core.pending.expire_ms = Some(cur.i64_le()?);
        }
        OP_EXPIRETIME => {
            core.pending.expire_ms = Some(i64::from(cur.i32_le()?) * 1000);
        }
        OP_IDLE => {
            core.pending.idle = Some(cur.length("IDLE seconds")?);
        }
        OP_FREQ => {
            core.pending.freq = Some(cur.u8()?);
        }
        OP_FUNCTION2 => {
            let code = cur.string(&core.lim, "function library")?;
            out.push(Event::Function { code });
        }
        OP_FUNCTION_PRE_GA => {
            // The format of Redis 7.0 release candidates 1 and 2, which 7.0.x still loads
            // (rdb.c `rdbFunctionLoad`): name, engine, a description flag, the description if
            // the flag is set, and the code. The loader makes it the library source of the
            // later format, `#!<engine> name=<name>\n<code>`, and ignores the description.
            let name = cur.string(&core.lim, "pre-GA function library name")?;
            let engine = cur.string(&core.lim, "pre-GA function engine name")?;
            if cur.length("pre-GA function description flag")? != 0 {
                cur.string(&core.lim, "pre-GA function description")?;
            }
            let blob = cur.string(&core.lim, "pre-GA function library code")?;
            let mut code = Vec::with_capacity(engine.len() + name.len() + blob.len() + 9);
            code.extend_from_slice(b"#!");
            code.extend_from_slice(&engine);
            code.extend_from_slice(b" name=");
            code.extend_from_slice(&name);
            code.push(b'\n');
            code.extend_from_slice(&blob);
            out.push(Event::Function {
                code: Bytes::from(code),
            });
        }
        OP_MODULE_AUX => {
            let module_id = cur.length("MODULE_AUX module id")?;
            let when_at = cur.abs();
            let when_opcode = cur.length("MODULE_AUX when opcode")?;
            if when_opcode != 2 {
                return Err(RdbError::corrupt(
                    format!("MODULE_AUX 'when' opcode is {when_opcode}, expected 2 (UINT)"),
                    when_at,
                )
                .into());
            }
            let when = cur.length("MODULE_AUX when")?;
            out.push(Event::ModuleAux {
                module_id,
                module_name: module_name(module_id),
                when,
            });
            *state = State::ModuleAux(ModWalk {
                started: true,
                skipping: 0,
            });
        }
        OP_SLOT_INFO => {
            // Cluster per-slot sizing hints: safe to ignore.
            cur.length("SLOT_INFO slot")?;
            cur.length("SLOT_INFO slot size")?;
            cur.length("SLOT_INFO expires size")?;
        }
        OP_SLOT_IMPORT if core.magic == Magic::Valkey => {
            let job_name = cur.string(&core.lim, "SLOT_IMPORT job name")?;
            let n_at = cur.abs();
            let n = cur.length("SLOT_IMPORT range count")?;
            if n > 16384 {
                return Err(RdbError::corrupt(
                    format!("SLOT_IMPORT claims {n} slot ranges (a cluster has 16384 slots)"),
                    n_at,
                )
                .into());
            }
            let mut ranges = Vec::new();
            for _ in 0..n {
                let a = cur.length("SLOT_IMPORT range start")?;
                let b = cur.length("SLOT_IMPORT range end")?;
                ranges.push((a, b));
            }
            out.push(Event::SlotImport { job_name, ranges });
        }
        OP_EOF => {
            if let Some(f) = core.crc_from.take() {
                core.crc = crc64(core.crc, &cur.data[f..cur.pos]);
            }
            if core.version >= 5 {
                *state = State::Checksum;
            } else {
                out.push(Event::Eof { checksum: None });
                *state = State::Done;
            }
        }
        0xf0..=0xff => {
            return Err(RdbError::UnknownOpcode {
                opcode: op,
                offset: at,
            }
            .into())
        }
        6 => {
            return Err(RdbError::Unsupported {
                what:
                    "module value type 6 (the pre-GA module format of Redis 4.0 release candidates)"
                        .to_string(),
                offset: at,
            }
            .into())
        }
        t => return step_key(core, state, t, at, cur, out),
    }
    Ok(())
}

fn key_start(
    core: &mut Core,
    out: &mut Vec<Event>,
    key: Bytes,
    type_id: u8,
    kind: ValueKind,
    at: u64,
) {
    let meta = std::mem::take(&mut core.pending);
    if core.lzf_strings == super::LzfStrings::Skip {
        // Only counting: the summary counts the key, no event is made for it.
        core.summary.count_key(core.db, meta.expire_ms.is_some());
        core.key = Some(KeyCtx {
            key,
            type_id,
            offset: at,
        });
        return;
    }
    core.key = Some(KeyCtx {
        key: key.clone(),
        type_id,
        offset: at,
    });
    out.push(Event::KeyStart {
        db: core.db,
        key,
        type_id,
        kind,
        expire_ms: meta.expire_ms,
        idle: meta.idle,
        freq: meta.freq,
    });
}

fn step_key(
    core: &mut Core,
    state: &mut State,
    t: u8,
    at: u64,
    cur: &mut Cur<'_>,
    out: &mut Vec<Event>,
) -> R<()> {
    let (kind, vkind) = classify(core.magic, t).ok_or(RdbError::UnknownType {
        type_id: t,
        offset: at,
    })?;
    // Only counting keys: their names are not needed (errors name the key's offset).
    let key = if core.lzf_strings == super::LzfStrings::Skip {
        let key_at = cur.pos;
        match cur.skip_string(&core.lim, "key")? {
            Skip::Done => Bytes::new(),
            Skip::Big(_) => {
                cur.pos = key_at;
                cur.string(&core.lim, "key")?
            }
        }
    } else {
        cur.string(&core.lim, "key")?
    };
    let body_start = cur.pos;
    let max_raw = core.cfg.max_raw_value;
    match kind {
        Kind::String => {
            let mode = core.lzf_strings;
            // A skipped value is captured whole only if its header (at most 19 bytes), its
            // compressed bytes and the type byte fit in `max_raw`.
            let skip = move |clen: u64| match mode {
                super::LzfStrings::Decode => false,
                super::LzfStrings::Skip => true,
                super::LzfStrings::SkipWhenCaptured => clen.saturating_add(20) <= max_raw as u64,
            };
            // Only counting keys: a small value need not even be sliced out.
            let skipped_small = mode == super::LzfStrings::Skip && {
                let at = cur.pos;
                match cur.skip_string(&core.lim, "string value")? {
                    Skip::Done => true,
                    Skip::Big(_) => {
                        cur.pos = at;
                        false
                    }
                }
            };
            let v = if skipped_small {
                None
            } else {
                cur.string_value(&core.lim, "string value", &skip)?
            };
            key_start(core, out, key, t, vkind, at);
            match v {
                None => {
                    core.key = None;
                    // Only counting: the key was counted at its start, no event is made.
                    if mode != super::LzfStrings::Skip {
                        let raw = raw_single(t, &cur.data[body_start..cur.pos], max_raw);
                        out.push(Event::KeyEnd { raw });
                    }
                }
                Some(StrValue::Str(Str::Whole(v))) => {
                    if v.len() <= core.cfg.max_chunk {
                        out.push(Event::StringChunk(v));
                    } else {
                        // A decompressed LZF string: report it in pieces as well.
                        let mut i = 0;
                        while i < v.len() {
                            let e = (i + core.cfg.max_chunk).min(v.len());
                            out.push(Event::StringChunk(v.slice(i..e)));
                            i = e;
                        }
                    }
                    let raw = raw_single(t, &cur.data[body_start..cur.pos], max_raw);
                    core.key = None;
                    out.push(Event::KeyEnd { raw });
                }
                Some(StrValue::Str(Str::Big(n))) => {
                    core.raw.open(t, body_start, max_raw);
                    *state = State::Value(Body::Str { remaining: n });
                }
                Some(StrValue::Lzf { clen, ulen }) => {
                    core.raw.open(t, body_start, max_raw);
                    *state = State::Value(Body::Lzf(Box::new(LzfBody {
                        left: clen,
                        dec: super::lzf::LzfStream::new(ulen),
                        at: cur.abs(),
                    })));
                }
            }
        }
        Kind::Blob(bk) => {
            if let BlobKind::ListpackHashEx { min_expire: true } = bk {
                // minExpire: only a hint for the server; every field carries its own TTL.
                cur.u64_le()?;
            }
            let blob_at = cur.abs();
            let blob = cur.string(&core.lim, blob_what(bk))?;
            key_start(core, out, key, t, vkind, at);
            core.key = None;
            if core.lzf_strings != super::LzfStrings::Skip {
                decode_blob(bk, &blob, blob_at, out)?;
                let raw = raw_single(t, &cur.data[body_start..cur.pos], max_raw);
                out.push(Event::KeyEnd { raw });
            }
        }
        Kind::Seq(kind) => {
            key_start(core, out, key, t, vkind, at);
            core.raw.open(t, body_start, max_raw);
            *state = State::Value(Body::Seq(Seq {
                kind,
                started: false,
                remaining: 0,
                min_expire: 0,
                stage: 0,
                parts: Default::default(),
                ttl: None,
                big: None,
            }));
        }
        Kind::Quicklist { v2 } => {
            key_start(core, out, key, t, vkind, at);
            core.raw.open(t, body_start, max_raw);
            *state = State::Value(Body::Quicklist(Quicklist {
                v2,
                started: false,
                remaining: 0,
                big: None,
            }));
        }
        Kind::Stream { ver } => {
            key_start(core, out, key, t, vkind, at);
            core.raw.open(t, body_start, max_raw);
            *state = State::Value(Body::Stream(Box::new(StreamSt {
                ver,
                stage: SStage::Start,
                left: 0,
                groups_left: 0,
                consumers_left: 0,
            })));
        }
        Kind::Module => {
            key_start(core, out, key, t, vkind, at);
            core.raw.open(t, body_start, max_raw);
            *state = State::Value(Body::Module(ModWalk {
                started: false,
                skipping: 0,
            }));
        }
    }
    Ok(())
}

fn end_key(core: &mut Core, cur: &Cur<'_>, out: &mut Vec<Event>) {
    let raw = core.raw.close(cur.data, cur.pos, core.cfg.max_raw_value);
    core.key = None;
    out.push(Event::KeyEnd { raw });
}

fn blob_what(bk: BlobKind) -> &'static str {
    match bk {
        BlobKind::Zipmap => "hash zipmap (type 9)",
        BlobKind::ZiplistList => "list ziplist (type 10)",
        BlobKind::Intset => "set intset (type 11)",
        BlobKind::ZiplistZSet => "zset ziplist (type 12)",
        BlobKind::ZiplistHash => "hash ziplist (type 13)",
        BlobKind::ListpackHash => "hash listpack (type 16)",
        BlobKind::ListpackZSet => "zset listpack (type 17)",
        BlobKind::ListpackSet => "set listpack (type 20)",
        BlobKind::ListpackHashEx { min_expire: false } => "hash listpack with TTLs (type 23)",
        BlobKind::ListpackHashEx { min_expire: true } => "hash listpack with TTLs (type 25)",
    }
}

fn score_of(e: Elem<'_>, what: &str, at: u64) -> Result<f64, RdbError> {
    match e.to_f64() {
        Some(s) if !s.is_nan() => Ok(s),
        _ => Err(RdbError::corrupt(
            format!(
                "{what}: score {:?} is not a number",
                match e {
                    Elem::Int(v) => v.to_string(),
                    Elem::Str(s) => escape_bytes(s),
                }
            ),
            at,
        )),
    }
}

fn decode_blob(bk: BlobKind, blob: &Bytes, at: u64, out: &mut Vec<Event>) -> Result<(), RdbError> {
    let what = blob_what(bk);
    let bad = |msg: String| RdbError::corrupt(format!("{what}: {msg}"), at);
    let b = |e: Elem<'_>| e.to_bytes(blob);
    match bk {
        BlobKind::Intset => {
            for v in containers::intset(blob).map_err(bad)? {
                out.push(Event::SetMember(int_bytes(v)));
            }
        }
        BlobKind::Zipmap => {
            for (f, v) in containers::zipmap(blob).map_err(bad)? {
                out.push(Event::HashField {
                    field: b(Elem::Str(f)),
                    value: b(Elem::Str(v)),
                    expire_ms: None,
                });
            }
        }
        _ => {
            let elems = match bk {
                BlobKind::ZiplistList | BlobKind::ZiplistZSet | BlobKind::ZiplistHash => {
                    containers::ziplist(blob)
                }
                _ => containers::listpack(blob),
            }
            .map_err(bad)?;
            let width = match bk {
                BlobKind::ZiplistList | BlobKind::ListpackSet => 1,
                BlobKind::ListpackHashEx { .. } => 3,
                _ => 2,
            };
            if elems.len() % width != 0 {
                return Err(bad(format!(
                    "{} elements is not a multiple of {width}",
                    elems.len()
                )));
            }
            for item in elems.chunks_exact(width) {
                out.push(match bk {
                    BlobKind::ZiplistList => Event::ListItem(b(item[0])),
                    BlobKind::ListpackSet => Event::SetMember(b(item[0])),
                    BlobKind::ZiplistZSet | BlobKind::ListpackZSet => Event::ZSetMember {
                        member: b(item[0]),
                        score: score_of(item[1], what, at)?,
                    },
                    BlobKind::ListpackHashEx { .. } => {
                        let ttl = item[2]
                            .to_i64()
                            .ok_or_else(|| bad("a field TTL is not an integer".to_string()))?;
                        Event::HashField {
                            field: b(item[0]),
                            value: b(item[1]),
                            expire_ms: (ttl != 0).then_some(ttl),
                        }
                    }
                    _ => Event::HashField {
                        field: b(item[0]),
                        value: b(item[1]),
                        expire_ms: None,
                    },
                });
            }
        }
    }
    Ok(())
}

/// One step inside a value. Returns whether the value is complete.
fn step_value(
    core: &mut Core,
    body: &mut Body,
    cur: &mut Cur<'_>,
    out: &mut Vec<Event>,
) -> R<bool> {
    match body {
        Body::Str { remaining } => {
            let n = (*remaining).min(core.cfg.max_chunk as u64) as usize;
            out.push(Event::StringChunk(cur.bytes(n)?));
            *remaining -= n as u64;
            Ok(*remaining == 0)
        }
        Body::Lzf(z) => {
            let bad = |m: String, at: u64| -> Stop {
                RdbError::corrupt(format!("invalid LZF data in string value: {m}"), at).into()
            };
            if z.left > 0 {
                let n = z.left.min(LZF_PIECE) as usize;
                let piece = cur.bytes(n)?;
                z.left -= n as u64;
                z.dec.feed(&piece).map_err(|m| bad(m, z.at))?;
            }
            let max = core.cfg.max_chunk;
            while z.dec.ready() >= max || (z.left == 0 && z.dec.ready() > 0) {
                out.push(Event::StringChunk(z.dec.take(max)));
            }
            if z.left > 0 {
                return Ok(false);
            }
            z.dec.finish().map_err(|m| bad(m, z.at))?;
            Ok(true)
        }
        Body::Seq(s) => step_seq(core, s, cur, out),
        Body::Quicklist(q) => step_quicklist(core, q, cur, out),
        Body::Stream(s) => step_stream(core, s, cur, out),
        Body::Module(w) => {
            if !w.started {
                let id = cur.length("module id")?;
                out.push(Event::Module {
                    module_id: id,
                    module_name: module_name(id),
                    encver: (id & 1023) as u16,
                });
                w.started = true;
                return Ok(false);
            }
            step_module_walk(core, w, cur)
        }
    }
}

fn check_score(score: f64, at: u64) -> R<f64> {
    if score.is_nan() {
        Err(RdbError::corrupt("zset score is NaN", at).into())
    } else {
        Ok(score)
    }
}

fn step_seq(core: &mut Core, s: &mut Seq, cur: &mut Cur<'_>, out: &mut Vec<Event>) -> R<bool> {
    if !s.started {
        let min_expire = if s.kind == SeqKind::HashMetaRel {
            cur.u64_le()?
        } else {
            0
        };
        let n = cur.length("collection length")?;
        s.min_expire = min_expire;
        s.remaining = n;
        s.started = true;
        return Ok(n == 0);
    }
    if let Some((slot, part, rem)) = s.big {
        let n = rem.min(core.cfg.max_chunk as u64) as usize;
        let piece = cur.bytes(n)?;
        if rem > n as u64 {
            out.push(Event::ElementChunk { slot, data: piece });
            s.big = Some((slot, part, rem - n as u64));
            return Ok(false);
        }
        // Commit here: the rest of the item is read by the next step.
        s.parts[part] = piece;
        s.big = None;
        s.stage += 1;
        return Ok(false);
    }
    if s.remaining == 0 {
        return Ok(true);
    }
    let lay = layout(s.kind);
    let mut stage = s.stage;
    let mut parts = if stage == 0 {
        Default::default()
    } else {
        s.parts.clone()
    };
    let mut ttl = s.ttl;
    let mut score = 0.0;
    while stage < lay.len() {
        let at = cur.abs();
        match lay[stage] {
            F::S(slot, part) => match cur.string_or_big(&core.lim, slot_what(slot))? {
                Str::Whole(b) => parts[part] = b,
                Str::Big(len) => {
                    s.stage = stage;
                    s.parts = parts;
                    s.ttl = ttl;
                    s.big = Some((slot, part, len));
                    return Ok(false);
                }
            },
            F::AsciiScore => score = check_score(cur.ascii_double("zset score")?, at)?,
            F::BinScore => score = check_score(cur.f64_le()?, at)?,
            F::Ttl8 => {
                let v = cur.i64_le()?;
                ttl = (v != -1).then_some(v);
            }
            F::TtlLen => {
                let v = cur.length("hash field TTL")?;
                let expire_at = match (v, s.kind) {
                    (0, _) => 0,
                    (v, SeqKind::HashMetaRel) => v.saturating_add(s.min_expire) - 1,
                    (v, _) => v,
                };
                if expire_at > FIELD_EXPIRE_MAX {
                    return Err(RdbError::corrupt(
                        format!("hash field expiry {expire_at} is out of range"),
                        at,
                    )
                    .into());
                }
                ttl = (expire_at != 0).then_some(expire_at as i64);
            }
        }
        stage += 1;
    }
    let [a, b] = parts;
    out.push(match s.kind {
        SeqKind::List => Event::ListItem(a),
        SeqKind::Set => Event::SetMember(a),
        SeqKind::ZSetAscii | SeqKind::ZSetBin => Event::ZSetMember { member: a, score },
        SeqKind::Hash | SeqKind::HashTtl8 | SeqKind::HashMetaAbs | SeqKind::HashMetaRel => {
            Event::HashField {
                field: a,
                value: b,
                expire_ms: ttl,
            }
        }
    });
    s.remaining -= 1;
    s.stage = 0;
    s.parts = Default::default();
    s.ttl = None;
    Ok(s.remaining == 0)
}

fn step_quicklist(
    core: &mut Core,
    q: &mut Quicklist,
    cur: &mut Cur<'_>,
    out: &mut Vec<Event>,
) -> R<bool> {
    if !q.started {
        let n = cur.length("quicklist node count")?;
        q.started = true;
        q.remaining = n;
        return Ok(n == 0);
    }
    if let Some(rem) = q.big {
        let n = rem.min(core.cfg.max_chunk as u64) as usize;
        let piece = cur.bytes(n)?;
        if rem > n as u64 {
            out.push(Event::ElementChunk {
                slot: Slot::Element,
                data: piece,
            });
            q.big = Some(rem - n as u64);
            return Ok(false);
        }
        out.push(Event::ListItem(piece));
        q.big = None;
        q.remaining -= 1;
        return Ok(q.remaining == 0);
    }
    if q.remaining == 0 {
        return Ok(true);
    }
    let at = cur.abs();
    let container = if q.v2 {
        cur.length("quicklist node container")?
    } else {
        2
    };
    match container {
        1 => match cur.string_or_big(&core.lim, "quicklist plain node")? {
            Str::Whole(b) => {
                if b.is_empty() {
                    return Err(RdbError::corrupt("empty quicklist plain node", at).into());
                }
                out.push(Event::ListItem(b));
            }
            Str::Big(n) => {
                q.big = Some(n);
                return Ok(false);
            }
        },
        2 => {
            let blob_at = cur.abs();
            let what = if q.v2 {
                "quicklist listpack node"
            } else {
                "quicklist ziplist node"
            };
            let blob = cur.string(&core.lim, what)?;
            if blob.is_empty() {
                return Err(RdbError::corrupt(format!("empty {what}"), blob_at).into());
            }
            let elems = if q.v2 {
                containers::listpack(&blob)
            } else {
                containers::ziplist(&blob)
            }
            .map_err(|m| RdbError::corrupt(format!("{what}: {m}"), blob_at))?;
            for e in elems {
                out.push(Event::ListItem(e.to_bytes(&blob)));
            }
        }
        c => {
            return Err(RdbError::corrupt(
                format!("quicklist node container {c} is neither 1 (plain) nor 2 (packed)"),
                at,
            )
            .into())
        }
    }
    q.remaining -= 1;
    Ok(q.remaining == 0)
}

fn read_id(cur: &mut Cur<'_>, what: &str) -> R<StreamId> {
    let ms = cur.length(what)?;
    let seq = cur.length(what)?;
    Ok(StreamId { ms, seq })
}

fn step_stream(
    core: &mut Core,
    s: &mut StreamSt,
    cur: &mut Cur<'_>,
    out: &mut Vec<Event>,
) -> R<bool> {
    match s.stage {
        SStage::Start => {
            s.left = cur.length("stream node count")?;
            s.stage = SStage::Nodes;
        }
        SStage::Nodes => {
            if s.left == 0 {
                s.stage = SStage::Meta;
                return Ok(false);
            }
            let key_at = cur.abs();
            let node_key = cur.string(&core.lim, "stream node id")?;
            let Ok(raw_id) = <[u8; 16]>::try_from(&node_key[..]) else {
                return Err(RdbError::corrupt(
                    format!("stream node id has {} bytes, not 16", node_key.len()),
                    key_at,
                )
                .into());
            };
            let master = StreamId::from_be_bytes(raw_id);
            let blob_at = cur.abs();
            let blob = cur.string(&core.lim, "stream node listpack")?;
            let items = containers::stream_node(master, &blob)
                .map_err(|m| RdbError::corrupt(format!("stream node {master}: {m}"), blob_at))?;
            for it in items {
                if !it.deleted {
                    out.push(Event::StreamEntry {
                        id: it.id,
                        fields: it.fields,
                    });
                }
            }
            s.left -= 1;
        }
        SStage::Meta => {
            let length = cur.length("stream length")?;
            let last_id = read_id(cur, "stream last id")?;
            let (first_id, max_deleted_id, entries_added) = if s.ver >= 2 {
                let first = read_id(cur, "stream first id")?;
                let maxdel = read_id(cur, "stream max deleted id")?;
                let added = cur.length("stream entries added")?;
                (Some(first), Some(maxdel), Some(added))
            } else {
                (None, None, None)
            };
            let groups = cur.length("stream consumer group count")?;
            out.push(Event::StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_id,
                entries_added,
            });
            s.groups_left = groups;
            s.stage = SStage::Groups;
        }
        SStage::Groups => {
            if s.groups_left == 0 {
                return Ok(true);
            }
            let name = cur.string(&core.lim, "stream consumer group name")?;
            let last_id = read_id(cur, "consumer group last id")?;
            let entries_read = if s.ver >= 2 {
                let v = cur.length("consumer group entries read")?;
                (v != u64::MAX).then_some(v)
            } else {
                None
            };
            let pending = cur.length("consumer group PEL size")?;
            out.push(Event::StreamGroup {
                name,
                last_id,
                entries_read,
                pending,
            });
            s.left = pending;
            s.stage = SStage::Pel;
        }
        SStage::Pel => {
            if s.left == 0 {
                s.consumers_left = cur.length("consumer count")?;
                s.stage = SStage::Consumers;
                return Ok(false);
            }
            let id = StreamId::from_be_bytes(cur.array()?);
            let delivery_time_ms = cur.u64_le()?;
            let delivery_count = cur.length("PEL delivery count")?;
            out.push(Event::StreamPending {
                id,
                delivery_time_ms,
                delivery_count,
            });
            s.left -= 1;
        }
        SStage::Consumers => {
            if s.consumers_left == 0 {
                s.groups_left -= 1;
                s.stage = SStage::Groups;
                return Ok(false);
            }
            let name = cur.string(&core.lim, "stream consumer name")?;
            let seen_time_ms = cur.u64_le()?;
            let active_time_ms = if s.ver >= 3 {
                Some(cur.u64_le()?)
            } else {
                None
            };
            let pending = cur.length("consumer PEL size")?;
            out.push(Event::StreamConsumer {
                name,
                seen_time_ms,
                active_time_ms,
                pending,
            });
            s.left = pending;
            s.stage = SStage::ConsumerPel;
        }
        SStage::ConsumerPel => {
            if s.left == 0 {
                s.consumers_left -= 1;
                s.stage = SStage::Consumers;
                return Ok(false);
            }
            out.push(Event::StreamConsumerPending(StreamId::from_be_bytes(
                cur.array()?,
            )));
            s.left -= 1;
        }
    }
    Ok(false)
}

/// One opcode of a module value. Returns whether the EOF opcode was read.
fn step_module_walk(core: &mut Core, w: &mut ModWalk, cur: &mut Cur<'_>) -> R<bool> {
    if w.skipping > 0 {
        let avail = cur.avail();
        if avail == 0 {
            return Err(Stop::Need(cur.pos + 1));
        }
        let n = (w.skipping.min(avail as u64)) as usize;
        cur.slice(n)?;
        w.skipping -= n as u64;
        return Ok(false);
    }
    let at = cur.abs();
    match cur.length("module value opcode")? {
        0 => return Ok(true),
        1 | 2 => {
            cur.length("module integer")?;
        }
        3 => {
            cur.slice(4)?;
        }
        4 => {
            cur.slice(8)?;
        }
        5 => {
            if let Skip::Big(n) = cur.skip_string(&core.lim, "module string")? {
                w.skipping = n;
            }
        }
        op => {
            return Err(RdbError::corrupt(format!("unknown module value opcode {op}"), at).into())
        }
    }
    Ok(false)
}
