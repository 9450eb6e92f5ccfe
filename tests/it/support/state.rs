//! The *logical state* of a live server, in the JSON form of the RDB
//! fixtures (`tests/fixtures/rdb/README.md`):
//! `{"functions": [{"name", "code"}], "keys": [{"db", "key", "type",
//! "expire_ms", "value"}]}`, with bytes written by [`encode_bytes`], every
//! collection sorted by raw bytes, zset scores as Python's `repr(float)`
//! ([`format_score`]), hash-field TTLs (Redis 7.4+) and streams with their
//! groups, PEL and consumers.
//!
//! - [`logical_state`] / [`logical_state_con`]: dump a server;
//! - [`diff`]: a short description of the first differences of two states;
//! - [`drop_expired`]: drop keys (and hash fields) that expire before a
//!   moment, to compare states dumped at different times.
//!
//! Reads go through one connection, in pipelines: `INFO keyspace`, per
//! database `SELECT` + `SCAN COUNT 1000`, then `TYPE` + `PEXPIRETIME` per key,
//! then the values in `MULTI`/`EXEC` batches (each batch re-checks `TYPE` and
//! `PEXPIRETIME`, so a key that expires or changes in between is skipped or
//! read again).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use redis::{ConnectionLike, Value as RV};
use serde_json::{json, Value};

use super::redis_server::RedisServer;

/// Keys per pipeline / transaction.
const BATCH: usize = 200;

// ---------------------------------------------------------------------------
// Encoding

/// The fixtures' bytes-as-text: bytes 0x20-0x7e other than `\` stand for
/// themselves, `\` is `\\`, every other byte is `\xHH` (lower-case hex); the crate's own
/// [`escape`](redis_pitr::rdb::logical::escape).
pub use redis_pitr::rdb::logical::escape as encode_bytes;

