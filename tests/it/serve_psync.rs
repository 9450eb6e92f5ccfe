//! A replica of `pitr serve` holds the archived master's replication id and offsets, so that
//! once told `REPLICAOF <the real master>` it resyncs partially when the master's backlog
//! still holds its offset: caught up with `--follow`, or served a moment behind the master
//! with `--to … --repl-ping 0` (with PINGs past the cut it is served under an id of its own,
//! and gets a full sync from the master). And `pitr serve` of an archive whose master sent relative
//! TTLs (before 7.0) says so once when it starts.

use std::collections::HashMap;
use std::time::Duration;

use crate::serve::serve;
use crate::support::archiving::*;
use crate::support::state::{diff, logical_state, without_idle_consumers};
use crate::support::workload::Workload;
use crate::support::*;

/// `r`'s replication offset while its link is up.
fn repl_offset(r: &RedisServer) -> Option<u64> {
    let info = r.info("replication");
    if info.get("master_link_status").map(String::as_str) != Some("up") {
        return None;
    }
    info.get("slave_repl_offset")?.parse().ok()
}

fn stats(r: &RedisServer) -> (u64, u64, u64) {
    let s: HashMap<String, String> = r.info("stats");
    let n = |k: &str| s[k].parse::<u64>().unwrap();
    (n("sync_full"), n("sync_partial_ok"), n("sync_partial_err"))
}

/// A master with a backlog that holds the whole test, archived, with some history before
/// the archiver attached and some after.
fn archived_master(seed: u64) -> (RedisServer, Archive, PitrProcess, Workload) {
    let master = RedisServer::start(&[
        ("repl-diskless-sync-delay", "0"),
        ("repl-backlog-size", "64mb"),
    ]);
    let archive = Archive::local();
    let mut w = Workload::new(seed);
    let mut con = master.client();
    w.run_step(&mut con, 300);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    w.run_step(&mut con, 300);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    (master, archive, p, w)
}

/// Tells `replica` (of `pitr serve`) `REPLICAOF <master>`: the master accepts a partial
/// resync (its log and `sync_partial_ok` say so, `sync_full` unchanged), then, after more
/// writes, the replica equals the master.
fn replicaof_master_resyncs_partially(
    master: &RedisServer,
    replica: &RedisServer,
    w: &mut Workload,
) {
    let (full, partial, partial_err) = stats(master);
    let replid = replica.info("replication")["master_replid"].clone();
    assert_eq!(replid, master.info("replication")["master_replid"]);
    replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    wait_until_msg(
        Duration::from_secs(60),
        "the replica's link to the master",
        || {
            let info = replica.info("replication");
            info["master_port"] == master.port().to_string() && info["master_link_status"] == "up"
        },
    );
    assert_eq!(
        stats(master),
        (full, partial + 1, partial_err),
        "sync_full, sync_partial_ok, sync_partial_err"
    );
    let mlog = std::fs::read_to_string(master.log_path()).unwrap();
    assert!(
        mlog.contains("Partial resynchronization request from")
            && mlog.contains("accepted. Sending"),
        "the master accepted a partial resync: {mlog}"
    );
    let rlog = std::fs::read_to_string(replica.log_path()).unwrap();
    assert!(
        rlog.contains("Successful partial resynchronization with master"),
        "{rlog}"
    );
    // Its replication id stays the master's: nothing was loaded again.
    assert_eq!(replica.info("replication")["master_replid"], replid);
    let mut con = master.client();
    w.run_step(&mut con, 400);
    exec(&mut con, &["SET", "psync:after", "1"]);
    wait_until_msg(
        Duration::from_secs(60),
        "the replica at the master's offset",
        || repl_offset(replica) == Some(master_offset(master)),
    );
    let cutoff = now_ms() + 5000;
    let want = without_idle_consumers(&logical_state(master, cutoff));
    let got = without_idle_consumers(&logical_state(replica, cutoff));
    if let Some(d) = diff(&want, &got) {
        panic!("the replica differs from the master (left: master)\n{d}");
    }
    assert_eq!(stats(master).0, full, "no full sync");
}

#[test]
fn a_replica_of_serve_follow_told_replicaof_the_master_resyncs_partially() {
    let (master, archive, p, mut w) = archived_master(41);
    let (serve, port, _) = serve(&archive, &["--follow", "--poll-interval", "200ms"]);
    let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {port}"))]);
    let mut con = master.client();
    w.run_step(&mut con, 400);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    // Writes stopped: the replica reaches the master's own offset through the archive.
    wait_until_msg(
        Duration::from_secs(60),
        "the replica of serve at the master's offset",
        || {
            assert!(serve.is_running(), "{}", serve.log());
            repl_offset(&replica) == Some(master_offset(&master))
        },
    );
    assert_eq!(
        serve.stderr().matches("full sync: +FULLRESYNC").count(),
        1,
        "{}",
        serve.log()
    );
    // The archived master is 7.0: absolute TTLs, no warning.
    assert!(!serve.stderr().contains("relative TTL"), "{}", serve.log());
    replicaof_master_resyncs_partially(&master, &replica, &mut w);
    drop(p);
}

