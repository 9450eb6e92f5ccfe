//! Snapshot keys as commands: turns the RDB parser's [`Event`]s into the commands that rebuild
//! each key on a server (pure: no I/O, no clock).
//!
//! Why it exists: a restore into a live server (or an AOF) needs every key of the snapshot
//! expressed as commands. The cheap and exact form is one `RESTORE` per key with the value's RDB
//! bytes as a DUMP payload ([`crate::rdb::dump_payload`]); it needs the raw bytes (which the
//! parser keeps only up to `max_raw_value`) and a payload version the target accepts. Everything
//! else (a value too large for one `RESTORE`, a type the payload version does not know, a target
//! that takes no payloads at all) goes as ordinary commands in bounded batches: `SET`/`APPEND`,
//! `RPUSH`, `SADD`, `ZADD`, `HSET` (+ `HPEXPIREAT` for field TTLs), and for streams `XADD`,
//! `XSETID`, `XGROUP` and `XCLAIM`, then `PEXPIREAT` for the key's expiry.
//!
//! # Memory
//! While a key may still go by `RESTORE`, its command form is held back (at most
//! `max_restore_bytes` plus one batch); as soon as it grows past that, the held commands are
//! released and the rest of the key streams out batch by batch. The other things held per key:
//! one element being reassembled from [`Event::ElementChunk`] pieces (bounded by the value's own
//! element size), and for streams the PEL of the current consumer group (about 40 bytes per
//! pending entry) until its consumers arrive.
//!
//! # What the commands form cannot reproduce
//! - A stream PEL entry whose message was deleted: `XCLAIM ... FORCE` only creates PEL entries
//!   for messages that exist, so such entries are silently dropped by the server (this module
//!   cannot tell them apart without remembering every entry id).
//! - Consumer `seen-time`/`active-time`: `XCLAIM` sets them to the time of the restore.
//! - A stream entry with no fields cannot be added by `XADD` (counted in
//!   [`ConvertStats::stream_entries_without_fields`]).
//! - LRU/LFU hints (`IDLETIME`/`FREQ` exist only for `RESTORE`).
//! - A key that has already expired is created and then deleted by its `PEXPIREAT` (as `RESTORE
//!   ... ABSTTL` with a past time deletes it): the same end state, more work.
//!
//! PEL delivery times and counts are kept (`XCLAIM ... TIME <ms> RETRYCOUNT <n>`). The commands
//! need Redis 7.0+ (`XSETID ... ENTRIESADDED`, `XGROUP CREATE ... ENTRIESREAD`), and 7.4+ for
//! hash field TTLs (`HPEXPIREAT`).

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;

use crate::rdb::logical::escape;
use crate::rdb::{dump_payload, Event, Magic, Slot, StreamId, ValueKind};

/// How keys are turned into commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertConfig {
    /// RDB version to put in RESTORE payloads; None: never use RESTORE (commands only).
    pub restore_version: Option<u16>,
    /// A value whose raw RDB bytes are larger than this is sent as commands in batches
    /// (must equal the parser's `max_raw_value`, so `KeyEnd { raw: None }` means "too large").
    pub max_restore_bytes: usize,
    /// Largest batch (bytes of arguments) of one RPUSH/SADD/ZADD/HSET/XCLAIM command (a single
    /// item larger than that still goes whole, alone in its batch).
    pub max_batch_bytes: usize,
    /// Hash field TTLs may travel inside RESTORE payloads. Off while a live replay moves the
    /// expiries that could pass meanwhile (`restore::ExpiryShift`): a payload's field TTLs
    /// cannot be moved, so a hash with field TTLs then goes by commands (HSET + HPEXPIREAT with
    /// the moved times).
    pub field_ttls_by_restore: bool,
    /// The target takes `XSETID … ENTRIESADDED` (Redis 7.0+, Valkey): a stream of an RDB
    /// before 10 (which stores no entries_added) then gets the entries_added a server loading
    /// that RDB derives, its length.
    pub stream_entries_added: bool,
}

/// What a [`KeyConverter`] did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConvertStats {
    /// Keys sent as one `RESTORE`.
    pub keys_by_restore: u64,
    /// Keys sent as ordinary commands.
    pub keys_by_commands: u64,
    /// Of `keys_by_commands`: values larger than `max_restore_bytes` while RESTORE was on.
    pub keys_too_large: u64,
    /// Of `keys_by_commands`: values whose RDB type the payload version does not have.
    pub keys_type_not_in_version: u64,
    /// Of `keys_by_commands`: hashes with field TTLs while `field_ttls_by_restore` was off.
    pub keys_with_field_ttls: u64,
    /// Empty collections left out (a loading server skips them too).
    pub empty_keys: u64,
    /// Function libraries (`FUNCTION LOAD REPLACE`).
    pub functions: u64,
    /// MODULE_AUX records, which cannot be restored by commands (left out).
    pub module_aux_skipped: u64,
    /// Stream entries without fields, which `XADD` cannot recreate (left out).
    pub stream_entries_without_fields: u64,
    /// Stream PEL entries sent by `XCLAIM` (those whose message was deleted are dropped by the
    /// server).
    pub pel_entries: u64,
    /// Group PEL entries no consumer owns, or consumer PEL ids missing from the group PEL
    /// (inconsistent input; left out).
    pub pel_entries_inconsistent: u64,
    /// Commands produced (`SELECT` included).
    pub commands: u64,
}

/// Why a key cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A module value can only go by `RESTORE` (with the module loaded on the target).
    #[error(
        "key \"{key}\" (db {db}) holds a value of module type {module}: it can only be restored \
         by RESTORE into a server with that module, but {why}"
    )]
    Module {
        db: u64,
        /// The key, escaped.
        key: String,
        module: String,
        why: &'static str,
    },
    /// The events do not follow the parser's order (a bug in the caller or the filter).
    #[error("event out of order: {what}")]
    Sequence { what: String },
}

/// Turns parser events into commands. See the module documentation.
#[derive(Debug)]
pub struct KeyConverter {
    cfg: ConvertConfig,
    magic: Magic,
    /// Database of the last `SELECT` emitted (`None`: none yet).
    db: Option<u64>,
    key: Option<Box<OpenKey>>,
    stats: ConvertStats,
}

/// The key being converted.
#[derive(Debug)]
struct OpenKey {
    db: u64,
    key: Bytes,
    kind: ValueKind,
    expire_ms: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
    /// Commands are held back because the key may still go by RESTORE.
    holding: bool,
    /// The held commands and their size.
    held: Vec<Vec<Bytes>>,
    held_bytes: usize,
    /// Released because the command form outgrew `max_restore_bytes`.
    too_large: bool,
    /// The type is not in the payload version.
    type_not_in_version: bool,
    /// Went by commands because of its field TTLs (`field_ttls_by_restore` off).
    field_ttls: bool,
    /// The command being filled with items (`RPUSH key a b ...`) and its size.
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// Field TTLs of the fields in `batch`, sent after it.
    pending_field_ttls: Vec<(Bytes, i64)>,
    /// Leading pieces of long strings of the next item, per slot (see [`slot_index`]).
    chunks: [Vec<u8>; 4],
    chunk_bytes: usize,
    /// Collection items seen (an empty collection produces nothing).
    items: u64,
    /// A `SET` has been produced (further string pieces are `APPEND`s).
    string_started: bool,
    stream: Option<Box<StreamConv>>,
    module: Option<String>,
}

