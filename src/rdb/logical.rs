//! The logical content of an RDB, in the fixtures' `redis-logical-state/1` JSON form.
//!
//! Why it exists: to say whether two snapshots (an RDB, a restored server) hold the same data,
//! whatever their encodings. [`Builder`] folds parser [`Event`]s into a [`LogicalState`]: every key
//! with its type, value and expiry, and the function libraries, as a loading server would hold
//! them (empty collections and keys expired before a cutoff left out). It holds everything in
//! memory: it is for tests and verification of small data sets, not for the streaming path.
//!
//! The JSON form follows `shared/fixtures/rdb/README.md` ("The `.json` format"): bytes as
//! escaped text, sorted collections, scores written as Python's `repr()` writes floats. The
//! fixtures' digest, a SHA-256 over [`canonical_json`] of `{"functions", "keys"}`
//! ([`LogicalState::to_json`]), is computed by the tests that compare against them.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value as Json};

use super::{Event, Parser, ParserConfig, RdbError, Slot, StreamId, ValueKind};

/// Everything a snapshot holds, logically.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogicalState {
    /// Function libraries, sorted by name.
    pub functions: Vec<Function>,
    /// Keys sorted by database, then raw key bytes.
    pub keys: Vec<KeyRecord>,
}

/// A function library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The name from the `#!<engine> name=<name>` line.
    pub name: Bytes,
    /// The full source.
    pub code: Bytes,
}

/// One key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub db: u64,
    pub key: Bytes,
    /// Absolute expiry in unix ms.
    pub expire_ms: Option<i64>,
    pub value: Value,
}

/// A key's value, in logical form (collections sorted as the JSON form sorts them).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Bytes),
    /// Elements in order.
    List(Vec<Bytes>),
    /// Members sorted by raw bytes.
    Set(Vec<Bytes>),
    /// (member, score) sorted by raw member bytes.
    ZSet(Vec<(Bytes, f64)>),
    /// (field, value, field expiry) sorted by raw field bytes.
    Hash(Vec<(Bytes, Bytes, Option<i64>)>),
    Stream(Stream),
    /// A module value: only its type name is known without the module.
    Module {
        module_type: String,
    },
}

impl Value {
    /// The logical type.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::String(_) => ValueKind::String,
            Value::List(_) => ValueKind::List,
            Value::Set(_) => ValueKind::Set,
            Value::ZSet(_) => ValueKind::ZSet,
            Value::Hash(_) => ValueKind::Hash,
            Value::Stream(_) => ValueKind::Stream,
            Value::Module { .. } => ValueKind::Module,
        }
    }
}

/// A stream, as the JSON form shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    pub entries: Vec<(StreamId, Vec<(Bytes, Bytes)>)>,
    pub last_id: StreamId,
    pub entries_added: u64,
    pub max_deleted_id: StreamId,
    /// Sorted by name.
    pub groups: Vec<Group>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    pub name: Bytes,
    pub last_delivered_id: StreamId,
    pub entries_read: Option<u64>,
    /// (id, owning consumer, delivery count), sorted by id.
    pub pending: Vec<(StreamId, Bytes, u64)>,
    /// Consumer names, sorted by raw bytes.
    pub consumers: Vec<Bytes>,
}

/// Folds parser events into a [`LogicalState`].
#[derive(Debug, Default)]
pub struct Builder {
    cutoff: i64,
    functions: BTreeMap<Bytes, Bytes>,
    keys: BTreeMap<(u64, Bytes), KeyRecord>,
    cur: Option<Open>,
    /// Leading pieces of long strings, per slot (Element, Member, Field, Value).
    chunks: [Vec<u8>; 4],
}

#[derive(Debug)]
struct Open {
    db: u64,
    key: Bytes,
    expire_ms: Option<i64>,
    acc: Acc,
}

#[derive(Debug)]
enum Acc {
    Str(Vec<u8>),
    List(Vec<Bytes>),
    Set(Vec<Bytes>),
    ZSet(Vec<(Bytes, f64)>),
    Hash(Vec<(Bytes, Bytes, Option<i64>)>),
    Stream(Box<StreamAcc>),
    Module(String),
}

#[derive(Debug, Default)]
struct StreamAcc {
    entries: Vec<(StreamId, Vec<(Bytes, Bytes)>)>,
    length: u64,
    last_id: StreamId,
    first_id: Option<StreamId>,
    max_deleted_id: Option<StreamId>,
    entries_added: Option<u64>,
    groups: Vec<GroupAcc>,
    consumer: Bytes,
}