#[test]
fn a_replica_of_serve_to_a_moment_behind_the_master_resyncs_partially_from_it() {
    let (master, archive, p, mut w) = archived_master(42);
    let mut con = master.client();
    w.run_step(&mut con, 300);
    let cp = w.checkpoint(&mut con, &master);
    // The master goes on: the served moment is behind it, still in its backlog.
    w.run_step(&mut con, 400);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    // No PINGs after the cut: the replica's offset stays the archived master's.
    let (serve, port, v) = serve(
        &archive,
        &["--to", &cp.time_ms.to_string(), "--repl-ping", "0"],
    );
    let cut = v["cut_offset"].as_u64().unwrap();
    let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {port}"))]);
    wait_until_msg(
        Duration::from_secs(60),
        "the replica of serve at the cut",
        || {
            assert!(serve.is_running(), "{}", serve.log());
            repl_offset(&replica) == Some(cut)
        },
    );
    assert!(cut < master_offset(&master), "{v}");
    let cutoff = now_ms() + 5000;
    let want = without_idle_consumers(&crate::support::state::drop_expired(&cp.state, cutoff));
    let got = without_idle_consumers(&logical_state(&replica, cutoff));
    if let Some(d) = diff(&want, &got) {
        panic!("the replica differs from the checkpoint\n{d}");
    }
    replicaof_master_resyncs_partially(&master, &replica, &mut w);
    drop(p);
}

/// With PINGs past the cut (the default `--repl-ping`), the replica's offsets part from the
/// master's: it is served under a replication id of the moment's own, so that `REPLICAOF` the
/// real master makes a full sync (never a partial one resuming inside a command). Restarted,
/// it resumes from `pitr serve` with `+CONTINUE` under that id.
#[test]
fn a_replica_held_with_pings_gets_its_own_replid_and_a_full_sync_from_the_master() {
    let (master, archive, p, mut w) = archived_master(43);
    let mut con = master.client();
    w.run_step(&mut con, 300);
    let cp = w.checkpoint(&mut con, &master);
    w.run_step(&mut con, 200);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let (serve, port, v) = serve(
        &archive,
        &["--to", &cp.time_ms.to_string(), "--repl-ping", "1s"],
    );
    let cut = v["cut_offset"].as_u64().unwrap();
    let archived = master.info("replication")["master_replid"].clone();
    assert_eq!(v["archived_replid"].as_str().unwrap(), archived, "{v}");
    let held = v["replid"].as_str().unwrap().to_string();
    assert_ne!(held, archived, "{v}");
    assert_eq!(held.len(), 40, "{v}");
    let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {port}"))]);
    // Past the cut by at least one PING.
    wait_until_msg(Duration::from_secs(60), "a PING past the cut", || {
        assert!(serve.is_running(), "{}", serve.log());
        repl_offset(&replica).is_some_and(|o| o > cut)
    });
    assert_eq!(replica.info("replication")["master_replid"], held);
    // The link broken: the replica resumes from serve with +CONTINUE, same id.
    replica.cmd(&["CLIENT", "KILL", "TYPE", "master"]);
    wait_until_msg(Duration::from_secs(60), "the replica's link again", || {
        assert!(serve.is_running(), "{}", serve.log());
        serve.stderr().contains("partial resync: +CONTINUE") && repl_offset(&replica).is_some()
    });
    assert_eq!(
        serve.stderr().matches("full sync: +FULLRESYNC").count(),
        1,
        "{}",
        serve.log()
    );
    assert_eq!(replica.info("replication")["master_replid"], held);
    // Told REPLICAOF the master: a full sync, not a partial one.
    let (full, partial, _) = stats(&master);
    replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    wait_until_msg(
        Duration::from_secs(60),
        "the replica synced with the master",
        || {
            let info = replica.info("replication");
            info["master_port"] == master.port().to_string()
                && info["master_link_status"] == "up"
                && info["master_sync_in_progress"] == "0"
        },
    );
    let (full2, partial2, _) = stats(&master);
    assert_eq!(
        (full2, partial2),
        (full + 1, partial),
        "one full sync, no partial one"
    );
    exec(&mut con, &["SET", "psync:after", "1"]);
    wait_until_msg(
        Duration::from_secs(60),
        "the replica at the master's offset",
        || repl_offset(&replica) == Some(master_offset(&master)),
    );
    let cutoff = now_ms() + 5000;
    let want = without_idle_consumers(&logical_state(&master, cutoff));
    let got = without_idle_consumers(&logical_state(&replica, cutoff));
    if let Some(d) = diff(&want, &got) {
        panic!("the replica differs from the master (left: master)\n{d}");
    }
    drop(p);
}

/// A Redis 5.0 master propagates `EXPIRE k 10` and `SET k v EX 10` as sent: a replica of
/// `pitr serve` counts those TTLs from when it applies them. `pitr serve` says so once, at
/// start (both modes); a 7.0 archive (see above) gets no such warning.
#[test]
fn serve_of_a_master_before_7_0_warns_once_about_relative_ttls() {
    let master =
        RedisServer::start_with(&servers::redis_5_0(), &[("repl-diskless-sync-delay", "0")]);
    master.cmd(&["SET", "a", "1"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| {
        exec(con, &["SET", "b", "2", "EX", "3600"]);
        exec(con, &["EXPIRE", "a", "3600"]);
    });
    for mode in [&["--to", "latest"][..], &["--follow"]] {
        let (serve, port, _) = serve(&archive, mode);
        let replica = RedisServer::start(&[("replicaof", &format!("127.0.0.1 {port}"))]);
        wait_until_msg(Duration::from_secs(60), "the replica to sync", || {
            repl_offset(&replica).is_some() && replica.cmd(&["DBSIZE"]) == redis::Value::Int(2)
        });
        let log = serve.stderr();
        assert_eq!(log.matches("relative TTLs").count(), 1, "{mode:?}: {log}");
        assert!(
            log.contains("RDB version 9") && log.contains("before 7.0"),
            "{mode:?}: {log}"
        );
    }
}
