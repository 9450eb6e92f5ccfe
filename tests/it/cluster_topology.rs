//! A cluster archive while the cluster's shape changes: a master added and resharded onto
//! (its shard archived from then on) and later emptied and removed (its archiver stopped);
//! Redis 6.2, which has no `CLUSTER SHARDS` (discovery by `CLUSTER SLOTS`, shards named by a
//! master's node id, kept across a failover and a restart of the archiver); and Valkey 9's
//! atomic slot migration (`CLUSTER MIGRATESLOTS`). Every checkpoint is restored as files and
//! into one fresh server, and compared key by key with a record of every write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{in_ranges, json_of, routed_round, Model};
use crate::support::archiving::now_ms;
use crate::support::cluster::{strings_of, Cluster};
use crate::support::redis_server::redis_server_bin;
use crate::support::restored;
use crate::support::servers;
use crate::support::*;

/// A moment of the cluster and what it held then.
struct Checkpoint {
    t: u64,
    want: Model,
    /// Taken while slots moved (a key may then be on two shards' files).
    during: bool,
    /// The shards the record in force names (`None`: not checked).
    shards: Option<usize>,
    what: String,
}

/// Records a checkpoint once the writes so far had time to reach the archivers; nothing is
/// written until 100 ms after it.
fn quiet(model: &Model, during: bool, shards: Option<usize>, what: &str) -> Checkpoint {
    std::thread::sleep(Duration::from_millis(100));
    let t = now_ms();
    std::thread::sleep(Duration::from_millis(100));
    Checkpoint {
        t,
        want: model.clone(),
        during,
        shards,
        what: what.to_string(),
    }
}