/// Stream state while its events arrive.
#[derive(Debug, Default)]
struct StreamConv {
    /// Entries sent by `XADD`.
    added: u64,
    first_seen: Option<StreamId>,
    last_added: Option<StreamId>,
    /// For streams v1 (no stored entries_added), to derive the groups' entries_read.
    v1: Option<V1Meta>,
    group: Option<Bytes>,
    /// The current group's PEL: id -> (delivery time, delivery count).
    pel: HashMap<StreamId, (u64, u64)>,
    consumer: Option<Bytes>,
    /// Ids of the current consumer waiting for one `XCLAIM`, all with `claim_as`.
    claim: Vec<Bytes>,
    claim_bytes: usize,
    claim_as: (u64, u64),
}

#[derive(Debug, Clone, Copy)]
struct V1Meta {
    length: u64,
    last_id: StreamId,
    first_id: StreamId,
}

/// The name of the temporary group that creates an empty stream.
const MKSTREAM_GROUP: &[u8] = b"__redis-pitr-mkstream__";

fn slot_index(s: Slot) -> usize {
    match s {
        Slot::Element => 0,
        Slot::Member => 1,
        Slot::Field => 2,
        Slot::Value => 3,
    }
}

fn st(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn num(n: impl ToString) -> Bytes {
    Bytes::from(n.to_string())
}

fn id_arg(id: StreamId) -> Bytes {
    Bytes::from(id.to_string())
}

fn args_size(cmd: &[Bytes]) -> usize {
    cmd.iter().map(Bytes::len).sum()
}

/// An absolute expiry as an argument: at least 1, since `RESTORE ... 0 ABSTTL` means "no
/// expiry" while a time at or before the epoch means "expired".
fn expire_arg(ms: i64) -> Bytes {
    num(ms.max(1))
}

/// A score as the shortest text that reads back as the same double (`inf`, `-inf` for the
/// infinities), in whichever of plain or exponent notation is shorter.
pub fn score_text(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let plain = format!("{x}");
    let exp = format!("{x:e}");
    if exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

/// Whether a value of RDB type `type_id` (in a file with `magic`) can be put in a payload of
/// `version`: the type must exist in that version, and types 22-25 mean different things to
/// Redis (12..=79) and Valkey (80+).
pub fn type_in_version(magic: Magic, type_id: u8, version: u16) -> bool {
    let min = match type_id {
        0..=4 | 9..=13 => 1,
        14 => 7,
        5 | 7 => 8,
        15 => 9,
        16..=19 => 10,
        20 | 21 => 11,
        22 if magic == Magic::Valkey => return version >= 80,
        22..=25 if magic == Magic::Redis => return (12..80).contains(&version),
        _ => return false,
    };
    version >= min
}

/// What a loading server derives as a stream v1 group's entries_read (v1 stores none): the
/// commands form sets the same. v1 streams have entries_added = length and no deletions.
fn estimate_entries_read(m: V1Meta, id: StreamId) -> Option<u64> {
    crate::rdb::logical::estimate_entries_read(
        m.length,
        m.length,
        m.last_id,
        m.first_id,
        StreamId::default(),
        id,
    )
}

impl KeyConverter {
    pub fn new(cfg: ConvertConfig) -> Self {
        KeyConverter {
            cfg,
            magic: Magic::Redis,
            db: None,
            key: None,
            stats: ConvertStats::default(),
        }
    }

    /// What was done so far.
    pub fn stats(&self) -> ConvertStats {
        self.stats.clone()
    }

    /// The database of the last `SELECT` produced (`None` before the first key).
    pub fn current_db(&self) -> Option<u64> {
        self.db
    }

    /// Feeds one parser event; appends the commands to send (argument lists) to `out`.
    /// Handles SelectDb/KeyStart…KeyEnd/Function; ignores Aux/ResizeDb/Header/Eof/etc.
    /// After an error the converter is in an unspecified state: stop using it.
    pub fn push(&mut self, ev: &Event, out: &mut Vec<Vec<Bytes>>) -> Result<(), ConvertError> {
        match ev {
            Event::Header { magic, .. } => self.magic = *magic,
            Event::Function { code } => {
                if self.key.is_some() {
                    return Err(seq("a function library inside a key"));
                }
                self.stats.functions += 1;
                self.output(
                    None,
                    vec![st(b"FUNCTION"), st(b"LOAD"), st(b"REPLACE"), code.clone()],
                    out,
                );
            }
            Event::ModuleAux { .. } => self.stats.module_aux_skipped += 1,
            Event::KeyStart {
                db,
                key,
                type_id,
                kind,
                expire_ms,
                idle,
                freq,
            } => {
                if let Some(k) = &self.key {
                    return Err(seq(format!(
                        "key \"{}\" starts before key \"{}\" ended",
                        escape(key),
                        escape(&k.key)
                    )));
                }
                let in_version = self
                    .cfg
                    .restore_version
                    .map(|v| type_in_version(self.magic, *type_id, v));
                self.key = Some(Box::new(OpenKey {
                    db: *db,
                    key: key.clone(),
                    kind: *kind,
                    expire_ms: *expire_ms,
                    idle: *idle,
                    freq: *freq,
                    holding: in_version == Some(true) && self.cfg.max_restore_bytes > 0,
                    held: Vec::new(),
                    held_bytes: 0,
                    too_large: false,
                    type_not_in_version: in_version == Some(false),
                    field_ttls: false,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    pending_field_ttls: Vec::new(),
                    chunks: Default::default(),
                    chunk_bytes: 0,
                    items: 0,
                    string_started: false,
                    stream: (*kind == ValueKind::Stream).then(Box::default),
                    module: None,
                }));
            }
            Event::KeyEnd { raw } => {
                let k = self.key.take().ok_or_else(|| seq("KeyEnd outside a key"))?;
                self.end_key(*k, raw.as_ref(), out)?;
            }
            Event::Aux { .. }
            | Event::SelectDb(_)
            | Event::ResizeDb { .. }
            | Event::SlotImport { .. }
            | Event::Eof { .. } => {}
            content => {
                let mut k = self
                    .key
                    .take()
                    .ok_or_else(|| seq(format!("{} outside a key", event_name(content))))?;
                let r = self.content(&mut k, content, out);
                self.key = Some(k);
                r?;
            }
        }
        Ok(())
    }

    /// One event inside a key.
    fn content(
        &mut self,
        k: &mut OpenKey,
        ev: &Event,
        out: &mut Vec<Vec<Bytes>>,
    ) -> Result<(), ConvertError> {
        let expect = |want: ValueKind| -> Result<(), ConvertError> {
            if k.kind == want {
                Ok(())
            } else {
                Err(seq(format!(
                    "{} in key \"{}\" of type {}",
                    event_name(ev),
                    escape(&k.key),
                    k.kind
                )))
            }
        };
        match ev {
            Event::StringChunk(piece) => {
                expect(ValueKind::String)?;
                let cmd = if k.string_started {
                    vec![st(b"APPEND"), k.key.clone(), piece.clone()]
                } else {
                    k.string_started = true;
                    vec![st(b"SET"), k.key.clone(), piece.clone()]
                };
                self.emit(k, cmd, out);
            }
            Event::ElementChunk { slot, data } => {
                k.chunks[slot_index(*slot)].extend_from_slice(data);
                k.chunk_bytes += data.len();
                self.check_hold(k, out);
            }
            Event::ListItem(e) => {
                expect(ValueKind::List)?;
                let e = whole(k, Slot::Element, e);
                self.add_item(k, b"RPUSH", [e], out);
            }
            Event::SetMember(m) => {
                expect(ValueKind::Set)?;
                let m = whole(k, Slot::Element, m);
                self.add_item(k, b"SADD", [m], out);
            }
            Event::ZSetMember { member, score } => {
                expect(ValueKind::ZSet)?;
                let m = whole(k, Slot::Member, member);
                self.add_item(k, b"ZADD", [Bytes::from(score_text(*score)), m], out);
            }
            Event::HashField {
                field,
                value,
                expire_ms,
            } => {
                expect(ValueKind::Hash)?;
                let f = whole(k, Slot::Field, field);
                let v = whole(k, Slot::Value, value);
                if let Some(ms) = expire_ms {
                    k.pending_field_ttls.push((f.clone(), *ms));
                    if k.holding && !self.cfg.field_ttls_by_restore {
                        k.field_ttls = true;
                        self.release(k, out);
                    }
                }
                self.add_item(k, b"HSET", [f, v], out);
            }
            Event::Module { module_name, .. } => {
                expect(ValueKind::Module)?;
                k.module = Some(module_name.clone());
                if !k.holding {
                    return Err(self.module_error(k));
                }
            }
            Event::StreamEntry { .. }
            | Event::StreamMeta { .. }
            | Event::StreamGroup { .. }
            | Event::StreamPending { .. }
            | Event::StreamConsumer { .. }
            | Event::StreamConsumerPending(_) => {
                expect(ValueKind::Stream)?;
                self.stream_event(k, ev, out);
            }
            other => return Err(seq(format!("{} inside a key", event_name(other)))),
        }
        Ok(())
    }

    fn module_error(&self, k: &OpenKey) -> ConvertError {
        let why = if self.cfg.restore_version.is_none() {
            "RESTORE is not available for this target"
        } else if k.type_not_in_version {
            "the RESTORE payload version does not have module values"
        } else {
            "its raw value is larger than the RESTORE limit (max_restore_bytes)"
        };
        ConvertError::Module {
            db: k.db,
            key: escape(&k.key),
            module: k.module.clone().unwrap_or_default(),
            why,
        }
    }

    /// Appends `cmd` to `out`, after a `SELECT` if `db` differs from the last one.
    fn output(&mut self, db: Option<u64>, cmd: Vec<Bytes>, out: &mut Vec<Vec<Bytes>>) {
        if let Some(db) = db {
            if self.db != Some(db) {
                out.push(vec![st(b"SELECT"), num(db)]);
                self.stats.commands += 1;
                self.db = Some(db);
            }
        }
        out.push(cmd);
        self.stats.commands += 1;
    }

    /// A command of the key's command form: held while RESTORE is still possible, else out.
    fn emit(&mut self, k: &mut OpenKey, cmd: Vec<Bytes>, out: &mut Vec<Vec<Bytes>>) {
        if k.holding {
            k.held_bytes += args_size(&cmd);
            k.held.push(cmd);
            self.check_hold(k, out);
        } else {
            self.output(Some(k.db), cmd, out);
        }
    }

    /// Gives up RESTORE for this key once what is held outgrows `max_restore_bytes`.
    fn check_hold(&mut self, k: &mut OpenKey, out: &mut Vec<Vec<Bytes>>) {
        if k.holding && k.held_bytes + k.batch_bytes + k.chunk_bytes > self.cfg.max_restore_bytes {
            k.too_large = true;
            self.release(k, out);
        }
    }

    fn release(&mut self, k: &mut OpenKey, out: &mut Vec<Vec<Bytes>>) {
        k.holding = false;
        k.held_bytes = 0;
        for cmd in std::mem::take(&mut k.held) {
            self.output(Some(k.db), cmd, out);
        }
    }

    /// Adds one item to the current batch of `name` (`RPUSH key ...`), sending it when full.
    fn add_item<const N: usize>(
        &mut self,
        k: &mut OpenKey,
        name: &'static [u8],
        item: [Bytes; N],
        out: &mut Vec<Vec<Bytes>>,
    ) {
        k.items += 1;
        if k.batch.is_empty() {
            k.batch.push(st(name));
            k.batch.push(k.key.clone());
            k.batch_bytes = name.len() + k.key.len();
        }
        for a in item {
            k.batch_bytes += a.len();
            k.batch.push(a);
        }
        if k.batch_bytes >= self.cfg.max_batch_bytes {
            self.flush_batch(k, out);
        } else {
            self.check_hold(k, out);
        }
    }

    /// Sends the current batch, then the TTLs of the hash fields in it.
    fn flush_batch(&mut self, k: &mut OpenKey, out: &mut Vec<Vec<Bytes>>) {
        if k.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut k.batch);
        k.batch_bytes = 0;
        self.emit(k, batch, out);
        let mut ttls = std::mem::take(&mut k.pending_field_ttls);
        // One HPEXPIREAT per distinct time (field order kept within one time).
        ttls.sort_by_key(|(_, ms)| *ms);
        for group in ttls.chunk_by(|a, b| a.1 == b.1) {
            let mut cmd = vec![
                st(b"HPEXPIREAT"),
                k.key.clone(),
                expire_arg(group[0].1),
                st(b"FIELDS"),
                num(group.len()),
            ];
            cmd.extend(group.iter().map(|(f, _)| f.clone()));
            self.emit(k, cmd, out);
        }
    }

    fn stream_event(&mut self, k: &mut OpenKey, ev: &Event, out: &mut Vec<Vec<Bytes>>) {
        let mut s = k.stream.take().unwrap_or_default();
        match ev {
            Event::StreamEntry { id, fields } => {
                s.first_seen.get_or_insert(*id);
                if fields.is_empty() {
                    self.stats.stream_entries_without_fields += 1;
                } else {
                    let mut cmd = Vec::with_capacity(3 + 2 * fields.len());
                    cmd.extend([st(b"XADD"), k.key.clone(), id_arg(*id)]);
                    for (f, v) in fields {
                        cmd.push(f.clone());
                        cmd.push(v.clone());
                    }
                    s.added += 1;
                    s.last_added = Some(*id);
                    self.emit(k, cmd, out);
                }
            }
            Event::StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_id,
                entries_added,
            } => {
                k.items += 1;
                if s.added == 0 {
                    // XADD cannot make an empty stream; a group created with MKSTREAM can.
                    for cmd in [
                        vec![
                            st(b"XGROUP"),
                            st(b"CREATE"),
                            k.key.clone(),
                            st(MKSTREAM_GROUP),
                            st(b"0"),
                            st(b"MKSTREAM"),
                        ],
                        vec![
                            st(b"XGROUP"),
                            st(b"DESTROY"),
                            k.key.clone(),
                            st(MKSTREAM_GROUP),
                        ],
                    ] {
                        self.emit(k, cmd, out);
                    }
                }
                let zero = StreamId::default();
                let max_deleted = max_deleted_id.unwrap_or(zero);
                let stored_added = *entries_added;
                // A stream v1 stores none: a loading server takes its length (rdb.c).
                let entries_added = &entries_added
                    .or((self.cfg.stream_entries_added && entries_added.is_none())
                        .then_some(*length));
                let needed = *last_id != s.last_added.unwrap_or(zero)
                    || entries_added.is_some_and(|n| n != s.added)
                    || max_deleted != zero;
                if needed {
                    let mut cmd = vec![st(b"XSETID"), k.key.clone(), id_arg(*last_id)];
                    if let Some(n) = entries_added {
                        cmd.extend([st(b"ENTRIESADDED"), num(n)]);
                    }
                    if max_deleted != zero {
                        cmd.extend([st(b"MAXDELETEDID"), id_arg(max_deleted)]);
                    }
                    self.emit(k, cmd, out);
                }
                if stored_added.is_none() {
                    s.v1 = Some(V1Meta {
                        length: *length,
                        last_id: *last_id,
                        first_id: first_id.or(s.first_seen).unwrap_or(zero),
                    });
                }
            }
            Event::StreamGroup {
                name,
                last_id,
                entries_read,
                ..
            } => {
                self.end_group(k, &mut s, out);
                let entries_read = match s.v1 {
                    Some(m) => estimate_entries_read(m, *last_id),
                    None => *entries_read,
                };
                let mut cmd = vec![
                    st(b"XGROUP"),
                    st(b"CREATE"),
                    k.key.clone(),
                    name.clone(),
                    id_arg(*last_id),
                ];
                if let Some(n) = entries_read {
                    cmd.extend([st(b"ENTRIESREAD"), num(n)]);
                }
                self.emit(k, cmd, out);
                s.group = Some(name.clone());
            }
            Event::StreamPending {
                id,
                delivery_time_ms,
                delivery_count,
            } => {
                s.pel.insert(*id, (*delivery_time_ms, *delivery_count));
            }
            Event::StreamConsumer { name, .. } => {
                self.flush_claim(k, &mut s, out);
                if let Some(group) = s.group.clone() {
                    let cmd = vec![
                        st(b"XGROUP"),
                        st(b"CREATECONSUMER"),
                        k.key.clone(),
                        group,
                        name.clone(),
                    ];
                    self.emit(k, cmd, out);
                }
                s.consumer = Some(name.clone());
            }
            Event::StreamConsumerPending(id) => match s.pel.remove(id) {
                Some(how) => {
                    if !s.claim.is_empty() && how != s.claim_as {
                        self.flush_claim(k, &mut s, out);
                    }
                    s.claim_as = how;
                    let id = id_arg(*id);
                    s.claim_bytes += id.len();
                    s.claim.push(id);
                    if s.claim_bytes >= self.cfg.max_batch_bytes {
                        self.flush_claim(k, &mut s, out);
                    }
                }
                None => self.stats.pel_entries_inconsistent += 1,
            },
            _ => {}
        }
        k.stream = Some(s);
    }

    /// `XCLAIM key group consumer 0 <ids> TIME <t> RETRYCOUNT <n> FORCE JUSTID` for the ids
    /// waiting: recreates their PEL entries with their owner, delivery time and count.
    fn flush_claim(&mut self, k: &mut OpenKey, s: &mut StreamConv, out: &mut Vec<Vec<Bytes>>) {
        if s.claim.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut s.claim);
        s.claim_bytes = 0;
        let (Some(group), Some(consumer)) = (s.group.clone(), s.consumer.clone()) else {
            self.stats.pel_entries_inconsistent += ids.len() as u64;
            return;
        };
        self.stats.pel_entries += ids.len() as u64;
        let (time, count) = s.claim_as;
        let mut cmd = Vec::with_capacity(ids.len() + 12);
        cmd.extend([st(b"XCLAIM"), k.key.clone(), group, consumer, st(b"0")]);
        cmd.extend(ids);
        cmd.extend([
            st(b"TIME"),
            num(time.min(i64::MAX as u64)),
            st(b"RETRYCOUNT"),
            num(count.min(i64::MAX as u64)),
            st(b"FORCE"),
            st(b"JUSTID"),
        ]);
        self.emit(k, cmd, out);
    }

    fn end_group(&mut self, k: &mut OpenKey, s: &mut StreamConv, out: &mut Vec<Vec<Bytes>>) {
        self.flush_claim(k, s, out);
        self.stats.pel_entries_inconsistent += s.pel.len() as u64;
        s.pel.clear();
        s.consumer = None;
    }

    fn end_key(
        &mut self,
        mut k: OpenKey,
        raw: Option<&Bytes>,
        out: &mut Vec<Vec<Bytes>>,
    ) -> Result<(), ConvertError> {
        let empty = matches!(
            k.kind,
            ValueKind::List | ValueKind::Set | ValueKind::ZSet | ValueKind::Hash
        ) && k.items == 0;
        if empty {
            self.stats.empty_keys += 1;
            return Ok(());
        }
        if k.holding {
            if let (Some(raw), Some(version)) = (raw, self.cfg.restore_version) {
                let mut cmd = vec![
                    st(b"RESTORE"),
                    k.key.clone(),
                    k.expire_ms.map_or_else(|| st(b"0"), expire_arg),
                    Bytes::from(dump_payload(raw, version)),
                    st(b"ABSTTL"),
                ];
                if let Some(idle) = k.idle {
                    cmd.extend([st(b"IDLETIME"), num(idle)]);
                } else if let Some(freq) = k.freq {
                    cmd.extend([st(b"FREQ"), num(freq)]);
                }
                self.stats.keys_by_restore += 1;
                self.output(Some(k.db), cmd, out);
                return Ok(());
            }
            // No raw bytes: the value is larger than the parser's max_raw_value.
            k.too_large = true;
            if k.module.is_some() {
                return Err(self.module_error(&k));
            }
            self.release(&mut k, out);
        }
        if k.module.is_some() {
            return Err(self.module_error(&k));
        }
        self.flush_batch(&mut k, out);
        if let Some(mut s) = k.stream.take() {
            self.end_group(&mut k, &mut s, out);
        }
        if let Some(ms) = k.expire_ms {
            let cmd = vec![st(b"PEXPIREAT"), k.key.clone(), expire_arg(ms)];
            self.emit(&mut k, cmd, out);
        }
        self.stats.keys_by_commands += 1;
        self.stats.keys_too_large += u64::from(k.too_large);
        self.stats.keys_type_not_in_version += u64::from(k.type_not_in_version);
        self.stats.keys_with_field_ttls += u64::from(k.field_ttls);
        Ok(())
    }
}

