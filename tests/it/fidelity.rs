//! Fidelity: a seeded random workload over every data type, TTLs, several databases,
//! transactions, scripts and functions runs against a master while `pitr archive` archives it;
//! at checkpoints the master's logical state is recorded. Then, for every checkpoint, restore
//! to its time in both modes (a live target, and files loaded by a stock redis-server) and
//! require the restored logical state to equal the checkpoint's: values, TTLs, stream groups,
//! functions — not encodings.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::archiving::*;
use crate::support::redis_server::{self, redis_server_bin};
use crate::support::state::{
    align_expiries, diff, drop_expired, logical_state, logical_state_con, without_idle_consumers,
    without_negative_zero_scores, without_stream_meta_of_7,
};
use crate::support::workload::{Checkpoint, Workload};
use crate::support::*;
use serde_json::Value;

/// Keeps a copy of the archive for a failure message.
fn keep(store: &str) -> String {
    let dest = std::env::temp_dir().join(format!("pitr-fidelity-failure-{}", std::process::id()));
    let _ = std::process::Command::new("cp")
        .args(["-r", store, &dest.to_string_lossy()])
        .status();
    dest.display().to_string()
}

fn compare(
    what: &str,
    store: &str,
    cp: &Checkpoint,
    servers: &Servers,
    restored: impl FnOnce(u64) -> Value,
) {
    // Keys with short TTLs expire between the checkpoint and now: compare what is alive at a
    // moment after both dumps, on both sides.
    let cutoff = now_ms() + 5000;
    let mut want = drop_expired(&cp.state, cutoff);
    let mut got = restored(cutoff);
    // Neither Redis nor Valkey replicates a consumer that a read created without delivering
    // anything (checked with real replicas of 7.0, 7.4 and Valkey 9.1): a restore, like a
    // replica, lacks it. Consumers that own pending entries are compared.
    want = without_idle_consumers(&want);
    got = without_idle_consumers(&got);
    if servers.relative_ttls() {
        // Redis 6 replicates relative TTLs, made absolute from their arrival times.
        got = align_expiries(&want, &got, RELATIVE_TTL_SLACK_MS);
        // Its streams have no entries_added, max_deleted_id or entries_read (a newer target
        // derives them).
        want = without_stream_meta_of_7(&want);
        got = without_stream_meta_of_7(&got);
    }
    if servers::version(&servers.master).0 < 7 && servers::version(&servers.live).0 >= 7 {
        want = without_negative_zero_scores(&want);
        got = without_negative_zero_scores(&got);
    }
    if let Some(d) = diff(&want, &got) {
        panic!(
            "{what}: restored state differs from the checkpoint at {} (left: checkpoint, right: restored; archive kept in {})\n{d}",
            cp.time_ms,
            keep(store)
        );
    }
}

/// How far a TTL from a Redis 6 master may be from the master's: the delay between the
/// master's execution of a relative `PEXPIRE` and its arrival at the archiver, plus the
/// millisecond of the TIME + PTTL reading (no PEXPIRETIME before 7.0).
const RELATIVE_TTL_SLACK_MS: i64 = 100;

/// The servers of one fidelity run: the archived master, the live target, and the server
/// started on the files.
struct Servers {
    master: PathBuf,
    live: PathBuf,
    files: PathBuf,
}

impl Servers {
    fn relative_ttls(&self) -> bool {
        servers::version(&self.master).0 < 7
    }

    fn all(bin: PathBuf) -> Servers {
        Servers {
            master: bin.clone(),
            live: bin.clone(),
            files: bin,
        }
    }
}

