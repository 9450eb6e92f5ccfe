//! `pitr restore --target … --via replication|commands|auto`: the target replicates the moment
//! from the restore (an in-process `pitr serve`), then is a master again with its own
//! replication settings. Every checkpoint of the fidelity workload equal through replication,
//! whole and with `--db`/`--match` (a re-encoded snapshot, a filtered stream, a replication id
//! of its own); `auto` falls back to commands (and says why) for a target whose REPLICAOF is
//! renamed away, and for one that cannot reach the advertised address; `--via replication`
//! into a target without REPLICAOF fails naming it; the TTL cases a replay by commands must
//! move TTLs for come through replication exactly, with nothing moved.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::redis_server::value_to_string;
use crate::support::state::{diff, drop_expired, logical_state, without_idle_consumers};
use crate::support::workload::Workload;
use crate::support::*;

/// `pitr restore --to <to> --target <target> <extra…> --json`: its report, or its exit code
/// and stderr.
fn restore(
    archive: &Archive,
    target: &RedisServer,
    to: &str,
    extra: &[&str],
) -> Result<Value, (i32, String)> {
    let url = plain_url(target);
    let mut args = vec![
        "restore",
        "--store",
        archive.store(),
        "--to",
        to,
        "--target",
        &url,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run_pitr(&args, &[("RUST_LOG".into(), "info".into())]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    Ok(v)
}

fn restore_ok(archive: &Archive, target: &RedisServer, to: &str, extra: &[&str]) -> Value {
    restore(archive, target, to, extra).unwrap_or_else(|(code, e)| panic!("exit {code}: {e}"))
}

/// The target is a master again, with `masterauth` as it was.
fn assert_master_again(target: &RedisServer, masterauth: &str) {
    let info = target.info("replication");
    assert_eq!(info["role"], "master", "{info:?}");
    assert_eq!(
        value_to_string(&target.cmd(&["CONFIG", "GET", "masterauth"])),
        format!("masterauth\n{masterauth}")
    );
    // Writable.
    target.cmd(&["SET", "via:written-after", "1"]);
    target.cmd(&["DEL", "via:written-after"]);
}

fn assert_same(what: &str, want: &Value, got: &Value) {
    if let Some(d) = diff(want, got) {
        panic!("{what}: the target differs (left: expected, right: target)\n{d}");
    }
}

fn keys_of(r: &RedisServer) -> u64 {
    r.info("keyspace")
        .iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(_, v)| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        })
        .sum()
}