/// The whole string of `slot` for the item event carrying `last`: the leading pieces (if any)
/// and `last`.
fn whole(k: &mut OpenKey, slot: Slot, last: &Bytes) -> Bytes {
    let acc = &mut k.chunks[slot_index(slot)];
    if acc.is_empty() {
        return last.clone();
    }
    k.chunk_bytes -= acc.len();
    acc.extend_from_slice(last);
    Bytes::from(std::mem::take(acc))
}

fn seq(what: impl Into<String>) -> ConvertError {
    ConvertError::Sequence { what: what.into() }
}

fn event_name(ev: &Event) -> &'static str {
    match ev {
        Event::Header { .. } => "Header",
        Event::Aux { .. } => "Aux",
        Event::ModuleAux { .. } => "ModuleAux",
        Event::Function { .. } => "Function",
        Event::SelectDb(_) => "SelectDb",
        Event::ResizeDb { .. } => "ResizeDb",
        Event::SlotImport { .. } => "SlotImport",
        Event::KeyStart { .. } => "KeyStart",
        Event::StringChunk(_) => "StringChunk",
        Event::ElementChunk { .. } => "ElementChunk",
        Event::ListItem(_) => "ListItem",
        Event::SetMember(_) => "SetMember",
        Event::ZSetMember { .. } => "ZSetMember",
        Event::HashField { .. } => "HashField",
        Event::StreamEntry { .. } => "StreamEntry",
        Event::StreamMeta { .. } => "StreamMeta",
        Event::StreamGroup { .. } => "StreamGroup",
        Event::StreamPending { .. } => "StreamPending",
        Event::StreamConsumer { .. } => "StreamConsumer",
        Event::StreamConsumerPending(_) => "StreamConsumerPending",
        Event::Module { .. } => "Module",
        Event::KeyEnd { .. } => "KeyEnd",
        Event::Eof { .. } => "Eof",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::{Parser, ParserConfig};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn cfg(restore_version: Option<u16>, max_restore_bytes: usize, batch: usize) -> ConvertConfig {
        ConvertConfig {
            restore_version,
            max_restore_bytes,
            max_batch_bytes: batch,
            field_ttls_by_restore: true,
            stream_entries_added: true,
        }
    }

    /// A hash field `n` = "v", with a TTL.
    fn f(n: &str, ms: Option<i64>) -> Event {
        Event::HashField {
            field: b(n),
            value: b("v"),
            expire_ms: ms,
        }
    }

    fn start(db: u64, key: &str, type_id: u8, kind: ValueKind, expire_ms: Option<i64>) -> Event {
        Event::KeyStart {
            db,
            key: b(key),
            type_id,
            kind,
            expire_ms,
            idle: None,
            freq: None,
        }
    }

    fn text(cmds: &[Vec<Bytes>]) -> Vec<String> {
        cmds.iter()
            .map(|c| c.iter().map(|a| escape(a)).collect::<Vec<_>>().join(" "))
            .collect()
    }

    fn run(cfg: ConvertConfig, events: &[Event]) -> (Vec<String>, ConvertStats) {
        let mut conv = KeyConverter::new(cfg);
        let mut out = Vec::new();
        for ev in events {
            conv.push(ev, &mut out).unwrap();
        }
        (text(&out), conv.stats())
    }

    #[test]
    fn small_values_go_by_restore_with_select_ttl_and_hints() {
        let raw = Bytes::from_static(b"\x00\x01v");
        let payload = escape(&dump_payload(&raw, 10));
        let events = [
            Event::SelectDb(3),
            Event::KeyStart {
                db: 3,
                key: b("k"),
                type_id: 0,
                kind: ValueKind::String,
                expire_ms: Some(5000),
                idle: Some(7),
                freq: None,
            },
            Event::StringChunk(b("v")),
            Event::KeyEnd {
                raw: Some(raw.clone()),
            },
            Event::KeyStart {
                db: 3,
                key: b("k2"),
                type_id: 0,
                kind: ValueKind::String,
                expire_ms: Some(0),
                idle: None,
                freq: Some(9),
            },
            Event::StringChunk(b("v")),
            Event::KeyEnd {
                raw: Some(raw.clone()),
            },
            Event::SelectDb(0),
            start(0, "k", 0, ValueKind::String, None),
            Event::StringChunk(b("v")),
            Event::KeyEnd {
                raw: Some(raw.clone()),
            },
        ];
        let (cmds, stats) = run(cfg(Some(10), 1024, 1024), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 3".to_string(),
                format!("RESTORE k 5000 {payload} ABSTTL IDLETIME 7"),
                // An expiry at the epoch is a past time, never "no expiry" (0).
                format!("RESTORE k2 1 {payload} ABSTTL FREQ 9"),
                "SELECT 0".to_string(),
                format!("RESTORE k 0 {payload} ABSTTL"),
            ]
        );
        assert_eq!(stats.keys_by_restore, 3);
        assert_eq!(stats.keys_by_commands, 0);
        assert_eq!(stats.commands, 5);
    }

    #[test]
    fn strings_as_set_and_append_then_pexpireat() {
        let events = [
            start(0, "k", 0, ValueKind::String, Some(5000)),
            Event::StringChunk(b("ab")),
            Event::StringChunk(b("cd")),
            Event::KeyEnd { raw: None },
            start(0, "e", 0, ValueKind::String, None),
            Event::StringChunk(b("")),
            Event::KeyEnd { raw: None },
        ];
        let (cmds, stats) = run(cfg(None, 1024, 1024), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 0",
                "SET k ab",
                "APPEND k cd",
                "PEXPIREAT k 5000",
                "SET e "
            ]
        );
        assert_eq!(stats.keys_by_commands, 2);
    }

    #[test]
    fn collections_in_batches_within_the_byte_limit() {
        let mut events = vec![start(0, "l", 18, ValueKind::List, None)];
        for _ in 0..5 {
            events.push(Event::ListItem(b("aaaa")));
        }
        events.push(Event::KeyEnd { raw: None });
        events.push(start(0, "s", 2, ValueKind::Set, None));
        for m in ["a", "b", "c"] {
            events.push(Event::SetMember(b(m)));
        }
        events.push(Event::KeyEnd { raw: None });
        // "RPUSH" + "l" = 6 bytes, each item 4: a batch is sent once it reaches 16.
        let (cmds, _) = run(cfg(None, 0, 16), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 0",
                "RPUSH l aaaa aaaa aaaa",
                "RPUSH l aaaa aaaa",
                "SADD s a b c"
            ]
        );
        // Never more than the limit plus one item.
        let (cmds, _) = run(cfg(None, 0, 1), &events);
        assert_eq!(cmds[1], "RPUSH l aaaa");
        assert_eq!(cmds.len(), 1 + 5 + 3);
    }

    #[test]
    fn small_collections_are_held_and_replaced_by_restore() {
        let raw = Bytes::from_static(b"\x02\x01\x01a");
        let mut conv = KeyConverter::new(cfg(Some(11), 100, 8));
        let mut out = Vec::new();
        conv.push(&start(0, "s", 2, ValueKind::Set, Some(9)), &mut out)
            .unwrap();
        for m in ["a", "b", "c", "d", "e", "f"] {
            conv.push(&Event::SetMember(b(m)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "held while RESTORE is possible");
        conv.push(
            &Event::KeyEnd {
                raw: Some(raw.clone()),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            text(&out),
            [
                "SELECT 0".to_string(),
                format!("RESTORE s 9 {} ABSTTL", escape(&dump_payload(&raw, 11)))
            ]
        );

        // The same key without raw bytes: the held commands go out at the end.
        let mut conv = KeyConverter::new(cfg(Some(11), 100, 8));
        let mut out = Vec::new();
        conv.push(&start(0, "s", 2, ValueKind::Set, Some(9)), &mut out)
            .unwrap();
        for m in ["a", "b", "c", "d", "e", "f"] {
            conv.push(&Event::SetMember(b(m)), &mut out).unwrap();
        }
        conv.push(&Event::KeyEnd { raw: None }, &mut out).unwrap();
        assert_eq!(
            text(&out),
            ["SELECT 0", "SADD s a b c", "SADD s d e f", "PEXPIREAT s 9"]
        );
        let st = conv.stats();
        assert_eq!((st.keys_by_commands, st.keys_too_large), (1, 1));
    }

    #[test]
    fn huge_values_stream_out_with_bounded_memory() {
        let max = 64;
        let batch = 16;
        let mut conv = KeyConverter::new(cfg(Some(10), max, batch));
        let mut out = Vec::new();
        conv.push(&start(0, "l", 18, ValueKind::List, None), &mut out)
            .unwrap();
        let mut seen_out_early = false;
        for i in 0..1000 {
            conv.push(&Event::ListItem(Bytes::from(format!("{i:04}"))), &mut out)
                .unwrap();
            let k = conv.key.as_ref().unwrap();
            assert!(
                k.held_bytes + k.batch_bytes <= max + batch,
                "holds {} + {}",
                k.held_bytes,
                k.batch_bytes
            );
            seen_out_early |= !out.is_empty();
        }
        assert!(seen_out_early);
        // Even with raw bytes (a compressible value), the key is finished by commands.
        conv.push(
            &Event::KeyEnd {
                raw: Some(Bytes::from_static(b"\x12")),
            },
            &mut out,
        )
        .unwrap();
        let cmds = text(&out);
        assert!(cmds.iter().all(|c| !c.starts_with("RESTORE")));
        let items: Vec<String> = out
            .iter()
            .filter(|c| &c[0][..] == b"RPUSH")
            .flat_map(|c| c[2..].iter().map(|a| escape(a)))
            .collect();
        let want: Vec<String> = (0..1000).map(|i| format!("{i:04}")).collect();
        assert_eq!(items, want);
        let st = conv.stats();
        assert_eq!((st.keys_by_commands, st.keys_too_large), (1, 1));

        // A long string: SET and APPENDs, released once past the limit.
        let mut conv = KeyConverter::new(cfg(Some(10), max, batch));
        let mut out = Vec::new();
        conv.push(&start(0, "s", 0, ValueKind::String, None), &mut out)
            .unwrap();
        for _ in 0..100 {
            conv.push(&Event::StringChunk(b("0123456789")), &mut out)
                .unwrap();
            assert!(conv.key.as_ref().unwrap().held_bytes <= max + 16);
        }
        conv.push(&Event::KeyEnd { raw: None }, &mut out).unwrap();
        assert_eq!(out.len(), 1 + 100);
        assert_eq!(text(&out[1..2]), ["SET s 0123456789"]);
        assert!(text(&out[2..]).iter().all(|c| c == "APPEND s 0123456789"));
    }

    #[test]
    fn empty_collections_produce_nothing() {
        let events = [
            start(0, "l", 18, ValueKind::List, None),
            Event::KeyEnd {
                raw: Some(Bytes::from_static(b"\x12\x00")),
            },
            start(0, "h", 4, ValueKind::Hash, Some(5)),
            Event::KeyEnd { raw: None },
        ];
        for c in [cfg(Some(10), 1024, 1024), cfg(None, 0, 1024)] {
            let (cmds, stats) = run(c, &events);
            assert!(cmds.is_empty(), "{cmds:?}");
            assert_eq!(stats.empty_keys, 2);
        }
    }

    #[test]
    fn scores_are_shortest_round_trip_text() {
        for (x, want) in [
            (0.0, "0"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e300, "1e300"),
            (-1e-300, "-1e-300"),
            (5e-324, "5e-324"),
            (9007199254740992.0, "9007199254740992"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            let t = score_text(x);
            assert_eq!(t, want);
            if x.is_finite() {
                assert_eq!(t.parse::<f64>().unwrap(), x);
            }
        }
        let events = [
            start(0, "z", 5, ValueKind::ZSet, None),
            Event::ZSetMember {
                member: b("a"),
                score: 1.5,
            },
            Event::ZSetMember {
                member: b("b"),
                score: f64::NEG_INFINITY,
            },
            Event::KeyEnd { raw: None },
        ];
        let (cmds, _) = run(cfg(None, 0, 1024), &events);
        assert_eq!(cmds[1], "ZADD z 1.5 a -inf b");
    }

    #[test]
    fn hash_field_ttls_follow_their_batch() {
        let events = [
            start(0, "h", 24, ValueKind::Hash, Some(77)),
            f("a", Some(100)),
            f("b", None),
            f("c", Some(50)),
            f("d", Some(100)),
            f("e", Some(100)),
            Event::KeyEnd { raw: None },
        ];
        // "HSET" + "h" = 5, each field 2: batches of 4 fields.
        let (cmds, _) = run(cfg(None, 0, 12), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 0",
                "HSET h a v b v c v d v",
                "HPEXPIREAT h 50 FIELDS 1 c",
                "HPEXPIREAT h 100 FIELDS 2 a d",
                "HSET h e v",
                "HPEXPIREAT h 100 FIELDS 1 e",
                "PEXPIREAT h 77",
            ]
        );
    }

    #[test]
    fn field_ttls_can_keep_a_hash_from_restore() {
        let raw = Some(Bytes::from_static(b"\x18raw"));
        let events = |ttl: Option<i64>| {
            [
                start(0, "h", 24, ValueKind::Hash, None),
                f("a", None),
                f("b", ttl),
                Event::KeyEnd { raw: raw.clone() },
            ]
        };
        let mut c = cfg(Some(12), 1 << 20, 1 << 20);
        let (cmds, st) = run(c, &events(Some(9)));
        assert_eq!(st.keys_by_restore, 1, "{cmds:?}");
        c.field_ttls_by_restore = false;
        // Without field TTLs the hash still goes by RESTORE.
        let (_, st) = run(c, &events(None));
        assert_eq!(st.keys_by_restore, 1);
        let (cmds, st) = run(c, &events(Some(9)));
        assert_eq!(
            cmds,
            ["SELECT 0", "HSET h a v b v", "HPEXPIREAT h 9 FIELDS 1 b"]
        );
        assert_eq!((st.keys_by_commands, st.keys_with_field_ttls), (1, 1));
    }

    #[test]
    fn element_chunks_are_joined_into_whole_strings() {
        let events = [
            start(0, "h", 4, ValueKind::Hash, None),
            Event::ElementChunk {
                slot: Slot::Field,
                data: b("fi"),
            },
            Event::ElementChunk {
                slot: Slot::Value,
                data: b("va"),
            },
            Event::ElementChunk {
                slot: Slot::Value,
                data: b("lu"),
            },
            Event::HashField {
                field: b("eld"),
                value: b("e"),
                expire_ms: None,
            },
            Event::HashField {
                field: b("x"),
                value: b("y"),
                expire_ms: None,
            },
            Event::KeyEnd { raw: None },
            start(0, "l", 18, ValueKind::List, None),
            Event::ElementChunk {
                slot: Slot::Element,
                data: b("lo"),
            },
            Event::ListItem(b("ng")),
            Event::KeyEnd { raw: None },
        ];
        let (cmds, _) = run(cfg(None, 0, 1024), &events);
        assert_eq!(cmds, ["SELECT 0", "HSET h field value x y", "RPUSH l long"]);
    }

    #[test]
    fn streams_entries_ids_groups_and_pel() {
        let entry = |i: StreamId, f: &[(&str, &str)]| Event::StreamEntry {
            id: i,
            fields: f.iter().map(|(a, v)| (b(a), b(v))).collect(),
        };
        let pending = |i: StreamId, t: u64, n: u64| Event::StreamPending {
            id: i,
            delivery_time_ms: t,
            delivery_count: n,
        };
        let consumer = |n: &str, p: u64| Event::StreamConsumer {
            name: b(n),
            seen_time_ms: 1,
            active_time_ms: None,
            pending: p,
        };
        let events = [
            start(0, "s", 19, ValueKind::Stream, Some(1000)),
            entry(id(1, 1), &[("f", "v")]),
            entry(id(1, 2), &[]),
            entry(id(2, 0), &[("a", "b"), ("c", "d")]),
            Event::StreamMeta {
                length: 3,
                last_id: id(5, 0),
                first_id: Some(id(1, 1)),
                max_deleted_id: Some(id(1, 5)),
                entries_added: Some(7),
            },
            Event::StreamGroup {
                name: b("g1"),
                last_id: id(2, 0),
                entries_read: Some(3),
                pending: 4,
            },
            pending(id(1, 1), 100, 2),
            pending(id(1, 2), 50, 1),
            pending(id(2, 0), 100, 2),
            pending(id(3, 0), 100, 2),
            consumer("alice", 3),
            Event::StreamConsumerPending(id(1, 1)),
            Event::StreamConsumerPending(id(2, 0)),
            Event::StreamConsumerPending(id(3, 0)),
            consumer("bob", 1),
            Event::StreamConsumerPending(id(1, 2)),
            consumer("carol", 0),
            Event::StreamGroup {
                name: b("g2"),
                last_id: id(0, 0),
                entries_read: None,
                pending: 1,
            },
            pending(id(9, 9), 1, 1),
            Event::KeyEnd { raw: None },
        ];
        let (cmds, stats) = run(cfg(None, 0, 1024), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 0",
                "XADD s 1-1 f v",
                "XADD s 2-0 a b c d",
                "XSETID s 5-0 ENTRIESADDED 7 MAXDELETEDID 1-5",
                "XGROUP CREATE s g1 2-0 ENTRIESREAD 3",
                "XGROUP CREATECONSUMER s g1 alice",
                "XCLAIM s g1 alice 0 1-1 2-0 3-0 TIME 100 RETRYCOUNT 2 FORCE JUSTID",
                "XGROUP CREATECONSUMER s g1 bob",
                "XCLAIM s g1 bob 0 1-2 TIME 50 RETRYCOUNT 1 FORCE JUSTID",
                "XGROUP CREATECONSUMER s g1 carol",
                "XGROUP CREATE s g2 0-0",
                "PEXPIREAT s 1000",
            ]
        );
        assert_eq!(stats.stream_entries_without_fields, 1);
        assert_eq!(stats.pel_entries, 4);
        assert_eq!(stats.pel_entries_inconsistent, 1);
        assert_eq!(stats.keys_by_commands, 1);
    }

    #[test]
    fn empty_streams_are_made_by_a_temporary_group() {
        let events = [
            start(0, "s", 21, ValueKind::Stream, None),
            Event::StreamMeta {
                length: 0,
                last_id: id(0, 0),
                first_id: Some(id(0, 0)),
                max_deleted_id: Some(id(0, 0)),
                entries_added: Some(0),
            },
            Event::KeyEnd { raw: None },
            start(0, "t", 21, ValueKind::Stream, None),
            Event::StreamMeta {
                length: 0,
                last_id: id(5, 2),
                first_id: Some(id(0, 0)),
                max_deleted_id: Some(id(5, 2)),
                entries_added: Some(2),
            },
            Event::KeyEnd { raw: None },
        ];
        let (cmds, stats) = run(cfg(None, 0, 1024), &events);
        assert_eq!(
            cmds,
            [
                "SELECT 0",
                "XGROUP CREATE s __redis-pitr-mkstream__ 0 MKSTREAM",
                "XGROUP DESTROY s __redis-pitr-mkstream__",
                "XGROUP CREATE t __redis-pitr-mkstream__ 0 MKSTREAM",
                "XGROUP DESTROY t __redis-pitr-mkstream__",
                "XSETID t 5-2 ENTRIESADDED 2 MAXDELETEDID 5-2",
            ]
        );
        assert_eq!(stats.empty_keys, 0);
    }

    #[test]
    fn streams_v1_get_the_entries_read_a_server_derives() {
        let events = [
            start(0, "s", 15, ValueKind::Stream, None),
            Event::StreamEntry {
                id: id(1, 0),
                fields: vec![(b("f"), b("v"))],
            },
            Event::StreamEntry {
                id: id(2, 0),
                fields: vec![(b("f"), b("v"))],
            },
            Event::StreamMeta {
                length: 2,
                last_id: id(2, 0),
                first_id: None,
                max_deleted_id: None,
                entries_added: None,
            },
            Event::StreamGroup {
                name: b("at-end"),
                last_id: id(2, 0),
                entries_read: None,
                pending: 0,
            },
            Event::StreamGroup {
                name: b("at-first"),
                last_id: id(1, 0),
                entries_read: None,
                pending: 0,
            },
            Event::StreamGroup {
                name: b("before"),
                last_id: id(0, 0),
                entries_read: None,
                pending: 0,
            },
            Event::StreamGroup {
                name: b("between"),
                last_id: id(1, 5),
                entries_read: None,
                pending: 0,
            },
            Event::KeyEnd { raw: None },
        ];
        let (cmds, _) = run(cfg(None, 0, 1024), &events);
        assert_eq!(
            cmds[3..],
            [
                "XGROUP CREATE s at-end 2-0 ENTRIESREAD 2",
                "XGROUP CREATE s at-first 1-0 ENTRIESREAD 1",
                "XGROUP CREATE s before 0-0 ENTRIESREAD 0",
                "XGROUP CREATE s between 1-5",
            ]
        );
    }

    /// A stream v1 (RDB < 10) stores no entries_added; a server loading it takes the length.
    /// Rebuilt by commands, the target counts its XADDs instead, which differ when an entry
    /// cannot be re-added: where the target takes `ENTRIESADDED`, it gets the length.
    #[test]
    fn streams_v1_get_the_entries_added_a_server_derives() {
        let events = [
            start(0, "s", 15, ValueKind::Stream, None),
            Event::StreamEntry {
                id: id(1, 0),
                fields: vec![(b("f"), b("v"))],
            },
            Event::StreamEntry {
                id: id(2, 0),
                fields: vec![],
            },
            Event::StreamMeta {
                length: 2,
                last_id: id(2, 0),
                first_id: None,
                max_deleted_id: None,
                entries_added: None,
            },
            Event::KeyEnd { raw: None },
        ];
        let (cmds, _) = run(cfg(None, 0, 1024), &events);
        assert_eq!(cmds[1..], ["XADD s 1-0 f v", "XSETID s 2-0 ENTRIESADDED 2"]);
        let older = ConvertConfig {
            stream_entries_added: false,
            ..cfg(None, 0, 1024)
        };
        let (cmds, _) = run(older, &events);
        assert_eq!(cmds[1..], ["XADD s 1-0 f v", "XSETID s 2-0"]);
    }

    #[test]
    fn module_values_need_raw_bytes() {
        let module = Event::Module {
            module_id: 1,
            module_name: "ReJSON-RL".to_string(),
            encver: 3,
        };
        let mut conv = KeyConverter::new(cfg(Some(10), 1024, 1024));
        let mut out = Vec::new();
        conv.push(&start(2, "doc", 7, ValueKind::Module, None), &mut out)
            .unwrap();
        conv.push(&module, &mut out).unwrap();
        let err = conv
            .push(&Event::KeyEnd { raw: None }, &mut out)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"doc\" (db 2)") && msg.contains("ReJSON-RL"),
            "{msg}"
        );
        assert!(msg.contains("larger than the RESTORE limit"), "{msg}");

        // With raw bytes it is a RESTORE like any other value.
        let mut conv = KeyConverter::new(cfg(Some(10), 1024, 1024));
        let mut out = Vec::new();
        conv.push(&start(2, "doc", 7, ValueKind::Module, None), &mut out)
            .unwrap();
        conv.push(&module, &mut out).unwrap();
        conv.push(
            &Event::KeyEnd {
                raw: Some(Bytes::from_static(b"\x07\x01\x00")),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[1][0][..], b"RESTORE");

        // Commands only: an error as soon as the module is known.
        let mut conv = KeyConverter::new(cfg(None, 0, 1024));
        let mut out = Vec::new();
        conv.push(&start(0, "doc", 7, ValueKind::Module, None), &mut out)
            .unwrap();
        let err = conv.push(&module, &mut out).unwrap_err();
        assert!(
            err.to_string().contains("RESTORE is not available"),
            "{err}"
        );
    }

    #[test]
    fn functions_are_loaded_with_replace() {
        let (cmds, stats) = run(
            cfg(Some(10), 1024, 1024),
            &[Event::Function {
                code: b("#!lua name=lib\nredis.register_function('f', function() return 1 end)"),
            }],
        );
        assert_eq!(
            cmds,
            ["FUNCTION LOAD REPLACE #!lua name=lib\\x0aredis.register_function('f', function() return 1 end)"]
        );
        assert_eq!(stats.functions, 1);
    }

    #[test]
    fn types_missing_from_the_payload_version_go_by_commands() {
        assert!(type_in_version(Magic::Redis, 0, 6));
        assert!(type_in_version(Magic::Redis, 9, 10));
        assert!(!type_in_version(Magic::Redis, 18, 9));
        assert!(type_in_version(Magic::Redis, 18, 10));
        assert!(!type_in_version(Magic::Redis, 20, 10));
        assert!(type_in_version(Magic::Redis, 21, 11));
        assert!(type_in_version(Magic::Redis, 24, 12));
        assert!(!type_in_version(Magic::Redis, 24, 80));
        assert!(!type_in_version(Magic::Redis, 24, 11));
        assert!(type_in_version(Magic::Valkey, 22, 80));
        assert!(!type_in_version(Magic::Valkey, 22, 12));
        assert!(type_in_version(Magic::Valkey, 21, 80));
        assert!(!type_in_version(Magic::Redis, 26, 12));

        let events = [
            start(0, "s", 20, ValueKind::Set, None),
            Event::SetMember(b("a")),
            Event::KeyEnd {
                raw: Some(Bytes::from_static(b"\x14")),
            },
        ];
        let (cmds, stats) = run(cfg(Some(10), 1024, 1024), &events);
        assert_eq!(cmds, ["SELECT 0", "SADD s a"]);
        assert_eq!(
            (stats.keys_by_commands, stats.keys_type_not_in_version),
            (1, 1)
        );
    }

    #[test]
    fn events_out_of_order_are_errors() {
        let mut conv = KeyConverter::new(cfg(None, 0, 1024));
        let mut out = Vec::new();
        assert!(conv.push(&Event::ListItem(b("x")), &mut out).is_err());
        assert!(conv.push(&Event::KeyEnd { raw: None }, &mut out).is_err());
        let mut conv = KeyConverter::new(cfg(None, 0, 1024));
        conv.push(&start(0, "l", 18, ValueKind::List, None), &mut out)
            .unwrap();
        let err = conv.push(&Event::SetMember(b("x")), &mut out).unwrap_err();
        assert!(err
            .to_string()
            .contains("SetMember in key \"l\" of type list"));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rdb")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn convert_fixture(data: &[u8], pcfg: ParserConfig, ccfg: ConvertConfig) -> ConvertStats {
        let mut parser = Parser::new(pcfg);
        let mut conv = KeyConverter::new(ccfg);
        let mut events = Vec::new();
        let mut out = Vec::new();
        for piece in data.chunks(4096) {
            events.clear();
            parser.feed(piece, &mut events).unwrap();
            for ev in &events {
                conv.push(ev, &mut out).unwrap();
            }
            for c in out.drain(..) {
                assert!(!c.is_empty());
                if &c[0][..] != b"RESTORE" && &c[0][..] != b"XADD" && &c[0][..] != b"FUNCTION" {
                    // A batch holds at most the limit plus one item (here: one long element).
                    assert!(args_size(&c) <= ccfg.max_batch_bytes + pcfg.max_chunk * 4 + 256);
                }
            }
        }
        parser.finish().unwrap();
        conv.stats()
    }

    #[test]
    fn fixtures_convert_in_every_mode() {
        let data = fixture("redis-7.0.15-rdb10-public.rdb");
        let pcfg = |raw: usize| ParserConfig {
            max_chunk: 4096,
            max_raw_value: raw,
            ..ParserConfig::default()
        };
        let st = convert_fixture(&data, pcfg(8 << 20), cfg(Some(10), 8 << 20, 64 << 10));
        assert_eq!((st.keys_by_restore, st.keys_by_commands), (75, 0));
        assert_eq!(st.functions, 2);
        let st = convert_fixture(&data, pcfg(0), cfg(None, 0, 64 << 10));
        assert_eq!((st.keys_by_restore, st.keys_by_commands), (0, 75));
        let st = convert_fixture(&data, pcfg(1024), cfg(Some(10), 1024, 1024));
        assert_eq!(st.keys_by_restore + st.keys_by_commands, 75);
        assert!(st.keys_too_large > 0 && st.keys_by_restore > 0, "{st:?}");
        assert_eq!(st.keys_too_large, st.keys_by_commands);

        // A Valkey RDB 11 file for an RDB 10 target: listpack sets (20) and streams v3 (21)
        // by commands, the rest by RESTORE.
        let data = fixture("valkey-unstable-rdb11-public.rdb");
        let st = convert_fixture(&data, pcfg(8 << 20), cfg(Some(10), 8 << 20, 64 << 10));
        assert!(st.keys_type_not_in_version > 0, "{st:?}");
        assert_eq!(st.keys_type_not_in_version, st.keys_by_commands);
        assert_eq!(st.keys_by_restore + st.keys_by_commands, 75);

        // Redis' empty-keys file: nothing at all.
        let data = fixture("redis-assets/corrupt_empty_keys.rdb");
        let st = convert_fixture(&data, pcfg(8 << 20), cfg(Some(10), 8 << 20, 64 << 10));
        assert_eq!(st.empty_keys, 9);
        assert_eq!(st.commands, 0);
    }
}