fn seed() -> u64 {
    std::env::var("PITR_FIDELITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124)
}

/// The workload on a master of `servers.master` while it is archived, with 4 checkpoints;
/// each restored to its time in both modes must equal it. Returns the restore reports.
fn fidelity(servers: &Servers, seed: u64) -> Vec<Value> {
    let master = RedisServer::start_with(&servers.master, &[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(seed);
    let mut con = master.client();
    // Some history before the archiver attaches: it lands in the snapshot.
    w.run_step(&mut con, 800);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    let mut checkpoints = vec![w.checkpoint(&mut con, &master)];
    for _ in 0..3 {
        w.run_step(&mut con, 1500);
        checkpoints.push(w.checkpoint(&mut con, &master));
    }
    // One more write after the last checkpoint, so that its time lies inside the archived
    // window (the window ends at the last archived write).
    exec(&mut con, &["SET", "fidelity:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let stats = w.stats();
    assert!(stats.ops >= 5300, "{stats:?}");

    let mut reports = Vec::new();
    for (i, cp) in checkpoints.iter().enumerate() {
        let keys = cp.state["keys"].as_array().map_or(0, |k| k.len());
        assert!(keys > 0 || i == 0, "checkpoint {i} is empty");
        let to = cp.time_ms.to_string();

        let (target, rep) =
            archive.restore_into_new_server_with(&servers.live, &to, &["--via", "commands"]);
        assert!(rep["time_ms"].as_u64().unwrap() <= cp.time_ms, "{rep}");
        compare(
            &format!("checkpoint {i} into a live target"),
            archive.store(),
            cp,
            servers,
            |cutoff| logical_state(&target, cutoff),
        );
        reports.push(rep);

        let files = archive.restore_as_files_and_start_with(&servers.files, &to, &[]);
        compare(
            &format!("checkpoint {i} as files"),
            archive.store(),
            cp,
            servers,
            |cutoff| logical_state_con(&mut files.con(), cutoff),
        );
        reports.push(files.report.clone());
    }
    reports
}

#[test]
fn restores_equal_every_checkpoint_in_both_modes() {
    fidelity(&Servers::all(redis_server_bin()), seed());
}

/// Valkey 9.1: hash field TTLs in the workload (HSETEX, HPEXPIRE, HGETEX, ... some expiring
/// during the run), RDB 80 (`VALKEY080`) snapshots, and RESTORE payloads of version 80.
#[test]
fn valkey_9_1_restores_equal_every_checkpoint_with_field_ttls() {
    let reports = fidelity(&Servers::all(servers::valkey_9_1()), seed());
    assert_expiries_moved_back(&reports);
    let files: Vec<&Value> = reports
        .iter()
        .filter(|r| r.get("files").is_some())
        .collect();
    assert!(
        files.iter().any(|r| r["files"]["command_line"]
            .as_str()
            .unwrap()
            .starts_with("valkey-server ")),
        "{files:?}"
    );
}

/// Redis 7.4: hash field TTLs (HPEXPIRE, HEXPIRE, HPERSIST, HPEXPIREAT) in RDB 12 (types 24
/// and 25) and in the stream; RESTORE payloads of version 12.
#[test]
fn redis_7_4_restores_equal_every_checkpoint_with_field_ttls() {
    let reports = fidelity(&Servers::all(servers::redis_7_4()), seed());
    assert_expiries_moved_back(&reports);
}

/// The TTLs (field TTLs among them) were there: the live replays moved them ahead and, at the
/// end, back.
fn assert_expiries_moved_back(reports: &[Value]) {
    let moved: u64 = reports
        .iter()
        .filter(|r| r.get("files").is_none())
        .map(|r| r["expiries_moved_back"].as_u64().unwrap())
        .sum();
    assert!(moved > 0, "{reports:?}");
}

/// Redis 6.2 sends relative TTLs (`SET k v PX 500`, `PEXPIRE`), which the restore makes
/// absolute from their arrival times, and its files are one AOF with an RDB preamble.
#[test]
fn redis_6_2_restores_equal_every_checkpoint() {
    let reports = fidelity(&Servers::all(servers::redis_6_2()), seed());
    let layouts: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["files"]["layout"].as_str())
        .collect();
    assert!(layouts.contains(&"aof-preamble"), "{layouts:?}");
    assert!(!layouts.contains(&"aof-multipart"), "{layouts:?}");
}

/// An archive of Redis 6.2 restored into Redis 7 (payload version 9 on a server of 10), and
/// an archive of Redis 7 restored into Valkey 9.1 (a Redis RDB 10 payload on a server of 80).
#[test]
fn archives_restore_into_a_newer_server_and_into_valkey() {
    fidelity(
        &Servers {
            master: servers::redis_6_2(),
            live: redis_server_bin(),
            files: redis_server_bin(),
        },
        seed(),
    );
    fidelity(
        &Servers {
            master: redis_server_bin(),
            live: servers::valkey_9_1(),
            files: servers::valkey_9_1(),
        },
        seed() + 1,
    );
}

#[test]
fn a_huge_key_restores_as_batched_commands() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    // A list and a hash of a few MB each, and a 3 MB string.
    for chunk in 0..40 {
        let items: Vec<String> = (0..1000)
            .map(|i| format!("item-{chunk}-{i}-{}", "x".repeat(60)))
            .collect();
        let _: () = redis::cmd("RPUSH")
            .arg("biglist")
            .arg(&items)
            .query(&mut con)
            .unwrap();
        let mut h = redis::cmd("HSET");
        h.arg("bighash");
        for i in 0..1000 {
            h.arg(format!("f{chunk}:{i}")).arg("v".repeat(50));
        }
        let _: () = h.query(&mut con).unwrap();
    }
    exec(&mut con, &["SET", "bigstr", &"s".repeat(3 << 20)]);
    exec(&mut con, &["PEXPIREAT", "biglist", "4102444800000"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["RPUSH", "biglist", "after"]));
    let want = logical_state(&master, 0);

    let (target, rep) = archive.restore_into_new_server(
        "latest",
        &["--via", "commands", "--max-restore-bytes", "64KiB"],
    );
    // The list and the hash go as batches; the 3 MB string is LZF-compressed in the snapshot
    // and small enough, compressed, to go by RESTORE.
    assert!(rep["keys_by_commands"].as_u64().unwrap() >= 2, "{rep}");
    if let Some(d) = diff(&want, &logical_state(&target, 0)) {
        panic!("huge keys differ after a batched restore:\n{d}");
    }
}

#[test]
fn a_huge_compressible_string_restores_in_both_modes() {
    // rdbcompression is on by default: 40 MB of zeros is LZF-compressed in the snapshot, and
    // goes by RESTORE from its raw bytes (never decompressed by pitr).
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(
        &mut con,
        &["SETRANGE", "zeros", &(40 << 20).to_string(), "end"],
    );
    exec(&mut con, &["SET", "small", "x"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["APPEND", "small", "y"]));
    let want = logical_state(&master, 0);

    let (target, rep) = archive.restore_into_new_server("latest", &["--via", "commands"]);
    assert_eq!(rep["keys_by_restore"], 2, "{rep}");
    if let Some(d) = diff(&want, &logical_state(&target, 0)) {
        panic!("live restore differs:\n{d}");
    }
    let files = archive.restore_as_files_and_start("latest", &[]);
    assert_eq!(files.report["keys"], 2, "{}", files.report);
    if let Some(d) = diff(&want, &logical_state_con(&mut files.con(), 0)) {
        panic!("files restore differs:\n{d}");
    }
}

/// Once the writes so far are archived: the moment to restore to and the master's state then,
/// followed by one more write (so that the archived window goes past the moment).
fn mark_cut(con: &mut redis::Connection) -> (u64, Value) {
    assert_eq!(wait_archived(con, 5000), 1);
    let to = now_ms();
    let state = logical_state_con(con, 0);
    std::thread::sleep(Duration::from_millis(5));
    exec(con, &["SET", "after-the-cut", "1"]);
    (to, state)
}

/// A field whose TTL passed between the cut and the restore, written again before the cut:
/// the replay must not let the target expire it early (a later HINCRBY would then start from
/// nothing and leave a field the master never had). Live mode moves field TTLs ahead for the
/// replay and back at the end; files need no move.
#[test]
fn field_ttls_that_pass_before_the_restore_do_not_change_later_writes() {
    let valkey = servers::valkey_9_1();
    let master = RedisServer::start_with(&valkey, &[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut to = 0;
    let mut want = Value::Null;
    // In the snapshot: a hash with a field TTL, which the live restore sends by commands so
    // that its TTL can be moved too.
    let mut con = master.client();
    exec(&mut con, &["HSET", "s", "f", "1", "g", "1"]);
    exec(&mut con, &["HPEXPIRE", "s", "1500", "FIELDS", "1", "f"]);
    archive.archive_while(&master, |con| {
        exec(con, &["HINCRBY", "s", "f", "10"]);
        exec(con, &["HSET", "h", "f", "1", "g", "1"]);
        exec(con, &["HPEXPIRE", "h", "1500", "FIELDS", "1", "f"]);
        exec(con, &["HINCRBY", "h", "f", "5"]);
        exec(
            con,
            &["HSETEX", "h2", "PX", "1500", "FIELDS", "1", "a", "1"],
        );
        exec(con, &["HINCRBY", "h2", "a", "1"]);
        exec(
            con,
            &["HSETEX", "h3", "PX", "600000", "FIELDS", "1", "b", "1"],
        );
        (to, want) = mark_cut(con);
    });
    // At the cut: s = {f: 11 (TTL), g: 1}, h = {f: 6 (TTL), g: 1}, h2 = {a: 2 (TTL)},
    // h3 = {b: 1 (TTL in 10 min)}.
    assert_eq!(want["keys"].as_array().unwrap().len(), 4, "{want}");
    // Let the short field TTLs pass: by now the master would have h = {g: 1}, no h2.
    std::thread::sleep(Duration::from_millis(1600));
    let (target, rep) =
        archive.restore_into_new_server_with(&valkey, &to.to_string(), &["--via", "commands"]);
    assert_eq!(rep["keys_by_commands"], 1, "{rep}");
    assert!(rep["expiries_moved_back"].as_u64().unwrap() >= 4, "{rep}");
    let files = archive.restore_as_files_and_start_with(&valkey, &to.to_string(), &[]);
    let cutoff = now_ms();
    let want = drop_expired(&want, cutoff);
    assert_eq!(want["keys"].as_array().unwrap().len(), 3, "{want}");
    for (what, got) in [
        ("live", logical_state(&target, cutoff)),
        ("files", logical_state_con(&mut files.con(), cutoff)),
    ] {
        if let Some(d) = diff(&want, &got) {
            panic!("{what} restore differs from the master at the cut:\n{d}");
        }
    }
}

/// Redis 5.0 replicates every TTL as sent (EXPIRE, PEXPIRE, SET EX/PX with NX/XX, SETEX,
/// PSETEX, RESTORE and RESTORE-ASKING with a relative TTL). A restore makes them absolute from their arrival
/// times, in commands Redis 5 knows (no PXAT, which came with 6.2): both modes into Redis 5.0,
/// the files as one AOF with an RDB preamble.
#[test]
fn redis_5_0_relative_ttls_restore_in_both_modes() {
    let r5 = servers::redis_5_0();
    let master = RedisServer::start_with(&r5, &[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(&mut con, &["SET", "snap", "1", "EX", "1000"]);
    exec(&mut con, &["RPUSH", "l", "a", "b", "c"]);
    let archive = Archive::local();
    let mut to = 0;
    let mut want = Value::Null;
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "a", "1", "EX", "1000"]);
        exec(con, &["SET", "b", "1", "PX", "900000", "NX"]);
        exec(con, &["SET", "b", "2", "XX", "PX", "800000"]);
        exec(con, &["SETEX", "c", "500", "v"]);
        exec(con, &["PSETEX", "d", "700000", "v"]);
        exec(con, &["EXPIRE", "l", "3000"]);
        exec(con, &["PEXPIRE", "snap", "5000000"]);
        exec(con, &["SET", "gone", "1", "PX", "1000"]);
        exec(con, &["SET", "cleared", "v", "EX", "100"]);
        exec(con, &["SET", "cleared", "w"]);
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("m")
            .arg("1")
            .arg("EX")
            .arg("200")
            .cmd("INCR")
            .arg("m")
            .ignore()
            .query(con)
            .unwrap();
        let payload: Vec<u8> = redis::cmd("DUMP").arg("l").query(con).unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg("l2")
            .arg(600_000)
            .arg(&payload)
            .query(con)
            .unwrap();
        // What a cluster node propagates for a MIGRATE it received; a client may send it too.
        let _: () = redis::cmd("RESTORE-ASKING")
            .arg("l3")
            .arg(700_000)
            .arg(payload)
            .query(con)
            .unwrap();
        (to, want) = mark_cut(con);
    });
    assert_eq!(want["keys"].as_array().unwrap().len(), 11, "{want}");
    // `gone` expires before the restore.
    std::thread::sleep(Duration::from_millis(1100));
    let (target, rep) =
        archive.restore_into_new_server_with(&r5, &to.to_string(), &["--via", "commands"]);
    assert!(rep["commands"].as_u64().unwrap() >= 15, "{rep}");
    let files = archive.restore_as_files_and_start_with(&r5, &to.to_string(), &[]);
    assert_eq!(
        files.report["files"]["layout"], "aof-preamble",
        "{}",
        files.report
    );
    let cutoff = now_ms();
    let want = drop_expired(&want, cutoff);
    assert_eq!(want["keys"].as_array().unwrap().len(), 10, "{want}");
    for (what, got) in [
        ("live", logical_state(&target, cutoff)),
        ("files", logical_state_con(&mut files.con(), cutoff)),
    ] {
        let got = align_expiries(&want, &got, RELATIVE_TTL_SLACK_MS);
        if let Some(d) = diff(&want, &got) {
            panic!("{what} restore differs from the master at the cut:\n{d}");
        }
    }
}

/// A Redis 7 archive restored into an older server (Redis 6.2, which cannot take RDB 10
/// payloads): keys go as commands and equal the master's; a function library, which 6.2 has
/// no command for, is an error that names the library's command, with exit code 1.
#[test]
fn a_redis_7_archive_restores_into_redis_6_2_by_commands() {
    let r62 = servers::redis_6_2();
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(&mut con, &["RPUSH", "l", "a", "b", "c"]);
    exec(&mut con, &["HSET", "h", "f", "1", "g", "2"]);
    exec(&mut con, &["ZADD", "z", "1.5", "m", "-inf", "n"]);
    exec(&mut con, &["SADD", "s", "1", "2", "x"]);
    exec(&mut con, &["SET", "str", "v", "PX", "600000"]);
    exec(&mut con, &["XADD", "x", "1-1", "f", "v"]);
    exec(&mut con, &["XGROUP", "CREATE", "x", "g", "0"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["RPUSH", "l", "d"]);
        exec(con, &["EXPIRE", "h", "600"]);
        exec(
            con,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "1",
                "STREAMS",
                "x",
                ">",
            ],
        );
    });
    let want = logical_state(&master, 0);
    let (target, rep) =
        archive.restore_into_new_server_with(&r62, "latest", &["--via", "commands"]);
    assert_eq!(rep["keys_by_restore"], 0, "{rep}");
    assert_eq!(rep["keys_by_commands"], 6, "{rep}");
    let got = logical_state(&target, 0);
    // 6.2 streams have no entries_added, max_deleted_id or entries_read.
    let (want, got) = (
        without_stream_meta_of_7(&want),
        without_stream_meta_of_7(&got),
    );
    let got = align_expiries(&want, &got, 2);
    if let Some(d) = diff(&want, &got) {
        panic!("Redis 7 archive into Redis 6.2 differs:\n{d}");
    }

    // With a function library in the snapshot.
    exec(
        &mut con,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('f', function() return 1 end)",
        ],
    );
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["SET", "after", "1"]));
    let target = RedisServer::start_with(&r62, &[]);
    let url = plain_url(&target);
    let out = run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            "latest",
            "--target",
            &url,
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("FUNCTION"), "{err}");
}