#[test]
fn every_checkpoint_restored_through_replication_equals_it() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(20261124);
    let mut con = master.client();
    w.run_step(&mut con, 800);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    // The cut lies between the master's offset before the checkpoint and after it: the
    // master propagates expiries of its own (a `DEL` per expired key) at any time.
    let checkpoint = |w: &mut Workload, con: &mut redis::Connection| {
        let before = master_offset(&master);
        let cp = w.checkpoint(con, &master);
        (cp, before..=master_offset(&master))
    };
    let mut checkpoints = vec![checkpoint(&mut w, &mut con)];
    for _ in 0..3 {
        w.run_step(&mut con, 1500);
        checkpoints.push(checkpoint(&mut w, &mut con));
    }
    exec(&mut con, &["SET", "via:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));

    let mut commands = Vec::new();
    for (i, (cp, offset)) in checkpoints.iter().enumerate() {
        // A target with replication settings of its own, which it must get back.
        let target = RedisServer::start(&[("masterauth", "its-own-password")]);
        let rep = restore_ok(
            &archive,
            &target,
            &cp.time_ms.to_string(),
            &["--via", "replication"],
        );
        assert_eq!(rep["via"], "replication", "{rep}");
        assert!(
            offset.contains(&rep["offset"].as_u64().unwrap()),
            "checkpoint {i}: not in {offset:?}: {rep}"
        );
        assert!(rep["time_ms"].as_u64().unwrap() <= cp.time_ms, "{rep}");
        assert_eq!(rep["expiries_moved_back"], 0, "{rep}");
        assert_eq!(rep["keys_by_restore"], 0, "{rep}");
        let cutoff = now_ms() + 5000;
        let want = without_idle_consumers(&drop_expired(&cp.state, cutoff));
        let got = without_idle_consumers(&logical_state(&target, cutoff));
        assert_same(&format!("checkpoint {i}"), &want, &got);
        assert_master_again(&target, "its-own-password");
        // Counted when the sync ended; keys whose TTL had passed expire once it is a master.
        let keys = rep["keys"].as_u64().unwrap();
        assert!(keys >= keys_of(&target) && keys > 0, "{rep}");
        // It was a replica of the archived master's replication id, now its replid2.
        let info = target.info("replication");
        assert_ne!(
            info["master_replid2"], "0000000000000000000000000000000000000000",
            "{info:?}"
        );
        commands.push(rep["commands"].as_u64().unwrap());
    }
    // The stream's commands up to each cut: more at each later checkpoint.
    assert!(commands.windows(2).all(|c| c[0] < c[1]), "{commands:?}");

    // The same moment by commands equals the one by replication.
    let cp = &checkpoints[2].0;
    let by_commands = RedisServer::start(&[]);
    let rep = restore_ok(
        &archive,
        &by_commands,
        &cp.time_ms.to_string(),
        &["--via", "commands"],
    );
    assert_eq!(rep["via"], "commands", "{rep}");
    let by_replication = RedisServer::start(&[]);
    let rrep = restore_ok(&archive, &by_replication, &cp.time_ms.to_string(), &[]);
    assert_eq!(rrep["via"], "replication", "auto takes replication: {rrep}");
    assert_eq!(rep["commands"], rrep["commands"], "{rep}\n{rrep}");
    assert_eq!(rep["offset"], rrep["offset"]);
    let cutoff = now_ms() + 5000;
    assert_same(
        "commands vs. replication",
        &without_idle_consumers(&logical_state(&by_commands, cutoff)),
        &without_idle_consumers(&logical_state(&by_replication, cutoff)),
    );

    // Not empty: refused as before, untouched; with --force the full sync replaces its data.
    let busy = RedisServer::start(&[]);
    busy.cmd(&["SET", "stranger", "1"]);
    let (code, err) = restore(&archive, &busy, "latest", &["--via", "replication"]).unwrap_err();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds 1 keys"), "{err}");
    let rep = restore_ok(
        &archive,
        &busy,
        "latest",
        &["--via", "replication", "--force"],
    );
    assert_eq!(rep["via"], "replication", "{rep}");
    assert_eq!(busy.cmd(&["EXISTS", "stranger"]), redis::Value::Int(0));
    assert_equals_master(&master, &busy);
}

/// A small archive: a few keys in the snapshot, a few commands after it.
fn small_archive() -> (RedisServer, Archive) {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    master.cmd(&["SET", "a", "1"]);
    master.cmd(&["HSET", "h", "f", "v"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "b", "2"]);
        exec(con, &["RPUSH", "l", "x", "y"]);
        exec(con, &["SET", "t", "1", "PX", "3600000"]);
    });
    (master, archive)
}

fn assert_equals_master(master: &RedisServer, target: &RedisServer) {
    let cutoff = now_ms() + 5000;
    assert_same(
        "the restore",
        &logical_state(master, cutoff),
        &logical_state(target, cutoff),
    );
}

