//! Reads a stretch of a master's replication backlog and throws it away: the transport's own
//! ceiling for `scripts/bench-tls.sh`, beside `pitr archive` reading the same bytes.
//!
//! It connects as `pitr` does (the same `net::connect`: TCP, then for `rediss://` the same
//! rustls configuration and buffering), sends `PSYNC <replid> <offset>`, reads the `+CONTINUE`
//! line, then reads `<bytes>` bytes of the stream into a 1 MiB buffer and discards them: no
//! parsing, no compression, no store.
//!
//! Usage: `drain <redis://host:port | rediss://host:port> <replid> <offset> <bytes> [<ca.pem>]`
//!
//! Prints one line: `drain bytes=<n> seconds=<s> cpu_ticks=<user+system ticks of this process>`.
//! Exits non-zero if the master does not continue the stream or closes it early.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis_pitr::net::{self, tls, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 || args.len() > 5 {
        bail!("usage: drain <redis[s]://host:port> <replid> <offset> <bytes> [<ca.pem>]");
    }
    let offset: u64 = args[2].parse().context("offset")?;
    let want: u64 = args[3].parse().context("bytes")?;
    if let Some(ca) = args.get(4) {
        let opts = tls::TlsOptions {
            ca: Some(ca.into()),
            ..Default::default()
        };
        tls::set_default(Arc::new(tls::Tls::new(&opts)?));
    }
    let source = Source::parse(&args[0], None).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let got = rt.block_on(drain(&source, &args[1], offset, want))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "drain bytes={got} seconds={seconds:.3} cpu_ticks={}",
        cpu_ticks()?
    );
    Ok(())
}

async fn drain(source: &Source, replid: &str, offset: u64, want: u64) -> anyhow::Result<u64> {
    let mut s = net::connect(source, Duration::from_secs(10)).await?;
    s.write_all(format!("PSYNC {replid} {offset}\r\n").as_bytes())
        .await?;
    // The reply line, a byte at a time: the stream follows it at once.
    let mut line = Vec::new();
    loop {
        let b = tokio::time::timeout(Duration::from_secs(30), s.read_u8())
            .await
            .context("no reply to PSYNC within 30 s")??;
        line.push(b);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() > 1024 {
            bail!("no line in the reply to PSYNC");
        }
    }
    if !line.starts_with(b"+CONTINUE") {
        bail!(
            "the master did not continue: {}",
            String::from_utf8_lossy(&line).trim_end()
        );
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < want {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .context("the stream stalled for 30 s")??;
        if n == 0 {
            bail!("the master closed the stream after {got} of {want} bytes");
        }
        got += n as u64;
    }
    Ok(got)
}

/// This process's user + system CPU time so far, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime
    // the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(f.get(i).context("short /proc/self/stat")?.parse()?)
    };
    Ok(tick(11)? + tick(12)?)
}
