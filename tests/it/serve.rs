//! `pitr serve`: real redis-server replicas of the archive. A replica of `--to <checkpoint>`
//! equals the master at that checkpoint once its offset reaches the cut (the archived
//! master's own offsets); a replica of `--follow` converges to the master; a replica whose
//! link breaks resumes with `+CONTINUE`; a client that sends garbage gets an error and the
//! others are not disturbed.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::state::{diff, drop_expired, logical_state, without_idle_consumers};
use crate::support::workload::Workload;
use crate::support::*;

/// `pitr serve --store <archive> --listen 127.0.0.1:<port> <mode…> --json`, and what it
/// printed once listening.
fn serve(archive: &Archive, mode: &[&str]) -> (PitrProcess, u16, Value) {
    let port = free_port();
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

#[test]
fn a_replica_of_serve_to_each_checkpoint_equals_it() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(20261206);
    let mut con = master.client();
    w.run_step(&mut con, 800);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    let mut checkpoints = vec![];
    let mut offsets = vec![];
    for _ in 0..3 {
        w.run_step(&mut con, 1500);
        checkpoints.push(w.checkpoint(&mut con, &master));
        offsets.push(master_offset(&master));
    }
    exec(&mut con, &["SET", "serve:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));

    for (i, cp) in checkpoints.iter().enumerate() {
        let (serve, port, v) = serve(&archive, &["--to", &cp.time_ms.to_string()]);
        let cut = v["cut_offset"].as_u64().unwrap();
        // Nothing was written between the checkpoint and the offset read after it.
        assert_eq!(cut, offsets[i], "checkpoint {i}: {v}");
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
