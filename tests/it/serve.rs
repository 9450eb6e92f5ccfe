//! `pitr serve`: real redis-server replicas of the archive. A replica of `--to <checkpoint>`
//! equals the master at that checkpoint once its offset reaches the cut (the archived
//! master's own offsets), for replicas of Redis 5.0 to 7.4 and Valkey 9.1; a replica of
//! `--follow` converges to the master; a replica whose link breaks, or whose `pitr serve` is
//! killed and started again, resumes with `+CONTINUE`; a client that sends garbage, closes in
//! the middle of a snapshot or stops reading gets dropped and the others are not disturbed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::state::{
    align_expiries, diff, drop_expired, drop_late_expiring, logical_state, without_idle_consumers,
};
use crate::support::workload::{Checkpoint, Workload};
use crate::support::*;

/// `pitr serve --store <archive> --listen 127.0.0.1:<port> <mode…> --json`, and what it
/// printed once listening.
pub(crate) fn serve(archive: &Archive, mode: &[&str]) -> (PitrProcess, u16, Value) {
    serve_on(free_port(), archive, mode)
}

/// [`serve`] on a given port.
fn serve_on(port: u16, archive: &Archive, mode: &[&str]) -> (PitrProcess, u16, Value) {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--store",
        archive.store(),
        "--listen",
        &listen,
        "--json",
    ];
    args.extend_from_slice(mode);
    let p = PitrProcess::spawn(&args, &[("RUST_LOG".into(), "info".into())]);
    wait_until_msg(Duration::from_secs(60), "pitr serve to listen", || {
        assert!(p.is_running(), "pitr serve exited: {}", p.log());
        p.stdout().lines().next().is_some()
    });
    let v: Value = serde_json::from_str(p.stdout().lines().next().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {}", p.log()));
    (p, port, v)
}

fn replica_of(port: u16) -> RedisServer {
    RedisServer::start(&[("replicaof", &format!("127.0.0.1 {port}"))])
}

fn repl_offset(r: &RedisServer) -> Option<u64> {
    let info = r.info("replication");
    if info.get("master_link_status").map(String::as_str) != Some("up") {
        return None;
    }
    info.get("slave_repl_offset")?.parse().ok()
}

/// Waits until `r`'s link is up and its offset reached `offset`.
fn wait_offset(r: &RedisServer, offset: u64, p: &PitrProcess) {
    wait_until_msg(
        Duration::from_secs(60),
        "the replica to reach the offset",
        || {
            assert!(p.is_running(), "pitr serve exited: {}", p.log());
            repl_offset(r).is_some_and(|o| o >= offset)
        },
    );
}

/// Sends `bytes` on a fresh connection to `port`; what came back within a second.
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn assert_same(what: &str, want: &Value, got: &Value) {
    if let Some(d) = diff(want, got) {
        panic!("{what}: the replica differs (left: expected, right: replica)\n{d}");
    }
}

/// The fidelity workload on a master of `bin` while it is archived: some history before the
/// archiver attaches (it lands in the snapshot), then three checkpoints.
pub(crate) struct Archived {
    pub archive: Archive,
    pub checkpoints: Vec<Checkpoint>,
    /// The master's `master_repl_offset` after the workload's writes before each checkpoint,
    /// and after the checkpoint (the master may write on its own meanwhile: a `DEL` of an
    /// expired key, the `REPLCONF GETACK` of the checkpoint's `WAIT`).
    pub offsets: Vec<std::ops::RangeInclusive<u64>>,
    /// When the workload began.
    pub began_ms: u64,
}

