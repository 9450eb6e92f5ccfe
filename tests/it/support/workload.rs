//! A seeded random write workload over every data type, for fidelity tests:
//! run it against a master that `pitr archive` follows, take
//! [`Checkpoint`]s, restore to each checkpoint's time and compare states.
//!
//! ```ignore
//! let mut w = Workload::new(42);
//! let mut con = master.client();
//! w.run_step(&mut con, 2000);
//! let cp = w.checkpoint(&mut con, &master); // WAIT 1 5000 must return 1
//! // ... later: restore to cp.time_ms and compare with cp.state
//! ```
//!
//! The commands sent depend only on the seed (never on replies), so two
//! workloads with the same seed send the same commands
//! ([`WorkloadStats::fingerprint`]), except that absolute times (`EXAT`,
//! `PXAT`, `EXPIREAT`, `PEXPIREAT`) are "now + offset". Error replies
//! (WRONGTYPE and the like, which random commands provoke) are counted in
//! [`WorkloadStats`], never fatal; a broken connection panics.
//!
//! What it does: strings (SET with EX/PX/EXAT/PXAT/NX/XX/KEEPTTL/GET,
//! APPEND, INCR*, INCRBYFLOAT, SETRANGE, MSET, GETDEL), bitmaps (SETBIT,
//! BITOP), HyperLogLogs (PFADD, PFMERGE; some dense), lists (pushes, pops,
//! LINSERT, LSET, LTRIM, LMOVE; some > 128 elements or with elements > 64
//! bytes), sets (intsets, > 512 integers, > 128 members; SADD, SREM, SPOP,
//! SMOVE, S*STORE), zsets (scores inf/-inf/1e300/5e-324/fractions, ZINCRBY,
//! ZREM, ZPOPMIN, ZUNIONSTORE, big ones), hashes (HSET, HDEL, HINCRBY*,
//! big ones), GEOADD, streams (XADD with explicit, `ms-*` and `*` ids,
//! MAXLEN, XDEL, XTRIM, XGROUP CREATE/CREATECONSUMER/SETID/DELCONSUMER,
//! XREADGROUP, XACK, XCLAIM, XAUTOCLAIM, XSETID), TTLs (mostly days away; some
//! 0.3-2.5 s away, so keys expire during a run), databases 0-3 (SELECT,
//! MOVE, COPY ... DB, SWAPDB, rarely FLUSHDB), MULTI/EXEC, EVAL, FUNCTION
//! LOAD REPLACE + FCALL, RENAME, COPY, DEL.
//!
//! Redis 7.0 replicates some stream reads only partly, so that a master's
//! state would differ from any replica's (and from a restore); the workload
//! avoids them: no history reads (`XREADGROUP ... 0` creates the consumer
//! and bumps delivery counts on the master only), and every `XREADGROUP`
//! without NOACK is followed by `XGROUP SETID key group $` (the read is
//! replicated as `XCLAIM ... LASTID`, which leaves the replica's
//! `entries_read` as it was while the master's changes).
//!
//! Key space: about 20 keys per kind (`str:N`, `list:N`, `xs:N`, ...) and
//! a few binary names per database, so at most a few hundred keys per db.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{ConnectionLike, Value as RV};
use serde_json::Value;

use super::redis_server::RedisServer;
use super::state::logical_state;

/// Databases the workload writes: 0..DBS.
const DBS: i64 = 4;
/// Keys per kind (per database).
const KEYS_PER_KIND: u32 = 20;
/// Keys per stream kind (fewer, so that groups meet reads).
const STREAM_KEYS: u32 = 8;

/// A consistent point of a workload run.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Unix milliseconds: every write of the workload before the checkpoint
    /// had reached a replica (the archiver) at or before this moment, and
    /// none was sent after it (until the next `run_step`).
    pub time_ms: u64,
    /// `logical_state(master, time_ms)`, dumped right after `time_ms`.
    /// Keys with a short TTL that expire while it is being dumped (after
    /// `time_ms`) may be missing: compare with
    /// [`drop_expired`](super::state::drop_expired) at a later cutoff.
    pub state: Value,
}

/// What a workload has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Operations performed (the sum of `run_step`'s `ops`).
    pub ops: u64,
    /// Commands sent, including SELECT, MULTI and EXEC.
    pub commands: u64,
    /// Error replies (tolerated: WRONGTYPE, index out of range, ...).
    pub errors: u64,
    /// Operations by name (operations inside a MULTI/EXEC are counted too).
    pub by_op: BTreeMap<&'static str, u64>,
    /// Errors by `"<op>: <code> <message with digits as #>"`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// FNV-1a hash of every command sent (absolute times by their offset
    /// from now): equal for two runs with the same seed.
    pub fingerprint: u64,
}

/// The seeded workload (see the module docs).
pub struct Workload {
    seed: u64,
    rng: StdRng,
    /// Database selected on the connection.
    db: i64,
    /// Next explicit stream id's milliseconds part.
    xid: u64,
    /// Version of the function library `wl` (FUNCTION LOAD REPLACE).
    lib_version: u64,
    started: bool,
    /// The server has hash field TTLs (HPEXPIRE): `HFieldTtl` ops use them, else plain HSETs.
    field_ttls: bool,
    /// The server has functions (7.0+): else `FCall` and `FunctionLoad` ops are EVALs.
    functions: bool,
    /// The server has HSETEX and HGETEX (Redis 8, Valkey 9; not Redis 7.4).
    hsetex: bool,
    library_loaded: bool,
    stats: WorkloadStats,
}

/// One argument; absolute times are resolved when the command is sent.
#[derive(Clone, Debug)]
enum Arg {
    Bytes(Vec<u8>),
    /// Unix seconds now + n.
    SecsFromNow(u64),
    /// Unix milliseconds now + n.
    MsFromNow(u64),
}

/// A command under construction.
#[derive(Clone, Debug)]
struct C(Vec<Arg>);

impl C {
    fn new(name: &str) -> C {
        C(vec![Arg::Bytes(name.as_bytes().to_vec())])
    }
    fn a(mut self, x: impl AsRef<[u8]>) -> C {
        self.0.push(Arg::Bytes(x.as_ref().to_vec()));
        self
    }
    fn n(self, x: impl ToString) -> C {
        self.a(x.to_string())
    }
    fn secs_from_now(mut self, n: u64) -> C {
        self.0.push(Arg::SecsFromNow(n));
        self
    }
    fn ms_from_now(mut self, n: u64) -> C {
        self.0.push(Arg::MsFromNow(n));
        self
    }
}

