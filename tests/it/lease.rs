//! The archive's lease with real `redis-server` and `pitr archive` processes: a second archiver
//! on the same archive is refused, naming the first; after the holder is killed, a new one
//! starts once the lease has expired; `--takeover` starts at once, and a holder that runs on
//! stops without writing anything more. The time to live is short here (`PITR_LEASE_TTL`).

use std::time::{Duration, Instant};

use crate::support::archiving::*;
use crate::support::*;

const TTL: &str = "4s";
/// The exit code of a refused or lost lease (README, "Exit codes").
const EXIT_LEASE: i32 = 6;

fn archiver(a: &Archive, r: &RedisServer, extra: &[&str]) -> PitrProcess {
    let mut args = vec!["--flush-interval", "200ms"];
    args.extend_from_slice(extra);
    a.archiver_with(
        &plain_url(r),
        &args,
        &[("PITR_LEASE_TTL".to_string(), TTL.to_string())],
    )
}

#[test]
fn a_second_archiver_is_refused_naming_the_first() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p1 = archiver(&a, &r, &[]);
    wait_online(&r, Duration::from_secs(30));
    let ls = a.ls();
    let lease = &ls["lease"];
    assert_eq!(lease["pid"].as_u64(), Some(p1.pid() as u64), "{ls:#}");
    assert_eq!(lease["command"], "archive", "{ls:#}");
    assert_eq!(lease["live"], true, "{ls:#}");
    assert!(
        ls["foreign"].as_array().is_none_or(|f| f.is_empty()),
        "{ls:#}"
    );
    let host = lease["host"].as_str().expect("a host").to_string();

    let p2 = archiver(&a, &r, &[]);
    let st = p2
        .wait_timeout(Duration::from_secs(30))
        .expect("the second archiver is refused at once");
    assert_eq!(st.code(), Some(EXIT_LEASE), "{}", p2.log());
    let err = p2.stderr();
    assert!(
        err.contains(&format!("pid {} on host {host}", p1.pid())),
        "the holder is not named:\n{err}"
    );
    assert!(err.contains("--takeover"), "{err}");

    // The first archives on, and vouches for the master's offset while it is idle.
    p1.assert_running();
    let mut con = r.client();
    exec(&mut con, &["SET", "k", "v"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    let want = master_offset(&r);
    wait_until_msg(
        Duration::from_secs(20),
        "the lease to vouch for the master's offset",
        || a.ls()["lease"]["vouched_offset"].as_u64() == Some(want),
    );
    let text = run_pitr_ok(&["ls", "--store", a.store()], &[]);
    assert!(
        text.contains(&format!(
            "lease        pitr archive pid {} on host {host}",
            p1.pid()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("vouched    offset {want}")),
        "{text}"
    );
    assert!(!text.contains("not part of the archive"), "{text}");

    // A clean stop releases the lease.
    p1.stop_gracefully(Duration::from_secs(30));
    assert!(a.ls()["lease"].is_null());
    a.verify();
}

#[test]
fn after_the_holder_is_killed_a_new_archiver_starts_once_the_lease_expired() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p1 = archiver(&a, &r, &[]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    p1.kill9();

    // While the lease lives on, a new archiver is refused.
    let left = a.ls()["lease"]["expires_in_ms"]
        .as_i64()
        .expect("the lease is left");
    if left > 2000 {
        let early = archiver(&a, &r, &[]);
        let st = early
            .wait_timeout(Duration::from_secs(30))
            .expect("refused while the lease lives");
        assert_eq!(st.code(), Some(EXIT_LEASE), "{}", early.log());
    }
    let killed = Instant::now();
    wait_until_msg(Duration::from_secs(20), "the lease to expire", || {
        a.ls()["lease"]["live"] == false
    });
    let p2 = archiver(&a, &r, &[]);
    p2.wait_for_log("taking over an expired lease", Duration::from_secs(30));
    assert!(
        p2.log().contains(&format!("pid={}", p1.pid())),
        "the previous holder is not named\n{}",
        p2.log()
    );
    p2.wait_for_log("partial resync", Duration::from_secs(30));
    assert!(killed.elapsed() < Duration::from_secs(30));
    exec(&mut con, &["SET", "after", "2"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    a.caught_up(&r, Duration::from_secs(30));
    p2.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    assert_eq!(ls["generations"].as_array().unwrap().len(), 1, "{ls:#}");
    a.verify();
}

/// `--takeover` while the holder is frozen (SIGSTOP: gone, as far as anyone can tell). The new
/// archiver starts at once; when the old one runs again it finds its lease lapsed and taken,
/// and stops with the lease's exit code without writing: the archive stays one chain.
#[test]
fn takeover_starts_at_once_and_the_old_holder_stops_without_writing() {
    let r = RedisServer::start(&[]);
    let a = Archive::local();
    let p1 = archiver(&a, &r, &[]);
    wait_online(&r, Duration::from_secs(30));
    let mut con = r.client();
    exec(&mut con, &["SET", "before", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    assert!(p1.signal("STOP"));

    let p2 = archiver(&a, &r, &["--takeover"]);
    p2.wait_for_log("lease acquired", Duration::from_secs(30));
    assert!(p2.log().contains("taking over"), "{}", p2.log());
    p2.wait_for_log("partial resync", Duration::from_secs(30));
    // Writes that the frozen archiver receives too, once it runs again.
    for i in 0..50 {
        exec(&mut con, &["SET", &format!("k{i}"), &i.to_string()]);
    }
    assert_eq!(wait_archived(&mut con, 5000), 1);
    a.caught_up(&r, Duration::from_secs(30));
    // Longer than the old holder's lease could last without a renewal.
    std::thread::sleep(Duration::from_secs(4));
    assert!(p1.signal("CONT"));
    let st = p1
        .wait_timeout(Duration::from_secs(30))
        .expect("the old holder stops");
    assert_eq!(st.code(), Some(EXIT_LEASE), "{}", p1.log_tail(30));
    let err = p1.stderr();
    assert!(err.contains("lease"), "{err}");
    p2.assert_running();
    exec(&mut con, &["SET", "after", "1"]);
    assert_eq!(wait_archived(&mut con, 5000), 1);
    a.caught_up(&r, Duration::from_secs(30));
    p2.stop_gracefully(Duration::from_secs(30));
    let ls = a.ls();
    assert_eq!(ls["generations"].as_array().unwrap().len(), 1, "{ls:#}");
    assert!(ls["lease"].is_null(), "{ls:#}");
    // One chain: nothing of the old holder after the takeover.
    a.verify();
}