#[test]
fn auto_falls_back_to_commands_and_says_why() {
    let (master, archive) = small_archive();

    // --match: replication too, with the snapshot re-encoded without the other keys.
    let target = RedisServer::start(&[]);
    let rep = restore_ok(&archive, &target, "latest", &["--match", "a*"]);
    assert_eq!(rep["via"], "replication", "{rep}");
    assert_eq!(target.cmd(&["DBSIZE"]), redis::Value::Int(1));
    assert_eq!(rep["keys_skipped"], 1, "{rep}");
    assert_eq!(rep["commands_skipped"], 3, "{rep}");

    // REPLICAOF renamed away (as managed services do).
    let renamed =
        || RedisServer::start(&[("rename-command", "REPLICAOF \"\""), ("masterauth", "x")]);
    let target = renamed();
    let rep = restore_ok(&archive, &target, "latest", &[]);
    assert_eq!(rep["via"], "commands", "{rep}");
    let why = rep["via_reason"].as_str().unwrap();
    assert!(
        why.contains("refused REPLICAOF") && why.contains("unknown command"),
        "{rep}"
    );
    assert_equals_master(&master, &target);
    assert_eq!(
        value_to_string(&target.cmd(&["CONFIG", "GET", "masterauth"])),
        "masterauth\nx",
        "put back"
    );
    // --via replication into it: an error naming REPLICAOF, exit 1 (as a refused command).
    let target = renamed();
    let (code, err) = restore(&archive, &target, "latest", &["--via", "replication"]).unwrap_err();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("REPLICAOF") && err.contains("--via commands"),
        "{err}"
    );
    assert_eq!(target.cmd(&["DBSIZE"]), redis::Value::Int(0));
    assert_eq!(
        value_to_string(&target.cmd(&["CONFIG", "GET", "masterauth"])),
        "masterauth\nx"
    );

    // A target that cannot reach the advertised address: after the short wait it is a master
    // again, untouched, and the restore goes by commands.
    let closed = free_port();
    let target = RedisServer::start(&[("masterauth", "mine")]);
    let started = Instant::now();
    let rep = restore_ok(
        &archive,
        &target,
        "latest",
        &["--advertise", &format!("127.0.0.1:{closed}")],
    );
    assert!(started.elapsed() >= Duration::from_secs(10), "{rep}");
    assert_eq!(rep["via"], "commands", "{rep}");
    let why = rep["via_reason"].as_str().unwrap();
    assert!(why.contains(&format!("127.0.0.1:{closed}")), "{rep}");
    assert_equals_master(&master, &target);
    assert_master_again(&target, "mine");
    // --via commands: as today, said so.
    let target = RedisServer::start(&[]);
    let rep = restore_ok(&archive, &target, "latest", &["--via", "commands"]);
    assert_eq!(
        (rep["via"].as_str(), rep["via_reason"].as_str()),
        (Some("commands"), Some("--via commands"))
    );
    assert_equals_master(&master, &target);
}

/// Before the RDB arrives a replica keeps its data: a target with keys, told to replicate from
/// an address nothing listens on, still holds them once the restore gave up on it (`--via
/// replication` with a short timeout: an error naming the wait, exit 5 as an unreachable
/// target), and is a master again.
#[test]
fn a_target_that_never_connects_keeps_its_data_and_settings() {
    let (_master, archive) = small_archive();
    let target = RedisServer::start(&[("masterauth", "mine")]);
    target.cmd(&["SET", "kept", "1"]);
    let closed = free_port();
    let (code, err) = restore(
        &archive,
        &target,
        "latest",
        &[
            "--via",
            "replication",
            "--force",
            "--target-timeout",
            "3s",
            "--advertise",
            &format!("127.0.0.1:{closed}"),
        ],
    )
    .unwrap_err();
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("start its sync") && err.contains(&closed.to_string()),
        "{err}"
    );
    assert_eq!(
        target.cmd(&["GET", "kept"]),
        redis::Value::BulkString(b"1".to_vec())
    );
    assert_eq!(target.cmd(&["DBSIZE"]), redis::Value::Int(1));
    assert_master_again(&target, "mine");
}