#[derive(Debug, Default)]
struct GroupAcc {
    name: Bytes,
    last_id: StreamId,
    entries_read: Option<u64>,
    pel: BTreeMap<StreamId, (u64, Bytes)>,
    consumers: Vec<Bytes>,
}

fn slot_index(s: Slot) -> usize {
    match s {
        Slot::Element => 0,
        Slot::Member => 1,
        Slot::Field => 2,
        Slot::Value => 3,
    }
}

impl Builder {
    /// A builder that leaves out keys (and hash fields) whose expiry is before
    /// `expiry_cutoff_ms` (unix ms; 0 keeps everything written after 1970).
    pub fn new(expiry_cutoff_ms: i64) -> Self {
        Builder {
            cutoff: expiry_cutoff_ms,
            ..Default::default()
        }
    }

    fn whole(&mut self, slot: Slot, last: &Bytes) -> Bytes {
        let acc = &mut self.chunks[slot_index(slot)];
        if acc.is_empty() {
            last.clone()
        } else {
            acc.extend_from_slice(last);
            Bytes::from(std::mem::take(acc))
        }
    }

    /// Take one event into account.
    pub fn push(&mut self, ev: &Event) {
        match ev {
            Event::Function { code } => {
                self.functions.insert(library_name(code), code.clone());
            }
            Event::KeyStart {
                db,
                key,
                kind,
                expire_ms,
                ..
            } => {
                let acc = match kind {
                    ValueKind::String => Acc::Str(Vec::new()),
                    ValueKind::List => Acc::List(Vec::new()),
                    ValueKind::Set => Acc::Set(Vec::new()),
                    ValueKind::ZSet => Acc::ZSet(Vec::new()),
                    ValueKind::Hash => Acc::Hash(Vec::new()),
                    ValueKind::Stream => Acc::Stream(Box::default()),
                    ValueKind::Module => Acc::Module(String::new()),
                };
                self.chunks = Default::default();
                self.cur = Some(Open {
                    db: *db,
                    key: key.clone(),
                    expire_ms: *expire_ms,
                    acc,
                });
            }
            Event::StringChunk(b) => {
                if let Some(Open {
                    acc: Acc::Str(s), ..
                }) = &mut self.cur
                {
                    s.extend_from_slice(b);
                }
            }
            Event::ElementChunk { slot, data } => {
                self.chunks[slot_index(*slot)].extend_from_slice(data);
            }
            Event::ListItem(b) => {
                let b = self.whole(Slot::Element, b);
                if let Some(Open {
                    acc: Acc::List(v), ..
                }) = &mut self.cur
                {
                    v.push(b);
                }
            }
            Event::SetMember(b) => {
                let b = self.whole(Slot::Element, b);
                if let Some(Open {
                    acc: Acc::Set(v), ..
                }) = &mut self.cur
                {
                    v.push(b);
                }
            }
            Event::ZSetMember { member, score } => {
                let m = self.whole(Slot::Member, member);
                if let Some(Open {
                    acc: Acc::ZSet(v), ..
                }) = &mut self.cur
                {
                    v.push((m, *score));
                }
            }
            Event::HashField {
                field,
                value,
                expire_ms,
            } => {
                let f = self.whole(Slot::Field, field);
                let v = self.whole(Slot::Value, value);
                if let Some(Open {
                    acc: Acc::Hash(h), ..
                }) = &mut self.cur
                {
                    h.push((f, v, *expire_ms));
                }
            }
            Event::Module { module_name, .. } => {
                if let Some(Open {
                    acc: Acc::Module(m),
                    ..
                }) = &mut self.cur
                {
                    m.clone_from(module_name);
                }
            }
            Event::StreamEntry { .. }
            | Event::StreamMeta { .. }
            | Event::StreamGroup { .. }
            | Event::StreamPending { .. }
            | Event::StreamConsumer { .. }
            | Event::StreamConsumerPending(_) => {
                if let Some(Open {
                    acc: Acc::Stream(s),
                    ..
                }) = &mut self.cur
                {
                    s.push(ev);
                }
            }
            Event::KeyEnd { .. } => {
                if let Some(open) = self.cur.take() {
                    self.close(open);
                }
            }
            Event::Header { .. }
            | Event::Aux { .. }
            | Event::ModuleAux { .. }
            | Event::SelectDb(_)
            | Event::ResizeDb { .. }
            | Event::SlotImport { .. }
            | Event::Eof { .. } => {}
        }
    }

