//! End to end, with a real `redis-server` and `pitr archive`: restores to 30 random moments of
//! one archive give the same logical state before compaction, after `pitr compact`, after
//! `pitr compact` killed with SIGKILL part-way (several times), after the pass that finishes
//! it, and after `pitr prune` for the moments still inside the window; a moment before the
//! window is refused (exit 3) with an error naming the window's start. A few of the moments are
//! checkpoints of the workload, whose state the master itself gave: the reference is right, not
//! only stable.
//!
//! The moments and the kill delays come from a seeded RNG; the seed is printed, and
//! `PITR_MOMENTS_SEED=<n>` reproduces a run's choices.
//!
//! Retention cuts only at a snapshot that sits where an object of the chain starts, and
//! compaction merges whatever falls in one window of its span. So the master is left idle in
//! the middle of the history (the workload's short TTLs expired, nothing written) for longer
//! than the largest level span, while a scheduled snapshot lands: that snapshot sits at the end
//! of the last object before the pause, also once compacted, and is where `pitr prune` cuts.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::archiving::*;
use crate::support::state::{diff, drop_expired, logical_state};
use crate::support::util::copy_tree;
use crate::support::workload::{Checkpoint, Workload};
use crate::support::*;

/// Compaction levels of `pitr compact`: 1 s windows, then 3 s windows.
const LEVELS: &str = "1s,3s";
/// How long the master stays idle around the snapshot retention cuts at: longer than the
/// largest level span, so that no compacted object spans the pause.
const QUIET: Duration = Duration::from_millis(3300);
/// Moments checked.
const MOMENTS: usize = 30;
/// Moments checked after a kill that is not the last.
const MOMENTS_PER_KILL: usize = 5;
/// At least this many kills of `pitr compact` after random delays, and at most
/// `MAX_ATTEMPTS` runs of it.
const MIN_KILLS: usize = 4;
const MAX_ATTEMPTS: usize = 12;
/// Exit codes (README, "Exit codes").
const EXIT_NOT_FOUND: i32 = 3;
const EXIT_LEASE: i32 = 6;

/// A segment object of the local store, from its path and name (`docs/format.md`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seg {
    level: u8,
    start: u64,
    end: u64,
    first_ms: u64,
    last_ms: u64,
    name: String,
}

/// A snapshot object: (offset, time_ms).
type Snap = (u64, u64);

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            // `#`: a staging file of a put that did not complete; no reader sees it.
            name.ends_with(suffix) && !name.contains('#')
        })
        .collect()
}

fn numbers(name: &str, n: usize) -> Vec<u64> {
    let v: Vec<u64> = name
        .split('-')
        .take(n)
        .map(|x| x.parse().unwrap_or_else(|_| panic!("object name {name}")))
        .collect();
    assert_eq!(v.len(), n, "object name {name}");
    v
}

/// Every segment of the archive `default` in the local store `store`, of every level, sorted.
fn segments(store: &str) -> Vec<Seg> {
    let mut out: Vec<Seg> = files(&Path::new(store).join("default"), ".segment")
        .into_iter()
        .map(|p| {
            let level = p
                .components()
                .filter_map(|c| c.as_os_str().to_str())
                .find_map(|c| c.strip_prefix('L').and_then(|l| l.parse::<u8>().ok()))
                .unwrap_or_else(|| panic!("no level in {}", p.display()));
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let n = numbers(&name, 4);
            Seg {
                level,
                start: n[0],
                end: n[1],
                first_ms: n[2],
                last_ms: n[3],
                name,
            }
        })
        .collect();
    out.sort();
    out
}

/// Every snapshot of the archive `default` in `store`, sorted by offset.
fn snapshots(store: &str) -> Vec<Snap> {
    let mut out: Vec<Snap> = files(&Path::new(store).join("default"), ".snapshot")
        .into_iter()
        .map(|p| {
            let n = numbers(&p.file_name().unwrap().to_string_lossy(), 2);
            (n[0], n[1])
        })
        .collect();
    out.sort();
    out
}

/// The objects that lie inside the range of an object of a higher level: what a compaction
/// killed between its put and its last delete leaves behind.
fn covered(segs: &[Seg]) -> usize {
    segs.iter()
        .filter(|o| {
            segs.iter()
                .any(|c| c.level > o.level && c.start <= o.start && o.end <= c.end)
        })
        .count()
}

