//! Compaction with a real `redis-server` and `pitr archive`: short level spans (`2s,10s`)
//! under a steady stream of writes flushed every 50 ms. Objects of each level appear, the
//! number of objects falls below the number of segments the archiver wrote, `pitr compact`
//! beside the archiver is refused (it holds the lease), and after the archiver stops, one
//! `pitr compact` pass leaves a sound archive.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::archiving::*;
use crate::support::workload::Workload;
use crate::support::*;

/// Segments every 50 ms, short levels, replaced objects deleted at once.
const ARCHIVER_ARGS: &[&str] = &[
    "--flush-interval",
    "50ms",
    "--compaction-levels",
    "2s,10s",
    "--compaction-grace",
    "0s",
];

/// The exit code of a refused lease (README, "Exit codes").
const EXIT_LEASE: i32 = 6;

/// The segment objects under `dir`, as (level, file name).
fn segments(dir: &Path) -> BTreeSet<(u8, String)> {
    let mut out = BTreeSet::new();
    for p in files_under(dir) {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".segment") {
            continue;
        }
        let level = p
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .find_map(|c| c.strip_prefix('L').and_then(|l| l.parse::<u8>().ok()))
            .unwrap_or(u8::MAX);
        out.insert((level, name));
    }
    out
}

fn per_level(s: &BTreeSet<(u8, String)>) -> [usize; 3] {
    let mut n = [0; 3];
    for (l, _) in s {
        if let Some(c) = n.get_mut(usize::from(*l)) {
            *c += 1;
        }
    }
    n
}

#[test]
fn archiving_with_short_levels_merges_segments_and_stays_sound() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let p = archive.archiver(&master, ARCHIVER_ARGS);
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    let dir = Path::new(archive.store());
    // Every level 0 segment seen while the writes go on (they are deleted once compacted).
    let mut level0_seen: BTreeSet<String> = BTreeSet::new();
    let started = Instant::now();
    let mut i = 0u64;
    let mut refused = false;
    while started.elapsed() < Duration::from_secs(25) {
        exec(&mut con, &["SET", &format!("k{}", i % 500), &i.to_string()]);
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
        if i % 10 == 0 {
            level0_seen.extend(
                segments(dir)
                    .into_iter()
                    .filter(|(l, _)| *l == 0)
                    .map(|(_, n)| n),
            );
        }
        if !refused && started.elapsed() > Duration::from_secs(5) {
            // The archiver holds the lease: a compaction beside it is refused.
            let out = run_pitr(
                &["compact", "--store", archive.store(), "--levels", "2s,10s"],
                &[],
            );
            assert_eq!(
                out.status.code(),
                Some(EXIT_LEASE),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            refused = true;
        }
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let during = segments(dir);
    let n = per_level(&during);
    assert!(
        n[1] + n[2] > 0 && n[2] > 0,
        "objects per level {n:?}; log:\n{}",
        p.log_tail(40)
    );
    assert!(
        during.len() * 3 < level0_seen.len(),
        "{} objects now, {} level 0 segments written",
        during.len(),
        level0_seen.len()
    );
    p.stop_gracefully(Duration::from_secs(30));

    // A stop may fall between a compacted object's put and its deletes: one pass finishes
    // it (and compacts what has settled since).
    let report = archive.json("compact", &["--levels", "2s,10s"]);
    assert!(
        report["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{report:#}"
    );
    archive.verify();
    archive.ls_summary();
    let after = segments(dir);
    let levels: BTreeSet<u8> = after.iter().map(|(l, _)| *l).collect();
    assert!(levels.contains(&2), "{after:?}");
    // Nothing was lost: the archive still reaches the master's last write.
    let g = archive.caught_up(&master, Duration::from_secs(10));
    assert_eq!(g["last_offset"].as_u64(), Some(master_offset(&master)));
}

/// Restores to moments inside compacted objects equal the master at those moments.
#[test]
fn restores_to_moments_inside_compacted_objects_equal_the_master() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let p = archive.archiver(&master, ARCHIVER_ARGS);
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    let mut w = Workload::new(20261206);
    let mut checkpoints = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(25) {
        w.run_step(&mut con, 150);
        checkpoints.push(w.checkpoint(&mut con, &master));
        std::thread::sleep(Duration::from_millis(300));
    }
    exec(&mut con, &["SET", "compaction:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    archive.json("compact", &["--levels", "2s,10s"]);
    archive.verify();
    archive.ls_summary();
    let n = per_level(&segments(Path::new(archive.store())));
    assert!(n[2] > 0, "{n:?}");
    let step = (checkpoints.len() / 5).max(1);
    for cp in checkpoints.iter().step_by(step) {
        let (target, _) = archive.restore_into_new_server(&cp.time_ms.to_string(), &[]);
        let cutoff = now_ms() + 5000;
        let want = crate::support::state::drop_expired(&cp.state, cutoff);
        let got = crate::support::state::logical_state(&target, cutoff);
        if let Some(d) = crate::support::state::diff(&want, &got) {
            panic!("restore to {} differs from the master:\n{d}", cp.time_ms);
        }
    }
}

/// `pitr compact --max-run`: a window of more raw bytes is cut into objects of at most that
/// much, which restore as the master; a run size under 1 MiB is a usage error.
#[test]
fn max_run_cuts_a_window_into_objects_of_at_most_that_size() {
    let master = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    let archive = Archive::local();
    let p = archive.archiver(
        &master,
        &[
            "--flush-interval",
            "50ms",
            "--segment-max-bytes",
            "256KiB",
            "--compaction-levels",
            "off",
        ],
    );
    wait_online(&master, Duration::from_secs(60));
    let mut con = master.client();
    // About 5 MB of stream in segments of at most 256 KiB, within a second or two; then, once those
    // 1 s windows have closed, a later segment (a window is merged once one exists).
    let value = "v".repeat(10_000);
    for i in 0..500 {
        exec(&mut con, &["SET", &format!("k{}", i % 100), &value]);
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    std::thread::sleep(Duration::from_millis(2100));
    exec(&mut con, &["SET", "later", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let state = crate::support::state::logical_state(&master, 0);
    p.stop_gracefully(Duration::from_secs(30));

    let out = run_pitr(
        &[
            "compact",
            "--store",
            archive.store(),
            "--levels",
            "1m",
            "--max-run",
            "1KiB",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The windows of a second hold megabytes: cut into runs of at most 1 MiB.
    archive.json("compact", &["--levels", "1s", "--max-run", "1MiB"]);
    let compacted: Vec<(u64, u64)> = files_under(Path::new(archive.store()))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/L1/"))
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let mut parts = name.split('-').map(|p| p.parse::<u64>());
            (
                parts.next().unwrap().unwrap(),
                parts.next().unwrap().unwrap(),
            )
        })
        .collect();
    assert!(compacted.len() >= 3, "{compacted:?}");
    assert!(
        compacted.iter().all(|(s, e)| e - s <= 1 << 20),
        "{compacted:?}"
    );
    archive.verify();
    let restored = archive.restore_as_files_and_start("latest", &[]);
    assert_eq!(
        crate::support::state::logical_state_con(&mut restored.con(), 0),
        state
    );
}