    fn close(&mut self, open: Open) {
        if open.expire_ms.is_some_and(|e| e < self.cutoff) {
            return;
        }
        let value = match open.acc {
            Acc::Str(s) => Value::String(Bytes::from(s)),
            Acc::List(v) => Value::List(v),
            Acc::Set(mut v) => {
                v.sort();
                v.dedup();
                Value::Set(v)
            }
            Acc::ZSet(mut v) => {
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v.dedup_by(|a, b| a.0 == b.0);
                Value::ZSet(v)
            }
            Acc::Hash(mut v) => {
                v.retain(|(_, _, e)| !e.is_some_and(|e| e < self.cutoff));
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v.dedup_by(|a, b| a.0 == b.0);
                Value::Hash(v)
            }
            Acc::Stream(s) => Value::Stream(s.finish()),
            Acc::Module(module_type) => Value::Module { module_type },
        };
        // A loading server skips empty collections.
        let empty = match &value {
            Value::List(v) | Value::Set(v) => v.is_empty(),
            Value::ZSet(v) => v.is_empty(),
            Value::Hash(v) => v.is_empty(),
            _ => false,
        };
        if empty {
            return;
        }
        self.keys.insert(
            (open.db, open.key.clone()),
            KeyRecord {
                db: open.db,
                key: open.key,
                expire_ms: open.expire_ms,
                value,
            },
        );
    }

    /// The state built so far (a key still open is left out).
    pub fn finish(self) -> LogicalState {
        LogicalState {
            functions: self
                .functions
                .into_iter()
                .map(|(name, code)| Function { name, code })
                .collect(),
            keys: self.keys.into_values().collect(),
        }
    }
}