/// Restores `cp` as files (each shard loaded into a server of `bin`) and into one fresh server
/// of `bin`. Into the server: exactly the record. As files: each shard's keys in its own slots
/// (at a quiet checkpoint: no key on two shards, none outside its shard's slots); a key the
/// owner of its slot does not hold is one caught in a move (only while slots moved), and the
/// union, the owner's copy first, is the record.
fn restore_and_compare(bin: &Path, store: &str, cp: &Checkpoint) -> Value {
    let at = cp.t.to_string();
    let what = &cp.what;
    // Into one plain server.
    let target = RedisServer::start_with(bin, &[]);
    let url = format!("redis://{}", target.addr());
    let report = json_of(&run_pitr_ok(
        &[
            "restore", "--store", store, "--name", "cl", "--to", &at, "--target", &url, "--json",
        ],
        &[],
    ));
    let shards = report["shards"].as_array().unwrap().len();
    if let Some(n) = cp.shards {
        assert_eq!(shards, n, "{what}: shards restored: {report:#}");
    }
    let got = strings_of(&mut target.client());
    for (k, v) in &cp.want {
        assert_eq!(got.get(k), Some(v), "{what}, live: {k}");
    }
    assert_eq!(got.len(), cp.want.len(), "{what}, live: key count");
    drop(target);

    // As files.
    let out = temp_dir("pitr-topology-files");
    let dir = out.path().join("data");
    let dir_s = dir.to_string_lossy().into_owned();
    let files = json_of(&run_pitr_ok(
        &[
            "restore",
            "--store",
            store,
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
    let layout: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
    assert_eq!(
        layout["shards"].as_array().unwrap().len(),
        shards,
        "{what}: {layout:#}"
    );
    let mut owned: Model = BTreeMap::new();
    let mut strays: Vec<(String, String, String)> = Vec::new();
    for s in files["shards"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let line = s["report"]["files"]["command_line"].as_str().unwrap();
        let (_server, port) = restored::start_from_with(bin, line);
        let slots = &layout["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == s["id"])
            .unwrap()["slots"];
        for (k, v) in strings_of(&mut restored::connect(port)) {
            let slot = redis_pitr::cluster::slot::key_slot(k.as_bytes());
            if in_ranges(slot, slots) {
                assert!(
                    owned.insert(k.clone(), v).is_none(),
                    "{what}: {k} owned by two shards"
                );
            } else {
                assert!(cp.during, "{what}: {k} on shard {id}, outside its slots");
                strays.push((k, v, id.to_string()));
            }
        }
    }
    let mut union = owned.clone();
    for (k, v, id) in strays {
        if !owned.contains_key(&k) {
            assert!(
                union.insert(k.clone(), v).is_none(),
                "{what}: {k} outside its slots on two shards (one is {id})"
            );
        }
    }
    assert_eq!(union, cp.want, "{what}, files");
    report
}

/// Runs `redis-cli --cluster reshard <args>` while writing (rounds of a tenth of the keys, a
/// checkpoint after each); returns when it ended, successfully.
fn reshard_under_writes(
    c: &Cluster,
    args: &[&str],
    model: &mut Model,
    round: &mut usize,
    keys: usize,
    checkpoints: &mut Vec<Checkpoint>,
    what: &str,
) {
    let first = c.masters()[0].addr();
    let mut cmd = std::process::Command::new(require_binary("redis-cli"));
    cmd.args(["--cluster", "reshard", &first])
        .args(args)
        .args(["--cluster-yes", "--cluster-pipeline", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut reshard = ManagedChild::spawn("redis-cli --cluster reshard", &mut cmd);
    loop {
        routed_round(c, model, *round, keys / 10);
        *round += 1;
        let running = reshard.try_wait().is_none();
        if !running {
            // Just after the end: a master that lost its last slot turned replica and its
            // archive ended there, while the record that drops its shard can come up to a poll
            // later; the restore leaves that shard out.
            checkpoints.push(quiet(model, true, None, &format!("{what} end")));
            break;
        }
        // The record of the last moves can lag by a poll: a key may be outside its slots.
        checkpoints.push(quiet(model, true, None, &format!("{what} {round}")));
        assert!(*round < 1000, "{what}: the resharding does not end");
    }
    let status = reshard.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "redis-cli --cluster reshard: {status}");
    c.wait_ok();
}

/// The topology records of `<store>/cl`, oldest first.
fn records(store: &Path) -> Vec<Value> {
    let dir = store.join("cl").join("cluster");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    // Only the records themselves (not a file being written).
    names.retain(|p| p.extension().is_some_and(|e| e == "json"));
    names.sort();
    names
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| serde_json::from_slice(&b).unwrap())
        .collect()
}

fn shard_ids(record: &Value) -> Vec<String> {
    record["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The id of the shard whose master is on `port` in `record`.
fn shard_of(record: &Value, port: u16) -> Option<String> {
    let addr = format!("127.0.0.1:{port}");
    record["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["master"]["addr"] == addr.as_str())
        .map(|s| s["id"].as_str().unwrap().to_string())
}

/// The shard archives under `<store>/cl` (every directory but the records').
fn shard_dirs(store: &Path) -> Vec<String> {
    let mut d: Vec<String> = std::fs::read_dir(store.join("cl"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir() && e.file_name() != "cluster")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    d.sort();
    d
}

#[test]
fn a_master_added_then_removed_is_archived_while_it_serves_slots() {
    let mut c = Cluster::start(3, 0);
    let store = temp_dir("pitr-topology-add");
    let store_path = store.path().to_string_lossy().into_owned();
    let archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    let keys = 3000;
    let mut model = Model::new();
    let mut checkpoints = Vec::new();
    let mut round = 0;
    routed_round(&c, &mut model, round, keys);
    round += 1;
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "before"));

    // A fourth master, and 900 slots onto it from the three, under writes.
    let new_port = c.add_master().port();
    let new_id = c.id_of(c.node(new_port));
    // Archived from before it serves a slot (keys come to it before the slots do).
    wait_until_msg(
        Duration::from_secs(30),
        "the archiver attached to the new master",
        || {
            c.node(new_port).info("replication").iter().any(|(k, v)| {
                k.starts_with("slave") && v.contains("port=0,") && v.contains("state=online")
            })
        },
    );
    reshard_under_writes(
        &c,
        &[
            "--cluster-from",
            "all",
            "--cluster-to",
            &new_id,
            "--cluster-slots",
            "900",
        ],
        &mut model,
        &mut round,
        keys,
        &mut checkpoints,
        "onto the new master",
    );
    let served = |c: &Cluster| -> usize {
        c.slot_masters()
            .iter()
            .filter(|r| r.2 == new_port)
            .map(|r| (r.1 - r.0) as usize + 1)
            .sum()
    };
    // From each master its share (redis-cli rounds each share down).
    let onto = served(&c);
    assert!((890..=900).contains(&onto), "{:?}", c.slot_masters());
    // The poller started an archiver for the new shard: its archive is there, and the
    // newest record has it with its slots.
    let slots_in = |r: &Value, port: u16| -> usize {
        let addr = format!("127.0.0.1:{port}");
        r["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["master"]["addr"] == addr.as_str())
            .flat_map(|s| s["slots"].as_array().unwrap().iter())
            .map(|x| (x[1].as_u64().unwrap() - x[0].as_u64().unwrap()) as usize + 1)
            .sum()
    };
    wait_until_msg(
        Duration::from_secs(30),
        "a topology record with the new shard's slots",
        || {
            records(store.path())
                .last()
                .is_some_and(|r| slots_in(r, new_port) == onto)
        },
    );
    let new_shard = shard_of(records(store.path()).last().unwrap(), new_port).unwrap();
    wait_until_msg(Duration::from_secs(30), "the new shard's archive", || {
        store.path().join("cl").join(&new_shard).is_dir()
    });
    c.wait_archived();
    routed_round(&c, &mut model, round, keys);
    round += 1;
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(4), "four shards"));

    // Every slot away from it again, under writes, then the node out of the cluster.
    let to = c.id_of(c.masters()[0]);
    let onto = onto.to_string();
    reshard_under_writes(
        &c,
        &[
            "--cluster-from",
            &new_id,
            "--cluster-to",
            &to,
            "--cluster-slots",
            &onto,
        ],
        &mut model,
        &mut round,
        keys,
        &mut checkpoints,
        "away from the new master",
    );
    assert_eq!(served(&c), 0, "{:?}", c.slot_masters());
    c.del_node(new_port);
    assert_eq!(c.masters().len(), 3);
    archiver.wait_for_log(
        "the shard is gone from the cluster: stopping its archiver",
        Duration::from_secs(30),
    );
    // Stopped cleanly: its archiver left the point it vouches for.
    let stopped = store.path().join("cl").join(&new_shard).join("stopped");
    wait_until_msg(
        Duration::from_secs(30),
        "the stopped marker of the removed shard",
        || stopped.is_file(),
    );
    routed_round(&c, &mut model, round, keys);
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "after the removal"));
    assert_eq!(
        c.state(),
        model,
        "the writer's model is the cluster's state"
    );
    archiver.assert_running();
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());

    // The records: three shards, then four, then three again (the same three).
    let recs = records(store.path());
    let counts: Vec<usize> = recs.iter().map(|r| shard_ids(r).len()).collect();
    let first = shard_ids(&recs[0]);
    assert_eq!(first.len(), 3, "{counts:?}");
    let four = recs
        .iter()
        .position(|r| shard_ids(r).contains(&new_shard))
        .expect("a record with the new shard");
    assert_eq!(shard_ids(&recs[four]).len(), 4, "{counts:?}");
    assert!(!first.contains(&new_shard));
    let last = shard_ids(recs.last().unwrap());
    assert_eq!(last, first, "the three shards again: {counts:?}");
    assert_eq!(
        shard_dirs(store.path()).len(),
        4,
        "{:?}",
        shard_dirs(store.path())
    );

    let bin = redis_server_bin();
    let during = checkpoints.iter().filter(|c| c.during).count();
    for cp in &checkpoints {
        restore_and_compare(&bin, &store_path, cp);
    }
    eprintln!(
        "{} checkpoints ({during} while slots moved), records: {counts:?}",
        checkpoints.len()
    );
}

/// The state of the newest export job of `slots` (`a-b`) that `source` reports.
fn migration_state(source: &RedisServer, slots: &str) -> String {
    let v = source.cmd(&["CLUSTER", "GETSLOTMIGRATIONS"]);
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    let mut state = String::from("none");
    let mut newest = -1i64;
    if let redis::Value::Array(jobs) = v {
        for job in jobs {
            let fields: BTreeMap<String, String> = match job {
                redis::Value::Array(kv) => {
                    kv.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect()
                }
                redis::Value::Map(kv) => kv.iter().map(|(k, v)| (text(k), text(v))).collect(),
                _ => continue,
            };
            let created: i64 = fields
                .get("create_time")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if fields.get("operation").map(String::as_str) == Some("EXPORT")
                && fields.get("slot_ranges").map(String::as_str) == Some(slots)
                && created >= newest
            {
                newest = created;
                state = fields.get("state").cloned().unwrap_or_default();
            }
        }
    }
    state
}

#[test]
fn valkey_atomic_slot_migration_restores_each_key_once() {
    let bin = servers::valkey_9_1();
    let c = Cluster::start_with(&bin, 3, 0);
    let store = temp_dir("pitr-topology-asm");
    let store_path = store.path().to_string_lossy().into_owned();
    let archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    let keys = 3000;
    let mut model = Model::new();
    let mut checkpoints = Vec::new();
    let mut round = 0;
    routed_round(&c, &mut model, round, keys);
    round += 1;
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "before"));

    // The first 1000 slots of the first master to the second, atomically, while writing. The
    // source writes its snapshot of the slots slowly (10 ms a key), so that checkpoints fall
    // inside the migration.
    let masters = c.masters();
    let (source, target) = (masters[0], masters[1]);
    let start = c
        .slot_masters()
        .iter()
        .find(|r| r.2 == source.port())
        .map(|r| r.0)
        .unwrap();
    let (a, b) = (start, start + 999);
    let range = format!("{a}-{b}");
    let moved_keys = model
        .keys()
        .filter(|k| (a..=b).contains(&c.slot(k)))
        .count();
    assert!(moved_keys > 50, "{moved_keys} keys in the moved slots");
    source.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "10000"]);
    let reply = source.cmd(&[
        "CLUSTER",
        "MIGRATESLOTS",
        "SLOTSRANGE",
        &a.to_string(),
        &b.to_string(),
        "NODE",
        &c.id_of(target),
    ]);
    assert_eq!(reply, redis::Value::Okay, "CLUSTER MIGRATESLOTS");
    loop {
        routed_round(&c, &mut model, round, keys / 20);
        round += 1;
        let cp = quiet(&model, true, None, &format!("during {round}"));
        let state = migration_state(source, &range);
        match state.as_str() {
            "success" => break,
            "failed" | "cancelled" => panic!("the migration ended {state}"),
            _ => checkpoints.push(cp),
        }
        assert!(round < 1000, "the migration does not end: {state}");
    }
    source.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    c.wait_ok();
    assert!(
        c.slot_masters()
            .iter()
            .any(|r| r.0 == a && r.1 == b && r.2 == target.port()),
        "{:?}",
        c.slot_masters()
    );
    wait_until_msg(
        Duration::from_secs(30),
        "a topology record of the move",
        || {
            records(store.path()).last().is_some_and(|r| {
                r["shards"].as_array().unwrap().iter().any(|s| {
                    s["master"]["addr"] == target.addr().as_str()
                        && s["slots"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x[0] == a && x[1] == b)
                })
            })
        },
    );
    routed_round(&c, &mut model, round, keys);
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "after"));
    assert_eq!(
        c.state(),
        model,
        "the writer's model is the cluster's state"
    );
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());

    let during = checkpoints.iter().filter(|c| c.during).count();
    assert!(during >= 1, "a checkpoint during the migration");
    let mut foreign = 0;
    for cp in &checkpoints {
        let report = restore_and_compare(&bin, &store_path, cp);
        foreign += report["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["foreign"].is_null())
            .count();
    }
    eprintln!(
        "{} checkpoints ({during} during the migration of {moved_keys} keys), \
         {foreign} second passes",
        checkpoints.len()
    );
}