fn per_level(segs: &[Seg]) -> Vec<usize> {
    let mut n = Vec::new();
    for s in segs {
        let l = usize::from(s.level);
        if n.len() <= l {
            n.resize(l + 1, 0);
        }
        n[l] += 1;
    }
    n
}

/// Restores `ms` into the empty server `t` and dumps it (nothing left out for expiry: the
/// comparison drops what expires before its own cutoff).
fn restore_state(a: &Archive, t: &RedisServer, ms: u64) -> Value {
    t.cmd(&["FLUSHALL"]);
    t.cmd(&["FUNCTION", "FLUSH"]);
    a.restore(&ms.to_string(), &["--target", &plain_url(t)]);
    logical_state(t, 0)
}

/// The states at `moments`, restored into `targets` side by side.
fn states(a: &Archive, targets: &[RedisServer], moments: &[u64]) -> Vec<Value> {
    let n = targets.len();
    let mut out = vec![Value::Null; moments.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                s.spawn(move || {
                    moments
                        .iter()
                        .enumerate()
                        .skip(i)
                        .step_by(n)
                        .map(|(j, &ms)| (j, restore_state(a, t, ms)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            let done = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (j, v) in done {
                out[j] = v;
            }
        }
    });
    out
}

/// Restores the moments `which` (indexes into `moments`) of `a` and requires each state to
/// equal the reference taken before compaction.
fn check(
    phase: &str,
    a: &Archive,
    targets: &[RedisServer],
    moments: &[u64],
    refs: &[Value],
    which: &[usize],
) {
    let started = Instant::now();
    let at: Vec<u64> = which.iter().map(|&i| moments[i]).collect();
    let got = states(a, targets, &at);
    // Keys whose TTL passed between the two restores are gone from the later one: compare
    // without whatever expires before a moment after both.
    let cutoff = now_ms() + 10_000;
    let mut bad = Vec::new();
    for (&i, g) in which.iter().zip(&got) {
        if let Some(d) = diff(&drop_expired(&refs[i], cutoff), &drop_expired(g, cutoff)) {
            bad.push(format!(
                "moment #{i} ({} ms): left is before compaction, right is now:\n{d}",
                moments[i]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{phase}: {} of {} moments restore differently than before compaction:\n{}",
        bad.len(),
        which.len(),
        bad.join("\n")
    );
    eprintln!(
        "moments: {phase}: {} moments equal ({:.1} s)",
        which.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Runs the workload on the master for `span`, with a checkpoint about every 1.2 s and one at
/// the end.
fn write_for(
    w: &mut Workload,
    con: &mut redis::Connection,
    master: &RedisServer,
    span: Duration,
    checkpoints: &mut Vec<Checkpoint>,
) {
    let started = Instant::now();
    let mut last = Instant::now();
    while started.elapsed() < span {
        w.run_step(con, 40);
        if last.elapsed() > Duration::from_millis(1200) {
            checkpoints.push(w.checkpoint(con, master));
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    checkpoints.push(w.checkpoint(con, master));
}

fn lease_path(a: &Archive) -> std::path::PathBuf {
    Path::new(a.store()).join("default").join("lease")
}

#[test]
fn thirty_moments_restore_alike_through_compaction_kills_and_pruning() {
    let test_started = Instant::now();
    let seed: u64 = match std::env::var("PITR_MOMENTS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("PITR_MOMENTS_SEED={s} is not a number")),
        Err(_) => now_ms() ^ (u64::from(std::process::id()) << 20),
    };
    eprintln!("moments: seed {seed} (PITR_MOMENTS_SEED={seed} repeats this run's choices)");
    let mut rng = StdRng::seed_from_u64(seed);

    // 1. Archive a master under a varied workload, with a pause in the middle.
    let master = RedisServer::start(&[
        ("repl-diskless-sync-delay", "0"),
        // No PING in the stream while the master is idle (the pause stays empty).
        ("repl-ping-replica-period", "60"),
    ]);
    let a = Archive::local();
    let p = a.archiver(
        &master,
        &[
            "--flush-interval",
            "20ms",
            "--compaction-levels",
            "off",
            "--snapshot-interval",
            "3s",
        ],
    );
    wait_online(&master, Duration::from_secs(60));
    p.wait_for_log("snapshot durable", Duration::from_secs(60));
    let mut con = master.client();
    let mut w = Workload::new(seed);
    let mut checkpoints = Vec::new();
    write_for(
        &mut w,
        &mut con,
        &master,
        Duration::from_secs(5),
        &mut checkpoints,
    );
    // The pause: the workload's short TTLs (at most 2.5 s) expire, and their DELs move the
    // offset; then nothing for QUIET, with a scheduled snapshot at the offset reached.
    let mut offset = master_offset(&master);
    let mut changed = Instant::now();
    let mut quiet_snap: Option<Snap> = None;
    wait_until_msg(
        Duration::from_secs(30),
        "an idle master and a scheduled snapshot at its offset",
        || {
            let now = master_offset(&master);
            if now != offset {
                (offset, changed) = (now, Instant::now());
            }
            quiet_snap = snapshots(a.store()).into_iter().find(|s| s.0 == offset);
            quiet_snap.is_some() && changed.elapsed() >= QUIET
        },
    );
    let quiet_snap = quiet_snap.expect("the snapshot of the pause");
    write_for(
        &mut w,
        &mut con,
        &master,
        Duration::from_secs(5),
        &mut checkpoints,
    );
    exec(&mut con, &["SET", "moments:end", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p.stop_gracefully(Duration::from_secs(30));
    let stats = w.stats();
    eprintln!(
        "moments: workload: {} ops, {} commands, {} error replies, multi {}, set {}, expire {}",
        stats.ops,
        stats.commands,
        stats.errors,
        stats.by_op.get("multi").copied().unwrap_or(0),
        stats.by_op.get("set").copied().unwrap_or(0),
        stats.by_op.get("expire").copied().unwrap_or(0),
    );

    let ls = a.ls();
    let gens = ls["generations"].as_array().expect("generations");
    assert_eq!(gens.len(), 1, "{ls:#}");
    let g = &gens[0];
    assert!(
        g["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{ls:#}"
    );
    let first = g["first_time_ms"].as_u64().unwrap();
    let last = g["last_time_ms"].as_u64().unwrap();
    let level0 = segments(a.store());
    let snaps = snapshots(a.store());
    assert!(level0.iter().all(|s| s.level == 0), "compaction was off");
    // The base, the one of the pause, and at least one that landed while writes went on.
    assert!(snaps.len() >= 3, "snapshots {snaps:?}\n{}", p.log_tail(40));
    assert_eq!(snaps[0].1, first, "the base starts the window");
    let inside_segment = snaps
        .iter()
        .filter(|s| level0.iter().any(|o| o.start < s.0 && s.0 < o.end))
        .count();
    assert!(
        level0.iter().any(|o| o.start == quiet_snap.0)
            && level0.iter().any(|o| o.end == quiet_snap.0),
        "the snapshot of the pause {quiet_snap:?} sits where a segment starts"
    );
    eprintln!(
        "moments: archived {} segments, {} snapshots ({} inside a segment), window {} ms",
        level0.len(),
        snaps.len(),
        inside_segment,
        last - first
    );

    // 2. The moments: edges, segment boundaries, snapshots, checkpoints, then random ones.
    let mut chosen: BTreeSet<u64> = BTreeSet::new();
    chosen.insert(first);
    chosen.insert(first + 1);
    chosen.insert(last);
    for _ in 0..2 {
        let i = rng.gen_range(0..level0.len() - 1);
        chosen.insert(level0[i].last_ms);
        chosen.insert(level0[i + 1].first_ms);
    }
    for s in snaps.iter().skip(1) {
        chosen.insert(s.1);
    }
    chosen.insert(quiet_snap.1 - 1);
    let picked: Vec<&Checkpoint> = checkpoints.choose_multiple(&mut rng, 4).collect();
    for cp in &picked {
        chosen.insert(cp.time_ms);
    }
    while chosen.len() < MOMENTS {
        chosen.insert(rng.gen_range(first..=last));
    }
    let moments: Vec<u64> = chosen.into_iter().take(MOMENTS).collect();
    assert!(
        picked.iter().all(|cp| moments.contains(&cp.time_ms)),
        "more than {MOMENTS} fixed moments"
    );
    let all: Vec<usize> = (0..moments.len()).collect();
    eprintln!("moments: {moments:?}");

    // An untouched copy of the archive, for the compactions that are killed.
    let pristine = crate::support::util::temp_dir("pitr-moments-pristine");
    copy_tree(Path::new(a.store()), pristine.path());

    let targets: Vec<RedisServer> = (0..2).map(|_| RedisServer::start(&[])).collect();
    let started = Instant::now();
    let refs = states(&a, &targets, &moments);
    eprintln!(
        "moments: reference states of {} moments ({:.1} s)",
        moments.len(),
        started.elapsed().as_secs_f64()
    );
    // The reference is the master's own state at its checkpoints.
    let cutoff = now_ms() + 10_000;
    for cp in &picked {
        let i = moments.iter().position(|&m| m == cp.time_ms).unwrap();
        let want = drop_expired(&cp.state, cutoff);
        let got = drop_expired(&refs[i], cutoff);
        if let Some(d) = diff(&want, &got) {
            panic!(
                "restore to checkpoint {} differs from the master (left):\n{d}",
                cp.time_ms
            );
        }
    }
    let keys: usize = refs
        .iter()
        .map(|r| r["keys"].as_array().map_or(0, |k| k.len()))
        .max()
        .unwrap_or(0);
    assert!(keys > 100, "the states hold few keys ({keys})");

    // 3. Compaction.
    let started = Instant::now();
    let report = a.json("compact", &["--levels", LEVELS]);
    let compact_time = started.elapsed();
    assert!(
        report["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{report:#}"
    );
    let after = segments(a.store());
    // Level 2 objects exist; level 1 ones only when the last 3 s window holds a closed
    // second (timing decides), so they are not required.
    let n = per_level(&after);
    assert!(n.len() == 3 && n[2] > 0, "objects per level {n:?}");
    assert!(
        after.len() * 5 < level0.len(),
        "{} objects left of {} segments",
        after.len(),
        level0.len()
    );
    assert_eq!(covered(&after), 0, "{after:?}");
    // Restores from scheduled snapshots that now sit inside a compacted object start replaying
    // in its middle.
    let inside_compacted = snaps
        .iter()
        .filter(|s| {
            after
                .iter()
                .any(|o| o.level > 0 && o.start < s.0 && s.0 < o.end)
        })
        .count();
    assert!(
        inside_compacted > 0,
        "snapshots {snaps:?}, objects {after:?}"
    );
    eprintln!(
        "moments: compacted {} segments into {:?} objects per level in {:.2} s; {} snapshots inside them",
        level0.len(),
        n,
        compact_time.as_secs_f64(),
        inside_compacted
    );
    a.verify();
    check("after compaction", &a, &targets, &moments, &refs, &all);

    // 4. The same compaction on a copy of the archive, killed part-way.
    let b = Archive::local();
    copy_tree(pristine.path(), Path::new(b.store()));
    let mut kills = 0;
    let mut caught_midway = 0;
    let mut lease_checked = false;
    let mut max_delay = (compact_time.as_millis() as u64 / 2).max(40);
    for attempt in 1..=MAX_ATTEMPTS {
        if kills >= MIN_KILLS && caught_midway > 0 {
            break;
        }
        // A killed run's lease is in the way until it expires: each run takes it over.
        let c = PitrProcess::spawn(
            &[
                "compact",
                "--store",
                b.store(),
                "--levels",
                LEVELS,
                "--takeover",
            ],
            &[],
        );
        let started = Instant::now();
        // Random delays first; if none of those kills fell between a put and the last delete
        // of its run, watch the store and kill as soon as it shows one that does.
        let watch = kills >= MIN_KILLS;
        if watch {
            while c.try_wait().is_none()
                && started.elapsed() < Duration::from_secs(30)
                && covered(&segments(b.store())) == 0
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            let delay = rng.gen_range((max_delay / 2).min(100)..=max_delay);
            std::thread::sleep(Duration::from_millis(delay));
        }
        let st = c.kill9();
        let ran = started.elapsed().as_millis();
        if st.signal() != Some(9) {
            // It finished first: start again from the uncompacted archive, killing sooner.
            assert!(st.success(), "{st}\n{}", c.log_tail(40));
            eprintln!(
                "moments: attempt {attempt}: pitr compact finished within {ran} ms: starting over"
            );
            max_delay = (max_delay / 2).max(20);
            std::fs::remove_dir_all(b.store()).unwrap();
            copy_tree(pristine.path(), Path::new(b.store()));
            continue;
        }
        kills += 1;
        let segs = segments(b.store());
        let both = covered(&segs);
        if both > 0 {
            caught_midway += 1;
        }
        eprintln!(
            "moments: kill {kills} after {ran} ms{}: objects per level {:?}, {both} covered by a higher level",
            if watch { " (watching the store)" } else { "" },
            per_level(&segs)
        );
        // The killed process left its lease (unless it died before taking it): the archive is
        // held until the lease expires, 30 s after its last renewal (the next run takes it
        // over).
        if lease_path(&b).exists() && !lease_checked {
            lease_checked = true;
            let out = run_pitr(&["compact", "--store", b.store(), "--levels", LEVELS], &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(EXIT_LEASE), "{err}");
            assert!(err.contains(&format!("pid {}", c.pid())), "{err}");
        }
        b.verify();
        let last_kill = kills >= MIN_KILLS && caught_midway > 0;
        let which: Vec<usize> = if last_kill {
            all.clone()
        } else {
            all.choose_multiple(&mut rng, MOMENTS_PER_KILL)
                .copied()
                .collect()
        };
        check(
            &format!("after kill {kills}"),
            &b,
            &targets,
            &moments,
            &refs,
            &which,
        );
    }
    assert!(
        kills >= MIN_KILLS && caught_midway > 0,
        "{kills} kills, {caught_midway} of them between a put and the last delete of its run"
    );
    let report = b.json("compact", &["--levels", LEVELS, "--takeover"]);
    assert!(
        report["problems"].as_array().is_some_and(|p| p.is_empty()),
        "{report:#}"
    );
    assert!(!lease_path(&b).exists(), "pitr compact gave its lease back");
    let finished = segments(b.store());
    assert_eq!(covered(&finished), 0, "{finished:?}");
    // The same objects as the compaction that was never interrupted.
    let names = |s: &[Seg]| s.iter().map(|o| o.name.clone()).collect::<BTreeSet<_>>();
    assert_eq!(names(&finished), names(&after));
    b.verify();
    check(
        "after the compaction that finished the killed ones",
        &b,
        &targets,
        &moments,
        &refs,
        &all,
    );

    // 5. Retention: the window starts just after the snapshot of the pause.
    let retain = format!("{}ms", now_ms() - quiet_snap.1 - 300);
    let dry = b.json("prune", &["--retain", &retain]);
    assert_eq!(dry["deleted"], false, "{dry:#}");
    assert_eq!(dry["plan"]["kept"]["offset"], quiet_snap.0, "{dry:#}");
    let done = b.json("prune", &["--retain", &retain, "--confirm"]);
    assert_eq!(done["deleted"], true, "{done:#}");
    assert!(
        done["applied"]["objects_deleted"].as_u64().unwrap_or(0) >= 2,
        "{done:#}"
    );
    let ls = b.ls();
    let g = &ls["generations"][0];
    assert_eq!(g["first_offset"], quiet_snap.0, "{ls:#}");
    assert_eq!(g["first_time_ms"], quiet_snap.1, "{ls:#}");
    b.verify();
    let window_start = quiet_snap.1;
    let (inside, outside): (Vec<usize>, Vec<usize>) =
        all.iter().partition(|&&i| moments[i] >= window_start);
    assert!(
        inside.len() >= 3 && outside.len() >= 3,
        "{} moments inside the window, {} before it",
        inside.len(),
        outside.len()
    );
    check("after pruning", &b, &targets, &moments, &refs, &inside);
    let start_text = redis_pitr::replay::plan::fmt_ms(window_start);
    for &i in &outside {
        targets[0].cmd(&["FLUSHALL"]);
        let out = run_pitr(
            &[
                "restore",
                "--store",
                b.store(),
                "--to",
                &moments[i].to_string(),
                "--target",
                &plain_url(&targets[0]),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND), "{err}");
        assert!(
            err.contains("nearest restorable points")
                && err.contains(&start_text)
                && err.contains(&format!("offset {}", quiet_snap.0)),
            "restore to {} should name the window's start {start_text} (offset {}): {err}",
            moments[i],
            quiet_snap.0
        );
    }
    eprintln!(
        "moments: after pruning: {} moments inside restore alike, {} before the window are refused; {:.1} s in all",
        inside.len(),
        outside.len(),
        test_started.elapsed().as_secs_f64()
    );
}