impl StreamAcc {
    fn push(&mut self, ev: &Event) {
        match ev {
            Event::StreamEntry { id, fields } => self.entries.push((*id, fields.clone())),
            Event::StreamMeta {
                length,
                last_id,
                first_id,
                max_deleted_id,
                entries_added,
            } => {
                self.length = *length;
                self.last_id = *last_id;
                self.first_id = *first_id;
                self.max_deleted_id = *max_deleted_id;
                self.entries_added = *entries_added;
            }
            Event::StreamGroup {
                name,
                last_id,
                entries_read,
                ..
            } => self.groups.push(GroupAcc {
                name: name.clone(),
                last_id: *last_id,
                entries_read: *entries_read,
                ..Default::default()
            }),
            Event::StreamPending {
                id, delivery_count, ..
            } => {
                if let Some(g) = self.groups.last_mut() {
                    g.pel.insert(*id, (*delivery_count, Bytes::new()));
                }
            }
            Event::StreamConsumer { name, .. } => {
                if let Some(g) = self.groups.last_mut() {
                    g.consumers.push(name.clone());
                }
                self.consumer = name.clone();
            }
            Event::StreamConsumerPending(id) => {
                if let Some(g) = self.groups.last_mut() {
                    if let Some(e) = g.pel.get_mut(id) {
                        e.1 = self.consumer.clone();
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(self) -> Stream {
        // Streams v1 store neither entries_added nor max_deleted_id nor the groups'
        // entries_read: a loading server derives them as below.
        let v1 = self.entries_added.is_none();
        let entries_added = self.entries_added.unwrap_or(self.length);
        let max_deleted_id = self.max_deleted_id.unwrap_or_default();
        let first_id = self
            .first_id
            .or_else(|| self.entries.first().map(|e| e.0))
            .unwrap_or_default();
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|g| {
                let entries_read = if v1 {
                    estimate_entries_read(
                        entries_added,
                        self.length,
                        self.last_id,
                        first_id,
                        max_deleted_id,
                        g.last_id,
                    )
                } else {
                    g.entries_read
                };
                let mut consumers = g.consumers;
                consumers.sort();
                Group {
                    name: g.name,
                    last_delivered_id: g.last_id,
                    entries_read,
                    pending: g.pel.into_iter().map(|(id, (n, c))| (id, c, n)).collect(),
                    consumers,
                }
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Stream {
            entries: self.entries,
            last_id: self.last_id,
            entries_added,
            max_deleted_id,
            groups,
        }
    }
}

/// `streamEstimateDistanceFromFirstEverEntry()`: the entries-read counter a server derives for
/// a group of a stream that did not store it.
pub(crate) fn estimate_entries_read(
    entries_added: u64,
    length: u64,
    last_id: StreamId,
    first_id: StreamId,
    max_deleted_id: StreamId,
    id: StreamId,
) -> Option<u64> {
    let zero = StreamId::default();
    if entries_added == 0 {
        return Some(0);
    }
    if length == 0 && id <= last_id {
        return Some(entries_added);
    }
    if id != zero && id < max_deleted_id {
        return None;
    }
    if id == last_id {
        return Some(entries_added);
    }
    if id > last_id {
        return None;
    }
    if max_deleted_id == zero || max_deleted_id < first_id {
        if id < first_id {
            return Some(entries_added - length);
        }
        if id == first_id {
            return Some(entries_added - length + 1);
        }
    }
    None
}

/// The library name in a function's first line (`#!lua name=mylib`), or empty.
fn library_name(code: &[u8]) -> Bytes {
    let line = code.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(rest) = line.strip_prefix(b"#!") else {
        return Bytes::new();
    };
    rest.split(|&b| b == b' ')
        .find_map(|t| t.strip_prefix(b"name="))
        .map(Bytes::copy_from_slice)
        .unwrap_or_default()
}

impl LogicalState {
    /// Parse a whole RDB held in memory and build its logical state.
    pub fn from_rdb(rdb: &[u8], expiry_cutoff_ms: i64) -> Result<Self, RdbError> {
        let mut parser = Parser::new(ParserConfig {
            max_raw_value: 0,
            ..ParserConfig::default()
        });
        let mut events = Vec::new();
        parser.feed(rdb, &mut events)?;
        parser.finish()?;
        Ok(Self::from_events(&events, expiry_cutoff_ms))
    }

    /// Build from a complete event sequence.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        expiry_cutoff_ms: i64,
    ) -> Self {
        let mut b = Builder::new(expiry_cutoff_ms);
        for ev in events {
            b.push(ev);
        }
        b.finish()
    }

    /// The `functions` array of the JSON form.
    pub fn functions_json(&self) -> Json {
        Json::Array(
            self.functions
                .iter()
                .map(|f| json!({"name": escape(&f.name), "code": escape(&f.code)}))
                .collect(),
        )
    }

    /// The `keys` array of the JSON form.
    pub fn keys_json(&self) -> Json {
        Json::Array(self.keys.iter().map(key_json).collect())
    }

    /// `{"functions": ..., "keys": ...}`: the part of the JSON form the digest covers.
    pub fn to_json(&self) -> Json {
        json!({"functions": self.functions_json(), "keys": self.keys_json()})
    }
}

fn key_json(k: &KeyRecord) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("db".into(), json!(k.db));
    m.insert("key".into(), json!(escape(&k.key)));
    m.insert("expire_ms".into(), json!(k.expire_ms.unwrap_or(-1)));
    m.insert("type".into(), json!(k.value.kind().as_str()));
    let value = match &k.value {
        Value::String(s) => json!(escape(s)),
        Value::List(v) | Value::Set(v) => Json::Array(v.iter().map(|b| json!(escape(b))).collect()),
        Value::ZSet(v) => Json::Array(
            v.iter()
                .map(|(m, s)| json!([escape(m), py_float_repr(*s)]))
                .collect(),
        ),
        Value::Hash(v) => {
            let ttls: Vec<Json> = v
                .iter()
                .filter_map(|(f, _, e)| e.map(|e| json!([escape(f), e])))
                .collect();
            if !ttls.is_empty() {
                m.insert("field_expire_ms".into(), Json::Array(ttls));
            }
            Json::Array(
                v.iter()
                    .map(|(f, val, _)| json!([escape(f), escape(val)]))
                    .collect(),
            )
        }
        Value::Stream(s) => json!({
            "entries": s.entries.iter().map(|(id, fields)| json!([
                id.to_string(),
                fields.iter().map(|(f, v)| json!([escape(f), escape(v)])).collect::<Vec<_>>(),
            ])).collect::<Vec<_>>(),
            "last_id": s.last_id.to_string(),
            "entries_added": s.entries_added,
            "max_deleted_id": s.max_deleted_id.to_string(),
            "groups": s.groups.iter().map(|g| json!({
                "name": escape(&g.name),
                "last_delivered_id": g.last_delivered_id.to_string(),
                "entries_read": g.entries_read,
                "pending": g.pending.iter()
                    .map(|(id, c, n)| json!([id.to_string(), escape(c), n]))
                    .collect::<Vec<_>>(),
                "consumers": g.consumers.iter().map(|c| json!(escape(c))).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        Value::Module { module_type } => {
            m.insert("module_type".into(), json!(module_type));
            Json::Null
        }
    };
    m.insert("value".into(), value);
    Json::Object(m)
}

/// Bytes as text: 0x20-0x7e other than `\` as themselves, `\` as `\\`, anything else `\xHH`.
pub fn escape(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                s.push_str("\\x");
                s.push(HEX[usize::from(c >> 4)] as char);
                s.push(HEX[usize::from(c & 15)] as char);
            }
        }
    }
    s
}

/// The inverse of [`escape`]; `None` if `s` is not in that form.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => match b.get(i + 1)? {
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                }
                b'x' => {
                    let h = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                    if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    out.push(u8::from_str_radix(h, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            },
            c @ 0x20..=0x7e => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A double as Python's `repr()` writes it: the shortest digits that read back as the same
/// value, in fixed notation when the decimal exponent is in -4..16 (with `.0` for integers),
/// else as `d.ddde+XX`; `inf`, `-inf`, `nan`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "d[.ddd]e<exp>".
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1; // value = 0.DIGITS * 10^decpt
    let mut s = String::new();
    if x < 0.0 {
        s.push('-');
    }
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            s.push_str("0.");
            s.push_str(&"0".repeat((-decpt) as usize));
            s.push_str(&digits);
        } else if decpt >= n {
            s.push_str(&digits);
            s.push_str(&"0".repeat((decpt - n) as usize));
            s.push_str(".0");
        } else {
            s.push_str(&digits[..decpt as usize]);
            s.push('.');
            s.push_str(&digits[decpt as usize..]);
        }
    } else {
        s.push_str(&digits[..1]);
        if n > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        s.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    }
    s
}

/// JSON text as Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=True)` writes it.
pub fn canonical_json(v: &Json) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => write_json_str(s, out),
        Json::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(x, out);
            }
            out.push(']');
        }
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e300, "1e+300"),
            (-1e-300, "-1e-300"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (9007199254740992.0, "9007199254740992.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.00012345, "0.00012345"),
            (1.2345e-5, "1.2345e-05"),
            (5000000000.0, "5000000000.0"),
            (7837.6715, "7837.6715"),
            (f64::MAX, "1.7976931348623157e+308"),
            (2.5e-308, "2.5e-308"),
            (100.0, "100.0"),
            (0.5, "0.5"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(*x), *want, "{x:?}");
        }
    }