pub(crate) fn archive_workload(bin: &Path, seed: u64) -> Archived {
    let began_ms = now_ms();
    let master = RedisServer::start_with(bin, &[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(seed);
    let mut con = master.client();
    w.run_step(&mut con, 800);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    let mut checkpoints = vec![];
    let mut offsets = vec![];
    for _ in 0..3 {
        w.run_step(&mut con, 1500);
        let before = master_offset(&master);
        if servers::version(bin).0 >= 6 {
            checkpoints.push(w.checkpoint(&mut con, &master));
        } else {
            // As `Workload::checkpoint`, with a state `logical_state` can read.
            assert_eq!(wait_archived(&mut con, 5000), 1);
            std::thread::sleep(Duration::from_millis(2));
            let time_ms = now_ms();
            let state = readable_state(bin, &master, time_ms);
            std::thread::sleep(Duration::from_millis(2));
            checkpoints.push(Checkpoint { time_ms, state });
        }
        offsets.push(before..=master_offset(&master));
    }
    exec(&mut con, &["SET", "serve:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    Archived {
        archive,
        checkpoints,
        offsets,
        began_ms,
    }
}

/// `logical_state` of `r`; for a Redis 5.0 server (whose streams `logical_state` cannot read:
/// no `XINFO STREAM … FULL`) that of a Redis 6.2 server holding a copy of every key made by
/// `DUMP` and `RESTORE` (values and consumer groups as serialized; TTLs from `PTTL`, a few
/// milliseconds late).
pub(crate) fn readable_state(bin: &Path, r: &RedisServer, cutoff: u64) -> Value {
    if servers::version(bin).0 >= 6 {
        return logical_state(r, cutoff);
    }
    let copy = RedisServer::start_with(&servers::redis_6_2(), &[]);
    let mut from = r.client();
    let mut to = copy.client();
    let dbs: Vec<String> = r
        .info("keyspace")
        .keys()
        .filter_map(|k| k.strip_prefix("db").map(str::to_string))
        .collect();
    for db in dbs {
        exec(&mut from, &["SELECT", &db]);
        exec(&mut to, &["SELECT", &db]);
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut from).unwrap();
        for k in keys {
            let (dump, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("DUMP")
                .arg(&k)
                .cmd("PTTL")
                .arg(&k)
                .query(&mut from)
                .unwrap();
            let Some(dump) = dump else { continue };
            let _: () = redis::cmd("RESTORE")
                .arg(&k)
                .arg(pttl.max(0))
                .arg(dump)
                .query(&mut to)
                .unwrap();
        }
    }
    logical_state(&copy, cutoff)
}

/// Every checkpoint of `a`, served with `--to`, into a replica of each of `replicas` at once:
/// each equals the checkpoint once its offset reached the cut (the master's offset then).
/// `relative_ttls`: the archived master (before 7.0) propagated `EXPIRE`, `SET … EX` as
/// sent, so a replica applies them from when it replays them, not from when the master ran
/// them: its TTLs are later than the master's by at most the time since the workload began.
fn replicas_equal_each_checkpoint(a: &Archived, replicas: &[PathBuf], relative_ttls: bool) {
    for (i, cp) in a.checkpoints.iter().enumerate() {
        let (serve, port, v) = serve(&a.archive, &["--to", &cp.time_ms.to_string()]);
        let cut = v["cut_offset"].as_u64().unwrap();
        assert!(
            a.offsets[i].contains(&cut),
            "checkpoint {i}: {v} {:?}",
            a.offsets[i]
        );
        let started: Vec<RedisServer> = replicas
            .iter()
            .map(|bin| RedisServer::start_with(bin, &[("replicaof", &format!("127.0.0.1 {port}"))]))
            .collect();
        for (bin, replica) in replicas.iter().zip(&started) {
            let what = format!("checkpoint {i} into {}", bin.display());
            wait_offset(replica, cut, &serve);
            // Short TTLs (under 2.5 s) pass before the cutoff on both sides.
            let cutoff = now_ms() + 5000;
            let want = without_idle_consumers(&drop_expired(&cp.state, cutoff));
            let mut got = without_idle_consumers(&readable_state(bin, replica, cutoff));
            if relative_ttls {
                let slack = (now_ms() - a.began_ms) as i64 + 1000;
                got = drop_late_expiring(&cp.state, &got, cutoff, slack);
                got = align_expiries(&want, &got, slack);
            }
            assert_same(&what, &want, &got);
            assert_eq!(
                replica.info("replication")["master_replid"],
                v["replid"].as_str().unwrap(),
                "{what}"
            );
        }
        let log = serve.stderr();
        assert_eq!(
            log.matches("full sync: +FULLRESYNC").count(),
            replicas.len(),
            "{log}"
        );
    }
}

/// The workload of a Redis 7.0 master into Redis 7.4 and Valkey 9.1 replicas (RDB 10 loads
/// in both), and of a Redis 5.0 master (RDB 9) into Redis 5.0 and 6.2 replicas, every
/// checkpoint served by `--to`.
#[test]
fn the_fidelity_workload_served_to_replicas_of_5_0_6_2_7_4_and_valkey_9_1() {
    let a = archive_workload(&redis_server::redis_server_bin(), 20261207);
    replicas_equal_each_checkpoint(&a, &[servers::redis_7_4(), servers::valkey_9_1()], false);
    let a = archive_workload(&servers::redis_5_0(), 20261208);
    replicas_equal_each_checkpoint(&a, &[servers::redis_5_0(), servers::redis_6_2()], true);
}

#[test]
fn a_replica_of_serve_to_each_checkpoint_equals_it() {
    let Archived {
        archive,
        checkpoints,
        offsets,
        ..
    } = archive_workload(&redis_server::redis_server_bin(), 20261206);
    for (i, cp) in checkpoints.iter().enumerate() {
        let (serve, port, v) = serve(&archive, &["--to", &cp.time_ms.to_string()]);
        let cut = v["cut_offset"].as_u64().unwrap();
        // Within the master's offsets around the checkpoint (the master may write by itself
        // in between: a PING, an expired key's DEL).
        assert!(
            offsets[i].contains(&cut),
            "checkpoint {i}: cut {cut} outside {:?}: {v}",
            offsets[i]
        );
        assert_eq!(v["replid"].as_str().unwrap().len(), 40, "{v}");
        let replica = replica_of(port);
        if i == 0 {
            // Garbage on another connection while the replica syncs: an error, then closed.
            let got = raw_exchange(port, b"*x\r\n");
            assert!(got.starts_with("-ERR Protocol error"), "{got:?}");
            let got = raw_exchange(port, b"FLUSHALL\r\nPING\r\n");
            assert!(
                got.starts_with("-ERR unknown command 'FLUSHALL'"),
                "{got:?}"
            );
            assert!(got.ends_with("+PONG\r\n"), "{got:?}");
        }
        wait_offset(&replica, cut, &serve);
        let cutoff = now_ms() + 5000;
        let want = without_idle_consumers(&drop_expired(&cp.state, cutoff));
        let got = without_idle_consumers(&logical_state(&replica, cutoff));
        assert_same(&format!("checkpoint {i}"), &want, &got);
        let info = replica.info("replication");
        assert_eq!(
            info["master_replid"],
            v["replid"].as_str().unwrap(),
            "{info:?}"
        );
        if i == 0 {
            let log = serve.stderr();
            assert!(
                log.contains("replica dropped") && log.contains("protocol error"),
                "{log}"
            );
            // A second replica while the first stays up.
            let second = replica_of(port);
            wait_offset(&second, cut, &serve);
            assert_eq!(repl_offset(&replica).map(|o| o >= cut), Some(true));
            assert_eq!(second.cmd(&["DBSIZE"]), replica.cmd(&["DBSIZE"]));
        }
    }
}

#[test]
fn a_replica_of_serve_follow_converges_and_resumes_with_continue() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(7);
    let mut con = master.client();
    w.run_step(&mut con, 300);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    w.run_step(&mut con, 300);
    assert_eq!(wait_archived(&mut con, 5000), 1);

    let (serve, port, _) = serve(&archive, &["--follow", "--poll-interval", "200ms"]);
    let replica = replica_of(port);
    wait_until_msg(Duration::from_secs(60), "the replica link", || {
        repl_offset(&replica).is_some()
    });
    // The master goes on writing while the replica follows the archive.
    for _ in 0..3 {
        w.run_step(&mut con, 400);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let caught = |r: &RedisServer| {
        let want = master_offset(&master);
        wait_offset(r, want, &serve);
        let cutoff = now_ms() + 5000;
        let want = without_idle_consumers(&logical_state(&master, cutoff));
        let got = without_idle_consumers(&logical_state(r, cutoff));
        assert_same("follow", &want, &got);
    };
    caught(&replica);
    assert_eq!(
        serve.stderr().matches("full sync: +FULLRESYNC").count(),
        1,
        "{}",
        serve.log()
    );

    // The replica restarts (its RDB keeps its replication id and offset) while the master
    // writes: it resumes from the archive with +CONTINUE, no second full sync.
    replica.restart_with_save();
    w.run_step(&mut con, 400);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught(&replica);
    let log = serve.stderr();
    assert!(log.contains("+CONTINUE"), "{log}");
    assert_eq!(log.matches("full sync: +FULLRESYNC").count(), 1, "{log}");
    assert!(
        replica
            .log_tail()
            .contains("Successful partial resynchronization"),
        "{}",
        replica.log_tail()
    );
    // Its link broken (not restarted): the same.
    replica.cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    w.run_step(&mut con, 200);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught(&replica);
    let log = serve.stderr();
    assert_eq!(log.matches("+CONTINUE at offset").count(), 2, "{log}");
    assert_eq!(log.matches("full sync: +FULLRESYNC").count(), 1, "{log}");
    drop(p);
}

#[test]
fn serve_requires_the_password_and_refuses_a_replica_too_old_for_the_rdb() {
    // A Redis 7.4 master writes RDB 12, which Valkey 9.1 (which says its version) cannot load.
    let master =
        RedisServer::start_with(&servers::redis_7_4(), &[("repl-diskless-sync-delay", "0")]);
    master.cmd(&["SET", "a", "1"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["SET", "b", "2"]));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let serve = PitrProcess::spawn(
        &[
            "serve",
            "--store",
            archive.store(),
            "--listen",
            &listen,
            "--to",
            "latest",
        ],
        &[("PITR_SERVE_PASSWORD".into(), "s3cret".into())],
    );
    wait_until_msg(Duration::from_secs(60), "pitr serve to listen", || {
        !serve.stdout().is_empty()
    });
    let got = raw_exchange(port, b"PING\r\nAUTH nope\r\nAUTH s3cret\r\nPING\r\n");
    assert_eq!(
        got,
        "-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+PONG\r\n"
    );
    let valkey = RedisServer::start_with(
        &servers::valkey_9_1(),
        &[
            ("replicaof", &format!("127.0.0.1 {port}")),
            ("masterauth", "s3cret"),
        ],
    );
    wait_until_msg(Duration::from_secs(30), "the refusal", || {
        serve.stderr().contains("replica refused")
    });
    let log = serve.stderr();
    assert!(
        log.contains("9.1") && log.contains("RDB version 12"),
        "{log}"
    );
    assert_eq!(valkey.cmd(&["DBSIZE"]), redis::Value::Int(0));
    // A Redis 7.4 replica (which does not say its version) with the password syncs.
    let redis = RedisServer::start_with(
        &servers::redis_7_4(),
        &[
            ("replicaof", &format!("127.0.0.1 {port}")),
            ("masterauth", "s3cret"),
        ],
    );
    wait_until_msg(
        Duration::from_secs(60),
        "the Redis 7.4 replica to sync",
        || repl_offset(&redis).is_some() && redis.cmd(&["DBSIZE"]) == redis::Value::Int(2),
    );
    assert_eq!(
        redis.cmd(&["GET", "b"]),
        redis::Value::BulkString(b"2".to_vec())
    );
}

/// Waits until `r` has the master's offset and equals it.
fn caught_up(master: &RedisServer, r: &RedisServer, serve: &PitrProcess, what: &str) {
    wait_offset(r, master_offset(master), serve);
    let cutoff = now_ms() + 5000;
    let want = without_idle_consumers(&logical_state(master, cutoff));
    let got = without_idle_consumers(&logical_state(r, cutoff));
    assert_same(what, &want, &got);
}

/// The whole log file of `r` (its tail may not reach back to the first sync).
fn server_log(r: &RedisServer) -> String {
    std::fs::read_to_string(r.log_path()).unwrap_or_default()
}

#[test]
fn serve_follow_killed_and_started_again_on_its_port_resumes_the_replica_with_continue() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(11);
    let mut con = master.client();
    w.run_step(&mut con, 300);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    w.run_step(&mut con, 300);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let follow = ["--follow", "--poll-interval", "200ms"];
    let (first, port, _) = serve(&archive, &follow);
    let replica = replica_of(port);
    w.run_step(&mut con, 300);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&master, &replica, &first, "before the kill");
    assert_eq!(
        first.stderr().matches("full sync: +FULLRESYNC").count(),
        1,
        "{}",
        first.log()
    );

    // Killed: no goodbye. The master writes on while the replica has no master.
    first.kill9();
    w.run_step(&mut con, 400);
    wait_until_msg(
        Duration::from_secs(30),
        "the replica to see its link down",
        || replica.info("replication")["master_link_status"] == "down",
    );
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let (second, again, _) = serve_on(port, &archive, &follow);
    assert_eq!(again, port);
    // Writes while the replica reconnects and after.
    for _ in 0..3 {
        w.run_step(&mut con, 300);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&master, &replica, &second, "after the restart");
    let log = second.stderr();
    assert!(log.contains("partial resync: +CONTINUE at offset"), "{log}");
    assert!(!log.contains("full sync"), "{log}");
    let rlog = server_log(&replica);
    assert!(
        rlog.contains("Successful partial resynchronization"),
        "{rlog}"
    );
    // One full sync in the replica's life: the first.
    assert_eq!(
        rlog.matches("MASTER <-> REPLICA sync: Finished with success")
            .count(),
        1,
        "{rlog}"
    );
    // And it keeps following.
    w.run_step(&mut con, 300);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&master, &replica, &second, "still following");
    drop(p);
}