/// The inverse of [`encode_bytes`] (lenient: an invalid escape is kept as is).
pub fn decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'\\' {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b[i + 1] == b'x' && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A double as Python's `repr(float)` writes it: the shortest text that
/// reads back as the same double; fixed notation when the decimal exponent
/// is in `-4..16` (integers get `.0`), otherwise `d.ddde+XX` (at least two
/// exponent digits); `inf`, `-inf`, `nan`.
pub fn format_score(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` is the shortest round-trip form: `-1.2345e-7`, `5e-324`, `0e0`.
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("exponent");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    // Value = 0.DIGITS * 10^decpt.
    let decpt = exp + 1;
    let n = digits.len() as i32;
    if (-4 < decpt) && (decpt <= 16) {
        if decpt <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= n {
            format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// Parses a score as a server writes it (`3`, `1.5`, `inf`, `-inf`,
/// `1.0000000000000001e+300`).
pub fn parse_score(text: &str) -> f64 {
    match text.trim().to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        t => t
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("unparsable score {text:?}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// Talking to the server

fn query(con: &mut redis::Connection, cmd: &redis::Cmd) -> RV {
    con.req_command(cmd).unwrap_or_else(|e| {
        let text = String::from_utf8_lossy(&cmd.get_packed_command()).into_owned();
        panic!("logical_state: {text:?} failed: {e}")
    })
}

/// Runs `cmds` as one pipeline (or one MULTI/EXEC when `atomic`) and returns
/// one reply per command; server errors are `RV::ServerError` items.
fn run_pipeline(con: &mut redis::Connection, cmds: &[redis::Cmd], atomic: bool) -> Vec<RV> {
    if cmds.is_empty() {
        return Vec::new();
    }
    let mut p = redis::pipe();
    for c in cmds {
        p.add_command(c.clone());
    }
    if atomic {
        p.atomic();
        let mut resp = con
            .req_packed_commands(&p.get_packed_pipeline(), cmds.len() + 1, 1)
            .unwrap_or_else(|e| panic!("logical_state: transaction failed: {e}"));
        match resp.pop() {
            Some(RV::Array(items)) if items.len() == cmds.len() => items,
            other => panic!("logical_state: unexpected EXEC reply {other:?}"),
        }
    } else {
        con.req_packed_commands(&p.get_packed_pipeline(), 0, cmds.len())
            .unwrap_or_else(|e| panic!("logical_state: pipeline failed: {e}"))
    }
}

fn cmd(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn bytes(v: &RV) -> Vec<u8> {
    match v {
        RV::BulkString(b) => b.clone(),
        RV::SimpleString(s) => s.as_bytes().to_vec(),
        RV::VerbatimString { text, .. } => text.as_bytes().to_vec(),
        RV::Okay => b"OK".to_vec(),
        RV::Int(i) => i.to_string().into_bytes(),
        RV::Double(d) => d.to_string().into_bytes(),
        other => panic!("logical_state: expected a string, got {other:?}"),
    }
}

fn text(v: &RV) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

fn int(v: &RV) -> i64 {
    match v {
        RV::Int(i) => *i,
        RV::BulkString(_) | RV::SimpleString(_) => text(v)
            .parse()
            .unwrap_or_else(|_| panic!("logical_state: expected an integer, got {v:?}")),
        other => panic!("logical_state: expected an integer, got {other:?}"),
    }
}

fn items(v: &RV) -> &[RV] {
    match v {
        RV::Array(a) | RV::Set(a) => a,
        RV::Nil => &[],
        other => panic!("logical_state: expected an array, got {other:?}"),
    }
}

/// A RESP2 flat `[k, v, k, v, ...]` array or a RESP3 map, as `name -> value`.
fn as_map(v: &RV) -> HashMap<String, RV> {
    match v {
        RV::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        _ => items(v)
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv.get(1).cloned().unwrap_or(RV::Nil)))
            .collect(),
    }
}

/// Flat `[a, b, a, b]` pairs (HGETALL, ZRANGE WITHSCORES, stream fields).
fn pairs(v: &RV) -> Vec<(Vec<u8>, Vec<u8>)> {
    match v {
        RV::Map(p) => p.iter().map(|(a, b)| (bytes(a), bytes(b))).collect(),
        _ => items(v)
            .chunks(2)
            .map(|kv| (bytes(&kv[0]), bytes(&kv[1])))
            .collect(),
    }
}

fn is_err(v: &RV) -> bool {
    matches!(v, RV::ServerError(_))
}

/// `ms-seq` as numbers, for sorting ids.
fn id_key(id: &[u8]) -> (u64, u64, Vec<u8>) {
    let s = String::from_utf8_lossy(id);
    let (a, b) = s.split_once('-').unwrap_or((&s, "0"));
    (
        a.parse().unwrap_or(u64::MAX),
        b.parse().unwrap_or(u64::MAX),
        id.to_vec(),
    )
}

/// Whether the server has hash-field TTLs (`HPEXPIRETIME`, Redis 7.4+).
fn has_field_ttls(con: &mut redis::Connection) -> bool {
    let v = query(con, redis::cmd("COMMAND").arg("INFO").arg("hpexpiretime"));
    match v {
        RV::Array(a) => a.iter().any(|x| !matches!(x, RV::Nil)),
        _ => false,
    }
}

/// Database numbers that hold keys, from `INFO keyspace` (`db3:keys=...`).
fn databases(con: &mut redis::Connection) -> Vec<i64> {
    let info = text(&query(con, redis::cmd("INFO").arg("keyspace")));
    let mut dbs: Vec<i64> = info
        .lines()
        .filter_map(|l| l.trim().strip_prefix("db"))
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    dbs.sort_unstable();
    dbs
}

fn scan_all(con: &mut redis::Connection) -> BTreeSet<Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let v = query(con, redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(1000));
        let parts = items(&v);
        cursor = text(&parts[0]);
        for k in items(&parts[1]) {
            keys.insert(bytes(k));
        }
        if cursor == "0" {
            return keys;
        }
    }
}

// ---------------------------------------------------------------------------
// Dumping

/// The logical state of the server `r` (see the module docs). Keys whose
/// expiry (`PEXPIRETIME`) is before `expired_before_ms` are left out (as
/// are, on Redis 7.4+, hash fields whose TTL is); `0` keeps everything.
pub fn logical_state(r: &RedisServer, expired_before_ms: u64) -> Value {
    let mut con = r.client();
    logical_state_con(&mut con, expired_before_ms)
}

/// Like [`logical_state`], on a connection (e.g. to a server the harness
/// does not manage). The connection is left on some database (`SELECT`).
pub fn logical_state_con(con: &mut redis::Connection, expired_before_ms: u64) -> Value {
    let field_ttls = has_field_ttls(con);
    let mut keys_out = Vec::new();
    for db in databases(con) {
        query(con, redis::cmd("SELECT").arg(db));
        let keys: Vec<Vec<u8>> = scan_all(con).into_iter().collect();
        for chunk in keys.chunks(BATCH) {
            dump_chunk(con, db, chunk, expired_before_ms, field_ttls, &mut keys_out);
        }
    }
    json!({"functions": functions(con), "keys": keys_out})
}

fn functions(con: &mut redis::Connection) -> Value {
    let v = query(con, redis::cmd("FUNCTION").arg("LIST").arg("WITHCODE"));
    if is_err(&v) {
        // No functions before Redis 7.0.
        return json!([]);
    }
    let mut libs: Vec<(Vec<u8>, Vec<u8>)> = items(&v)
        .iter()
        .map(|lib| {
            let m = as_map(lib);
            let name = m.get("library_name").map(bytes).unwrap_or_default();
            let code = m.get("library_code").map(bytes).unwrap_or_default();
            (name, code)
        })
        .collect();
    libs.sort();
    Value::Array(
        libs.into_iter()
            .map(|(n, c)| json!({"name": encode_bytes(&n), "code": encode_bytes(&c)}))
            .collect(),
    )
}

/// The reads of one key of type `ty` (after `TYPE` and `PEXPIRETIME`).
fn value_cmds(key: &[u8], ty: &str) -> Vec<redis::Cmd> {
    match ty {
        "string" => vec![cmd(&[b"GET", key])],
        "list" => vec![cmd(&[b"LRANGE", key, b"0", b"-1"])],
        "set" => vec![cmd(&[b"SMEMBERS", key])],
        "zset" => vec![cmd(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])],
        "hash" => vec![cmd(&[b"HGETALL", key])],
        "stream" => vec![
            cmd(&[b"XRANGE", key, b"-", b"+"]),
            cmd(&[b"XINFO", b"STREAM", key, b"FULL", b"COUNT", b"0"]),
        ],
        _ => vec![],
    }
}

/// Before 7.0 there is no PEXPIRETIME: the expiry is TIME + PTTL, read in one script (exact
/// to a millisecond).
const EXPIRE_TIME_SCRIPT: &str = "local p = redis.call('PTTL', KEYS[1]) \
if p < 0 then return p end \
local t = redis.call('TIME') \
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + p";

/// The absolute expiry of `k` in ms, -1 without, -2 when missing.
fn expire_time_cmd(k: &[u8], exact: bool) -> redis::Cmd {
    if exact {
        cmd(&[b"PEXPIRETIME", k])
    } else {
        cmd(&[b"EVAL", EXPIRE_TIME_SCRIPT.as_bytes(), b"1", k])
    }
}

/// Whether the server has `PEXPIRETIME` (7.0+).
fn has_expire_time(con: &mut redis::Connection) -> bool {
    let v = query(con, redis::cmd("COMMAND").arg("INFO").arg("pexpiretime"));
    matches!(v, RV::Array(a) if a.iter().any(|x| !matches!(x, RV::Nil)))
}

fn dump_chunk(
    con: &mut redis::Connection,
    db: i64,
    keys: &[Vec<u8>],
    cutoff: u64,
    field_ttls: bool,
    out: &mut Vec<Value>,
) {
    let exact = has_expire_time(con);
    // Phase 1: types and expiries.
    let mut cmds = Vec::with_capacity(keys.len() * 2);
    for k in keys {
        cmds.push(cmd(&[b"TYPE", k]));
        cmds.push(expire_time_cmd(k, exact));
    }
    let replies = run_pipeline(con, &cmds, false);
    let mut todo: Vec<(Vec<u8>, String)> = Vec::new();
    for (k, r) in keys.iter().zip(replies.chunks(2)) {
        let ty = text(&r[0]);
        let exp = int(&r[1]);
        if ty == "none" || expired(exp, cutoff) {
            continue;
        }
        todo.push((k.clone(), ty));
    }
    // Phase 2: values, in a transaction that checks TYPE and PEXPIRETIME
    // again; keys whose type changed meanwhile are read once more.
    for _attempt in 0..5 {
        if todo.is_empty() {
            return;
        }
        let mut cmds = Vec::new();
        let mut spans = Vec::new();
        for (k, ty) in &todo {
            let start = cmds.len();
            cmds.push(cmd(&[b"TYPE", k]));
            cmds.push(expire_time_cmd(k, exact));
            cmds.extend(value_cmds(k, ty));
            spans.push(start..cmds.len());
        }
        let replies = run_pipeline(con, &cmds, true);
        let mut again = Vec::new();
        let mut records = Vec::new();
        for ((k, ty), span) in todo.iter().zip(spans) {
            let r = &replies[span];
            let now_ty = text(&r[0]);
            let exp = int(&r[1]);
            if now_ty == "none" || expired(exp, cutoff) {
                continue;
            }
            if now_ty != *ty {
                again.push((k.clone(), now_ty));
                continue;
            }
            if let Some(e) = r.iter().find(|v| is_err(v)) {
                panic!(
                    "logical_state: reading {ty} key {:?} in db {db} failed: {e:?}",
                    encode_bytes(k)
                );
            }
            if let Some(rec) = record(db, k, ty, exp, &r[2..]) {
                records.push(rec);
            }
        }
        // Phase 3 (Redis 7.4+): hash-field TTLs.
        if field_ttls {
            add_field_ttls(con, &mut records, cutoff);
        }
        out.extend(records.into_iter().map(|(_, v)| v));
        todo = again;
    }
    if !todo.is_empty() {
        panic!(
            "logical_state: keys keep changing type while being read: {:?}",
            todo.iter()
                .map(|(k, _)| encode_bytes(k))
                .collect::<Vec<_>>()
        );
    }
}

fn expired(exp: i64, cutoff: u64) -> bool {
    exp >= 0 && (exp as u64) < cutoff
}

/// One key record; `None` when the key turned out to be empty (gone).
fn record(db: i64, key: &[u8], ty: &str, exp: i64, r: &[RV]) -> Option<(Vec<u8>, Value)> {
    let (ty_out, value, module_type) = match ty {
        "string" => {
            if matches!(r[0], RV::Nil) {
                return None;
            }
            ("string", Value::String(encode_bytes(&bytes(&r[0]))), None)
        }
        "list" => {
            let v: Vec<Value> = items(&r[0])
                .iter()
                .map(|e| Value::String(encode_bytes(&bytes(e))))
                .collect();
            if v.is_empty() {
                return None;
            }
            ("list", Value::Array(v), None)
        }
        "set" => {
            let mut m: Vec<Vec<u8>> = items(&r[0]).iter().map(bytes).collect();
            if m.is_empty() {
                return None;
            }
            m.sort();
            let v = m.iter().map(|e| Value::String(encode_bytes(e))).collect();
            ("set", Value::Array(v), None)
        }
        "zset" => {
            let mut p = pairs(&r[0]);
            if p.is_empty() {
                return None;
            }
            p.sort();
            let v = p
                .iter()
                .map(|(m, s)| {
                    let score = parse_score(&String::from_utf8_lossy(s));
                    json!([encode_bytes(m), format_score(score)])
                })
                .collect();
            ("zset", Value::Array(v), None)
        }
        "hash" => {
            let mut p = pairs(&r[0]);
            if p.is_empty() {
                return None;
            }
            p.sort();
            let v = p
                .iter()
                .map(|(f, x)| json!([encode_bytes(f), encode_bytes(x)]))
                .collect();
            ("hash", Value::Array(v), None)
        }
        "stream" => ("stream", stream_value(&r[0], &r[1]), None),
        other => ("module", Value::Null, Some(other.to_string())),
    };
    let mut rec = json!({
        "db": db,
        "key": encode_bytes(key),
        "type": ty_out,
        "expire_ms": exp,
        "value": value,
    });
    if let Some(mt) = module_type {
        rec["module_type"] = Value::String(mt);
    }
    Some((key.to_vec(), rec))
}

fn stream_value(range: &RV, full: &RV) -> Value {
    let entries: Vec<Value> = items(range)
        .iter()
        .map(|e| {
            let e = items(e);
            let fields: Vec<Value> = pairs(&e[1])
                .iter()
                .map(|(f, v)| json!([encode_bytes(f), encode_bytes(v)]))
                .collect();
            json!([encode_bytes(&bytes(&e[0])), fields])
        })
        .collect();
    let info = as_map(full);
    let get_id = |name: &str| -> Value {
        match info.get(name) {
            Some(v) if !matches!(v, RV::Nil) => Value::String(encode_bytes(&bytes(v))),
            _ => Value::Null,
        }
    };
    let entries_added = match info.get("entries-added") {
        Some(v) if !matches!(v, RV::Nil) => json!(int(v)),
        _ => Value::Null,
    };
    let mut groups: Vec<(Vec<u8>, Value)> = info
        .get("groups")
        .map(items)
        .unwrap_or(&[])
        .iter()
        .map(|g| {
            let g = as_map(g);
            let name = g.get("name").map(bytes).unwrap_or_default();
            let last = g.get("last-delivered-id").map(bytes).unwrap_or_default();
            let entries_read = match g.get("entries-read") {
                Some(v) if !matches!(v, RV::Nil) => json!(int(v)),
                _ => Value::Null,
            };
            // Each PEL entry: [id, consumer, delivery-time, delivery-count].
            let mut pending: Vec<(Vec<u8>, Vec<u8>, i64)> = g
                .get("pending")
                .map(items)
                .unwrap_or(&[])
                .iter()
                .map(|p| {
                    let p = items(p);
                    (bytes(&p[0]), bytes(&p[1]), int(&p[3]))
                })
                .collect();
            pending.sort_by_key(|(id, _, _)| id_key(id));
            let mut consumers: Vec<Vec<u8>> = g
                .get("consumers")
                .map(items)
                .unwrap_or(&[])
                .iter()
                .map(|c| as_map(c).get("name").map(bytes).unwrap_or_default())
                .collect();
            consumers.sort();
            let v = json!({
                "name": encode_bytes(&name),
                "last_delivered_id": encode_bytes(&last),
                "entries_read": entries_read,
                "pending": pending
                    .iter()
                    .map(|(id, c, n)| json!([encode_bytes(id), encode_bytes(c), n]))
                    .collect::<Vec<_>>(),
                "consumers": consumers.iter().map(|c| encode_bytes(c)).collect::<Vec<_>>(),
            });
            (name, v)
        })
        .collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "entries": entries,
        "last_id": get_id("last-generated-id"),
        "entries_added": entries_added,
        "max_deleted_id": get_id("max-deleted-entry-id"),
        "groups": groups.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    })
}

/// Adds `field_expire_ms` to the hash records (`HPEXPIRETIME key FIELDS n
/// ...`); drops fields that are gone or expire before `cutoff`, and hashes
/// left empty by that.
fn add_field_ttls(con: &mut redis::Connection, records: &mut Vec<(Vec<u8>, Value)>, cutoff: u64) {
    let hashes: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].1["type"] == "hash")
        .collect();
    if hashes.is_empty() {
        return;
    }
    let mut cmds = Vec::new();
    for &i in &hashes {
        let (key, rec) = &records[i];
        let fields: Vec<Vec<u8>> = rec["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| decode_bytes(p[0].as_str().unwrap()))
            .collect();
        let mut c = redis::cmd("HPEXPIRETIME");
        c.arg(key.as_slice())
            .arg("FIELDS")
            .arg(fields.len())
            .arg(&fields);
        cmds.push(c);
    }
    let replies = run_pipeline(con, &cmds, false);
    let mut drop_records = Vec::new();
    for (&i, reply) in hashes.iter().zip(&replies) {
        if is_err(reply) {
            panic!("logical_state: HPEXPIRETIME failed: {reply:?}");
        }
        let ttls: Vec<i64> = items(reply).iter().map(int).collect();
        let rec = &mut records[i].1;
        let pairs = rec["value"].as_array().unwrap().clone();
        let mut kept = Vec::new();
        let mut fexp = Vec::new();
        for (p, t) in pairs.into_iter().zip(ttls) {
            if t == -2 || expired(t, cutoff) {
                continue;
            }
            if t >= 0 {
                fexp.push(json!([p[0].clone(), t]));
            }
            kept.push(p);
        }
        if kept.is_empty() {
            drop_records.push(i);
            continue;
        }
        rec["value"] = Value::Array(kept);
        if !fexp.is_empty() {
            rec["field_expire_ms"] = Value::Array(fexp);
        }
    }
    for i in drop_records.into_iter().rev() {
        records.remove(i);
    }
}

/// A key of a state by its database and name.
fn key_id(k: &Value) -> (String, String) {
    (k["db"].to_string(), k["key"].to_string())
}

/// `got` with each key's expiry replaced by `want`'s where the two differ by at most
/// `slack_ms` (and so are taken as equal). For sources whose TTLs are only known to within the
/// replication delay (Redis 6 sends relative TTLs).
pub fn align_expiries(want: &Value, got: &Value, slack_ms: i64) -> Value {
    let mut out = got.clone();
    let wanted: HashMap<(String, String), i64> = want["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| (key_id(k), k["expire_ms"].as_i64().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(keys) = out.get_mut("keys").and_then(Value::as_array_mut) {
        for k in keys {
            let (Some(&w), Some(g)) = (wanted.get(&key_id(k)), k["expire_ms"].as_i64()) else {
                continue;
            };
            if w >= 0 && g >= 0 && (w - g).abs() <= slack_ms {
                k["expire_ms"] = json!(w);
            }
        }
    }
    out
}

/// `got` without the keys that `source` (a state taken on the master) has expiring before
/// `cutoff_ms` but within `slack_ms` of it. [`drop_expired`] takes them out of the expected
/// state, while a target that counted relative TTLs from a later moment (a server before 7.0
/// replicates `EXPIRE`, not `PEXPIREAT`) may still hold them at the cutoff.
pub fn drop_late_expiring(source: &Value, got: &Value, cutoff_ms: u64, slack_ms: i64) -> Value {
    let cutoff = cutoff_ms as i64;
    let late: std::collections::HashSet<(String, String)> = source["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| {
            let exp = k["expire_ms"].as_i64().unwrap_or(-1);
            exp >= 0 && exp < cutoff && exp >= cutoff - slack_ms
        })
        .map(key_id)
        .collect();
    let mut out = got.clone();
    if let Some(keys) = out.get_mut("keys").and_then(Value::as_array_mut) {
        keys.retain(|k| !late.contains(&key_id(k)));
    }
    out
}