    #[test]
    fn escape_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let e = escape(&all);
        assert!(e.is_ascii());
        assert_eq!(unescape(&e).unwrap(), all);
        assert_eq!(escape(b"a\\b\r\n\x00\xff"), "a\\\\b\\x0d\\x0a\\x00\\xff");
        assert!(unescape("\\q").is_none());
        assert!(unescape("\\x4").is_none());
        assert!(unescape("\\xzz").is_none());
    }

    #[test]
    fn canonical_json_matches_python() {
        let v = json!({"b": [1, -1, null, "x\"\\\n\u{7f}\u{e9}"], "a": {"d": true, "c": 18446744073709551615u64}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":18446744073709551615,"d":true},"b":[1,-1,null,"x\"\\\n\u007f\u00e9"]}"#
        );
    }

    #[test]
    fn library_names() {
        assert_eq!(
            &library_name(b"#!lua name=mylib\nredis.register_function('f', ...)")[..],
            b"mylib"
        );
        assert_eq!(&library_name(b"#!lua foo=bar name=x\n")[..], b"x");
        assert_eq!(&library_name(b"return 1")[..], b"");
    }

    #[test]
    fn entries_read_estimates() {
        let id = |ms| StreamId { ms, seq: 0 };
        // Never used.
        assert_eq!(
            estimate_entries_read(0, 0, id(0), id(0), id(0), id(5)),
            Some(0)
        );
        // At the last id.
        assert_eq!(
            estimate_entries_read(3, 3, id(3), id(1), id(0), id(3)),
            Some(3)
        );
        // Before the first entry, no tombstones.
        assert_eq!(
            estimate_entries_read(3, 3, id(3), id(1), id(0), id(0)),
            Some(0)
        );
        // At the first entry.
        assert_eq!(
            estimate_entries_read(3, 3, id(3), id(1), id(0), id(1)),
            Some(1)
        );
        // In the middle: unknown.
        assert_eq!(
            estimate_entries_read(3, 3, id(3), id(1), id(0), id(2)),
            None
        );
        // In the future: unknown.
        assert_eq!(
            estimate_entries_read(3, 3, id(3), id(1), id(0), id(9)),
            None
        );
    }
}
