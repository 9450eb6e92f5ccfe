//! Recovery-point load generator for `scripts/bench.sh rpo`.
//!
//! Writes at a steady rate to a master that `pitr archive` replicates, and measures how long
//! it takes until each write is in the archive:
//!
//! - `wait` (default): each `SET` is followed by `WAIT 1 <timeout>` on the same connection.
//!   `WAIT` makes the master send `REPLCONF GETACK`, the archiver seals the open segment at
//!   once and ACKs when it is durable, so the time from sending the `SET` to `WAIT` returning
//!   is the time until that write is archived, as a client that asks for it sees it.
//! - `poll`: plain `SET`s, no `WAIT`. After each write the master's `master_repl_offset` is
//!   read; a second connection polls `INFO replication` every 2 ms for the offset the
//!   archiver last ACKed (it ACKs only durable offsets). The latency of a write is the first
//!   poll that sees it ACKed minus the time it was sent: what a write that nobody waits for
//!   risks, i.e. the recovery point lag governed by `--flush-interval`.
//!
//! Usage: `rpo <port> <writes per second> <seconds> <wait timeout ms> [wait|poll]`
//!
//! Prints one line: `rpo mode=wait writes=4000 rate=199.9/s timeouts=0 p50=2.1ms p90=2.9ms
//! p99=5.0ms max=11.2ms set_p50=0.1ms`. Exits non-zero if the master is unreachable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Wait,
    Poll,
}

struct Args {
    port: u16,
    rate: f64,
    seconds: f64,
    wait_timeout_ms: u64,
    mode: Mode,
}

fn parse_args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 || a.len() > 5 {
        bail!("usage: rpo <port> <writes per second> <seconds> <wait timeout ms> [wait|poll]");
    }
    let mode = match a.get(4).map(String::as_str) {
        None | Some("wait") => Mode::Wait,
        Some("poll") => Mode::Poll,
        Some(other) => bail!("mode {other:?}: expected wait or poll"),
    };
    let args = Args {
        port: a[0].parse().context("port")?,
        rate: a[1].parse().context("writes per second")?,
        seconds: a[2].parse().context("seconds")?,
        wait_timeout_ms: a[3].parse().context("wait timeout ms")?,
        mode,
    };
    if !(args.rate > 0.0 && args.seconds > 0.0) {
        bail!("rate and seconds must be positive");
    }
    Ok(args)
}

fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    con.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(con)
}

/// A field of `INFO replication`: `master_repl_offset`, or `offset` of `slave0`.
fn info_offsets(con: &mut redis::Connection) -> anyhow::Result<(u64, Option<u64>)> {
    let info: String = redis::cmd("INFO").arg("replication").query(con)?;
    let mut master = None;
    let mut replica = None;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("master_repl_offset:") {
            master = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("slave0:") {
            replica = v
                .trim()
                .split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .and_then(|o| o.parse().ok());
        }
    }
    Ok((master.context("no master_repl_offset in INFO")?, replica))
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut con = connect(args.port)?;
    let (_, replica) = info_offsets(&mut con)?;
    if replica.is_none() {
        bail!("no replica (slave0) attached to 127.0.0.1:{}", args.port);
    }
    let total = (args.rate * args.seconds).round().max(1.0) as u64;
    let value = "v".repeat(100);

    // Poll mode: (time, ACKed offset) samples from a second connection.
    let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = (args.mode == Mode::Poll).then(|| {
        let (samples, stop) = (samples.clone(), stop.clone());
        let mut pcon = connect(args.port)?;
        anyhow::Ok(std::thread::spawn(move || -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let (_, acked) = info_offsets(&mut pcon)?;
                let now = Instant::now();
                if let Some(a) = acked {
                    samples.lock().unwrap().push((now, a));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }))
    });
    let poller = poller.transpose()?;

    let mut latencies = Vec::with_capacity(total as usize);
    let mut set_times = Vec::with_capacity(total as usize);
    let mut sent: Vec<(Instant, u64)> = Vec::with_capacity(total as usize);
    let mut timeouts = 0u64;
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let t0 = Instant::now();
        let _: () = redis::cmd("SET")
            .arg(format!("rpo:{i}"))
            .arg(&value)
            .query(&mut con)?;
        set_times.push(t0.elapsed());
        match args.mode {
            Mode::Wait => {
                let n: i64 = redis::cmd("WAIT")
                    .arg(1)
                    .arg(args.wait_timeout_ms)
                    .query(&mut con)?;
                if n >= 1 {
                    latencies.push(t0.elapsed());
                } else {
                    timeouts += 1;
                }
            }
            Mode::Poll => {
                let (offset, _) = info_offsets(&mut con)?;
                sent.push((t0, offset));
            }
        }
    }
    let elapsed = start.elapsed();

    if let Some(handle) = poller {
        // Let the last writes reach the archive.
        let last = sent.last().map_or(0, |s| s.1);
        let deadline = Instant::now() + Duration::from_millis(args.wait_timeout_ms);
        while Instant::now() < deadline && samples.lock().unwrap().last().map_or(0, |s| s.1) < last
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().expect("poller panicked")?;
        let samples = samples.lock().unwrap();
        for (t0, offset) in &sent {
            // The first poll, taken after the write was sent, that sees it ACKed.
            let from = samples.partition_point(|s| s.0 < *t0);
            match samples[from..].iter().find(|s| s.1 >= *offset) {
                Some(s) => latencies.push(s.0 - *t0),
                None => timeouts += 1,
            }
        }
    }

    latencies.sort();
    set_times.sort();
    println!(
        "rpo mode={} writes={total} rate={:.1}/s timeouts={timeouts} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms set_p50={:.2}ms",
        match args.mode {
            Mode::Wait => "wait",
            Mode::Poll => "poll",
        },
        total as f64 / elapsed.as_secs_f64(),
        pct(&latencies, 50.0),
        pct(&latencies, 90.0),
        pct(&latencies, 99.0),
        pct(&latencies, 100.0),
        pct(&set_times, 50.0),
    );
    Ok(())
}
