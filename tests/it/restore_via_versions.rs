//! `pitr restore --target … --via replication` into every supported server version: the
//! fidelity workload, every checkpoint, into Redis 5.0 and 6.2 targets (from a Redis 5.0
//! master, whose RDB 9 they load) and into Redis 7.0, 7.4 and Valkey 9.1 targets (from a
//! Redis 7.0 master, RDB 10). Each target equals the checkpoint, the report says
//! `via: replication` (no fallback), and the target's own replication settings
//! (`masterauth`, `masteruser`, `repl-diskless-load`) are back afterwards. During the sync a
//! target whose `repl-diskless-load` is `disabled` loads from the socket (`on-empty-db`); one
//! set to something else keeps it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::serve::{archive_workload, readable_state, Archived};
use crate::support::archiving::*;
use crate::support::state::{
    align_expiries, diff, drop_expired, drop_late_expiring, without_idle_consumers,
};
use crate::support::*;

/// `pitr restore --to <to> --target <target> --via replication --json`: its report and stderr.
fn restore_via_replication(archive: &Archive, target: &RedisServer, to: &str) -> (Value, String) {
    let url = plain_url(target);
    let out = run_pitr(
        &[
            "restore",
            "--store",
            archive.store(),
            "--to",
            to,
            "--target",
            &url,
            "--via",
            "replication",
            "--json",
        ],
        &[("RUST_LOG".into(), "info".into())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (v, stderr)
}

/// The value of the setting `name` (`None`: the server has no such setting).
fn config(r: &RedisServer, name: &str) -> Option<String> {
    match r.cmd(&["CONFIG", "GET", name]) {
        redis::Value::Array(items) => match items.get(1) {
            Some(redis::Value::BulkString(v)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        },
        redis::Value::Map(pairs) => pairs
            .first()
            .map(|(_, v)| crate::support::redis_server::value_to_string(v)),
        other => panic!("CONFIG GET {name}: {other:?}"),
    }
}

/// The settings a target is started with (its own, to be put back): `masterauth` always,
/// `masteruser` and `repl-diskless-load` from 6.0 (`swapdb` when `swapdb`, else the default).
fn own_settings(bin: &Path, swapdb: bool) -> Vec<(&'static str, &'static str)> {
    let mut s = vec![("masterauth", "its-own-password")];
    if servers::version(bin).0 >= 6 {
        s.push(("masteruser", "its-own-user"));
        if swapdb {
            s.push(("repl-diskless-load", "swapdb"));
        }
    }
    s
}

/// `target` is a writable master again, with `settings` as it was started with them, and
/// `repl-diskless-load` as before (`disabled` unless set).
fn assert_settings_back(what: &str, bin: &Path, target: &RedisServer, settings: &[(&str, &str)]) {
    let info = target.info("replication");
    assert_eq!(info["role"], "master", "{what}: {info:?}");
    for (k, v) in settings {
        assert_eq!(config(target, k).as_deref(), Some(*v), "{what}: {k}");
    }
    if servers::version(bin).0 >= 6 {
        let want = settings
            .iter()
            .find(|(k, _)| *k == "repl-diskless-load")
            .map_or("disabled", |(_, v)| v);
        assert_eq!(
            config(target, "repl-diskless-load").as_deref(),
            Some(want),
            "{what}"
        );
    } else {
        assert_eq!(config(target, "repl-diskless-load"), None, "{what}");
        assert_eq!(config(target, "masteruser"), None, "{what}");
    }
    target.cmd(&["SET", "via:written-after", "1"]);
    target.cmd(&["DEL", "via:written-after"]);
}

/// Every checkpoint of `a` restored through replication into a fresh target of each of
/// `targets`. `relative_ttls`: the archived master (before 7.0) sent relative TTLs, which a
/// replica counts from when it applies them: TTLs later than the master's by at most the time
/// since the workload began.
fn each_checkpoint_into(a: &Archived, targets: &[PathBuf], relative_ttls: bool) {
    for (i, cp) in a.checkpoints.iter().enumerate() {
        for bin in targets {
            let what = format!("checkpoint {i} into {}", bin.display());
            // The middle checkpoint: a target that chose swapdb itself keeps it.
            let swapdb = i == 1;
            let settings = own_settings(bin, swapdb);
            let target = RedisServer::start_with(bin, &settings);
            let (rep, log) = restore_via_replication(&a.archive, &target, &cp.time_ms.to_string());
            assert_eq!(rep["via"], "replication", "{what}: {rep}");
            assert_eq!(rep["via_reason"], "--via replication", "{what}: {rep}");
            let offset = rep["offset"].as_u64().unwrap();
            assert!(
                a.offsets[i].contains(&offset),
                "{what}: {rep} {:?}",
                a.offsets[i]
            );
            assert_eq!(rep["expiries_moved_back"], 0, "{what}: {rep}");
            assert_eq!(rep["keys_by_restore"], 0, "{what}: {rep}");
            assert!(log.contains("restoring through replication"), "{log}");
            assert_eq!(
                log.contains("relative TTLs"),
                relative_ttls,
                "{what}: {log}"
            );
            let cutoff = now_ms() + 5000;
            let want = without_idle_consumers(&drop_expired(&cp.state, cutoff));
            let mut got = without_idle_consumers(&readable_state(bin, &target, cutoff));
            if relative_ttls {
                let slack = (now_ms() - a.began_ms) as i64 + 1000;
                got = drop_late_expiring(&cp.state, &got, cutoff, slack);
                got = align_expiries(&want, &got, slack);
            }
            if let Some(d) = diff(&want, &got) {
                panic!("{what}: the target differs (left: expected, right: target)\n{d}");
            }
            assert_settings_back(&what, bin, &target, &settings);
            // It replicated the archived master: its replication id is now its replid2.
            let info = target.info("replication");
            assert_ne!(
                info["master_replid2"], "0000000000000000000000000000000000000000",
                "{what}: {info:?}"
            );
            // From 6.0 (which says where it loads from): from the socket, its
            // repl-diskless-load set to on-empty-db for the sync when it was disabled.
            if servers::version(bin).0 >= 6 {
                let tlog = std::fs::read_to_string(target.log_path()).unwrap_or_default();
                assert!(
                    tlog.contains("to parser") && !tlog.contains("to disk"),
                    "{what}: {tlog}"
                );
            }
        }
    }
}

#[test]
fn from_a_7_0_master_into_7_0_7_4_and_valkey_9_1_every_checkpoint_equal() {
    let a = archive_workload(&redis_server::redis_server_bin(), 20261209);
    each_checkpoint_into(
        &a,
        &[
            redis_server::redis_server_bin(),
            servers::redis_7_4(),
            servers::valkey_9_1(),
        ],
        false,
    );
}

#[test]
fn from_a_5_0_master_into_5_0_and_6_2_every_checkpoint_equal() {
    let a = archive_workload(&servers::redis_5_0(), 20261210);
    each_checkpoint_into(&a, &[servers::redis_5_0(), servers::redis_6_2()], true);
}