/// `state` without the stream metadata Redis 7.0 added (`entries_added`, `max_deleted_id`,
/// the groups' `entries_read`), to compare a Redis 6 source with a newer server.
pub fn without_stream_meta_of_7(state: &Value) -> Value {
    let mut out = state.clone();
    for k in out["keys"].as_array_mut().into_iter().flatten() {
        let Some(v) = k.get_mut("value").and_then(Value::as_object_mut) else {
            continue;
        };
        if !v.contains_key("groups") {
            continue;
        }
        v.insert("entries_added".into(), Value::Null);
        v.insert("max_deleted_id".into(), Value::Null);
        for g in v["groups"].as_array_mut().into_iter().flatten() {
            g["entries_read"] = Value::Null;
        }
    }
    out
}

/// `state` with the zset scores `-0.0` written `0.0`: Redis 6 keeps a negative zero score
/// (from `ZUNIONSTORE ... WEIGHTS -1`, say), Redis 7 stores it as 0.
pub fn without_negative_zero_scores(state: &Value) -> Value {
    let mut out = state.clone();
    for k in out["keys"].as_array_mut().into_iter().flatten() {
        if k["type"] != "zset" {
            continue;
        }
        for m in k["value"].as_array_mut().into_iter().flatten() {
            if m[1] == "-0.0" {
                m[1] = json!("0.0");
            }
        }
    }
    out
}

