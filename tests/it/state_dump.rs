//! The logical-state dumper (`crate::support::state`) and the random workload
//! (`crate::support::workload`) against real `redis-server` processes:
//! - every RDB fixture that the installed server loads dumps exactly as its
//!   `.json` (so the dumper writes the fixture format);
//! - a hand-made data set dumps as expected (binary names, expiry cutoff,
//!   streams with groups, PEL and consumers, functions);
//! - the workload, with a real replica attached, reaches checkpoints whose
//!   state equals the replica's; and it is deterministic for a seed.

use std::path::{Path, PathBuf};

use crate::support::archiving::now_ms;
use crate::support::state::{
    decode_bytes, diff, drop_expired, encode_bytes, format_score, logical_state, parse_score,
};
use crate::support::workload::Workload;
use crate::support::*;
use serde_json::{json, Value};

/// `tests/fixtures/rdb/`, or `/work/shared/fixtures/rdb/` when the copy is
/// not there.
fn fixture_dir() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb");
    if local.join("README.md").exists() {
        return local;
    }
    let shared = PathBuf::from("/work/shared/fixtures/rdb");
    assert!(
        shared.join("README.md").exists(),
        "RDB fixtures not found in {} nor {}",
        local.display(),
        shared.display()
    );
    shared
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The part of a fixture `.json` a dump must equal.
fn expected_state(fixture: &Value) -> Value {
    json!({"functions": fixture["functions"], "keys": fixture["keys"]})
}

/// Stops `r`, puts `rdb` in place of its `dump.rdb` and starts it again.
fn load_rdb(r: &RedisServer, rdb: &Path) {
    r.stop();
    std::fs::copy(rdb, r.rdb_path())
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", rdb.display(), r.rdb_path().display()));
    r.start_again();
}

fn assert_same(name: &str, want: &Value, got: &Value) {
    if let Some(d) = diff(want, got) {
        panic!("{name}: dump differs from the expected state (left: expected, right: dump)\n{d}");
    }
}

// ---------------------------------------------------------------------------
// Formatting