/// Connects and asks for a full sync as a replica would (inline, as a `SYNC` fallback is).
fn psync_client(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PSYNC ? -1\r\n").unwrap();
    s
}

/// Reads from `s` until `n` bytes came (or the connection ended); how many came.
fn read_some(s: &mut TcpStream, n: usize, timeout: Duration) -> usize {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    got
}

#[test]
fn clients_that_close_mid_snapshot_stop_reading_or_send_garbage_do_not_disturb_a_replica() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    // A snapshot of about 20 MB, incompressible values: far more than the socket buffers.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in 0..200 {
        let mut c = redis::cmd("MSET");
        for i in 0..1000 {
            let v: String = (0..6)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect();
            c.arg(format!("k:{chunk}:{i}")).arg(v);
        }
        let _: () = c.query(&mut con).unwrap();
    }
    let archive = Archive::local();
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    exec(&mut con, &["SET", "after", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let (serve, port, _) = serve(
        &archive,
        &["--follow", "--poll-interval", "200ms", "--timeout", "5s"],
    );

    // One stops reading after the first bytes; one reads a megabyte and goes away; the real
    // replica syncs meanwhile.
    let mut stuck = psync_client(port);
    assert!(read_some(&mut stuck, 1, Duration::from_secs(30)) > 0);
    let mut leaving = psync_client(port);
    assert!(read_some(&mut leaving, 1 << 20, Duration::from_secs(30)) >= 1 << 20);
    let replica = replica_of(port);
    wait_until_msg(Duration::from_secs(30), "three full syncs", || {
        serve.stderr().matches("full sync: +FULLRESYNC").count() == 3
    });
    drop(leaving);
    let got = raw_exchange(port, b"*2\r\n$4\r\nPSYNC\r\n*x\r\n");
    assert!(got.starts_with("-ERR Protocol error"), "{got:?}");
    exec(&mut con, &["SET", "while", "syncing"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&master, &replica, &serve, "beside the others");
    assert_eq!(replica.cmd(&["DBSIZE"]), redis::Value::Int(200_002));

    // The stuck one is dropped once a write to it waits longer than --timeout, and its
    // connection closed: what it did not read, then the end.
    let t = Instant::now();
    wait_until_msg(
        Duration::from_secs(30),
        &format!("the stuck client dropped: {}", serve.log()),
        || serve.stderr().contains("timed out writing to the replica"),
    );
    let n = read_some(&mut stuck, usize::MAX, Duration::from_secs(10));
    assert!(n < 30 << 20, "{n}");
    let mut one = [0u8; 1];
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let closed = match stuck.read(&mut one) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(
        closed,
        "the stuck client's connection is still open after {:?}: {}",
        t.elapsed(),
        serve.log()
    );
    let log = serve.stderr();
    assert!(log.contains("protocol error"), "{log}");
    // The one that left: its end logged, as a closed connection or a failed write.
    assert!(
        log.matches("replica dropped").count() + log.matches("closed the connection").count() >= 3,
        "{log}"
    );
    // The replica goes on following.
    exec(&mut con, &["SET", "later", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    caught_up(&master, &replica, &serve, "after the others left");
    assert_eq!(
        replica.info("replication")["master_link_status"],
        "up",
        "{}",
        serve.log()
    );
    drop(p);
}
