//! A whole Redis Cluster archived by one `pitr archive --source cluster://…`: every shard
//! restored to the same moments as files, loaded into plain servers, and compared key by key
//! with the cluster's state then; a failover inside a shard continues its archive.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::archiving::now_ms;
use crate::support::cluster::{strings_of, Cluster};
use crate::support::restored;
use crate::support::*;

/// Writes `n` keys of `round` across many slots (and overwrites or deletes some of the
/// rounds before).
fn write_round(c: &Cluster, round: usize, n: usize) {
    for i in 0..n {
        let key = format!("k:{i}");
        match (round, i % 5) {
            (0, _) => c.run(&key, &["SET", &key, &format!("r0-{i}")]),
            (_, 0) => c.run(&key, &["DEL", &key]),
            (_, 1) => c.run(&key, &["APPEND", &key, &format!("+r{round}")]),
            _ => c.run(&key, &["SET", &key, &format!("r{round}-{i}")]),
        }
        let fresh = format!("r{round}:{i}");
        c.run(&fresh, &["SET", &fresh, &i.to_string()]);
    }
}

/// The cluster's state now, with the moment it holds for: written and archived before it,
/// nothing written after until the next round.
fn checkpoint(c: &Cluster) -> (u64, BTreeMap<String, String>) {
    c.wait_archived();
    std::thread::sleep(Duration::from_millis(20));
    let t = now_ms();
    let state = c.state();
    std::thread::sleep(Duration::from_millis(20));
    (t, state)
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn in_ranges(slot: u16, ranges: &Value) -> bool {
    ranges.as_array().unwrap().iter().any(|r| {
        let (a, b) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
        a <= slot as u64 && slot as u64 <= b
    })
}

#[test]
fn a_cluster_is_archived_per_shard_and_restored_to_one_moment() {
    let c = Cluster::start(3, 1);
    let store = temp_dir("pitr-cluster");
    let store_path = store.path().to_string_lossy().into_owned();
    let source = format!("cluster://{}", c.seeds());
    let archiver = PitrProcess::spawn(
        &[
            "archive",
            "--source",
            &source,
            "--store",
            &store_path,
            "--name",
            "cl",
            "--flush-interval",
            "100ms",
        ],
        &[],
    );
    let mut checkpoints = Vec::new();
    // Round 0 once every shard's archiver is attached.
    c.wait_archived();
    write_round(&c, 0, 300);
    checkpoints.push(checkpoint(&c));

    // A failover inside one shard, while archiving.
    let before = c.masters().iter().map(|m| m.port()).collect::<Vec<_>>();
    let old_master = c.master_of("k:0").port();
    let replica = c
        .nodes
        .iter()
        .find(|n| {
            let info = n.info("replication");
            info.get("role").map(String::as_str) == Some("slave")
                && info.get("master_port") == Some(&old_master.to_string())
        })
        .expect("the master of k:0 has a replica");
    replica.cmd(&["CLUSTER", "FAILOVER"]);
    wait_until_msg(Duration::from_secs(30), "the replica to take over", || {
        c.masters().iter().any(|m| m.port() == replica.port())
    });
    c.wait_ok();
    // The poller sees the new master and records the new topology.
    archiver.wait_for_log("the shard's master moved", Duration::from_secs(30));
    assert_ne!(
        before,
        c.masters().iter().map(|m| m.port()).collect::<Vec<_>>()
    );
    write_round(&c, 1, 300);
    checkpoints.push(checkpoint(&c));
    write_round(&c, 2, 200);
    checkpoints.push(checkpoint(&c));
    // Restored after the archiver stopped: each shard's last vouched point, left at the stop
    // (`archive::stopped`), keeps a moment after a quiet shard's last write restorable.
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());
    // Every checkpoint: each shard as files, loaded into a plain server; their union is the
    // cluster's state then, no key on two shards, each key in its shard's slots.
    for (i, (t, want)) in checkpoints.iter().enumerate() {
        let out = temp_dir("pitr-cluster-restore");
        let dir = out.path().join("data");
        let dir_s = dir.to_string_lossy().into_owned();
        let report = json_of(&run_pitr_ok(
            &[
                "restore",
                "--store",
                &store_path,
                "--name",
                "cl",
                "--to",
                &t.to_string(),
                "--output-dir",
                &dir_s,
                "--json",
            ],
            &[],
        ));
        let layout: Value =
            serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
        assert_eq!(layout["shards"].as_array().unwrap().len(), 3, "{layout:#}");
        let mut union: BTreeMap<String, String> = BTreeMap::new();
        for s in report["shards"].as_array().unwrap() {
            let line = s["report"]["files"]["command_line"].as_str().unwrap();
            assert!(line.contains(s["id"].as_str().unwrap()), "{line}");
            let (_server, port) = restored::start_from(line);
            let got = strings_of(&mut restored::connect(port));
            let slots = &layout["shards"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["id"] == s["id"])
                .unwrap()["slots"];
            for (k, v) in got {
                assert!(
                    in_ranges(c.slot(&k), slots),
                    "{k} outside its shard's slots"
                );
                assert!(union.insert(k.clone(), v).is_none(), "{k} on two shards");
            }
        }
        assert_eq!(
            union.len(),
            want.len(),
            "checkpoint {i}: key count ({} restored, {} wanted)",
            union.len(),
            want.len()
        );
        for (k, v) in want {
            assert_eq!(union.get(k), Some(v), "checkpoint {i}: key {k}");
        }
    }

    // ls: three shards, one generation each; the failed-over one under two replication ids.
    let ls = json_of(&run_pitr_ok(
        &["ls", "--store", &store_path, "--name", "cl", "--json"],
        &[],
    ));
    let shards = ls["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{ls:#}");
    let records = ls["topology"].as_array().expect("records");
    assert!(
        records.len() >= 2,
        "a record at start and after the failover: {ls:#}"
    );
    let mut moved = 0;
    for s in shards {
        let gens = s["generations"].as_array().unwrap();
        assert_eq!(gens.len(), 1, "one generation per shard: {s:#}");
        let replids = gens[0]["replids"].as_array().unwrap().len();
        if s["current"]["master"]["addr"] == format!("127.0.0.1:{}", replica.port()) {
            assert!(replids >= 2, "the failover continued the generation: {s:#}");
            moved += 1;
        }
        // The shard is an ordinary archive too.
        let one = json_of(&run_pitr_ok(
            &[
                "ls",
                "--store",
                s["store"].as_str().unwrap(),
                "--name",
                s["id"].as_str().unwrap(),
                "--json",
            ],
            &[],
        ));
        assert_eq!(one["generations"].as_array().unwrap().len(), 1);
    }
    assert_eq!(moved, 1, "{ls:#}");
}
