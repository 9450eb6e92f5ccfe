//! Restores of a cluster archive into shared destinations: a `FLUSHALL` of one shard leaves
//! the other shards' keys alone in one server and in a target cluster, and a target cluster
//! reached over TLS.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{checkpoint, json_of, write_round};
use crate::support::cluster::{strings_of, Cluster};
use crate::support::redis_server::{redis_server_bin, RedisServer};
use crate::support::*;

/// `pitr archive --source cluster://…` of `c` into a new directory store, name `cl`.
fn archive(c: &Cluster) -> (tempfile::TempDir, String, PitrProcess) {
    let store = temp_dir("pitr-cluster-restore");
    let store_path = store.path().to_string_lossy().into_owned();
    let archiver = c.archiver(&store_path, &[]);
    c.wait_archived();
    (store, store_path, archiver)
}

fn restore(store: &str, t: u64, target: &str, extra: &[&str]) -> Value {
    let to = t.to_string();
    let mut args = vec![
        "restore", "--store", store, "--name", "cl", "--to", &to, "--target", target, "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&run_pitr_ok(&args, &[]))
}

/// The scoped flushes the shards' restores applied (both passes).
fn scoped_flushes(report: &Value) -> u64 {
    report["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["report"]["flushes_scoped"].as_u64().unwrap()
                + s["foreign"]["flushes_scoped"].as_u64().unwrap_or(0)
        })
        .sum()
}

fn assert_same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: key count");
    for (k, v) in want {
        assert_eq!(got.get(k), Some(v), "{what}: key {k}");
    }
}

#[test]
fn a_shards_flushall_leaves_the_other_shards_keys_in_a_shared_target() {
    let c = Cluster::start(3, 0);
    let (_store, store, archiver) = archive(&c);
    write_round(&c, 0, 300);
    let before = checkpoint(&c);
    // One shard's FLUSHALL: on the cluster it empties that master only.
    c.masters()[0].cmd(&["FLUSHALL"]);
    write_round(&c, 1, 200);
    let after = checkpoint(&c);
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());
    let lost = before
        .1
        .keys()
        .filter(|k| !after.1.contains_key(*k))
        .count();
    assert!(
        lost > 100,
        "the FLUSHALL emptied a shard ({lost} keys gone)"
    );
    let survivors = before
        .1
        .iter()
        .filter(|(k, v)| k.starts_with("r0:") && after.1.get(*k) == Some(v))
        .count();
    assert!(
        survivors > 100,
        "the other shards kept theirs ({survivors})"
    );

    for (i, (t, want)) in [&before, &after].into_iter().enumerate() {
        // Into one server: the shards one after the other.
        let target = RedisServer::start(&[]);
        let report = restore(&store, *t, &format!("redis://{}", target.addr()), &[]);
        assert_same(
            &strings_of(&mut target.client()),
            want,
            &format!("checkpoint {i} into one server"),
        );
        assert_eq!(scoped_flushes(&report), i as u64, "{report:#}");
    }
    // Into a cluster: the FLUSHALL reaches every master there, and each deletes only the
    // flushed shard's keys.
    let target = Cluster::start(3, 0);
    let report = restore(
        &store,
        after.0,
        &format!("cluster://{}", target.seeds()),
        &[],
    );
    assert_same(&target.state(), &after.1, "into a cluster");
    assert_eq!(scoped_flushes(&report), 1, "{report:#}");
}

#[test]
fn a_cluster_archive_restores_into_a_cluster_over_tls() {
    let certs = crate::tls::make_certs();
    let c = Cluster::start(3, 0);
    let (_store, store, archiver) = archive(&c);
    write_round(&c, 0, 300);
    let (t, want) = checkpoint(&c);
    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());

    let path = |p: &Path| p.to_string_lossy().into_owned();
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client_cert),
        path(&certs.client_key),
    );
    // Every node speaks TLS to clients and on the cluster bus (its plain port stays for the
    // test's own checks); a client must show a certificate.
    let tls_ports = Mutex::new(Vec::new());
    let target = Cluster::start_configured(
        &redis_server_bin(),
        3,
        0,
        || {
            let port = free_port();
            tls_ports.lock().unwrap().push(port);
            vec![
                ("tls-port".into(), port.to_string()),
                // The bus of a TLS cluster is at tls-port + 10000 unless given: a port of
                // its own, as free as the others.
                ("cluster-port".into(), free_port().to_string()),
                ("tls-cert-file".into(), path(&certs.server_cert)),
                ("tls-key-file".into(), path(&certs.server_key)),
                ("tls-ca-cert-file".into(), ca.clone()),
                // Outgoing bus and replication links show a client certificate.
                ("tls-client-cert-file".into(), cert.clone()),
                ("tls-client-key-file".into(), key.clone()),
                ("tls-cluster".into(), "yes".into()),
                ("tls-replication".into(), "yes".into()),
                ("tls-auth-clients".into(), "yes".into()),
            ]
        },
        &["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key],
        |n| {
            let port = match n.cmd(&["CONFIG", "GET", "tls-port"]) {
                redis::Value::Array(v) => match &v[1] {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("tls-port: {other:?}"),
                },
                other => panic!("CONFIG GET tls-port: {other:?}"),
            };
            format!("127.0.0.1:{port}")
        },
    );
    let seed = tls_ports.lock().unwrap()[0];
    let url = format!("cluster://127.0.0.1:{seed}");
    // Plain TCP to a TLS port fails, naming the target.
    let plain = run_pitr(
        &[
            "restore",
            "--store",
            &store,
            "--name",
            "cl",
            "--to",
            &t.to_string(),
            "--target",
            &url,
        ],
        &[],
    );
    assert!(!plain.status.success());
    assert!(target.state().is_empty(), "nothing restored over plain TCP");
    let report = restore(
        &store,
        t,
        &url,
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
    );
    assert_eq!(report["shards"].as_array().unwrap().len(), 3, "{report:#}");
    assert_same(&target.state(), &want, "into a TLS cluster");
}