#[test]
fn scores_like_python_repr() {
    let cases: &[(f64, &str)] = &[
        (1.5, "1.5"),
        (3.0, "3.0"),
        (-0.25, "-0.25"),
        (0.1, "0.1"),
        (1e300, "1e+300"),
        (-1e-300, "-1e-300"),
        (5e-324, "5e-324"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (-1.0, "-1.0"),
        (1.0 / 3.0, "0.3333333333333333"),
        (9007199254740992.0, "9007199254740992.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (1234567890123456.7, "1234567890123456.8"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (0.00001, "1e-05"),
        (2.5e-8, "2.5e-08"),
        (123.456, "123.456"),
        (1e22, "1e+22"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (861.8890926815659, "861.8890926815659"),
        (0.3827902115216698, "0.3827902115216698"),
        (1564257320685416.0, "1564257320685416.0"),
    ];
    for (f, want) in cases {
        assert_eq!(format_score(*f), *want, "format_score({f:e})");
        if f.is_finite() {
            let back: f64 = want.parse().unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{want} reads back");
        }
    }
}

#[test]
fn parses_scores_as_servers_write_them() {
    assert_eq!(parse_score("inf"), f64::INFINITY);
    assert_eq!(parse_score("-inf"), f64::NEG_INFINITY);
    for (server, want) in [
        ("4.9406564584124654e-324", "5e-324"),
        ("1.0000000000000001e+300", "1e+300"),
        ("0.10000000000000001", "0.1"),
        ("3", "3.0"),
        ("-2.25", "-2.25"),
        ("9007199254740992", "9007199254740992.0"),
    ] {
        assert_eq!(format_score(parse_score(server)), want, "{server}");
    }
}

#[test]
fn bytes_as_text_round_trip() {
    let b = b"a\\b\x00\r\n\xff \x7e\x7f\"";
    let e = encode_bytes(b);
    assert_eq!(e, "a\\\\b\\x00\\x0d\\x0a\\xff ~\\x7f\"");
    assert_eq!(decode_bytes(&e), b.to_vec());
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(decode_bytes(&encode_bytes(&all)), all);
}

#[test]
fn diff_names_what_differs() {
    let a = json!({"functions": [], "keys": [
        {"db": 0, "key": "a", "type": "string", "expire_ms": -1, "value": "x"},
        {"db": 0, "key": "h", "type": "hash", "expire_ms": -1, "value": [["f", "1"], ["g", "2"]]},
        {"db": 0, "key": "l", "type": "list", "expire_ms": 5, "value": ["1", "2", "3"]},
    ]});
    let b = json!({"functions": [{"name": "lib", "code": "c"}], "keys": [
        {"db": 0, "key": "h", "type": "hash", "expire_ms": -1, "value": [["f", "1"], ["g", "3"]]},
        {"db": 0, "key": "l", "type": "list", "expire_ms": 6, "value": ["1", "3"]},
        {"db": 1, "key": "a", "type": "string", "expire_ms": -1, "value": "x"},
    ]});
    assert_eq!(diff(&a, &a), None);
    let d = diff(&a, &b).unwrap();
    for want in [
        "function library \"lib\": only in right",
        "db 0 key \"a\": only in left",
        "db 1 key \"a\": only in right",
        "db 0 key \"h\".value[\"g\"][1]: left \"2\", right \"3\"",
        "db 0 key \"l\".expire_ms: left 5, right 6",
        "db 0 key \"l\".value: left has 3 items, right 2",
        "4 keys differ",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }
}

#[test]
fn drop_expired_drops_keys_and_fields() {
    let s = json!({"functions": [], "keys": [
        {"db": 0, "key": "a", "type": "string", "expire_ms": 100, "value": "x"},
        {"db": 0, "key": "b", "type": "string", "expire_ms": 300, "value": "x"},
        {"db": 0, "key": "c", "type": "string", "expire_ms": -1, "value": "x"},
        {"db": 0, "key": "h", "type": "hash", "expire_ms": -1, "value": [["f", "1"], ["g", "2"]],
         "field_expire_ms": [["f", 100], ["g", 400]]},
        {"db": 0, "key": "h2", "type": "hash", "expire_ms": -1, "value": [["f", "1"]],
         "field_expire_ms": [["f", 100]]},
    ]});
    let want = json!({"functions": [], "keys": [
        {"db": 0, "key": "b", "type": "string", "expire_ms": 300, "value": "x"},
        {"db": 0, "key": "c", "type": "string", "expire_ms": -1, "value": "x"},
        {"db": 0, "key": "h", "type": "hash", "expire_ms": -1, "value": [["g", "2"]],
         "field_expire_ms": [["g", 400]]},
    ]});
    assert_eq!(diff(&want, &drop_expired(&s, 200)), None);
    assert_eq!(drop_expired(&s, 0), s);
}

// ---------------------------------------------------------------------------
// RDB fixtures

#[test]
fn dump_matches_redis_7_0_public_fixture() {
    let dir = fixture_dir();
    let r = RedisServer::start(&[]);
    load_rdb(&r, &dir.join("redis-7.0.15-rdb10-public.rdb"));
    let fixture = read_json(&dir.join("redis-7.0.15-rdb10-public.json"));
    let want = expected_state(&fixture);
    let got = logical_state(&r, 0);
    assert_same("redis-7.0.15-rdb10-public.rdb", &want, &got);
    assert_eq!(got["keys"].as_array().unwrap().len(), 75);
    assert_eq!(got["functions"].as_array().unwrap().len(), 2);
}

#[test]
fn dump_matches_redis_assets_fixtures() {
    let dir = fixture_dir().join("redis-assets");
    let results = read_json(&dir.join("load-results.json"));
    let r = RedisServer::start(&[]);
    let mut checked = Vec::new();
    for (name, res) in results.as_object().unwrap() {
        let json_path = dir.join(name.replace(".rdb", ".json"));
        if res["loaded"] != true || !json_path.exists() {
            continue;
        }
        load_rdb(&r, &dir.join(name));
        let fixture = read_json(&json_path);
        let got = logical_state(&r, 0);
        assert_same(name, &expected_state(&fixture), &got);
        assert_eq!(
            got["keys"].as_array().unwrap().len() as u64,
            res["keys"].as_u64().unwrap(),
            "{name}"
        );
        checked.push(name.clone());
    }
    assert_eq!(checked.len(), 7, "fixtures checked: {checked:?}");
}

// ---------------------------------------------------------------------------
// A hand-made data set

#[test]
fn dump_of_a_handmade_data_set() {
    let r = RedisServer::start(&[]);
    let mut con = r.client();
    let q = |con: &mut redis::Connection, args: &[&[u8]]| -> redis::Value {
        let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let far = now_ms() + 1_000_000_000;
    let soon = now_ms() + 3_600_000;
    let far_s = far.to_string();
    let soon_s = soon.to_string();
    q(&mut con, &[b"SET", b"\x00k\r\n\xff", b"v\\\x00"]);
    q(
        &mut con,
        &[b"SET", b"plain", b"1", b"PXAT", far_s.as_bytes()],
    );
    q(
        &mut con,
        &[b"SET", b"soon", b"1", b"PXAT", soon_s.as_bytes()],
    );
    q(&mut con, &[b"RPUSH", b"l", b"b", b"a", b"", b"a"]);
    q(
        &mut con,
        &[b"SADD", b"s", b"b", b"\xff", b"\x00", b"10", b"9"],
    );
    q(
        &mut con,
        &[
            b"ZADD", b"z", b"1e300", b"a", b"inf", b"b", b"-inf", b"c", b"5e-324", b"d", b"0.1",
            b"e", b"3", b"f",
        ],
    );
    q(
        &mut con,
        &[b"HSET", b"h", b"b", b"2", b"a", b"1", b"\x00", b""],
    );
    q(&mut con, &[b"XADD", b"x", b"1-1", b"a", b"1", b"b", b"2"]);
    q(&mut con, &[b"XADD", b"x", b"2-1", b"a", b"3"]);
    q(&mut con, &[b"XGROUP", b"CREATE", b"x", b"g", b"0"]);
    q(&mut con, &[b"XGROUP", b"CREATE", b"x", b"a-group", b"$"]);
    q(
        &mut con,
        &[b"XGROUP", b"CREATECONSUMER", b"x", b"g", b"idle"],
    );
    q(
        &mut con,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g",
            b"c1",
            b"COUNT",
            b"5",
            b"STREAMS",
            b"x",
            b">",
        ],
    );
    q(&mut con, &[b"XADD", b"x", b"3-1", b"a", b"1"]);
    q(&mut con, &[b"XCLAIM", b"x", b"g", b"c2", b"0", b"2-1"]);
    q(&mut con, &[b"XDEL", b"x", b"1-1"]);
    q(&mut con, &[b"SELECT", b"3"]);
    q(&mut con, &[b"SET", b"k", b"db3"]);
    q(
        &mut con,
        &[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=zlib\nredis.register_function('zf', function() return 1 end)",
        ],
    );
    q(
        &mut con,
        &[
            b"FUNCTION",
            b"LOAD",
            b"#!lua name=alib\nredis.register_function('af', function() return 2 end)",
        ],
    );

    let want = json!({
        "functions": [
            {"name": "alib", "code": "#!lua name=alib\\x0aredis.register_function('af', function() return 2 end)"},
            {"name": "zlib", "code": "#!lua name=zlib\\x0aredis.register_function('zf', function() return 1 end)"},
        ],
        "keys": [
            {"db": 0, "key": "\\x00k\\x0d\\x0a\\xff", "type": "string", "expire_ms": -1, "value": "v\\\\\\x00"},
            {"db": 0, "key": "h", "type": "hash", "expire_ms": -1,
             "value": [["\\x00", ""], ["a", "1"], ["b", "2"]]},
            {"db": 0, "key": "l", "type": "list", "expire_ms": -1, "value": ["b", "a", "", "a"]},
            {"db": 0, "key": "plain", "type": "string", "expire_ms": far, "value": "1"},
            {"db": 0, "key": "s", "type": "set", "expire_ms": -1,
             "value": ["\\x00", "10", "9", "b", "\\xff"]},
            {"db": 0, "key": "soon", "type": "string", "expire_ms": soon, "value": "1"},
            {"db": 0, "key": "x", "type": "stream", "expire_ms": -1, "value": {
                "entries": [["2-1", [["a", "3"]]], ["3-1", [["a", "1"]]]],
                "last_id": "3-1",
                "entries_added": 3,
                "max_deleted_id": "1-1",
                "groups": [
                    // Redis 7.0 leaves entries_read unknown after CREATE ... $.
                    {"name": "a-group", "last_delivered_id": "2-1", "entries_read": null,
                     "pending": [], "consumers": []},
                    {"name": "g", "last_delivered_id": "2-1", "entries_read": 2,
                     "pending": [["1-1", "c1", 1], ["2-1", "c2", 2]],
                     "consumers": ["c1", "c2", "idle"]},
                ],
            }},
            {"db": 0, "key": "z", "type": "zset", "expire_ms": -1, "value": [
                ["a", "1e+300"], ["b", "inf"], ["c", "-inf"], ["d", "5e-324"], ["e", "0.1"],
                ["f", "3.0"],
            ]},
            {"db": 3, "key": "k", "type": "string", "expire_ms": -1, "value": "db3"},
        ],
    });
    let got = logical_state(&r, 0);
    assert_same("hand-made", &want, &got);

    // The cutoff drops keys expiring before it, and only those.
    let cut = logical_state(&r, soon + 1);
    assert_eq!(diff(&drop_expired(&want, soon + 1), &cut), None);
    assert_eq!(
        cut["keys"].as_array().unwrap().len(),
        want["keys"].as_array().unwrap().len() - 1
    );
    let cut = logical_state(&r, far + 1);
    assert_eq!(
        cut["keys"].as_array().unwrap().len(),
        want["keys"].as_array().unwrap().len() - 2
    );
}

// ---------------------------------------------------------------------------
// The workload

/// A master with a real replica attached (so `WAIT 1` returns 1).
fn master_and_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {}", master.port()))]);
    replica.wait_in_sync("replica in sync");
    (master, replica)
}

/// Errors a correct random workload never provokes (they would mean
/// malformed commands).
fn assert_no_malformed_commands(w: &Workload) {
    let bad: Vec<_> = w
        .stats()
        .errors_by_kind
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.contains("syntax")
                || k.contains("unknown command")
                || k.contains("wrong number of arguments")
                || k.contains("unknown subcommand")
                || k.contains("compiling")
        })
        .collect();
    assert!(bad.is_empty(), "malformed workload commands: {bad:#?}");
}