/// Many keys with TTLs: the live restore moves them back in slices (one script call per
/// few thousand keys), each exactly once, to the master's times.
#[test]
fn many_expiries_are_moved_back_exactly_once() {
    const SCRIPT: &str = "for i = 1, tonumber(ARGV[1]) do \
        redis.call('SET', ARGV[2] .. i, i) \
        redis.call('PEXPIREAT', ARGV[2] .. i, tonumber(ARGV[3]) + i) end return 0";
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    let base = (now_ms() + 3_600_000).to_string();
    exec(&mut con, &["EVAL", SCRIPT, "0", "12000", "snap:", &base]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["EVAL", SCRIPT, "0", "6000", "stream:", &base]);
    });
    let want = logical_state(&master, 0);
    let (target, rep) = archive.restore_into_new_server("latest", &["--via", "commands"]);
    assert_eq!(rep["expiries_moved_back"], 18000, "{rep}");
    if let Some(d) = diff(&want, &logical_state(&target, 0)) {
        panic!("expiries differ after being moved back:\n{d}");
    }
}

/// `PEXPIRETIME` of each of `keys` on `r`.
fn expire_times(r: &RedisServer, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let t = redis_server::value_to_string(&r.cmd(&["PEXPIRETIME", k]));
            (k.to_string(), t)
        })
        .collect()
}

