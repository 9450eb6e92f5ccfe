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
pub(crate) fn write_round(c: &Cluster, round: usize, n: usize) {
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
pub(crate) fn checkpoint(c: &Cluster) -> (u64, BTreeMap<String, String>) {
    c.wait_archived();
    std::thread::sleep(Duration::from_millis(20));
    let t = now_ms();
    let state = c.state();
    std::thread::sleep(Duration::from_millis(20));
    (t, state)
}

pub(crate) fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

pub(crate) fn in_ranges(slot: u16, ranges: &Value) -> bool {
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
    let archiver = c.archiver(&store_path, &[]);
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

/// What a writer did to its keys: the expected state of the cluster.
pub(crate) type Model = BTreeMap<String, String>;

/// One round of writes through slot routing (following `ASK` while a slot is migrated):
/// sets, appends and deletes over `keys` keys, and the same in the model.
pub(crate) fn routed_round(c: &Cluster, model: &mut Model, round: usize, keys: usize) {
    for i in (round % 3..keys).step_by(3) {
        let key = format!("m:{i}");
        match (round, i % 4) {
            (0, _) | (_, 2) => {
                let v = format!("r{round}-{i}");
                c.run_routed(&key, &["SET", &key, &v]);
                model.insert(key, v);
            }
            (_, 0) => {
                c.run_routed(&key, &["DEL", &key]);
                model.remove(&key);
            }
            _ => {
                let add = format!("+{round}");
                c.run_routed(&key, &["APPEND", &key, &add]);
                model.entry(key).or_default().push_str(&add);
            }
        }
    }
}

/// The slot function of the crate is the server's: `CLUSTER KEYSLOT` of keys with and without
/// hash tags, empty tags, nested and unclosed braces, and bytes past ASCII.
fn slot_function_agrees(c: &Cluster) {
    let mut keys: Vec<String> = (0..400).map(|i| format!("key:{i}")).collect();
    keys.extend(
        [
            "{user1000}.following",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "foo{bar}{zap}",
            "{",
            "}{",
            "{}",
            "a{b",
            "ключ{тег}",
            "",
        ]
        .map(String::from),
    );
    for k in keys {
        assert_eq!(
            redis_pitr::cluster::slot::key_slot(k.as_bytes()),
            c.slot(&k),
            "slot of {k:?}"
        );
    }
}

#[test]
fn a_resharding_under_writes_restores_each_key_once() {
    let c = Cluster::start(3, 0);
    slot_function_agrees(&c);
    let store = temp_dir("pitr-cluster-reshard");
    let store_path = store.path().to_string_lossy().into_owned();
    let archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    let keys = 6000;
    let mut model = Model::new();
    // (time, state, taken while the resharding ran)
    let mut checkpoints: Vec<(u64, Model, bool)> = Vec::new();
    routed_round(&c, &mut model, 0, keys);
    c.wait_archived();
    let quiet = |checkpoints: &mut Vec<(u64, Model, bool)>, model: &Model, during: bool| {
        std::thread::sleep(Duration::from_millis(100));
        checkpoints.push((now_ms(), model.clone(), during));
        std::thread::sleep(Duration::from_millis(100));
    };
    quiet(&mut checkpoints, &model, false);

    // Move 1000 slots from the first master to the second, while writing.
    let masters = c.masters();
    let (from, to) = (c.id_of(masters[0]), c.id_of(masters[1]));
    let mut cmd = std::process::Command::new(require_binary("redis-cli"));
    cmd.args(["--cluster", "reshard", &masters[0].addr()])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", "1000", "--cluster-yes"])
        .args(["--cluster-pipeline", "1"])
        .stdout(std::process::Stdio::null());
    let mut reshard = ManagedChild::spawn("redis-cli --cluster reshard", &mut cmd);
    let mut round = 1;
    loop {
        // Short rounds (a part of the keys), for checkpoints while the slots move.
        routed_round(&c, &mut model, round, keys / 10);
        round += 1;
        let running = reshard.try_wait().is_none();
        quiet(&mut checkpoints, &model, running);
        if !running {
            break;
        }
        assert!(round < 500, "the resharding does not end");
    }
    let status = reshard.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "redis-cli --cluster reshard: {status}");
    c.wait_ok();
    let moved = c.slot_masters();
    assert!(
        moved
            .iter()
            .filter(|r| r.2 == masters[1].port())
            .map(|r| (r.1 - r.0) as usize + 1)
            .sum::<usize>()
            > 6000,
        "the second master serves 1000 more slots: {moved:?}"
    );
    let records_dir = store.path().join("cl").join("cluster");
    wait_until_msg(
        Duration::from_secs(10),
        "a topology record of the move",
        || std::fs::read_dir(&records_dir).map_or(0, |d| d.count()) >= 2,
    );
    routed_round(&c, &mut model, round, keys);
    c.wait_archived();
    quiet(&mut checkpoints, &model, false);
    assert_eq!(
        c.state(),
        model,
        "the writer's model is the cluster's state"
    );
    let during = checkpoints.iter().filter(|c| c.2).count();
    assert!(during >= 1, "a checkpoint while the slots moved");
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());

    let ls = json_of(&run_pitr_ok(
        &["ls", "--store", &store_path, "--name", "cl", "--json"],
        &[],
    ));
    let records = ls["topology"].as_array().expect("records").len();
    assert!(records >= 2, "a record after the resharding: {ls:#}");

    // A target cluster in the source's layout before the resharding (another one than at
    // the checkpoints during and after it).
    let target_cluster = Cluster::start(3, 0);
    let target_url = format!("cluster://{}", target_cluster.nodes[0].addr());
    let mut foreign_passes = 0;
    let mut in_two_files = 0;
    for (i, (t, want, during)) in checkpoints.iter().enumerate() {
        let at = t.to_string();
        // Into one plain server: every shard, each key once.
        let target = RedisServer::start(&[]);
        let url = format!("redis://{}", target.addr());
        let report = json_of(&run_pitr_ok(
            &[
                "restore",
                "--store",
                &store_path,
                "--name",
                "cl",
                "--to",
                &at,
                "--target",
                &url,
                "--json",
            ],
            &[],
        ));
        assert_eq!(report["shards"].as_array().unwrap().len(), 3, "{report:#}");
        foreign_passes += report["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["foreign"].is_null())
            .count();
        let got = strings_of(&mut target.client());
        for (k, v) in want {
            assert_eq!(
                got.get(k),
                Some(v),
                "checkpoint {i} (during: {during}), live: {k}"
            );
        }
        assert_eq!(
            got.len(),
            want.len(),
            "checkpoint {i} (during: {during}), live"
        );

        // Into a cluster of another layout, slot-routed: each key on the master of its slot
        // there, once (`state` asks every master and fails on a key on two).
        run_pitr_ok(
            &[
                "restore",
                "--store",
                &store_path,
                "--name",
                "cl",
                "--to",
                &at,
                "--target",
                &target_url,
                "--force",
            ],
            &[],
        );
        for m in target_cluster.masters() {
            for k in strings_of(&mut m.client()).keys() {
                assert_eq!(
                    target_cluster.master_of(k).port(),
                    m.port(),
                    "checkpoint {i}: {k} on a master that does not serve its slot"
                );
            }
        }
        assert_eq!(
            &target_cluster.state(),
            want,
            "checkpoint {i} (during: {during}), cluster target"
        );

        // As files: each shard's state as it is; their union is the state, and a key on two
        // shards is one caught in its migration, with the same value on both.
        let out = temp_dir("pitr-cluster-reshard-files");
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
                &at,
                "--output-dir",
                &dir_s,
                "--json",
            ],
            &[],
        ));
        let mut union: BTreeMap<String, String> = BTreeMap::new();
        for s in report["shards"].as_array().unwrap() {
            let line = s["report"]["files"]["command_line"].as_str().unwrap();
            let (_server, port) = restored::start_from(line);
            for (k, v) in strings_of(&mut restored::connect(port)) {
                if let Some(other) = union.insert(k.clone(), v.clone()) {
                    assert!(*during, "checkpoint {i}: {k} on two shards, no resharding");
                    assert_eq!(other, v, "checkpoint {i}: {k} on two shards, two values");
                    in_two_files += 1;
                }
            }
        }
        assert_eq!(&union, want, "checkpoint {i} (during: {during}), files");
    }
    eprintln!(
        "{} checkpoints ({during} during the resharding), {records} topology records, \
         {foreign_passes} second passes, {in_two_files} keys in two shards' files",
        checkpoints.len()
    );
}