/// The cases a replay by commands needs its TTL moves for (the previous issue's live-only
/// bugs): key TTLs near i64::MAX and 2^53, hash field TTLs near 2^46 ms (Redis 7.4),
/// `XADD … LIMIT` as a master propagates it. Through replication: equal, nothing moved.
#[test]
fn ttl_and_stream_trim_cases_come_through_replication_without_moving_ttls() {
    // Key TTLs near the limits, and XADD/XTRIM with LIMIT, on Redis 7.0.
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(&mut con, &["SET", "snap-b", "1"]);
    exec(&mut con, &["PEXPIREAT", "snap-b", "9223372036854775807"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "a", "1"]);
        exec(con, &["PEXPIREAT", "a", "9007199254740993"]);
        exec(con, &["SET", "b", "1"]);
        exec(con, &["PEXPIREAT", "b", "9223372036854775807"]);
        exec(con, &["SET", "c", "1", "PXAT", "9223372036854775806"]);
        for i in 0..200 {
            exec(con, &["XADD", "s", "*", "f", &i.to_string()]);
        }
        exec(
            con,
            &[
                "XADD", "s", "MAXLEN", "~", "10", "LIMIT", "150", "*", "f", "v",
            ],
        );
        exec(con, &["XTRIM", "s", "MAXLEN", "~", "0", "LIMIT", "100"]);
    });
    let target = RedisServer::start(&[]);
    let rep = restore_ok(&archive, &target, "latest", &["--via", "replication"]);
    assert_eq!(rep["via"], "replication", "{rep}");
    assert_eq!(
        (
            rep["expiries_moved_back"].as_u64(),
            rep["expiries_in_reserved_range"].as_u64()
        ),
        (Some(0), Some(0)),
        "{rep}"
    );
    for k in ["snap-b", "a", "b", "c"] {
        assert_eq!(
            target.cmd(&["PEXPIRETIME", k]),
            master.cmd(&["PEXPIRETIME", k]),
            "{k}"
        );
    }
    for c in [&["XINFO", "STREAM", "s"][..], &["XRANGE", "s", "-", "+"]] {
        assert_eq!(target.cmd(c), master.cmd(c), "{c:?}");
    }
    assert_equals_master(&master, &target);

    // Hash field TTLs near 2^46 ms on Redis 7.4.
    let bin = servers::redis_7_4();
    let master = RedisServer::start_with(&bin, &[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(&mut con, &["HSET", "snap", "f", "1"]);
    exec(
        &mut con,
        &["HPEXPIREAT", "snap", "70368744176664", "FIELDS", "1", "f"],
    );
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["HSET", "h", "f", "1", "g", "1"]);
        exec(
            con,
            &["HPEXPIREAT", "h", "70368744176664", "FIELDS", "1", "f"],
        );
        exec(
            con,
            &["HPEXPIREAT", "h", "70368744177663", "FIELDS", "1", "g"],
        );
    });
    let target = RedisServer::start_with(&bin, &[]);
    let rep = restore_ok(&archive, &target, "latest", &["--via", "replication"]);
    assert_eq!(rep["via"], "replication", "{rep}");
    assert_eq!(rep["expiries_moved_back"], 0, "{rep}");
    for (k, f) in [("snap", "f"), ("h", "f"), ("h", "g")] {
        let c = ["HPEXPIRETIME", k, "FIELDS", "1", f];
        assert_eq!(target.cmd(&c), master.cmd(&c), "{k}.{f}");
    }
    assert_equals_master(&master, &target);

    // A Redis 7.0 target cannot load the 7.4 master's RDB 12: said before anything is sent.
    let old = RedisServer::start(&[]);
    let (code, err) = restore(&archive, &old, "latest", &["--via", "replication"]).unwrap_err();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("RDB version 12") && err.contains("7.0"),
        "{err}"
    );
    assert_eq!(old.info("replication")["role"], "master");
}

