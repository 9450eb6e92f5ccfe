//! docs/runbook.md, tried: each procedure's commands against real servers, checked against the
//! master's state at the moment the procedure restores.

use std::time::Duration;

use serde_json::Value;

use crate::support::archiving::*;
use crate::support::state::{logical_state, logical_state_con};
use crate::support::*;

/// The exit code of a corrupt archive (README, "Exit codes").
const EXIT_CORRUPT: i32 = 4;

/// Writes `n` keys `<prefix>:<i>` in databases 0 and 2, and a hash and a list.
fn write_some(con: &mut redis::Connection, prefix: &str, n: usize) {
    for db in ["0", "2"] {
        exec(con, &["SELECT", db]);
        for i in 0..n {
            exec(
                con,
                &[
                    "SET",
                    &format!("{prefix}:{i}"),
                    &format!("{prefix}-{db}-{i}"),
                ],
            );
        }
        exec(
            con,
            &["HSET", &format!("{prefix}:h"), "f1", "v1", "f2", "v2"],
        );
        exec(con, &["RPUSH", &format!("{prefix}:l"), "a", "b", "c"]);
    }
    exec(con, &["SELECT", "0"]);
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first and end offsets in a segment's file name
/// (`<first>-<end>-<first ms>-<last ms>-<replid>.segment`).
fn segment_range(path: &std::path::Path) -> (u64, u64) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut parts = name.split('-');
    let first = parts.next().and_then(|s| s.parse().ok());
    let end = parts.next().and_then(|s| s.parse().ok());
    (first.expect("first offset"), end.expect("end offset"))
}

/// "A bad deploy or a FLUSHALL": the moment before the damage, restored as files into a new
/// server, equals the master then; after the swap the new master is archived as a new
/// generation, and the old one stays restorable.
#[test]
fn a_bad_deploy_is_undone_by_restoring_the_moment_before() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p = a.archiver(&r, &["--flush-interval", "100ms"]);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    write_some(&mut con, "good", 200);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let before = logical_state(&r, 0);
    std::thread::sleep(Duration::from_millis(30));
    let moment = now_ms();
    std::thread::sleep(Duration::from_millis(30));
    // The damage: a FLUSHALL, then the application goes on writing.
    exec(&mut con, &["FLUSHALL"]);
    write_some(&mut con, "after", 5);
    assert_eq!(wait_archived(&mut con, 5000), 1);

    // 1. The window holds the moment.
    let ls = a.ls_summary();
    let g = &ls["generations"][0];
    assert!(
        g["first_time_ms"].as_u64().unwrap() < moment
            && g["last_time_ms"].as_u64().unwrap() > moment,
        "{ls:#}"
    );
    // 2. Restore it as files and start a server on them.
    let to = redis_pitr::replay::plan::fmt_ms(moment);
    let restored = a.restore_as_files_and_start(&to, &[]);
    let mut rc = restored.con();
    assert_eq!(
        logical_state_con(&mut rc, 0),
        before,
        "the moment before the FLUSHALL"
    );

    // 3. The swap: the old archiver stops, one starts on the new master under the same name.
    p.stop_gracefully(Duration::from_secs(30));
    let new_master = format!("redis://127.0.0.1:{}", restored.port);
    let p2 = a.archiver_with(
        &new_master,
        &["--flush-interval", "100ms", "--takeover"],
        &[],
    );
    wait_until_msg(
        Duration::from_secs(60),
        "the archiver to attach to the new master",
        || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut rc)
                .is_ok_and(|i| i.contains("state=online"))
        },
    );
    exec(&mut rc, &["SET", "after-swap", "1"]);
    assert_eq!(wait_archived(&mut rc, 10_000), 1);
    p2.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls_summary();
    let gens = ls["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{ls:#}");
    assert_eq!(ls["gaps"].as_array().map(Vec::len), Some(1), "{ls:#}");
    // The old generation's moment is still restorable, and so is the new master's latest.
    let again = a.restore_as_files_and_start(&to, &[]);
    assert_eq!(logical_state_con(&mut again.con(), 0), before);
    let latest = a.restore_as_files_and_start("latest", &[]);
    assert_eq!(
        logical_state_con(&mut latest.con(), 0),
        logical_state_con(&mut rc, 0)
    );
    a.verify();
}

/// "A lost master": after a kill -9 of the master, the latest moment holds every write that
/// `WAIT` acknowledged.
#[test]
fn a_lost_master_comes_back_with_every_acknowledged_write() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p = a.archiver(&r, &["--flush-interval", "1s"]);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    write_some(&mut con, "k", 300);
    // Acknowledged: the archiver has made it durable.
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let acknowledged = logical_state(&r, 0);
    r.kill9();
    // The archiver keeps trying the lost master; the archive is read meanwhile.
    let restored = a.restore_as_files_and_start("latest", &[]);
    assert_eq!(logical_state_con(&mut restored.con(), 0), acknowledged);
    p.stop_gracefully(Duration::from_secs(30));
    a.verify();
}

/// "A corrupted backup": verify names the damaged object (exit 4), a restore that needs it
/// stops there (exit 4, naming it), and `--to offset:<its first offset>` restores the moment
/// before it, equal to the master then.
#[test]
fn a_corrupted_object_is_found_and_the_moment_before_it_restored() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p = a.archiver(
        &r,
        &["--flush-interval", "100ms", "--compaction-levels", "off"],
    );
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    write_some(&mut con, "a", 100);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let state_a = logical_state(&r, 0);
    let offset_a = master_offset(&r);
    write_some(&mut con, "b", 100);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));

    // The damage: a byte flipped in the middle of the segment that holds what followed A.
    let broken = files_under(std::path::Path::new(a.store()))
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".segment"))
        .find(|f| {
            let (first, end) = segment_range(f);
            first <= offset_a && offset_a < end
        })
        .expect("the segment after A");
    let (first, _) = segment_range(&broken);
    let mut bytes = std::fs::read(&broken).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&broken, bytes).unwrap();
    let broken_name = broken.file_name().unwrap().to_string_lossy().into_owned();

    // 1. verify finds it.
    let out = run_pitr(&["verify", "--store", a.store(), "--json"], &[]);
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let named = v["problems"].as_array().unwrap().iter().any(|p| {
        p["object"]
            .as_str()
            .is_some_and(|o| o.ends_with(&broken_name))
    });
    assert!(named, "verify does not name {broken_name}: {v:#}");
    // A restore past it stops there, naming it.
    let dir = temp_dir("pitr-runbook");
    let out_dir = dir.path().join("latest").display().to_string();
    let out = run_pitr(
        &[
            "restore",
            "--store",
            a.store(),
            "--to",
            "latest",
            "--output-dir",
            &out_dir,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(stderr(&out).contains(&broken_name), "{}", stderr(&out));

    // 2. The moment before it.
    let to = format!("offset:{first}");
    let restored = a.restore_as_files_and_start(&to, &[]);
    assert!(first <= offset_a);
    assert_eq!(logical_state_con(&mut restored.con(), 0), state_a);
}
