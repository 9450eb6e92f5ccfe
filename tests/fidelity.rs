//! Fidelity: a seeded random workload over every data type, TTLs, several databases,
//! transactions, scripts and functions runs against a master while `pitr archive` archives it;
//! at checkpoints the master's logical state is recorded. Then, for every checkpoint, restore
//! to its time in both modes (a live target, and files loaded by a stock redis-server) and
//! require the restored logical state to equal the checkpoint's: values, TTLs, stream groups,
//! functions — not encodings.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::archiving::*;
use support::state::{diff, drop_expired, logical_state, logical_state_con};
use support::workload::{Checkpoint, Workload};
use support::*;

/// Keeps a copy of the archive for a failure message.
fn keep(store: &str) -> String {
    let dest = std::env::temp_dir().join(format!("pitr-fidelity-failure-{}", std::process::id()));
    let _ = std::process::Command::new("cp")
        .args(["-r", store, &dest.to_string_lossy()])
        .status();
    dest.display().to_string()
}

fn compare(what: &str, store: &str, cp: &Checkpoint, restored: impl FnOnce(u64) -> Value) {
    // Keys with short TTLs expire between the checkpoint and now: compare what is alive at a
    // moment after both dumps, on both sides.
    let cutoff = now_ms() + 5000;
    let want = drop_expired(&cp.state, cutoff);
    let got = restored(cutoff);
    if let Some(d) = diff(&want, &got) {
        panic!(
            "{what}: restored state differs from the checkpoint at {} (left: checkpoint, right: restored; archive kept in {})\n{d}",
            cp.time_ms,
            keep(store)
        );
    }
}

#[test]
fn restores_equal_every_checkpoint_in_both_modes() {
    let seed: u64 = std::env::var("PITR_FIDELITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124);
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let mut w = Workload::new(seed);
    let mut con = master.client();
    // Some history before the archiver attaches: it lands in the snapshot.
    w.run_step(&mut con, 800);
    let p = archive.archiver(&master, &["--flush-interval", "200ms"]);
    wait_online(&master, Duration::from_secs(60));
    let mut checkpoints = vec![w.checkpoint(&mut con, &master)];
    for _ in 0..3 {
        w.run_step(&mut con, 1500);
        checkpoints.push(w.checkpoint(&mut con, &master));
    }
    // One more write after the last checkpoint, so that its time lies inside the archived
    // window (the window ends at the last archived write).
    exec(&mut con, &["SET", "fidelity:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let stats = w.stats();
    assert!(stats.ops >= 5300, "{stats:?}");

    for (i, cp) in checkpoints.iter().enumerate() {
        let keys = cp.state["keys"].as_array().map_or(0, |k| k.len());
        assert!(keys > 0 || i == 0, "checkpoint {i} is empty");
        let to = cp.time_ms.to_string();

        let (target, rep) = archive.restore_into_new_server(&to, &[]);
        assert!(rep["time_ms"].as_u64().unwrap() <= cp.time_ms, "{rep}");
        compare(
            &format!("checkpoint {i} into a live target"),
            archive.store(),
            cp,
            |cutoff| logical_state(&target, cutoff),
        );

        let files = archive.restore_as_files_and_start(&to, &[]);
        compare(
            &format!("checkpoint {i} as files"),
            archive.store(),
            cp,
            |cutoff| logical_state_con(&mut files.con(), cutoff),
        );
    }
}

#[test]
fn a_huge_key_restores_as_batched_commands() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    // A list and a hash of a few MB each, and a 3 MB string.
    for chunk in 0..40 {
        let items: Vec<String> = (0..1000)
            .map(|i| format!("item-{chunk}-{i}-{}", "x".repeat(60)))
            .collect();
        let _: () = redis::cmd("RPUSH")
            .arg("biglist")
            .arg(&items)
            .query(&mut con)
            .unwrap();
        let mut h = redis::cmd("HSET");
        h.arg("bighash");
        for i in 0..1000 {
            h.arg(format!("f{chunk}:{i}")).arg("v".repeat(50));
        }
        let _: () = h.query(&mut con).unwrap();
    }
    exec(&mut con, &["SET", "bigstr", &"s".repeat(3 << 20)]);
    exec(&mut con, &["PEXPIREAT", "biglist", "4102444800000"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["RPUSH", "biglist", "after"]));
    let want = logical_state(&master, 0);

    let (target, rep) =
        archive.restore_into_new_server("latest", &["--max-restore-bytes", "64KiB"]);
    // The list and the hash go as batches; the 3 MB string is LZF-compressed in the snapshot
    // and small enough, compressed, to go by RESTORE.
    assert!(rep["keys_by_commands"].as_u64().unwrap() >= 2, "{rep}");
    if let Some(d) = diff(&want, &logical_state(&target, 0)) {
        panic!("huge keys differ after a batched restore:\n{d}");
    }
}

#[test]
fn a_huge_compressible_string_restores_in_both_modes() {
    // rdbcompression is on by default: 40 MB of zeros is LZF-compressed in the snapshot, and
    // goes by RESTORE from its raw bytes (never decompressed by pitr).
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let mut con = master.client();
    exec(
        &mut con,
        &["SETRANGE", "zeros", &(40 << 20).to_string(), "end"],
    );
    exec(&mut con, &["SET", "small", "x"]);
    let archive = Archive::local();
    archive.archive_while(&master, |con| exec(con, &["APPEND", "small", "y"]));
    let want = logical_state(&master, 0);

    let (target, rep) = archive.restore_into_new_server("latest", &[]);
    assert_eq!(rep["keys_by_restore"], 2, "{rep}");
    if let Some(d) = diff(&want, &logical_state(&target, 0)) {
        panic!("live restore differs:\n{d}");
    }
    let files = archive.restore_as_files_and_start("latest", &[]);
    assert_eq!(files.report["keys"], 2, "{}", files.report);
    if let Some(d) = diff(&want, &logical_state_con(&mut files.con(), 0)) {
        panic!("files restore differs:\n{d}");
    }
}