/// `--db`/`--match` through replication: the target loads the snapshot re-encoded without the
/// unselected keys and the stream without the commands that touch none of them; at each
/// checkpoint it equals the same restore by commands, with the same counts; its replication id
/// before `REPLICAOF NO ONE` was a fresh one, not the archived master's.
#[test]
fn db_and_match_restore_through_replication_as_by_commands() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(20261207);
    let mut con = master.client();
    w.run_step(&mut con, 1200);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    let mut checkpoints = Vec::new();
    for _ in 0..2 {
        w.run_step(&mut con, 1500);
        checkpoints.push(w.checkpoint(&mut con, &master));
    }
    exec(&mut con, &["SET", "via:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let archived_replid = master.info("replication")["master_replid"].clone();

    // (Selections that no command of the workload crosses into from a key it needs: a
    // restore by commands stops at a command the target refuses, `RENAME` or `LSET` of a key
    // left out or moved in from a database left out (`MOVE`, `SWAPDB`), where a replica takes
    // the error as replicas do. A `--db` of its own is in the test below.)
    let filters: [&[&str]; 2] = [
        &["--match", "hash:*", "--match", "zset:*"],
        &[
            "--db", "0", "--db", "1", "--db", "2", "--db", "3", "--match", "hash:*",
        ],
    ];
    for (i, cp) in checkpoints.iter().enumerate() {
        let to = cp.time_ms.to_string();
        for f in filters {
            let what = format!("checkpoint {i} {f:?}");
            let by_commands = RedisServer::start(&[]);
            let mut args = vec!["--via", "commands"];
            args.extend_from_slice(f);
            let crep = restore_ok(&archive, &by_commands, &to, &args);
            let by_replication = RedisServer::start(&[]);
            args[1] = if i == 0 { "replication" } else { "auto" };
            let rrep = restore_ok(&archive, &by_replication, &to, &args);
            assert_eq!(rrep["via"], "replication", "{what}: {rrep}");
            for k in [
                "offset",
                "commands",
                "commands_skipped",
                "commands_mixed",
                "keys_skipped",
            ] {
                assert_eq!(crep[k], rrep[k], "{what}: {k}\n{crep}\n{rrep}");
            }
            assert!(rrep["keys_skipped"].as_u64().unwrap() > 0, "{what}: {rrep}");
            assert!(
                rrep["commands_skipped"].as_u64().unwrap() > 0,
                "{what}: {rrep}"
            );
            let cutoff = now_ms() + 5000;
            let want = without_idle_consumers(&logical_state(&by_commands, cutoff));
            let got = without_idle_consumers(&logical_state(&by_replication, cutoff));
            assert_same(&what, &want, &got);
            assert!(keys_of(&by_replication) > 0, "{what}: nothing selected");
            // A subset of the master: it replicated from an id of its own.
            let info = by_replication.info("replication");
            assert_eq!(info["role"], "master", "{what}");
            let replid2 = &info["master_replid2"];
            assert_ne!(replid2, &archived_replid, "{what}: {info:?}");
            assert_ne!(
                replid2, "0000000000000000000000000000000000000000",
                "{what}: {info:?}"
            );
            assert_eq!(replid2.len(), 40, "{what}: {info:?}");
        }
    }
    // --db with a database the checkpoint has no key in: an empty target, as by commands.
    let target = RedisServer::start(&[]);
    let rep = restore_ok(
        &archive,
        &target,
        &checkpoints[1].time_ms.to_string(),
        &["--via", "replication", "--db", "9"],
    );
    assert_eq!(rep["via"], "replication", "{rep}");
    assert_eq!(target.cmd(&["DBSIZE"]), redis::Value::Int(0));
    assert_eq!(keys_of(&target), 0);
}

/// `--db` through replication: keys and commands of several databases, with `SELECT`s and
/// transactions across them, restored with `--db 1` and with `--db 0 --db 2`: equal to the
/// same restores by commands, with the same counts.
#[test]
fn db_restores_through_replication_as_by_commands() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    for db in 0..3 {
        exec(&mut con, &["SELECT", &db.to_string()]);
        for i in 0..20 {
            exec(&mut con, &["SET", &format!("k{i}"), &format!("db{db}")]);
            exec(&mut con, &["HSET", &format!("h{i}"), "f", &i.to_string()]);
        }
        exec(&mut con, &["PEXPIRE", "k3", "3600000"]);
    }
    exec(&mut con, &["SELECT", "0"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        for db in [1, 0, 2, 1] {
            exec(con, &["SELECT", &db.to_string()]);
            exec(con, &["INCR", "counter"]);
            exec(con, &["DEL", "k1", "k2"]);
            exec(con, &["RPUSH", "l", "a", &db.to_string()]);
            exec(con, &["MULTI"]);
            exec(con, &["SET", "tx", &db.to_string()]);
            exec(con, &["HDEL", "h5", "f"]);
            exec(con, &["EXEC"]);
            exec(con, &["COPY", "k7", "copied", "DB", "3"]);
        }
        exec(con, &["SELECT", "2"]);
        exec(con, &["FLUSHDB"]);
        exec(con, &["SET", "after-flush", "1"]);
    });
    for f in [&["--db", "1"][..], &["--db", "0", "--db", "2"]] {
        let by_commands = RedisServer::start(&[]);
        let mut args = vec!["--via", "commands"];
        args.extend_from_slice(f);
        let crep = restore_ok(&archive, &by_commands, "latest", &args);
        let by_replication = RedisServer::start(&[]);
        args[1] = "replication";
        let rrep = restore_ok(&archive, &by_replication, "latest", &args);
        assert_eq!(rrep["via"], "replication", "{f:?}: {rrep}");
        for k in [
            "offset",
            "commands",
            "commands_skipped",
            "commands_mixed",
            "keys_skipped",
        ] {
            assert_eq!(crep[k], rrep[k], "{f:?}: {k}\n{crep}\n{rrep}");
        }
        assert!(rrep["commands_skipped"].as_u64().unwrap() > 0, "{rrep}");
        let cutoff = now_ms() + 5000;
        assert_same(
            &format!("{f:?}"),
            &logical_state(&by_commands, cutoff),
            &logical_state(&by_replication, cutoff),
        );
        let keyspace = by_replication.info("keyspace");
        let mut dbs: Vec<&str> = keyspace.keys().map(String::as_str).collect();
        dbs.sort();
        // (`COPY … DB 3` from a database kept is applied whole: only db 1's ran on the
        // master, the later ones found the destination taken.)
        let want: &[&str] = if f.len() == 2 {
            &["db1", "db3"]
        } else {
            &["db0", "db2"]
        };
        assert_eq!(dbs, want, "{f:?}: {keyspace:?}");
    }
}