/// One operation: a few commands, maybe in MULTI/EXEC.
struct Op {
    name: &'static str,
    cmds: Vec<C>,
    multi: bool,
    /// Inner operation names of a MULTI/EXEC.
    inner: Vec<&'static str>,
    /// The database this op leaves selected (SELECT).
    select: Option<i64>,
}

impl Op {
    fn one(name: &'static str, c: C) -> Op {
        Op::many(name, vec![c])
    }
    fn many(name: &'static str, cmds: Vec<C>) -> Op {
        Op {
            name,
            cmds,
            multi: false,
            inner: Vec::new(),
            select: None,
        }
    }
}

/// Operation kinds and their weights (per mille).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Set,
    Append,
    Incr,
    IncrByFloat,
    SetRange,
    MsetGetdel,
    SetBit,
    BitOp,
    PfAdd,
    PfMerge,
    Push,
    Pop,
    LInsert,
    LSet,
    LTrim,
    LMove,
    BigList,
    SAdd,
    SRem,
    SPop,
    SMove,
    SStore,
    BigSet,
    ZAdd,
    ZIncrBy,
    ZRem,
    ZPopMin,
    ZStore,
    BigZset,
    HSet,
    HDel,
    HIncr,
    HFieldTtl,
    BigHash,
    GeoAdd,
    XAdd,
    XDel,
    XTrim,
    XGroup,
    XReadGroup,
    XAck,
    XClaim,
    XSetId,
    Expire,
    ShortTtl,
    Persist,
    Select,
    Multi,
    Eval,
    FCall,
    FunctionLoad,
    Rename,
    Copy,
    Move,
    SwapDb,
    FlushDb,
    Del,
}

const TABLE: &[(u32, K)] = &[
    (60, K::Set),
    (15, K::Append),
    (25, K::Incr),
    (12, K::IncrByFloat),
    (8, K::SetRange),
    (8, K::MsetGetdel),
    (15, K::SetBit),
    (6, K::BitOp),
    (15, K::PfAdd),
    (4, K::PfMerge),
    (40, K::Push),
    (12, K::Pop),
    (8, K::LInsert),
    (8, K::LSet),
    (8, K::LTrim),
    (5, K::LMove),
    (4, K::BigList),
    (35, K::SAdd),
    (10, K::SRem),
    (8, K::SPop),
    (8, K::SMove),
    (8, K::SStore),
    (4, K::BigSet),
    (40, K::ZAdd),
    (12, K::ZIncrBy),
    (10, K::ZRem),
    (8, K::ZPopMin),
    (6, K::ZStore),
    (3, K::BigZset),
    (40, K::HSet),
    (10, K::HDel),
    (15, K::HIncr),
    (20, K::HFieldTtl),
    (3, K::BigHash),
    (10, K::GeoAdd),
    (45, K::XAdd),
    (8, K::XDel),
    (4, K::XTrim),
    (15, K::XGroup),
    (20, K::XReadGroup),
    (10, K::XAck),
    (10, K::XClaim),
    (3, K::XSetId),
    (25, K::Expire),
    (12, K::ShortTtl),
    (8, K::Persist),
    (30, K::Select),
    (20, K::Multi),
    (12, K::Eval),
    (15, K::FCall),
    (2, K::FunctionLoad),
    (12, K::Rename),
    (10, K::Copy),
    (8, K::Move),
    (1, K::SwapDb),
    (1, K::FlushDb),
    (15, K::Del),
];

/// Key kinds (name prefixes).
const KINDS: &[&str] = &[
    "str", "cnt", "flt", "bit", "hll", "list", "set", "iset", "zset", "hash", "geo", "xs", "xa",
];

const EVAL_SCRIPT: &str = "local n = redis.call('INCRBY', KEYS[1], ARGV[1])\n\
redis.call('HSET', KEYS[2], 'last', ARGV[2], 'n', n)\n\
redis.call('RPUSH', KEYS[3], ARGV[2])\n\
return n\n";

fn library_code(version: u64) -> String {
    format!(
        "#!lua name=wl\n\
-- workload library version {version}\n\
redis.register_function('wl_set', function(keys, args)\n\
  redis.call('SET', keys[1], args[1])\n\
  return redis.call('INCR', keys[2])\n\
end)\n\
redis.register_function('wl_push', function(keys, args)\n\
  return redis.call('LPUSH', keys[1], args[1], '{version}')\n\
end)\n\
redis.register_function{{function_name='wl_get', flags={{'no-writes'}},\n\
  callback=function(keys, args) return redis.call('GET', keys[1]) end}}\n"
    )
}

const LIBRARY2: &str = "#!lua name=wl_two\n\
redis.register_function('wl_two_hset', function(keys, args)\n\
  return redis.call('HSET', keys[1], args[1], args[2])\n\
end)\n";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as u64
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// `"<op>: <code> <message with digits as #>"`.
fn error_kind(op: &str, e: &redis::RedisError) -> String {
    let detail: String = e
        .detail()
        .unwrap_or("")
        .chars()
        .take(60)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    format!("{op}: {} {detail}", e.code().unwrap_or("?"))
}