/// `HPEXPIRETIME` of each field of `fields` in hash `key` on `r`.
fn field_expire_times(r: &RedisServer, key: &str, fields: &[&str]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| {
            let t = redis_server::value_to_string(&r.cmd(&["HPEXPIRETIME", key, "FIELDS", "1", f]));
            (format!("{key}.{f}"), t)
        })
        .collect()
}

/// Key TTLs that the live replay once moved 100 years ahead and back in doubles: one near
/// 2^53 came back 1 ms off, i64::MAX came back about 100 years early, silently. And a
/// `PEXPIREAT … GT` that lengthens a TTL past the times the replay moves must still apply.
/// Compared exactly with the master, in the snapshot and in the stream.
#[test]
fn key_ttls_near_the_limits_restore_exactly_into_a_live_target() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    let near = (now_ms() + 3_600_000).to_string();
    let far = (now_ms() + 20 * 366 * 86_400_000).to_string();
    for (k, at) in [
        ("snap-a", "9007199254740993"),
        ("snap-b", "9223372036854775807"),
        ("snap-near", near.as_str()),
    ] {
        exec(&mut con, &["SET", k, "1"]);
        exec(&mut con, &["PEXPIREAT", k, at]);
    }
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "a", "1"]);
        exec(con, &["PEXPIREAT", "a", "9007199254740993"]);
        exec(con, &["SET", "b", "1"]);
        exec(con, &["PEXPIREAT", "b", "9223372036854775807"]);
        exec(con, &["SET", "c", "1", "PXAT", "9223372036854775806"]);
        exec(con, &["SET", "near", "1", "PXAT", &near]);
        // Lengthened from a moved time to one that is not moved, and shortened back.
        exec(con, &["SET", "gt", "1", "PXAT", &near]);
        exec(con, &["PEXPIREAT", "gt", &far, "GT"]);
        exec(con, &["SET", "lt", "1", "PXAT", &far]);
        exec(con, &["PEXPIREAT", "lt", &near, "LT"]);
    });
    let keys = [
        "snap-a",
        "snap-b",
        "snap-near",
        "a",
        "b",
        "c",
        "near",
        "gt",
        "lt",
    ];
    let want = expire_times(&master, &keys);
    assert_eq!(want[4].1, "9223372036854775807");
    assert_eq!(want[7].1, far);
    for round in 0..2 {
        let (target, rep) = archive.restore_into_new_server("latest", &["--via", "commands"]);
        assert_eq!(expire_times(&target, &keys), want, "round {round}: {rep}");
        assert_eq!(rep["expiries_in_reserved_range"], 0, "{rep}");
        // snap-near, near and lt; gt was lengthened past the times that are moved.
        assert_eq!(rep["expiries_moved_back"], 3, "{rep}");
    }
}