fn count_types(state: &Value) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for k in state["keys"].as_array().unwrap() {
        *m.entry(k["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// Seeds for the workload tests: `$STATE_DUMP_SEEDS` (comma-separated) or
/// two fixed ones.
fn seeds() -> Vec<u64> {
    match std::env::var("STATE_DUMP_SEEDS") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| x.trim().parse().expect("STATE_DUMP_SEEDS: numbers"))
            .collect(),
        _ => vec![20240601, 7],
    }
}

#[test]
fn workload_checkpoints_equal_the_replica() {
    for seed in seeds() {
        workload_against_replica(seed, 3, 1500);
    }
}

fn workload_against_replica(seed: u64, rounds: usize, ops: usize) {
    let (master, replica) = master_and_replica();
    let mut w = Workload::new(seed);
    let mut con = master.client();
    for round in 0..rounds {
        w.run_step(&mut con, ops);
        let cp = w.checkpoint(&mut con, &master);
        assert!(cp.time_ms <= now_ms());
        // Keys with a short TTL may expire while the states are dumped:
        // compare what outlives both dumps.
        let cutoff = now_ms() + 5_000;
        let want = drop_expired(&cp.state, cutoff);
        let got = logical_state(&replica, cutoff);
        if let Some(d) = diff(&want, &got) {
            panic!("seed {seed} round {round}: replica differs from the checkpoint (left: master at the checkpoint, right: replica)\n{d}");
        }
        let types = count_types(&cp.state);
        let dbs: std::collections::BTreeSet<i64> = cp.state["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["db"].as_i64().unwrap())
            .collect();
        eprintln!(
            "seed {seed} round {round}: {} keys, types {types:?}, dbs {dbs:?}, {} function libraries, time {}",
            cp.state["keys"].as_array().unwrap().len(),
            cp.state["functions"].as_array().unwrap().len(),
            cp.time_ms
        );
    }
    let stats = w.stats();
    eprintln!(
        "seed {seed}: ops {} commands {} errors {}\nby op: {:?}\nerrors: {:#?}",
        stats.ops, stats.commands, stats.errors, stats.by_op, stats.errors_by_kind
    );
    assert_eq!(stats.ops, (rounds * ops) as u64);
    assert_no_malformed_commands(&w);

    // The final state covers every type, several databases, streams with
    // groups and a PEL, and the functions.
    let state = logical_state(&master, now_ms() + 5_000);
    let types = count_types(&state);
    for t in ["string", "list", "set", "zset", "hash", "stream"] {
        assert!(
            types.get(t).copied().unwrap_or(0) > 0,
            "no {t} in {types:?}"
        );
    }
    let keys = state["keys"].as_array().unwrap();
    let dbs: std::collections::BTreeSet<i64> =
        keys.iter().map(|k| k["db"].as_i64().unwrap()).collect();
    assert!(dbs.len() >= 3, "databases: {dbs:?}");
    for db in &dbs {
        let n = keys.iter().filter(|k| k["db"] == *db).count();
        assert!(n < 400, "db {db} has {n} keys");
    }
    assert!(
        keys.iter().any(|k| k["expire_ms"] != -1),
        "no key with a TTL"
    );
    assert!(
        keys.iter().any(|k| k["type"] == "stream"
            && k["value"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| !g["pending"].as_array().unwrap().is_empty())),
        "no stream with a PEL"
    );
    assert!(
        keys.iter()
            .any(|k| k["type"] == "set" && k["value"].as_array().unwrap().len() > 128),
        "no big set"
    );
    assert!(!state["functions"].as_array().unwrap().is_empty());
    for op in [
        "set",
        "push",
        "zadd",
        "hset",
        "xadd",
        "xreadgroup",
        "multi",
        "eval",
        "fcall",
        "rename",
        "copy",
        "move",
        "short_ttl",
    ] {
        assert!(stats.by_op.get(op).copied().unwrap_or(0) > 0, "no {op}");
    }
}

#[test]
fn workload_is_deterministic_for_a_seed() {
    let a = RedisServer::start(&[]);
    let b = RedisServer::start(&[]);
    let mut w1 = Workload::new(77);
    let mut w2 = Workload::new(77);
    let mut w3 = Workload::new(78);
    let (mut c1, mut c2) = (a.client(), b.client());
    for _ in 0..2 {
        w1.run_step(&mut c1, 1000);
        w2.run_step(&mut c2, 1000);
    }
    let (s1, s2) = (w1.stats(), w2.stats());
    assert_eq!(s1.ops, 2000);
    assert_eq!(s1.ops, s2.ops);
    assert_eq!(s1.commands, s2.commands);
    assert_eq!(s1.by_op, s2.by_op);
    assert_eq!(s1.fingerprint, s2.fingerprint);
    assert_eq!(w1.db(), w2.db());
    eprintln!(
        "errors: {} and {} (may differ only through keys expiring in real time)",
        s1.errors, s2.errors
    );
    assert_no_malformed_commands(&w1);

    // Another seed, another command sequence.
    let mut c3 = a.client();
    w3.run_step(&mut c3, 2000);
    assert_ne!(w3.stats().fingerprint, s1.fingerprint);
}

#[test]
#[should_panic(expected = "WAIT 1 5000 returned 0")]
fn checkpoint_without_a_replica_panics() {
    let r = RedisServer::start(&[]);
    let mut w = Workload::new(1);
    let mut con = r.client();
    w.run_step(&mut con, 20);
    w.checkpoint(&mut con, &r);
}
