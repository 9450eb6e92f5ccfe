//! Retention against a real `redis-server`: an archive with a snapshot taken while the master
//! was idle (so it sits where a segment starts), pruned with `pitr prune --retain … --confirm`
//! after the archiver stopped. Restores to moments inside the window equal the master of the
//! time (`DEBUG DIGEST`), a moment before it names the nearest restorable points, and `verify`
//! finds the archive sound.

use std::time::Duration;

use crate::support::archiving::*;
use crate::support::*;

fn digest(con: &mut redis::Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(con)
        .expect("DEBUG DIGEST")
}

/// Writes a batch, waits until it is archived, and records the moment and the digest.
fn moment(con: &mut redis::Connection, batch: u32) -> (u64, String) {
    for i in 0..50 {
        exec(
            con,
            &[
                "SET",
                &format!("k{}", (batch * 50 + i) % 120),
                &batch.to_string(),
            ],
        );
        exec(con, &["INCR", "counter"]);
    }
    assert_eq!(wait_archived(con, 5000), 1);
    std::thread::sleep(Duration::from_millis(50));
    let t = now_ms();
    let d = digest(con);
    std::thread::sleep(Duration::from_millis(50));
    (t, d)
}

#[test]
fn prune_keeps_the_window_restorable_and_names_the_nearest_points_before_it() {
    let r = RedisServer::start(&[
        ("repl-diskless-sync-delay", "0"),
        ("repl-ping-replica-period", "60"),
    ]);
    let a = Archive::local();
    let p = a.archiver(
        &r,
        &[
            "--flush-interval",
            "200ms",
            "--snapshot-interval",
            "0",
            "--compaction-levels",
            "off",
        ],
    );
    wait_online(&r, Duration::from_secs(60));
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    let mut con = r.client();
    let before: Vec<(u64, String)> = (0..3).map(|b| moment(&mut con, b)).collect();
    // Idle: everything received is in a sealed segment, so the snapshot sits at its end.
    std::thread::sleep(Duration::from_millis(800));
    let snap = a.snapshot_now(&r);
    let snap_ms = snap["time_ms"].as_u64().expect("the snapshot's time");
    std::thread::sleep(Duration::from_millis(300));
    let inside: Vec<(u64, String)> = (3..6).map(|b| moment(&mut con, b)).collect();
    // A write after the last moment, so that the stopped archive's window reaches past it.
    moment(&mut con, 6);
    // Beside the running archiver, deleting is refused (exit 6); a dry run is not.
    let out = run_pitr(
        &["prune", "--store", a.store(), "--retain", "1s", "--confirm"],
        &[],
    );
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    run_pitr_ok(&["prune", "--store", a.store(), "--retain", "1s"], &[]);
    p.stop_gracefully(Duration::from_secs(30));

    // The window starts just after the snapshot: everything before it goes.
    let retain = now_ms() - snap_ms - 100;
    let retain = format!("{retain}ms");
    let dry = a.json("prune", &["--retain", &retain]);
    assert_eq!(dry["deleted"], false, "{dry:#}");
    assert_eq!(dry["plan"]["kept"]["offset"], snap["offset"], "{dry:#}");
    // A summary by default: per generation and kind, no object list.
    let g = &dry["plan"]["generations"][0];
    assert!(g.get("delete").is_none(), "{dry:#}");
    let kinds = g["kinds"].as_array().expect("kinds");
    let sum: u64 = kinds.iter().map(|k| k["objects"].as_u64().unwrap()).sum();
    assert_eq!(Some(sum), g["objects"].as_u64(), "{dry:#}");
    assert_eq!(dry["plan"]["objects"], g["objects"], "{dry:#}");
    assert!(
        kinds.iter().any(|k| k["kind"] == "snapshot"),
        "the snapshot before the kept one goes: {dry:#}"
    );
    assert!(
        dry["plan"]["window_after"]["from_ms"].as_u64()
            > dry["plan"]["window_before"]["from_ms"].as_u64(),
        "{dry:#}"
    );
    // Every object with --list-objects, in deletion order: the summary's first and last.
    let listed = a.json("prune", &["--retain", &retain, "--list-objects"]);
    let names: Vec<String> =
        serde_json::from_value(listed["plan"]["generations"][0]["delete"].clone())
            .unwrap_or_else(|e| panic!("{e}: {listed:#}"));
    assert_eq!(names.len() as u64, sum, "{listed:#}");
    for k in kinds {
        let first = k["first"].as_str().unwrap();
        let last = k["last"].as_str().unwrap();
        let i = names.iter().position(|n| n == first).expect("first listed");
        let j = names.iter().position(|n| n == last).expect("last listed");
        assert!(i <= j, "{listed:#}");
    }
    let text = run_pitr_ok(&["prune", "--store", a.store(), "--retain", &retain], &[]);
    // The text names the first and last of each kind, not the ones between.
    let ends: Vec<&str> = kinds
        .iter()
        .flat_map(|k| [k["first"].as_str().unwrap(), k["last"].as_str().unwrap()])
        .collect();
    for n in &names {
        assert_eq!(
            text.contains(n.as_str()),
            ends.contains(&n.as_str()),
            "{n} in {text}"
        );
    }
    assert!(text.contains("because"), "{text}");
    let text = run_pitr_ok(
        &[
            "prune",
            "--store",
            a.store(),
            "--retain",
            &retain,
            "--list-objects",
        ],
        &[],
    );
    for n in &names {
        assert!(text.contains(n.as_str()), "{n} in {text}");
    }
    let done = a.json("prune", &["--retain", &retain, "--confirm"]);
    assert_eq!(done["deleted"], true, "{done:#}");
    assert!(
        done["applied"]["objects_deleted"].as_u64().unwrap() >= 2,
        "{done:#}"
    );
    let ls = a.ls();
    let g = &ls["generations"][0];
    assert_eq!(
        g["snapshots"].as_array().map(|s| s.len()),
        Some(1),
        "{ls:#}"
    );
    assert_eq!(g["first_offset"], snap["offset"], "{ls:#}");

    for (t, want) in &inside {
        let (server, report) = a.restore_into_new_server(&t.to_string(), &[]);
        assert_eq!(
            &digest(&mut server.client()),
            want,
            "restore to {t}: {report:#}"
        );
    }
    let (t, _) = before[1];
    let out = run_pitr(
        &[
            "restore",
            "--store",
            a.store(),
            "--to",
            &t.to_string(),
            "--dry-run",
        ],
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nearest restorable points"), "{err}");
    a.verify();
    a.ls_summary();
}

#[test]
fn the_archiver_prunes_with_retain() {
    let r = RedisServer::start(&[
        ("repl-diskless-sync-delay", "0"),
        ("repl-ping-replica-period", "60"),
    ]);
    let a = Archive::local();
    let args = [
        "--flush-interval",
        "200ms",
        "--snapshot-interval",
        "0",
        "--compaction-levels",
        "off",
    ];
    let p = a.archiver(&r, &args);
    wait_online(&r, Duration::from_secs(60));
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    let mut con = r.client();
    moment(&mut con, 0);
    std::thread::sleep(Duration::from_millis(800));
    let snap = a.snapshot_now(&r);
    moment(&mut con, 1);
    p.stop_gracefully(Duration::from_secs(30));
    // Restarted with a policy: its first maintenance pass (about 10 s in) prunes.
    let mut with_retain = args.to_vec();
    with_retain.extend(["--retain", "1s"]);
    let p = a.archiver(&r, &with_retain);
    p.wait_for_log("prune pass", Duration::from_secs(60));
    let ls = a.ls();
    let g = &ls["generations"][0];
    assert_eq!(
        g["snapshots"].as_array().map(|s| s.len()),
        Some(1),
        "{ls:#}"
    );
    assert_eq!(g["first_offset"], snap["offset"], "{ls:#}");
    // It goes on archiving in the same generation.
    let (t, want) = moment(&mut con, 2);
    moment(&mut con, 3);
    p.stop_gracefully(Duration::from_secs(30));
    let log = p.log();
    assert_eq!(log.matches("full sync: new generation").count(), 0, "{log}");
    assert_eq!(a.ls()["generations"].as_array().map(|g| g.len()), Some(1));
    let (server, report) = a.restore_into_new_server(&t.to_string(), &[]);
    assert_eq!(digest(&mut server.client()), want, "{report:#}");
    a.verify();
    a.ls_summary();
}