impl Workload {
    /// A workload whose commands are determined by `seed`.
    pub fn new(seed: u64) -> Workload {
        Workload {
            seed,
            rng: StdRng::seed_from_u64(seed),
            db: 0,
            xid: 1,
            lib_version: 1,
            started: false,
            field_ttls: false,
            functions: false,
            hsetex: false,
            library_loaded: false,
            stats: WorkloadStats {
                fingerprint: 0xcbf2_9ce4_8422_2325,
                ..WorkloadStats::default()
            },
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Counters so far.
    pub fn stats(&self) -> &WorkloadStats {
        &self.stats
    }

    /// The database the workload has selected on its connection.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// Performs `ops` random operations on `con` (first selecting the
    /// workload's current database; the first call also loads the function
    /// library). Error replies are counted, not fatal.
    pub fn run_step(&mut self, con: &mut redis::Connection, ops: usize) {
        let select = Op::one("select", C::new("SELECT").n(self.db));
        self.execute(con, &select, false);
        if !self.started {
            self.started = true;
            let mut has = |name: &str| {
                matches!(
                    con.req_command(redis::cmd("COMMAND").arg("INFO").arg(name)),
                    Ok(RV::Array(a)) if a.iter().any(|x| !matches!(x, RV::Nil))
                )
            };
            self.field_ttls = has("hpexpire");
            self.functions = has("fcall");
            self.hsetex = has("hsetex") && has("hgetex");
        }
        if self.functions && !self.library_loaded {
            self.library_loaded = true;
            let load = Op::one(
                "function_load",
                C::new("FUNCTION")
                    .a("LOAD")
                    .a("REPLACE")
                    .a(library_code(self.lib_version)),
            );
            self.execute(con, &load, false);
        }
        for _ in 0..ops {
            let op = self.gen_op();
            self.execute(con, &op, true);
            self.stats.ops += 1;
            if let Some(db) = op.select {
                self.db = db;
            }
        }
    }

    /// Stops (the workload is synchronous: nothing is in flight once
    /// `run_step` returned), issues `WAIT 1 5000` on the writing connection
    /// and requires 1 (an archiver or replica must be attached: panics
    /// otherwise), sleeps 2 ms, takes `time_ms` = now, dumps
    /// `logical_state(r, time_ms)` and sleeps 2 ms more.
    pub fn checkpoint(&mut self, con: &mut redis::Connection, r: &RedisServer) -> Checkpoint {
        let reply = con
            .req_command(redis::cmd("WAIT").arg(1).arg(5000))
            .unwrap_or_else(|e| panic!("checkpoint: WAIT 1 5000 failed: {e}"));
        self.stats.commands += 1;
        match reply {
            RV::Int(n) if n >= 1 => {}
            RV::Int(n) => panic!(
                "checkpoint: WAIT 1 5000 returned {n}: no replica acknowledged the workload's \
                 writes within 5 s (is `pitr archive` attached to the master on port {}, and \
                 does it acknowledge with REPLCONF ACK?)",
                r.port()
            ),
            other => panic!("checkpoint: WAIT 1 5000 replied {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(2));
        let time_ms = now_ms();
        let state = logical_state(r, time_ms);
        std::thread::sleep(Duration::from_millis(2));
        Checkpoint { time_ms, state }
    }

    // -----------------------------------------------------------------------
    // Sending

    fn execute(&mut self, con: &mut redis::Connection, op: &Op, count: bool) {
        if count {
            *self.stats.by_op.entry(op.name).or_default() += 1;
            for n in &op.inner {
                *self.stats.by_op.entry(n).or_default() += 1;
            }
        }
        let mut cmds: Vec<redis::Cmd> = Vec::new();
        let mut fp = self.stats.fingerprint;
        fnv(&mut fp, op.name.as_bytes());
        let now = now_ms();
        if op.multi {
            cmds.push(redis::cmd("MULTI"));
            fnv(&mut fp, b"MULTI");
        }
        for c in &op.cmds {
            let mut args = c.0.iter();
            let Some(Arg::Bytes(name)) = args.next() else {
                unreachable!("command without a name")
            };
            let mut cmd = redis::cmd(std::str::from_utf8(name).unwrap());
            fnv(&mut fp, name);
            for a in args {
                match a {
                    Arg::Bytes(b) => {
                        fnv(&mut fp, b);
                        cmd.arg(b.as_slice());
                    }
                    Arg::SecsFromNow(n) => {
                        fnv(&mut fp, format!("now_s+{n}").as_bytes());
                        cmd.arg(now / 1000 + n);
                    }
                    Arg::MsFromNow(n) => {
                        fnv(&mut fp, format!("now_ms+{n}").as_bytes());
                        cmd.arg(now + n);
                    }
                }
            }
            cmds.push(cmd);
        }
        if op.multi {
            cmds.push(redis::cmd("EXEC"));
            fnv(&mut fp, b"EXEC");
        }
        self.stats.fingerprint = fp;
        self.stats.commands += cmds.len() as u64;

        let mut p = redis::pipe();
        for c in cmds.iter() {
            p.add_command(c.clone());
        }
        let replies = con
            .req_packed_commands(&p.get_packed_pipeline(), 0, cmds.len())
            .unwrap_or_else(|e| panic!("workload: op {} failed: {e}", op.name));
        for r in &replies {
            self.count_errors(op.name, r);
        }
    }

    fn count_errors(&mut self, op: &'static str, r: &RV) {
        match r {
            RV::ServerError(e) => {
                self.stats.errors += 1;
                *self
                    .stats
                    .errors_by_kind
                    .entry(error_kind(op, &e.clone().into()))
                    .or_default() += 1;
            }
            // EXEC's reply: errors of the queued commands.
            RV::Array(items) if op == "multi" => {
                for i in items {
                    if let RV::ServerError(_) = i {
                        self.count_errors(op, i);
                    }
                }
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------
    // Generating

    fn pick(&mut self) -> K {
        let total: u32 = TABLE.iter().map(|(w, _)| w).sum();
        let mut x = self.rng.gen_range(0..total);
        for &(w, k) in TABLE {
            if x < w {
                return k;
            }
            x -= w;
        }
        unreachable!()
    }

    fn gen_op(&mut self) -> Op {
        let k = self.pick();
        if k == K::Multi {
            let n = self.rng.gen_range(2..=5);
            let mut cmds = Vec::new();
            let mut inner = Vec::new();
            while inner.len() < n {
                let k = self.pick();
                if matches!(
                    k,
                    K::Multi | K::Select | K::FlushDb | K::SwapDb | K::FunctionLoad
                ) {
                    continue;
                }
                let op = self.gen(k);
                inner.push(op.name);
                cmds.extend(op.cmds);
            }
            return Op {
                name: "multi",
                cmds,
                multi: true,
                inner,
                select: None,
            };
        }
        self.gen(k)
    }

    fn idx(&mut self) -> u32 {
        self.rng.gen_range(0..KEYS_PER_KIND)
    }

    fn key(&mut self, kind: &str) -> Vec<u8> {
        // A few binary key names for strings and hashes.
        if (kind == "str" || kind == "hash") && self.rng.gen_ratio(1, 25) {
            let i = self.rng.gen_range(0..3);
            let mut k = format!("{kind}:bin").into_bytes();
            k.extend_from_slice(b"\x00\r\n\xff:");
            k.extend_from_slice(i.to_string().as_bytes());
            return k;
        }
        let i = if kind.starts_with('x') {
            self.rng.gen_range(0..STREAM_KEYS)
        } else {
            self.idx()
        };
        format!("{kind}:{i}").into_bytes()
    }

    fn any_key(&mut self) -> Vec<u8> {
        let kind = KINDS[self.rng.gen_range(0..KINDS.len())];
        self.key(kind)
    }

    fn word(&mut self, min: usize, max: usize) -> Vec<u8> {
        let n = self.rng.gen_range(min..=max);
        (0..n).map(|_| self.rng.gen_range(b'a'..=b'z')).collect()
    }

    /// A value: mostly short words, some integers, binary bytes, empty, long.
    fn val(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..100) {
            0..=59 => self.word(1, 16),
            60..=74 => self.rng.gen_range(-100_000i64..100_000).to_string().into(),
            75..=84 => {
                let n = self.rng.gen_range(1..8);
                (0..n)
                    .map(|_| match self.rng.gen_range(0..6) {
                        0 => 0u8,
                        1 => b'\r',
                        2 => b'\n',
                        3 => 0xff,
                        _ => self.rng.gen(),
                    })
                    .collect()
            }
            85..=89 => Vec::new(),
            _ => self.word(65, 200),
        }
    }

    /// A list element: often from a small pool (so LINSERT finds pivots).
    fn elem(&mut self) -> Vec<u8> {
        if self.rng.gen_bool(0.5) {
            format!("v{}", self.rng.gen_range(0..30)).into_bytes()
        } else {
            self.val()
        }
    }

    fn member(&mut self) -> String {
        format!("m{}", self.rng.gen_range(0..200))
    }

    fn field(&mut self) -> Vec<u8> {
        if self.rng.gen_ratio(1, 30) {
            return b"f\x00\r\n\xff".to_vec();
        }
        format!("f{}", self.rng.gen_range(0..200)).into_bytes()
    }

    fn score(&mut self) -> String {
        match self.rng.gen_range(0..100) {
            0..=39 => self.rng.gen_range(-1000i64..1000).to_string(),
            40..=59 => format!("{}", f64::from(self.rng.gen_range(-800i32..800)) / 8.0),
            60..=79 => format!("{}", self.rng.gen_range(-1000.0f64..1000.0)),
            80..=82 => "inf".into(),
            83..=85 => "-inf".into(),
            86..=87 => "+inf".into(),
            88..=89 => "1e300".into(),
            90..=91 => "-1e-300".into(),
            92 => "5e-324".into(),
            93 => "9007199254740993".into(),
            94..=95 => "0.1".into(),
            _ => format!("{:e}", self.rng.gen_range(-1e20f64..1e20)),
        }
    }

    /// An explicit stream id above every earlier one.
    fn next_xid(&mut self) -> String {
        self.xid += self.rng.gen_range(1..4);
        format!("{}-{}", self.xid, self.rng.gen_range(0..3))
    }

    /// An id near the recent explicit ones (may or may not exist).
    fn recent_xid(&mut self) -> String {
        let back = self.rng.gen_range(0..40).min(self.xid);
        format!("{}-{}", self.xid - back, self.rng.gen_range(0..3))
    }

    fn stream_key(&mut self) -> Vec<u8> {
        if self.rng.gen_bool(0.6) {
            self.key("xs")
        } else {
            self.key("xa")
        }
    }

    fn group(&mut self) -> String {
        format!("g{}", self.rng.gen_range(0..2))
    }

    fn consumer(&mut self) -> String {
        format!("c{}", self.rng.gen_range(0..4))
    }

    fn other_db(&mut self) -> i64 {
        self.rng.gen_range(0..DBS)
    }

    fn gen(&mut self, k: K) -> Op {
        match k {
            K::Set => {
                let key = self.key("str");
                let v = self.val();
                let mut c = C::new("SET").a(key).a(v);
                match self.rng.gen_range(0..10) {
                    0 => c = c.a("EX").n(self.rng.gen_range(10_000..1_000_000)),
                    1 => {
                        c = c
                            .a("PX")
                            .n(self.rng.gen_range(10_000_000..1_000_000_000u64))
                    }
                    2 => {
                        c = c
                            .a("EXAT")
                            .secs_from_now(self.rng.gen_range(10_000..1_000_000))
                    }
                    3 => {
                        c = c
                            .a("PXAT")
                            .ms_from_now(self.rng.gen_range(10_000_000..1_000_000_000))
                    }
                    4 => c = c.a("PX").n(self.rng.gen_range(300..2500)),
                    5 => c = c.a("KEEPTTL"),
                    _ => {}
                }
                match self.rng.gen_range(0..8) {
                    0 => c = c.a("NX"),
                    1 => c = c.a("XX"),
                    _ => {}
                }
                if self.rng.gen_ratio(1, 5) {
                    c = c.a("GET");
                }
                Op::one("set", c)
            }
            K::Append => {
                let key = self.key("str");
                let v = self.val();
                Op::one("append", C::new("APPEND").a(key).a(v))
            }
            K::Incr => {
                let key = self.key("cnt");
                let c = match self.rng.gen_range(0..4) {
                    0 => C::new("INCR").a(key),
                    1 => C::new("DECR").a(key),
                    2 => C::new("INCRBY")
                        .a(key)
                        .n(self.rng.gen_range(-1_000_000i64..1_000_000)),
                    _ => C::new("DECRBY").a(key).n(self.rng.gen_range(0..1000)),
                };
                Op::one("incr", c)
            }
            K::IncrByFloat => {
                let key = self.key("flt");
                let by = match self.rng.gen_range(0..4) {
                    0 => "1.5".to_string(),
                    1 => "-0.25".to_string(),
                    2 => "3e2".to_string(),
                    _ => format!("{}", self.rng.gen_range(-100.0f64..100.0)),
                };
                Op::one("incrbyfloat", C::new("INCRBYFLOAT").a(key).a(by))
            }
            K::SetRange => {
                let key = self.key("str");
                let off = self.rng.gen_range(0..120);
                let v = self.val();
                Op::one("setrange", C::new("SETRANGE").a(key).n(off).a(v))
            }
            K::MsetGetdel => {
                if self.rng.gen_bool(0.5) {
                    let mut c = C::new("MSET");
                    for _ in 0..self.rng.gen_range(1..4) {
                        let k = self.key("str");
                        let v = self.val();
                        c = c.a(k).a(v);
                    }
                    Op::one("mset", c)
                } else {
                    let k = self.key("str");
                    Op::one("getdel", C::new("GETDEL").a(k))
                }
            }
            K::SetBit => {
                let key = self.key("bit");
                let off = self.rng.gen_range(0..4000);
                let b = self.rng.gen_range(0..2);
                Op::one("setbit", C::new("SETBIT").a(key).n(off).n(b))
            }
            K::BitOp => {
                let dest = self.key("bit");
                let a = self.key("bit");
                let b = self.key("bit");
                let c = match self.rng.gen_range(0..4) {
                    0 => C::new("BITOP").a("AND").a(dest).a(a).a(b),
                    1 => C::new("BITOP").a("OR").a(dest).a(a).a(b),
                    2 => C::new("BITOP").a("XOR").a(dest).a(a).a(b),
                    _ => C::new("BITOP").a("NOT").a(dest).a(a),
                };
                Op::one("bitop", c)
            }
            K::PfAdd => {
                let key = self.key("hll");
                let n = if self.rng.gen_ratio(1, 10) {
                    self.rng.gen_range(200..1500)
                } else {
                    self.rng.gen_range(1..10)
                };
                let mut c = C::new("PFADD").a(key);
                for _ in 0..n {
                    c = c.n(format!("e{}", self.rng.gen_range(0..100_000)));
                }
                Op::one("pfadd", c)
            }
            K::PfMerge => {
                let d = self.key("hll");
                let a = self.key("hll");
                let b = self.key("hll");
                Op::one("pfmerge", C::new("PFMERGE").a(d).a(a).a(b))
            }
            K::Push => {
                let key = self.key("list");
                let mut c = C::new(if self.rng.gen_bool(0.5) {
                    "RPUSH"
                } else {
                    "LPUSH"
                })
                .a(key);
                for _ in 0..self.rng.gen_range(1..5) {
                    let e = self.elem();
                    c = c.a(e);
                }
                Op::one("push", c)
            }
            K::Pop => {
                let key = self.key("list");
                let mut c = C::new(if self.rng.gen_bool(0.5) {
                    "LPOP"
                } else {
                    "RPOP"
                })
                .a(key);
                if self.rng.gen_bool(0.3) {
                    c = c.n(self.rng.gen_range(1..5));
                }
                Op::one("pop", c)
            }
            K::LInsert => {
                let key = self.key("list");
                let pivot = format!("v{}", self.rng.gen_range(0..30));
                let e = self.elem();
                let at = if self.rng.gen_bool(0.5) {
                    "BEFORE"
                } else {
                    "AFTER"
                };
                Op::one("linsert", C::new("LINSERT").a(key).a(at).a(pivot).a(e))
            }
            K::LSet => {
                let key = self.key("list");
                let i = self.rng.gen_range(-6..6);
                let e = self.elem();
                Op::one("lset", C::new("LSET").a(key).n(i).a(e))
            }
            K::LTrim => {
                let key = self.key("list");
                let start = self.rng.gen_range(0..3);
                let stop = self.rng.gen_range(20..250);
                Op::one("ltrim", C::new("LTRIM").a(key).n(start).n(stop))
            }
            K::LMove => {
                let a = self.key("list");
                let b = self.key("list");
                let from = if self.rng.gen_bool(0.5) {
                    "LEFT"
                } else {
                    "RIGHT"
                };
                let to = if self.rng.gen_bool(0.5) {
                    "LEFT"
                } else {
                    "RIGHT"
                };
                Op::one("lmove", C::new("LMOVE").a(a).a(b).a(from).a(to))
            }
            K::BigList => {
                let key = self.key("list");
                let mut c = C::new("RPUSH").a(key);
                if self.rng.gen_bool(0.5) {
                    for i in 0..self.rng.gen_range(130..200) {
                        c = c.n(format!("big{i}"));
                    }
                } else {
                    for _ in 0..3 {
                        let w = self.word(65, 300);
                        c = c.a(w);
                    }
                }
                Op::one("big_list", c)
            }
            K::SAdd => {
                let (key, ints) = if self.rng.gen_bool(0.5) {
                    (self.key("set"), false)
                } else {
                    (self.key("iset"), true)
                };
                let mut c = C::new("SADD").a(key);
                for _ in 0..self.rng.gen_range(1..6) {
                    if ints {
                        c = c.n(self.rng.gen_range(-40_000i64..40_000));
                    } else {
                        c = c.a(self.member());
                    }
                }
                Op::one("sadd", c)
            }
            K::SRem => {
                let key = if self.rng.gen_bool(0.5) {
                    self.key("set")
                } else {
                    self.key("iset")
                };
                let mut c = C::new("SREM").a(key);
                for _ in 0..self.rng.gen_range(1..4) {
                    c = c.a(self.member());
                }
                Op::one("srem", c)
            }
            K::SPop => {
                let key = if self.rng.gen_bool(0.5) {
                    self.key("set")
                } else {
                    self.key("iset")
                };
                let mut c = C::new("SPOP").a(key);
                if self.rng.gen_bool(0.5) {
                    c = c.n(self.rng.gen_range(1..4));
                }
                Op::one("spop", c)
            }
            K::SMove => {
                let a = self.key("set");
                let b = self.key("set");
                let m = self.member();
                Op::one("smove", C::new("SMOVE").a(a).a(b).a(m))
            }
            K::SStore => {
                let kind = if self.rng.gen_bool(0.5) {
                    "set"
                } else {
                    "iset"
                };
                let d = self.key(kind);
                let a = self.key(kind);
                let b = self.key(kind);
                let name = ["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"][self.rng.gen_range(0..3)];
                Op::one("sstore", C::new(name).a(d).a(a).a(b))
            }
            K::BigSet => {
                if self.rng.gen_bool(0.5) {
                    let key = self.key("iset");
                    let mut c = C::new("SADD").a(key);
                    for _ in 0..self.rng.gen_range(520..700) {
                        c = c.n(self.rng.gen_range(-1_000_000i64..1_000_000));
                    }
                    Op::one("big_set", c)
                } else {
                    let key = self.key("set");
                    let mut c = C::new("SADD").a(key);
                    for _ in 0..self.rng.gen_range(130..180) {
                        c = c.a(self.member());
                    }
                    if self.rng.gen_bool(0.3) {
                        let w = self.word(70, 100);
                        c = c.a(w);
                    }
                    Op::one("big_set", c)
                }
            }
            K::ZAdd => {
                let key = self.key("zset");
                let mut c = C::new("ZADD").a(key);
                match self.rng.gen_range(0..12) {
                    0 => c = c.a("NX"),
                    1 => c = c.a("XX"),
                    2 => c = c.a("GT"),
                    3 => c = c.a("LT"),
                    4 => c = c.a("CH"),
                    _ => {}
                }
                if self.rng.gen_ratio(1, 10) {
                    let s = self.score();
                    let m = self.member();
                    c = c.a("INCR").a(s).a(m);
                } else {
                    for _ in 0..self.rng.gen_range(1..5) {
                        let s = self.score();
                        let m = self.member();
                        c = c.a(s).a(m);
                    }
                }
                Op::one("zadd", c)
            }
            K::ZIncrBy => {
                let key = self.key("zset");
                let by = self.score();
                let m = self.member();
                Op::one("zincrby", C::new("ZINCRBY").a(key).a(by).a(m))
            }
            K::ZRem => {
                let key = self.key("zset");
                let mut c = C::new("ZREM").a(key);
                for _ in 0..self.rng.gen_range(1..4) {
                    c = c.a(self.member());
                }
                Op::one("zrem", c)
            }
            K::ZPopMin => {
                let key = self.key("zset");
                let name = if self.rng.gen_bool(0.6) {
                    "ZPOPMIN"
                } else {
                    "ZPOPMAX"
                };
                let mut c = C::new(name).a(key);
                if self.rng.gen_bool(0.5) {
                    c = c.n(self.rng.gen_range(1..4));
                }
                Op::one("zpopmin", c)
            }
            K::ZStore => {
                let d = self.key("zset");
                let a = self.key("zset");
                let b = self.key("zset");
                let mut c = C::new(if self.rng.gen_bool(0.6) {
                    "ZUNIONSTORE"
                } else {
                    "ZINTERSTORE"
                })
                .a(d)
                .n(2)
                .a(a)
                .a(b);
                if self.rng.gen_bool(0.5) {
                    c = c.a("WEIGHTS").n(self.rng.gen_range(-3..4)).a("0.5");
                }
                if self.rng.gen_bool(0.3) {
                    c = c
                        .a("AGGREGATE")
                        .a(["SUM", "MIN", "MAX"][self.rng.gen_range(0..3)]);
                }
                Op::one("zstore", c)
            }
            K::BigZset => {
                let key = self.key("zset");
                let mut c = C::new("ZADD").a(key);
                if self.rng.gen_bool(0.7) {
                    for i in 0..self.rng.gen_range(130..200) {
                        let s = self.score();
                        c = c.a(s).n(format!("bigm{i}"));
                    }
                } else {
                    let s = self.score();
                    let w = self.word(70, 120);
                    c = c.a(s).a(w);
                }
                Op::one("big_zset", c)
            }
            K::HSet => {
                let key = self.key("hash");
                let mut c = C::new(if self.rng.gen_ratio(1, 8) {
                    "HSETNX"
                } else {
                    "HSET"
                })
                .a(key);
                let n = if c.0[0].is_name(b"HSETNX") {
                    1
                } else {
                    self.rng.gen_range(1..5)
                };
                for _ in 0..n {
                    let f = self.field();
                    let v = self.val();
                    c = c.a(f).a(v);
                }
                Op::one("hset", c)
            }
            K::HFieldTtl if !self.field_ttls => self.gen(K::HSet),
            K::FCall | K::FunctionLoad if !self.functions => self.gen(K::Eval),
            K::HFieldTtl => {
                let key = self.key("hash");
                let f = |w: &mut Self| format!("f{}", w.rng.gen_range(0..10));
                let (f1, f2) = (f(self), f(self));
                let pick = match self.rng.gen_range(0..7) {
                    // Without HSETEX / HGETEX: HPEXPIRE instead.
                    0 | 4 if !self.hsetex => 1,
                    n => n,
                };
                let c = match pick {
                    0 => {
                        let (v1, v2) = (self.val(), self.val());
                        C::new("HSETEX")
                            .a(key)
                            .a("EX")
                            .n(self.rng.gen_range(1000..100_000))
                            .a("FIELDS")
                            .n(2)
                            .a(f1)
                            .a(v1)
                            .a(f2)
                            .a(v2)
                    }
                    // Short: some fields expire during the run.
                    1 => C::new("HPEXPIRE")
                        .a(key)
                        .n(self.rng.gen_range(300..2500))
                        .a("FIELDS")
                        .n(2)
                        .a(f1)
                        .a(f2),
                    2 => {
                        let mut c = C::new("HEXPIRE")
                            .a(key)
                            .n(self.rng.gen_range(1000..1_000_000));
                        if self.rng.gen_bool(0.3) {
                            c = c.a(["NX", "XX", "GT", "LT"][self.rng.gen_range(0..4)]);
                        }
                        c.a("FIELDS").n(1).a(f1)
                    }
                    3 => C::new("HPERSIST").a(key).a("FIELDS").n(1).a(f1),
                    4 => C::new("HGETEX")
                        .a(key)
                        .a("PX")
                        .n(self.rng.gen_range(10_000..10_000_000))
                        .a("FIELDS")
                        .n(1)
                        .a(f1),
                    5 => C::new("HPEXPIREAT")
                        .a(key)
                        .ms_from_now(self.rng.gen_range(10_000..100_000_000))
                        .a("FIELDS")
                        .n(1)
                        .a(f1),
                    _ => {
                        let v = self.val();
                        C::new("HSET").a(key).a(f1).a(v)
                    }
                };
                Op::one("hfield_ttl", c)
            }
            K::HDel => {
                let key = self.key("hash");
                let mut c = C::new("HDEL").a(key);
                for _ in 0..self.rng.gen_range(1..4) {
                    let f = self.field();
                    c = c.a(f);
                }
                Op::one("hdel", c)
            }
            K::HIncr => {
                let key = self.key("hash");
                let c = if self.rng.gen_bool(0.6) {
                    C::new("HINCRBY")
                        .a(key)
                        .n(format!("cnt{}", self.rng.gen_range(0..5)))
                        .n(self.rng.gen_range(-1000i64..1000))
                } else {
                    C::new("HINCRBYFLOAT")
                        .a(key)
                        .n(format!("flt{}", self.rng.gen_range(0..5)))
                        .n(format!("{}", self.rng.gen_range(-10.0f64..10.0)))
                };
                Op::one("hincr", c)
            }
            K::BigHash => {
                let key = self.key("hash");
                let mut c = C::new("HSET").a(key);
                if self.rng.gen_bool(0.6) {
                    for _ in 0..self.rng.gen_range(130..180) {
                        let f = self.field();
                        let v = self.word(1, 10);
                        c = c.a(f).a(v);
                    }
                } else {
                    let f = self.field();
                    let v = self.word(70, 200);
                    c = c.a(f).a(v);
                }
                Op::one("big_hash", c)
            }
            K::GeoAdd => {
                let key = self.key("geo");
                let mut c = C::new("GEOADD").a(key);
                for _ in 0..self.rng.gen_range(1..4) {
                    let lon = self.rng.gen_range(-180.0f64..180.0);
                    let lat = self.rng.gen_range(-85.0f64..85.0);
                    c = c
                        .n(format!("{lon:.6}"))
                        .n(format!("{lat:.6}"))
                        .n(format!("place{}", self.rng.gen_range(0..50)));
                }
                Op::one("geoadd", c)
            }
            K::XAdd => {
                let explicit = self.rng.gen_bool(0.6);
                let key = if explicit {
                    self.key("xs")
                } else {
                    self.key("xa")
                };
                let mut c = C::new("XADD").a(key);
                if !explicit && self.rng.gen_ratio(1, 10) {
                    c = c.a("NOMKSTREAM");
                }
                match self.rng.gen_range(0..6) {
                    0 => c = c.a("MAXLEN").n(self.rng.gen_range(5..60)),
                    1 => c = c.a("MAXLEN").a("~").n(self.rng.gen_range(5..200)),
                    2 => c = c.a("MAXLEN").a("=").n(self.rng.gen_range(20..100)),
                    _ => {}
                }
                if explicit {
                    if self.rng.gen_ratio(1, 5) {
                        self.xid += 1;
                        c = c.n(format!("{}-*", self.xid));
                    } else {
                        let id = self.next_xid();
                        c = c.a(id);
                    }
                } else {
                    c = c.a("*");
                }
                if self.rng.gen_bool(0.7) {
                    let v = self.val();
                    c = c.a("temp").n(self.rng.gen_range(-50..50)).a("where").a(v);
                } else {
                    for _ in 0..self.rng.gen_range(1..4) {
                        let f = self.word(1, 6);
                        let v = self.val();
                        c = c.a(f).a(v);
                    }
                }
                Op::one("xadd", c)
            }
            K::XDel => {
                let key = self.key("xs");
                let mut c = C::new("XDEL").a(key);
                for _ in 0..self.rng.gen_range(1..4) {
                    let id = self.recent_xid();
                    c = c.a(id);
                }
                Op::one("xdel", c)
            }
            K::XTrim => {
                let key = self.stream_key();
                let c = if self.rng.gen_bool(0.7) {
                    C::new("XTRIM")
                        .a(key)
                        .a("MAXLEN")
                        .n(self.rng.gen_range(10..80))
                } else {
                    let id = self.recent_xid();
                    C::new("XTRIM").a(key).a("MINID").a(id)
                };
                Op::one("xtrim", c)
            }
            K::XGroup => {
                let key = self.stream_key();
                let g = self.group();
                let c = match self.rng.gen_range(0..10) {
                    0..=4 => {
                        let start = match self.rng.gen_range(0..3) {
                            0 => "0".to_string(),
                            1 => "$".to_string(),
                            _ => self.recent_xid(),
                        };
                        let mut c = C::new("XGROUP").a("CREATE").a(key).a(g).a(start);
                        if self.rng.gen_bool(0.5) {
                            c = c.a("MKSTREAM");
                        }
                        if self.rng.gen_ratio(1, 5) {
                            c = c.a("ENTRIESREAD").n(self.rng.gen_range(0..5));
                        }
                        c
                    }
                    5..=7 => {
                        let cn = self.consumer();
                        C::new("XGROUP").a("CREATECONSUMER").a(key).a(g).a(cn)
                    }
                    8 => {
                        let id = if self.rng.gen_bool(0.5) {
                            "$".to_string()
                        } else {
                            self.recent_xid()
                        };
                        C::new("XGROUP").a("SETID").a(key).a(g).a(id)
                    }
                    _ => {
                        let cn = self.consumer();
                        C::new("XGROUP").a("DELCONSUMER").a(key).a(g).a(cn)
                    }
                };
                Op::one("xgroup", c)
            }
            K::XReadGroup => {
                // Only new entries (`>`): Redis 7.0 does not replicate what a
                // history read (`0`) does (it creates the consumer and bumps
                // delivery counts on the master only).
                let key = self.stream_key();
                let g = self.group();
                let cn = self.consumer();
                let noack = self.rng.gen_ratio(1, 5);
                let mut c = C::new("XREADGROUP")
                    .a("GROUP")
                    .a(&g)
                    .a(cn)
                    .a("COUNT")
                    .n(self.rng.gen_range(1..6));
                if noack {
                    c = c.a("NOACK");
                }
                let c = c.a("STREAMS").a(&key).a(">");
                let mut cmds = Vec::new();
                if self.rng.gen_bool(0.5) {
                    // Often the group does not exist yet (BUSYGROUP if it does).
                    cmds.push(C::new("XGROUP").a("CREATE").a(&key).a(&g).a("0"));
                }
                cmds.push(c);
                if !noack {
                    // Redis 7.0 replicates this read as XCLAIM ... LASTID, which
                    // leaves the replica's entries_read as it was while the
                    // master's changes: SETID makes both "unknown" again. (A
                    // NOACK read is replicated as XGROUP SETID ... ENTRIESREAD.)
                    cmds.push(C::new("XGROUP").a("SETID").a(key).a(g).a("$"));
                }
                Op::many("xreadgroup", cmds)
            }
            K::XAck => {
                let key = self.key("xs");
                let g = self.group();
                let mut c = C::new("XACK").a(key).a(g);
                for _ in 0..self.rng.gen_range(1..4) {
                    let id = self.recent_xid();
                    c = c.a(id);
                }
                Op::one("xack", c)
            }
            K::XClaim => {
                let g = self.group();
                let cn = self.consumer();
                if self.rng.gen_bool(0.6) {
                    let key = self.key("xs");
                    let mut c = C::new("XCLAIM").a(key).a(g).a(cn).n(0);
                    for _ in 0..self.rng.gen_range(1..4) {
                        let id = self.recent_xid();
                        c = c.a(id);
                    }
                    if self.rng.gen_ratio(1, 3) {
                        c = c.a("RETRYCOUNT").n(self.rng.gen_range(1..10));
                    }
                    if self.rng.gen_ratio(1, 4) {
                        c = c.a("JUSTID");
                    }
                    Op::one("xclaim", c)
                } else {
                    let key = self.stream_key();
                    let mut c = C::new("XAUTOCLAIM")
                        .a(key)
                        .a(g)
                        .a(cn)
                        .n(0)
                        .a("0-0")
                        .a("COUNT")
                        .n(self.rng.gen_range(1..5));
                    if self.rng.gen_ratio(1, 4) {
                        c = c.a("JUSTID");
                    }
                    Op::one("xautoclaim", c)
                }
            }
            K::XSetId => {
                let key = self.key("xs");
                self.xid += 5;
                let mut c = C::new("XSETID").a(key).n(format!("{}-0", self.xid));
                if self.rng.gen_bool(0.5) {
                    c = c
                        .a("ENTRIESADDED")
                        .n(100_000 + self.xid)
                        .a("MAXDELETEDID")
                        .n(format!("{}-0", self.xid - 1));
                }
                self.xid += 1;
                Op::one("xsetid", c)
            }
            K::Expire => {
                let key = self.any_key();
                let c = match self.rng.gen_range(0..5) {
                    0 => C::new("EXPIRE")
                        .a(key)
                        .n(self.rng.gen_range(10_000..1_000_000)),
                    1 => C::new("PEXPIRE")
                        .a(key)
                        .n(self.rng.gen_range(10_000_000u64..1_000_000_000)),
                    2 => C::new("EXPIREAT")
                        .a(key)
                        .secs_from_now(self.rng.gen_range(10_000..1_000_000)),
                    3 => C::new("PEXPIREAT")
                        .a(key)
                        .ms_from_now(self.rng.gen_range(10_000_000..1_000_000_000)),
                    _ => {
                        let opt = ["NX", "XX", "GT", "LT"][self.rng.gen_range(0..4)];
                        C::new("EXPIRE")
                            .a(key)
                            .n(self.rng.gen_range(10_000..1_000_000))
                            .a(opt)
                    }
                };
                Op::one("expire", c)
            }
            K::ShortTtl => {
                let key = self.any_key();
                Op::one(
                    "short_ttl",
                    C::new("PEXPIRE").a(key).n(self.rng.gen_range(300..2500)),
                )
            }
            K::Persist => {
                let key = self.any_key();
                Op::one("persist", C::new("PERSIST").a(key))
            }
            K::Select => {
                let db = self.other_db();
                let mut op = Op::one("select", C::new("SELECT").n(db));
                op.select = Some(db);
                op
            }
            K::Multi => unreachable!("handled by gen_op"),
            K::Eval => {
                let a = self.key("cnt");
                let b = self.key("hash");
                let l = self.key("list");
                let v = self.elem();
                Op::one(
                    "eval",
                    C::new("EVAL")
                        .a(EVAL_SCRIPT)
                        .n(3)
                        .a(a)
                        .a(b)
                        .a(l)
                        .n(self.rng.gen_range(-10..10))
                        .a(v),
                )
            }
            K::FCall => {
                let c = match self.rng.gen_range(0..4) {
                    0 | 1 => {
                        let s = self.key("str");
                        let n = self.key("cnt");
                        let v = self.val();
                        C::new("FCALL").a("wl_set").n(2).a(s).a(n).a(v)
                    }
                    2 => {
                        let l = self.key("list");
                        let v = self.elem();
                        C::new("FCALL").a("wl_push").n(1).a(l).a(v)
                    }
                    _ => {
                        let h = self.key("hash");
                        let f = self.field();
                        let v = self.val();
                        C::new("FCALL").a("wl_two_hset").n(1).a(h).a(f).a(v)
                    }
                };
                Op::one("fcall", c)
            }
            K::FunctionLoad => {
                let c = match self.rng.gen_range(0..4) {
                    0 | 1 => {
                        self.lib_version += 1;
                        C::new("FUNCTION")
                            .a("LOAD")
                            .a("REPLACE")
                            .a(library_code(self.lib_version))
                    }
                    2 => C::new("FUNCTION").a("LOAD").a(LIBRARY2),
                    _ => C::new("FUNCTION").a("DELETE").a("wl_two"),
                };
                Op::one("function_load", c)
            }
            K::Rename => {
                let kind = KINDS[self.rng.gen_range(0..KINDS.len())];
                let a = self.key(kind);
                let b = self.key(kind);
                let name = if self.rng.gen_ratio(1, 4) {
                    "RENAMENX"
                } else {
                    "RENAME"
                };
                Op::one("rename", C::new(name).a(a).a(b))
            }
            K::Copy => {
                let kind = KINDS[self.rng.gen_range(0..KINDS.len())];
                let a = self.key(kind);
                let b = self.key(kind);
                let mut c = C::new("COPY").a(a).a(b);
                if self.rng.gen_bool(0.4) {
                    c = c.a("DB").n(self.other_db());
                }
                if self.rng.gen_bool(0.5) {
                    c = c.a("REPLACE");
                }
                Op::one("copy", c)
            }
            K::Move => {
                let key = self.any_key();
                let db = self.other_db();
                Op::one("move", C::new("MOVE").a(key).n(db))
            }
            K::SwapDb => {
                let a = self.other_db();
                let b = self.other_db();
                Op::one("swapdb", C::new("SWAPDB").n(a).n(b))
            }
            K::FlushDb => Op::one("flushdb", C::new("FLUSHDB")),
            K::Del => {
                let mut c = C::new(if self.rng.gen_bool(0.5) {
                    "DEL"
                } else {
                    "UNLINK"
                });
                for _ in 0..self.rng.gen_range(1..3) {
                    let k = self.any_key();
                    c = c.a(k);
                }
                Op::one("del", c)
            }
        }
    }
}

impl Arg {
    fn is_name(&self, name: &[u8]) -> bool {
        matches!(self, Arg::Bytes(b) if b == name)
    }
}