#[test]
fn redis_6_2_discovery_by_cluster_slots_names_shards_by_master() {
    let bin = servers::redis_6_2();
    let c = Cluster::start_with(&bin, 3, 1);
    let store = temp_dir("pitr-topology-62");
    let store_path = store.path().to_string_lossy().into_owned();
    let mut archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    let keys = 1500;
    let mut model = Model::new();
    let mut checkpoints = Vec::new();
    routed_round(&c, &mut model, 0, keys);
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "before the failover"));

    // No shard ids from the server: each shard is named by its master's node id.
    let recs = records(store.path());
    let first = shard_ids(&recs[0]);
    let mut ids: Vec<String> = c.masters().iter().map(|m| c.id_of(m)).collect();
    ids.sort();
    assert_eq!(first, ids, "shards named by their masters' ids");
    // The replicas too (`CLUSTER SLOTS` lists them once they are attached).
    wait_until_msg(
        Duration::from_secs(20),
        "a record with every shard's replica",
        || {
            records(store.path()).last().is_some_and(|r| {
                r["shards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["replicas"].as_array().unwrap().len() == 1)
            })
        },
    );

    // A failover inside one shard: the shard keeps its name (and archive).
    let old = c.masters()[0];
    let old_id = c.id_of(old);
    let replica = c
        .nodes
        .iter()
        .find(|n| {
            let info = n.info("replication");
            info.get("role").map(String::as_str) == Some("slave")
                && info.get("master_port") == Some(&old.port().to_string())
        })
        .expect("a replica of the first master");
    replica.cmd(&["CLUSTER", "FAILOVER"]);
    wait_until_msg(Duration::from_secs(30), "the replica to take over", || {
        c.masters().iter().any(|m| m.port() == replica.port())
    });
    c.wait_ok();
    archiver.wait_for_log("the shard's master moved", Duration::from_secs(30));
    routed_round(&c, &mut model, 1, keys);
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "after the failover"));
    wait_until_msg(Duration::from_secs(10), "a record of the failover", || {
        records(store.path())
            .last()
            .is_some_and(|r| shard_of(r, replica.port()).is_some())
    });
    let named = shard_of(records(store.path()).last().unwrap(), replica.port()).unwrap();
    assert_eq!(named, old_id, "the promoted replica's shard keeps its name");

    // A new archiver process after the failover: the names stay (they come from the records).
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());
    archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    routed_round(&c, &mut model, 2, keys);
    c.wait_archived();
    checkpoints.push(quiet(&model, false, Some(3), "after a restart"));
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());
    assert_eq!(
        shard_dirs(store.path()),
        ids,
        "one archive per shard, always"
    );
    assert_eq!(
        shard_ids(records(store.path()).last().unwrap()),
        ids,
        "the restarted archiver's record"
    );

    for cp in &checkpoints {
        restore_and_compare(&bin, &store_path, cp);
    }
}