/// Hash field TTLs near Redis 7.4's limit (2^46 - 1 ms, t_hash.c's `HFE_MAX_ABS_TIME_MSEC`;
/// the Redis test suite's "near limit of 2^46"): the 100-year move once pushed them past it,
/// the target refused (`invalid expire time`), and every live restore of the generation
/// failed. Compared exactly with the master; also `HPEXPIREAT … GT` over several fields, some
/// of which the condition skips (Valkey propagates such a command whole).
fn field_ttls_near_the_limit_restore_exactly(bin: &std::path::Path) {
    let master = RedisServer::start_with(bin, &[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    let near = (now_ms() + 3_600_000).to_string();
    let far = (now_ms() + 20 * 366 * 86_400_000).to_string();
    exec(&mut con, &["HSET", "snap", "f", "1", "g", "1"]);
    exec(
        &mut con,
        &["HPEXPIREAT", "snap", "70368744176664", "FIELDS", "1", "f"],
    );
    exec(&mut con, &["HPEXPIREAT", "snap", &near, "FIELDS", "1", "g"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["HSET", "h", "f", "1", "g", "1", "x", "1", "y", "1"]);
        exec(
            con,
            &["HPEXPIREAT", "h", "70368744176664", "FIELDS", "1", "f"],
        );
        exec(
            con,
            &["HPEXPIREAT", "h", "70368744177663", "FIELDS", "1", "g"],
        );
        exec(con, &["HPEXPIREAT", "h", &near, "FIELDS", "1", "x"]);
        // x is lengthened past the moved times; y (no TTL) is skipped by GT.
        exec(
            con,
            &["HPEXPIREAT", "h", &far, "GT", "FIELDS", "2", "x", "y"],
        );
        exec(con, &["HSET", "l", "a", "1", "b", "1"]);
        exec(con, &["HPEXPIREAT", "l", &far, "FIELDS", "1", "a"]);
        // a is shortened to a moved time, b (no TTL) gets it too.
        exec(
            con,
            &["HPEXPIREAT", "l", &near, "LT", "FIELDS", "2", "a", "b"],
        );
    });
    let fields = |r: &RedisServer| {
        let mut v = field_expire_times(r, "snap", &["f", "g"]);
        v.extend(field_expire_times(r, "h", &["f", "g", "x", "y"]));
        v.extend(field_expire_times(r, "l", &["a", "b"]));
        v
    };
    let want = fields(&master);
    assert_eq!(want[2].1, "70368744176664", "{want:?}");
    assert_eq!(want[4].1, far, "{want:?}");
    assert_eq!(want[5].1, "-1", "{want:?}");
    // Twice: a refused restore used to fail every later one too.
    for round in 0..2 {
        let (target, rep) =
            archive.restore_into_new_server_with(bin, "latest", &["--via", "commands"]);
        assert_eq!(fields(&target), want, "round {round}: {rep}");
        assert!(rep["expiries_moved_back"].as_u64().unwrap() >= 3, "{rep}");
    }
}

#[test]
fn redis_7_4_field_ttls_near_the_limit_restore_exactly_into_a_live_target() {
    field_ttls_near_the_limit_restore_exactly(&servers::redis_7_4());
}

#[test]
fn valkey_9_1_field_ttls_near_the_limit_restore_exactly_into_a_live_target() {
    field_ttls_near_the_limit_restore_exactly(&servers::valkey_9_1());
}

/// `XINFO STREAM` and `XRANGE` of stream `key` on `con`.
fn stream_view(con: &mut redis::Connection, key: &str) -> (redis::Value, redis::Value) {
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query(con)
        .unwrap();
    let range: redis::Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap();
    (info, range)
}

/// A master propagates `XADD s MAXLEN ~ 10 LIMIT 5 …` and `XTRIM s MAXLEN ~ 0 LIMIT 100` as
/// `MAXLEN = <n> LIMIT <m>`, which an ordinary client may not send ("LIMIT cannot be used
/// without the special ~ option"): the live restore aborted. The streams must equal the
/// master's.
#[test]
fn approximate_stream_trims_with_limit_restore_into_a_live_target() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        for i in 0..350 {
            exec(con, &["XADD", "s", "*", "f", &i.to_string()]);
            exec(con, &["XADD", "m", &format!("{}-1", i + 1), "f", "v"]);
        }
        exec(
            con,
            &[
                "XADD", "s", "MAXLEN", "~", "10", "LIMIT", "5", "*", "f", "v",
            ],
        );
        exec(
            con,
            &[
                "XADD", "s", "MAXLEN", "~", "10", "LIMIT", "150", "*", "f", "v",
            ],
        );
        exec(con, &["XTRIM", "s", "MAXLEN", "~", "0", "LIMIT", "100"]);
        exec(con, &["XTRIM", "m", "MINID", "~", "300", "LIMIT", "100"]);
        exec(
            con,
            &[
                "XADD", "m", "MINID", "~", "300", "LIMIT", "100", "400-1", "f", "v",
            ],
        );
    });
    let mut mcon = master.client();
    let want = [stream_view(&mut mcon, "s"), stream_view(&mut mcon, "m")];
    let len: i64 = redis::cmd("XLEN").arg("s").query(&mut mcon).unwrap();
    assert!(
        len > 10 && len < 352,
        "the trims trimmed something, not everything: {len}"
    );
    let (target, rep) = archive.restore_into_new_server("latest", &["--via", "commands"]);
    let mut tcon = target.client();
    let got = [stream_view(&mut tcon, "s"), stream_view(&mut tcon, "m")];
    assert_eq!(got, want, "{rep}");
    if let Some(d) = diff(&logical_state(&master, 0), &logical_state(&target, 0)) {
        panic!("live restore differs:\n{d}");
    }
}