/// A command that touches selected and unselected keys can fail on the target: `RENAME`
/// from a key the selection left out finds no key. A replica ignores the error; by
/// commands it is counted (`commands_mixed_failed`) and the restore goes on, so both paths
/// end equal.
#[test]
fn mixed_commands_that_fail_on_the_target_are_counted_not_fatal() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "a:1", "from-outside"]);
        exec(con, &["RENAME", "a:1", "b:1"]);
        exec(con, &["SET", "a:2", "x"]);
        exec(con, &["RENAMENX", "a:2", "b:2"]);
        exec(con, &["SET", "b:3", "kept"]);
        exec(con, &["RENAME", "b:3", "b:4"]);
    });
    let by_commands = RedisServer::start(&[]);
    let crep = restore(
        &archive,
        &by_commands,
        "latest",
        &["--via", "commands", "--match", "b:*"],
    )
    .unwrap_or_else(|(code, e)| panic!("exit {code}: {e}"));
    assert_eq!(crep["commands_mixed"], 2, "{crep}");
    assert_eq!(crep["commands_mixed_failed"], 2, "{crep}");
    let by_replication = RedisServer::start(&[]);
    let rrep = restore_ok(
        &archive,
        &by_replication,
        "latest",
        &["--via", "replication", "--match", "b:*"],
    );
    assert_eq!(rrep["commands_mixed"], 2, "{rrep}");
    let cutoff = now_ms() + 5000;
    let got = logical_state(&by_commands, cutoff);
    assert_same("by commands", &logical_state(&by_replication, cutoff), &got);
    let keys: Vec<&str> = got["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["b:4"], "{got}");
}

/// `MOVE` and `COPY … DB` out of a database `--db` leaves out, into one it restores: the
/// restore never held those keys. Both paths count the commands in the report (and say so)
/// rather than leaving the keys out silently.
#[test]
fn keys_brought_in_from_a_left_out_database_are_counted() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SELECT", "1"]);
        exec(con, &["SET", "stay", "1"]);
        exec(con, &["SELECT", "0"]);
        exec(con, &["SET", "moved", "0"]);
        exec(con, &["MOVE", "moved", "1"]);
        exec(con, &["SET", "copied", "0"]);
        exec(con, &["COPY", "copied", "copy", "DB", "1"]);
        exec(con, &["SET", "elsewhere", "0"]);
        exec(con, &["MOVE", "elsewhere", "2"]);
    });
    for via in ["commands", "replication"] {
        let target = RedisServer::start(&[]);
        let rep = restore_ok(&archive, &target, "latest", &["--via", via, "--db", "1"]);
        assert_eq!(rep["commands_from_unselected"], 2, "via {via}: {rep}");
        let mut con = target.client();
        exec(&mut con, &["SELECT", "1"]);
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
        assert_eq!(keys, ["stay"], "via {via}: the keys brought in are missing");
    }
    let dir = temp_dir("pitr-files");
    let out = dir.path().join("out");
    let rep = archive.restore(
        "latest",
        &["--output-dir", out.to_str().unwrap(), "--db", "1"],
    );
    assert_eq!(rep["commands_from_unselected"], 2, "into files: {rep}");
}