/// `state` with only the stream consumers that own pending entries. Neither Redis nor Valkey
/// replicates the creation of a consumer by a read that delivered nothing, so replicas (and
/// restores) lack those consumers.
pub fn without_idle_consumers(state: &Value) -> Value {
    let mut out = state.clone();
    for k in out["keys"].as_array_mut().into_iter().flatten() {
        let groups = k.get_mut("value").and_then(|v| v.get_mut("groups"));
        for g in groups.and_then(Value::as_array_mut).into_iter().flatten() {
            let owners: BTreeSet<String> = g["pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p[1].as_str().map(str::to_string))
                .collect();
            if let Some(c) = g["consumers"].as_array_mut() {
                c.retain(|c| c.as_str().is_some_and(|c| owners.contains(c)));
            }
        }
    }
    out
}

/// `state` without the keys whose `expire_ms` is before `before_ms` (and
/// without hash fields whose `field_expire_ms` is; a hash left empty goes).
/// Use it to compare states dumped at different moments: drop from both
/// everything that expires before a moment after both dumps.
pub fn drop_expired(state: &Value, before_ms: u64) -> Value {
    let mut out = state.clone();
    let cutoff = before_ms as i64;
    if let Some(keys) = out.get_mut("keys").and_then(Value::as_array_mut) {
        keys.retain_mut(|k| {
            let exp = k["expire_ms"].as_i64().unwrap_or(-1);
            if exp >= 0 && exp < cutoff {
                return false;
            }
            let Some(fexp) = k.get("field_expire_ms").and_then(Value::as_array).cloned() else {
                return true;
            };
            let gone: BTreeSet<String> = fexp
                .iter()
                .filter(|p| p[1].as_i64().unwrap_or(-1) < cutoff)
                .filter_map(|p| p[0].as_str().map(str::to_string))
                .collect();
            if gone.is_empty() {
                return true;
            }
            let keep = |p: &Value| !gone.contains(p[0].as_str().unwrap_or(""));
            let value: Vec<Value> = k["value"]
                .as_array()
                .map(|a| a.iter().filter(|p| keep(p)).cloned().collect())
                .unwrap_or_default();
            if value.is_empty() {
                return false;
            }
            let fexp: Vec<Value> = fexp.into_iter().filter(keep).collect();
            k["value"] = Value::Array(value);
            let obj = k.as_object_mut().unwrap();
            if fexp.is_empty() {
                obj.remove("field_expire_ms");
            } else {
                obj.insert("field_expire_ms".into(), Value::Array(fexp));
            }
            true
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Differences

/// How many differences [`diff`] describes.
const MAX_DIFFS: usize = 10;

/// `None` when `a == b`; otherwise a short description of the first
/// differences ("left" is `a`, "right" is `b`): which functions, which
/// databases and keys, which fields/members/entries, and what each side has.
pub fn diff(a: &Value, b: &Value) -> Option<String> {
    if a == b {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let shaped = |v: &Value| v.get("keys").is_some_and(Value::is_array);
    if !(shaped(a) && shaped(b)) {
        value_diff("$", a, b, &mut out);
        return Some(finish(out, String::new()));
    }
    // Functions.
    let funcs = |v: &Value| -> BTreeMap<String, Value> {
        v.get("functions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| (f["name"].as_str().unwrap_or("?").to_string(), f.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (fa, fb) = (funcs(a), funcs(b));
    for name in fa.keys().chain(fb.keys()).collect::<BTreeSet<_>>() {
        match (fa.get(name), fb.get(name)) {
            (Some(_), None) => out.push(format!("function library {name:?}: only in left")),
            (None, Some(_)) => out.push(format!("function library {name:?}: only in right")),
            (Some(x), Some(y)) if x != y => {
                value_diff(&format!("function library {name:?}"), x, y, &mut out)
            }
            _ => {}
        }
    }
    if a.get("functions") != b.get("functions") && fa == fb {
        value_diff("functions", &a["functions"], &b["functions"], &mut out);
    }
    // Keys.
    type KeyId = (i64, Vec<u8>);
    let keys = |v: &Value| -> BTreeMap<KeyId, Value> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let db = k["db"].as_i64().unwrap_or(-1);
                let key = decode_bytes(k["key"].as_str().unwrap_or(""));
                ((db, key), k.clone())
            })
            .collect()
    };
    let (ka, kb) = (keys(a), keys(b));
    let mut key_diffs = 0usize;
    for id in ka.keys().chain(kb.keys()).collect::<BTreeSet<_>>() {
        let where_ = format!("db {} key {:?}", id.0, encode_bytes(&id.1));
        match (ka.get(id), kb.get(id)) {
            (Some(x), None) => {
                key_diffs += 1;
                out.push(format!("{where_}: only in left ({})", summary(x)));
            }
            (None, Some(y)) => {
                key_diffs += 1;
                out.push(format!("{where_}: only in right ({})", summary(y)));
            }
            (Some(x), Some(y)) if x != y => {
                key_diffs += 1;
                if x["type"] != y["type"] {
                    out.push(format!(
                        "{where_}: left {}, right {}",
                        summary(x),
                        summary(y)
                    ));
                } else {
                    value_diff(&where_, x, y, &mut out);
                }
            }
            _ => {}
        }
    }
    if a["keys"] != b["keys"] && key_diffs == 0 {
        // Same records, different order or duplicates.
        value_diff("keys", &a["keys"], &b["keys"], &mut out);
    }
    let footer = format!(
        "\n({key_diffs} keys differ; left has {} keys and {} function libraries, right has {} and {})",
        ka.len(),
        fa.len(),
        kb.len(),
        fb.len()
    );
    Some(finish(out, footer))
}

fn finish(out: Vec<String>, footer: String) -> String {
    let n = out.len();
    let mut s: Vec<String> = out.into_iter().take(MAX_DIFFS).collect();
    if n > MAX_DIFFS {
        s.push(format!("... and {} more differences", n - MAX_DIFFS));
    }
    if s.is_empty() {
        s.push("the values differ".into());
    }
    s.join("\n") + &footer
}

/// `string, expire -1, value "..."`.
fn summary(k: &Value) -> String {
    format!(
        "{}, expire_ms {}, value {}",
        k["type"].as_str().unwrap_or("?"),
        k["expire_ms"],
        short(&k["value"])
    )
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    let desc = match v {
        Value::Array(a) => format!(" ({} items)", a.len()),
        _ => String::new(),
    };
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...{desc}")
    } else {
        format!("{s}{desc}")
    }
}

/// Arrays whose items are all `[text, ...]` with distinct texts (hash and
/// zset pairs, stream entries, PELs): keyed by that text.
fn keyed(a: &[Value]) -> Option<BTreeMap<String, &Value>> {
    let mut m = BTreeMap::new();
    for x in a {
        let k = x.as_array()?.first()?.as_str()?;
        if m.insert(k.to_string(), x).is_some() {
            return None;
        }
    }
    Some(m)
}

/// Arrays of objects with a distinct `"name"` (stream groups).
fn named(a: &[Value]) -> Option<BTreeMap<String, &Value>> {
    let mut m = BTreeMap::new();
    for x in a {
        let k = x.get("name")?.as_str()?;
        if m.insert(k.to_string(), x).is_some() {
            return None;
        }
    }
    Some(m)
}

fn value_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b || out.len() > MAX_DIFFS {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let names: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for n in names {
                match (x.get(n), y.get(n)) {
                    (Some(p), None) => out.push(format!("{path}.{n}: only in left: {}", short(p))),
                    (None, Some(q)) => out.push(format!("{path}.{n}: only in right: {}", short(q))),
                    (Some(p), Some(q)) => value_diff(&format!("{path}.{n}"), p, q, out),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let by_first = keyed(x).zip(keyed(y));
            let by_name = named(x).zip(named(y));
            if let Some((mx, my)) = by_first.or(by_name) {
                let only_l: Vec<&String> = mx.keys().filter(|k| !my.contains_key(*k)).collect();
                let only_r: Vec<&String> = my.keys().filter(|k| !mx.contains_key(*k)).collect();
                if !only_l.is_empty() {
                    out.push(format!(
                        "{path}: {} items only in left: {}",
                        only_l.len(),
                        list_head(&only_l)
                    ));
                }
                if !only_r.is_empty() {
                    out.push(format!(
                        "{path}: {} items only in right: {}",
                        only_r.len(),
                        list_head(&only_r)
                    ));
                }
                let before = out.len();
                for (k, p) in &mx {
                    if let Some(q) = my.get(k) {
                        value_diff(&format!("{path}[{k:?}]"), p, q, out);
                    }
                }
                if only_l.is_empty() && only_r.is_empty() && out.len() == before {
                    out.push(format!("{path}: same items in a different order"));
                }
                return;
            }
            if x.len() != y.len() {
                let lx: BTreeSet<String> = x.iter().map(Value::to_string).collect();
                let ly: BTreeSet<String> = y.iter().map(Value::to_string).collect();
                let only_l: Vec<&String> = lx.difference(&ly).collect();
                let only_r: Vec<&String> = ly.difference(&lx).collect();
                let first = x.iter().zip(y).position(|(p, q)| p != q);
                out.push(format!(
                    "{path}: left has {} items, right {}; first difference at index {}; only in left: {}; only in right: {}",
                    x.len(),
                    y.len(),
                    first.map_or("(none: one is a prefix)".to_string(), |i| i.to_string()),
                    list_head(&only_l),
                    list_head(&only_r)
                ));
                return;
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if p != q {
                    value_diff(&format!("{path}[{i}]"), p, q, out);
                    return;
                }
            }
        }
        _ => out.push(format!("{path}: left {}, right {}", short(a), short(b))),
    }
}

fn list_head<T: std::fmt::Display>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(5).map(|x| x.to_string()).collect();
    if items.len() > 5 {
        s.push(format!("... ({} in all)", items.len()));
    }
    let joined = format!("[{}]", s.join(", "));
    if joined.chars().count() > 300 {
        joined.chars().take(297).collect::<String>() + "..."
    } else {
        joined
    }
}
