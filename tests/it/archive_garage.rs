//! `pitr archive` into a real S3-compatible server (Garage): the whole flow, a restart that
//! resumes from S3, Garage stopped for 20 s in the middle of writes, Garage stopped while
//! a snapshot streams in, and the lease on a store that ignores conditional puts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::archiving::*;
use crate::support::*;

/// An archive at `prefix` in Garage's bucket.
fn archive(g: &Garage, prefix: &str) -> Archive {
    Archive::at(g.store_url(prefix), g.env())
}

const FLUSH: &[&str] = &["--flush-interval", "250ms"];

#[test]
fn whole_flow_on_garage_with_a_restart() {
    let g = Garage::start();
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    r.cmd(&["DEBUG", "POPULATE", "100000", "key", "50"]);
    let a = archive(&g, "flow");
    let p = a.archiver(&r, FLUSH);
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(n, 1);
    {
        a.caught_up(&r, Duration::from_secs(30));
        a.ls()
    };
    p.stop_gracefully(Duration::from_secs(30));
    // Writes while the archiver is away, then a restart that resumes from S3.
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("away{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let p2 = a.archiver(&r, FLUSH);
    p2.wait_for_log("partial resync", Duration::from_secs(30));
    let l = {
        a.caught_up(&r, Duration::from_secs(30));
        a.ls()
    };
    assert_eq!(l["generations"].as_array().unwrap().len(), 1, "{l:#}");
    p2.stop_gracefully(Duration::from_secs(30));
    let v = a.verify();
    assert_eq!(v["snapshots"], 1);
    assert!(v["commands"].as_u64().unwrap() >= 200);
    // Listed by partition on S3 (LIST with delimiter): `ls` agrees with `ls --objects`, and a
    // restore planned from partial listings gives the master's data.
    a.ls_summary();
    let (target, _) = a.restore_into_new_server("latest", &[]);
    let digest = |con: &mut redis::Connection| -> String {
        redis::cmd("DEBUG").arg("DIGEST").query(con).unwrap()
    };
    assert_eq!(digest(&mut target.client()), digest(&mut con));
}

#[test]
fn garage_down_for_20s_during_writes_loses_nothing() {
    let g = Garage::start();
    let r = RedisServer::start(&[("repl-backlog-size", "64mb")]);
    let a = archive(&g, "outage");
    // A small buffer, so that the outage also exercises backpressure.
    let p = a.archiver(&r, &["--flush-interval", "250ms", "--max-buffer", "1MiB"]);
    wait_online(&r, Duration::from_secs(60));

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let w = {
        let mut con = r.client();
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            let value = "v".repeat(2000);
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SET")
                    .arg(format!("k{}", i % 1000))
                    .arg(format!("{i}:{value}"))
                    .query(&mut con)
                    .unwrap();
                i += 1;
                writes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    g.stop();
    let down_at = master_offset(&r);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    // While the store is down the archiver stays attached and keeps acking what is durable.
    p.assert_running();
    let ack: u64 = r.info("replication")["slave0"]
        .split(',')
        .find_map(|f| f.strip_prefix("offset="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ack <= down_at + 1000,
        "acked {ack} while the store was down since {down_at}"
    );
    g.start_again();
    let down_for = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(writes.load(Ordering::Relaxed) > 2000);
    let mut con = r.client();
    let _: () = redis::cmd("SET")
        .arg("last")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(60000)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1, "the archive did not catch up after the outage");
    let l = {
        a.caught_up(&r, Duration::from_secs(60));
        a.ls()
    };
    assert_eq!(l["generations"].as_array().unwrap().len(), 1, "{l:#}");
    assert!(l["generations"][0]["holes"].as_array().unwrap().is_empty());
    assert!(
        p.log().contains("pausing reads from the master"),
        "no backpressure with a 1 MiB buffer during the outage\n{}",
        p.log_tail(40)
    );
    assert!(
        p.log().contains("retrying"),
        "no retry logged during a {down_for:?} outage\n{}",
        p.log_tail(40)
    );
    p.stop_gracefully(Duration::from_secs(30));
    a.verify();
}

/// Garage stopped for a few seconds while a full sync's snapshot streams into it: the parts
/// that fail meanwhile are sent again, and the snapshot completes without a second full sync.
#[test]
fn garage_down_during_a_full_sync_keeps_the_snapshot() {
    use rand::{RngCore, SeedableRng};
    let g = Garage::start();
    let r = RedisServer::start(&[("repl-diskless-sync-delay", "0")]);
    // About 48 MiB that does not compress: six parts of 8 MiB.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut con = r.client();
    for batch in 0..48 {
        let mut pipe = redis::pipe();
        for i in 0..1024 {
            let mut value = vec![0u8; 1024];
            rng.fill_bytes(&mut value);
            pipe.cmd("SET")
                .arg(format!("k{batch}:{i}"))
                .arg(value)
                .ignore();
        }
        let _: () = pipe.query(&mut con).unwrap();
    }
    // The RDB streams for about 10 s (200 us per key), long enough to stop Garage inside it.
    r.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "200"]);
    let a = archive(&g, "fullsync-outage");
    let p = a.archiver(&r, FLUSH);
    p.wait_for_log("full sync: new generation", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    g.stop();
    std::thread::sleep(Duration::from_secs(4));
    p.assert_running();
    g.start_again();
    wait_online(&r, Duration::from_secs(120));
    r.cmd(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    let l = {
        a.caught_up(&r, Duration::from_secs(60));
        a.ls()
    };
    assert_eq!(l["generations"].as_array().unwrap().len(), 1, "{l:#}");
    let log = p.log();
    assert!(
        log.contains("sending that part again"),
        "no part was sent again during the outage\n{}",
        p.log_tail(60)
    );
    assert!(
        !log.contains("store error during the full sync"),
        "the snapshot was abandoned\n{}",
        p.log_tail(60)
    );
    assert_eq!(
        r.info("stats")["sync_full"],
        "1",
        "the master made more than one full sync"
    );
    p.stop_gracefully(Duration::from_secs(30));
    let v = a.verify();
    assert_eq!(v["snapshots"], 1);
}

/// Garage ignores conditional puts (a second create-only put overwrites, and so does a put
/// conditional on a version that is not the current one): the lease works by reading back.
/// It is renewed, a second archiver is refused naming the first, and `--takeover` ends the
/// first at its next renewal.
#[test]
fn the_lease_on_garage_is_renewed_refuses_a_second_archiver_and_can_be_taken_over() {
    let g = Garage::start();
    let r = RedisServer::start(&[]);
    let a = archive(&g, "lease");
    let ttl = [("PITR_LEASE_TTL".to_string(), "3s".to_string())];
    let p1 = a.archiver_with(&plain_url(&r), FLUSH, &ttl);
    wait_online(&r, Duration::from_secs(60));
    let renewed = || a.ls()["lease"]["renewed_ms"].as_u64().expect("a lease");
    let first = renewed();
    wait_until_msg(Duration::from_secs(20), "the lease to be renewed", || {
        renewed() >= first + 2000
    });
    assert!(
        !p1.log().contains("renewing the lease failed"),
        "{}",
        p1.log()
    );
    let p2 = a.archiver_with(&plain_url(&r), FLUSH, &ttl);
    let st = p2
        .wait_timeout(Duration::from_secs(30))
        .expect("the second archiver is refused");
    assert_eq!(st.code(), Some(6), "{}", p2.log());
    assert!(
        p2.stderr().contains(&format!("pid {}", p1.pid())),
        "{}",
        p2.stderr()
    );
    let p3 = a.archiver_with(
        &plain_url(&r),
        &["--flush-interval", "250ms", "--takeover"],
        &ttl,
    );
    p3.wait_for_log("lease acquired", Duration::from_secs(30));
    let st = p1
        .wait_timeout(Duration::from_secs(30))
        .expect("the old holder stops at its next renewal");
    assert_eq!(st.code(), Some(6), "{}", p1.log_tail(20));
    assert!(p1.stderr().contains("taken over"), "{}", p1.stderr());
    p3.wait_for_log("partial resync", Duration::from_secs(30));
    p3.stop_gracefully(Duration::from_secs(30));
    assert!(a.ls()["lease"].is_null());
}

/// A store outage that outlasts the lease pauses the archiver, not ends it: the lease lapses
/// (so another archiver could take the archive over meanwhile), writes wait, nothing more is
/// acknowledged; once the store answers, the same archiver renews its lease (nobody took it)
/// and goes on, and everything acknowledged before and after is restorable.
#[test]
fn an_outage_longer_than_the_lease_pauses_the_archiver_until_it_is_renewed() {
    let g = Garage::start();
    let r = RedisServer::start(&[]);
    let a = archive(&g, "lapse");
    let p = a.archiver_with(
        &plain_url(&r),
        FLUSH,
        &[("PITR_LEASE_TTL".to_string(), "3s".to_string())],
    );
    wait_online(&r, Duration::from_secs(60));
    let mut con = r.client();
    let _: () = redis::cmd("SET").arg("k").arg("1").query(&mut con).unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
    assert_eq!(n, 1);
    g.stop();
    p.wait_for_log("the lease lapsed", Duration::from_secs(30));
    let _: () = redis::cmd("SET").arg("k").arg("2").query(&mut con).unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut con).unwrap();
    assert_eq!(n, 0, "acknowledged while the store was down");
    p.assert_running();
    g.start_again();
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(60000)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1, "{}", p.log_tail(30));
    p.assert_running();
    assert!(p.stderr().contains("writing again"), "{}", p.log_tail(30));
    p.stop_gracefully(Duration::from_secs(30));
    a.verify();
    let (target, _) = a.restore_into_new_server("latest", &[]);
    let v: String = redis::cmd("GET")
        .arg("k")
        .query(&mut target.client())
        .unwrap();
    assert_eq!(v, "2");
}
