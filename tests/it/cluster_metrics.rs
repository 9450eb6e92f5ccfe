//! `pitr archive --source cluster://… --metrics-addr … --also-to …` against a real 3-master
//! cluster: every shard's series with its `shard` label, `/readyz` over every shard, and a
//! copy of each shard's archive (and of the topology records) that restores as the original.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{checkpoint, json_of, write_round};
use crate::metrics::get_ok;
use crate::support::cluster::{strings_of, Cluster};
use crate::support::restored;
use crate::support::*;

/// The samples of `name` by their `shard` label (`name{shard="…"…} value`; the other labels
/// must be exactly `rest`, e.g. `` or `,kind="segment"`).
fn by_shard(text: &str, name: &str, rest: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{shard=\"");
    text.lines()
        .filter_map(|l| {
            let l = l.strip_prefix(&prefix)?;
            let (shard, l) = l.split_once('"')?;
            let l = l.strip_prefix(rest)?.strip_prefix("} ")?;
            Some((
                shard.to_string(),
                l.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn scrape(port: u16) -> String {
    let (status, text) = get_ok(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// Waits until `cond` holds for the exposition, returning it.
fn wait_scrape(port: u16, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(port);
        if cond(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names of the directories right under `dir`.
fn subdirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Restores archive `name` of `store` at `to` as files, starts a server on them and reads
/// every key: a single archive's files, or a cluster archive's shards' union.
fn restored_state(store: &str, name: &str, to: &str) -> BTreeMap<String, String> {
    let out = temp_dir("pitr-cluster-metrics-restore");
    let dir = out.path().join("data");
    let dir_s = dir.to_string_lossy().into_owned();
    let report = json_of(&run_pitr_ok(
        &[
            "restore",
            "--store",
            store,
            "--name",
            name,
            "--to",
            to,
            "--output-dir",
            &dir_s,
            "--json",
        ],
        &[],
    ));
    let reports: Vec<&Value> = match report["shards"].as_array() {
        Some(shards) => shards.iter().map(|s| &s["report"]).collect(),
        None => vec![&report],
    };
    let mut state = BTreeMap::new();
    for r in reports {
        let line = r["files"]["command_line"]
            .as_str()
            .unwrap_or_else(|| panic!("no command line: {report:#}"));
        let (_server, port) = restored::start_from(line);
        for (k, v) in strings_of(&mut restored::connect(port)) {
            assert!(state.insert(k.clone(), v).is_none(), "{k} twice");
        }
    }
    state
}

#[test]
fn a_cluster_archive_has_metrics_per_shard_and_a_copy_per_shard() {
    let c = Cluster::start(3, 0);
    let store = temp_dir("pitr-cluster-metrics");
    let store_path = store.path().to_string_lossy().into_owned();
    let copy = temp_dir("pitr-cluster-metrics-copy");
    let copy_path = copy.path().to_string_lossy().into_owned();
    let port = free_port();
    let addr = format!("{LOCALHOST}:{port}");
    let archiver = c.archiver(
        &store_path,
        &["--metrics-addr", &addr, "--also-to", &copy_path],
    );
    wait_until_msg(Duration::from_secs(30), "the metrics server", || {
        std::net::TcpStream::connect((LOCALHOST, port)).is_ok()
    });
    assert_eq!(get_ok(port, "/healthz"), (200, "ok\n".to_string()));
    c.wait_archived();

    // One shard label per shard archive, each attached.
    let text = wait_scrape(port, "every shard attached", |t| {
        let up = by_shard(t, "pitr_link_up", "");
        up.len() == 3 && up.values().all(|v| *v == 1.0)
    });
    let shards: BTreeSet<String> = by_shard(&text, "pitr_link_up", "").into_keys().collect();
    assert_eq!(
        shards,
        subdirs(&store.path().join("cl"))
            .into_iter()
            .filter(|d| d != "cluster")
            .collect(),
        "the shard labels name the shards' archives"
    );
    // Each family once, with every shard's samples; no unlabelled archiver series; the
    // process-wide series once, without a shard.
    for family in [
        "pitr_link_up",
        "pitr_received_offset",
        "pitr_uploaded_objects",
        "pitr_ship_copied_objects",
        "pitr_build_info",
    ] {
        let help = format!("# HELP {family} ");
        assert_eq!(text.matches(&help).count(), 1, "{family}:\n{text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("pitr_link_up ")),
        "{text}"
    );
    assert_eq!(
        by_shard(&text, "pitr_uploaded_objects_total", ",kind=\"snapshot\"").len(),
        3,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("pitr_build_info{version="))
            .count(),
        1,
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    wait_until_msg(Duration::from_secs(30), "/readyz 200", || {
        get_ok(port, "/readyz").0 == 200
    });

    // Writes over every shard: each shard's received offset moves, up to its master's.
    let before = by_shard(&scrape(port), "pitr_received_offset", "");
    write_round(&c, 0, 300);
    write_round(&c, 1, 300);
    c.wait_archived();
    // Each shard's master, as the archive records it.
    let ls = json_of(&run_pitr_ok(
        &["ls", "--store", &store_path, "--name", "cl", "--json"],
        &[],
    ));
    let master_of: BTreeMap<String, String> = ls["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("{ls:#}"))
        .iter()
        .map(|s| {
            let addr = s["current"]["master"]["addr"].as_str().unwrap();
            (s["id"].as_str().unwrap().to_string(), addr.to_string())
        })
        .collect();
    assert_eq!(master_of.keys().cloned().collect::<BTreeSet<_>>(), shards);
    let offsets: BTreeMap<String, f64> = master_of
        .iter()
        .map(|(shard, addr)| {
            let m = c.masters().into_iter().find(|m| m.addr() == *addr).unwrap();
            let offset = m.info("replication")["master_repl_offset"].parse().unwrap();
            (shard.clone(), offset)
        })
        .collect();
    let text = wait_scrape(port, "the durable offsets at the masters'", |t| {
        let durable = by_shard(t, "pitr_durable_offset", "");
        offsets
            .iter()
            .all(|(s, o)| durable.get(s).is_some_and(|d| d >= o))
    });
    let after = by_shard(&text, "pitr_received_offset", "");
    assert_eq!(after.len(), 3, "{text}");
    for (shard, b) in &before {
        let a = after[shard];
        assert!(
            a > *b,
            "shard {shard}: received offset {b} → {a} under writes"
        );
        assert!(
            a >= offsets[shard],
            "shard {shard}: received {a}, master at {}",
            offsets[shard]
        );
    }

    // A moment every shard's copy covers: each shard gets writes after it (a cluster
    // restore of the copy needs a write after the moment on every shard, as the copy has
    // no vouched point of a clean stop).
    let (moment, at_moment) = checkpoint(&c);
    write_round(&c, 2, 100);
    c.wait_archived();

    // The copies catch up, shard by shard.
    let text = wait_scrape(port, "every shard's copy caught up", |t| {
        let copied = by_shard(t, "pitr_ship_copied_objects_total", "");
        let lag = by_shard(t, "pitr_ship_lag_objects", "");
        copied.len() == 3 && copied.values().all(|v| *v > 0.0) && lag.values().all(|v| *v == 0.0)
    });
    assert!(
        by_shard(&text, "pitr_ship_errors_total", "")
            .values()
            .all(|v| *v == 0.0),
        "{text}"
    );
    let (status, body) = get_ok(port, "/readyz");
    assert_eq!(status, 200, "{body}");

    assert!(archiver.stop_gracefully(Duration::from_secs(60)).success());
    let log = archiver.log();
    assert!(log.contains("--also-to: the copy is up to date"), "{log}");

    // Each shard's copy restores as the shard's archive does.
    let shards_url = store.path().join("cl").to_string_lossy().into_owned();
    let copies_url = copy.path().join("cl").to_string_lossy().into_owned();
    assert_eq!(
        subdirs(&copy.path().join("cl")),
        subdirs(&store.path().join("cl")),
        "a copy per shard, and the records"
    );
    let mut union = BTreeMap::new();
    for shard in &shards {
        let original = restored_state(&shards_url, shard, "latest");
        let copied = restored_state(&copies_url, shard, "latest");
        assert!(!original.is_empty(), "shard {shard} has keys");
        assert_eq!(
            copied, original,
            "shard {shard}: the copy restores as the original"
        );
        union.extend(original);
    }
    assert_eq!(union, c.state(), "the shards together are the cluster");

    // The topology records are copied as written, and the copy restores as a cluster.
    let records = |root: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(root.join("cl").join("cluster"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let written = records(store.path());
    assert!(!written.is_empty());
    assert_eq!(records(copy.path()), written);
    let moment = moment.to_string();
    assert_eq!(restored_state(&copy_path, "cl", &moment), at_moment);
    assert_eq!(restored_state(&store_path, "cl", &moment), at_moment);
}
