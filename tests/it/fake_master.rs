//! A fake master (a TCP server in the test) that misbehaves: garbage instead of a snapshot, a
//! truncated RDB, an RDB with a bad checksum, a truncated command, garbage in the stream. The
//! archiver must name the problem, reconnect, and never leave data a reader would trust that it
//! did not fully receive.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use redis_pitr::archive::catalog::Catalog;
use redis_pitr::archive::names::ObjectKind;
use redis_pitr::archive::store::Store;
use redis_pitr::ingest::archiver::{ArchiveConfig, Archiver};
use redis_pitr::net::Source;
use redis_pitr::resp::scanner::CommandScanner;

const REPLID: &str = "8f1e6c4ea7a0fd1b2c3d4e5f60718293a4b5c6d7";

/// What the fake master does after PSYNC on one connection.
#[derive(Clone)]
enum Act {
    /// Write these bytes (after the PSYNC reply line), then close.
    SendAndClose(Vec<u8>),
    /// Write these bytes, then keep the connection open, reading ACKs.
    SendAndStay(Vec<u8>),
}

#[derive(Default)]
struct Seen {
    psyncs: Vec<(String, String)>,
    acks: Vec<u64>,
}

/// A scripted master: connection `i` gets `script[i]` (the last one repeats).
async fn fake_master(script: Vec<(String, Act)>) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (reply, act) = script[n.min(script.len() - 1)].clone();
            n += 1;
            tokio::spawn(serve(sock, reply, act, s.clone()));
        }
    });
    (port, seen)
}

/// Splits a buffer of RESP arrays into commands (enough for what a replica sends).
fn commands(buf: &mut Vec<u8>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut sc = CommandScanner::new(0);
    let s = sc.scan(buf, 0);
    assert!(s.error.is_none(), "the archiver sends well-formed commands");
    let whole: Vec<u8> = buf.drain(..s.consumed).collect();
    let text = String::from_utf8_lossy(&whole).into_owned();
    let mut lines = text.split("\r\n").peekable();
    while let Some(l) = lines.next() {
        if let Some(n) = l.strip_prefix('*') {
            let n: usize = n.parse().unwrap();
            let mut args = Vec::new();
            for _ in 0..n {
                lines.next();
                args.push(lines.next().unwrap().to_string());
            }
            out.push(args);
        }
    }
    out
}

async fn serve(mut sock: TcpStream, psync_reply: String, act: Act, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Ok(n) = sock.read(&mut tmp).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        for args in commands(&mut buf) {
            match args[0].to_ascii_uppercase().as_str() {
                "PING" => sock.write_all(b"+PONG\r\n").await.unwrap(),
                "PSYNC" => {
                    seen.lock()
                        .unwrap()
                        .psyncs
                        .push((args[1].clone(), args[2].clone()));
                    sock.write_all(psync_reply.as_bytes()).await.unwrap();
                    match &act {
                        Act::SendAndClose(b) => {
                            sock.write_all(b).await.unwrap();
                            sock.flush().await.unwrap();
                            return;
                        }
                        Act::SendAndStay(b) => sock.write_all(b).await.unwrap(),
                    }
                }
                "REPLCONF" if args[1].eq_ignore_ascii_case("ack") => {
                    seen.lock().unwrap().acks.push(args[2].parse().unwrap());
                }
                _ => sock.write_all(b"+OK\r\n").await.unwrap(),
            }
        }
    }
}

fn crc64(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(data)
}

/// A small valid RDB: one string key in db 0.
fn rdb() -> Vec<u8> {
    let mut v = b"REDIS0010".to_vec();
    v.extend_from_slice(b"\xfa\x09redis-ver\x067.0.15");
    v.extend_from_slice(b"\xfe\x00\xfb\x01\x00\x00\x03key\x05value");
    v.push(0xff);
    let c = crc64(&v);
    v.extend_from_slice(&c.to_le_bytes());
    v
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{}\r\n", a.len(), a).as_bytes());
    }
    v
}

fn fullresync(offset: u64) -> String {
    format!("+FULLRESYNC {REPLID} {offset}\r\n")
}

struct Running {
    store: Store,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), redis_pitr::ingest::archiver::ArchiveError>>,
    _dir: tempfile::TempDir,
}

fn start_archiver(port: u16) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = Store::open(&url, &"fake".parse().unwrap()).unwrap();
    let cfg = ArchiveConfig {
        source: Source::parse(&format!("redis://127.0.0.1:{port}"), None).unwrap(),
        store: store.clone(),
        flush_interval: Duration::from_millis(100),
        segment_max_bytes: 1 << 20,
        max_buffer: 8 << 20,
        // The script counts connections: no INFO connection before each attach.
        follow: false,
        announce_port: 0,
        read_timeout: Duration::from_secs(5),
        lease: Default::default(),
        compaction: redis_pitr::maintain::compact::CompactConfig {
            levels: redis_pitr::maintain::compact::Levels::off(),
            ..Default::default()
        },
        snapshot_interval: None,
        retention: Default::default(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Archiver::run(cfg, stop.clone()));
    Running {
        store,
        stop,
        task,
        _dir: dir,
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the archiver; returns the catalog and the store (whose directory lives as long as
/// the returned guard).
async fn stop(r: Running) -> (Catalog, Store, tempfile::TempDir) {
    r.stop.cancel();
    let res = tokio::time::timeout(Duration::from_secs(10), r.task)
        .await
        .expect("archiver stops on request")
        .unwrap();
    res.expect("archiver exits cleanly");
    let catalog = Catalog::from_listing(&r.store.list().await.unwrap());
    (catalog, r.store, r._dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_snapshot_leaves_nothing_and_reconnects() {
    let (port, seen) = fake_master(vec![(
        fullresync(100),
        Act::SendAndClose(b"this is not a bulk header\r\n".to_vec()),
    )])
    .await;
    let r = start_archiver(port);
    wait_for("three attempts", || seen.lock().unwrap().psyncs.len() >= 3).await;
    let (catalog, _, _dir) = stop(r).await;
    assert!(catalog.generations.is_empty(), "nothing may be archived");
    // Never having archived anything, it always asks for a full sync.
    assert!(seen
        .lock()
        .unwrap()
        .psyncs
        .iter()
        .all(|p| p == &("?".to_string(), "-1".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupt_snapshots_are_never_visible() {
    let good = rdb();
    // $len framing, connection closed half way.
    let mut truncated = format!("${}\r\n", good.len()).into_bytes();
    truncated.extend_from_slice(&good[..good.len() / 2]);
    // EOF framing, complete framing but a flipped byte: the CRC64 catches it.
    let mark = "0123456789abcdef0123456789abcdef01234567";
    let mut corrupt = format!("$EOF:{mark}\r\n").into_bytes();
    let mut bad = good.clone();
    bad[20] ^= 0x01;
    corrupt.extend_from_slice(&bad);
    corrupt.extend_from_slice(mark.as_bytes());
    // EOF framing cut inside the mark.
    let mut cut_mark = format!("$EOF:{mark}\r\n").into_bytes();
    cut_mark.extend_from_slice(&good);
    cut_mark.extend_from_slice(&mark.as_bytes()[..20]);
    let (port, seen) = fake_master(vec![
        (fullresync(100), Act::SendAndClose(truncated)),
        (fullresync(100), Act::SendAndClose(corrupt)),
        (fullresync(100), Act::SendAndClose(cut_mark)),
    ])
    .await;
    let r = start_archiver(port);
    wait_for("four attempts", || seen.lock().unwrap().psyncs.len() >= 4).await;
    let (catalog, _, _dir) = stop(r).await;
    assert!(
        catalog.generations.is_empty(),
        "a partial or corrupt snapshot became visible: {:?}",
        catalog.generations
    );
    assert!(seen.lock().unwrap().acks.is_empty(), "nothing may be acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_command_is_not_archived_and_resume_asks_for_it() {
    let good = rdb();
    let mut first = format!("${}\r\n", good.len()).into_bytes();
    first.extend_from_slice(&good);
    let whole = [cmd(&["SELECT", "0"]), cmd(&["SET", "a", "1"])].concat();
    let partial = cmd(&["SET", "b", "2"]);
    // With `$len` framing the stream follows the RDB at once. The last command is cut short.
    first.extend_from_slice(&whole);
    first.extend_from_slice(&partial[..partial.len() - 3]);
    let after = 1000 + whole.len() as u64;
    let rest = [partial.clone(), cmd(&["SET", "c", "3"])].concat();
    let (port, seen) = fake_master(vec![
        (fullresync(1000), Act::SendAndClose(first)),
        (
            format!("+CONTINUE {REPLID}\r\n"),
            Act::SendAndStay(rest.clone()),
        ),
    ])
    .await;
    let r = start_archiver(port);
    let end = after + rest.len() as u64;
    wait_for("the ack of everything", || {
        seen.lock().unwrap().acks.contains(&end)
    })
    .await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.psyncs[0], ("?".into(), "-1".into()));
        // Resumes with the byte after the last whole command.
        assert_eq!(s.psyncs[1], (REPLID.into(), (after + 1).to_string()));
        assert!(s.acks.iter().all(|&a| a <= end), "acked more than received");
    }
    let (catalog, store, _dir) = stop(r).await;
    assert_eq!(catalog.generations.len(), 1);
    let g = &catalog.generations[0];
    assert!(g.is_contiguous());
    assert_eq!((g.first_offset, g.last_offset), (1000, end));
    let report = redis_pitr::maintain::verify::verify(&store).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!((report.generations, report.snapshots), (1, 1));
    assert_eq!(report.commands, 4);
    assert!(g
        .objects
        .iter()
        .any(|o| o.name.kind == ObjectKind::Snapshot));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_stream_keeps_what_came_before() {
    let good = rdb();
    let mut first = format!("${}\r\n", good.len()).into_bytes();
    first.extend_from_slice(&good);
    let ok = cmd(&["SET", "a", "1"]);
    first.extend_from_slice(&ok);
    first.extend_from_slice(b"+GARBAGE\r\n");
    let (port, seen) = fake_master(vec![
        (fullresync(0), Act::SendAndClose(first)),
        (
            format!("+CONTINUE {REPLID}\r\n"),
            Act::SendAndStay(Vec::new()),
        ),
    ])
    .await;
    let r = start_archiver(port);
    wait_for("a resume", || seen.lock().unwrap().psyncs.len() >= 2).await;
    assert_eq!(
        seen.lock().unwrap().psyncs[1],
        (REPLID.to_string(), (ok.len() as u64 + 1).to_string())
    );
    let (catalog, store, _dir) = stop(r).await;
    assert_eq!(catalog.generations[0].last_offset, ok.len() as u64);
    let report = redis_pitr::maintain::verify::verify(&store).await.unwrap();
    assert!(report.ok && report.segments == 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_is_retried_and_keepalive_newlines_are_skipped() {
    let good = rdb();
    let mark = "00112233445566778899aabbccddeeff00112233";
    // Keepalive newlines before the PSYNC reply and before the payload header.
    let mut payload = b"\n\n".to_vec();
    payload.extend_from_slice(format!("$EOF:{mark}\r\n").as_bytes());
    payload.extend_from_slice(&good);
    payload.extend_from_slice(mark.as_bytes());
    let (port, seen) = fake_master(vec![
        (
            "-LOADING Redis is loading the dataset in memory\r\n".into(),
            Act::SendAndClose(Vec::new()),
        ),
        (
            "-NOMASTERLINK Can't SYNC while not connected with my master\r\n".into(),
            Act::SendAndClose(Vec::new()),
        ),
        (
            format!("\n\n\n{}", fullresync(500)),
            Act::SendAndStay(payload),
        ),
    ])
    .await;
    let r = start_archiver(port);
    // After the end mark the archiver must ACK (the master waits for it to start the stream).
    wait_for("the ack after the snapshot", || {
        seen.lock().unwrap().acks.contains(&500)
    })
    .await;
    assert_eq!(seen.lock().unwrap().psyncs.len(), 3);
    let (catalog, _store, _dir) = stop(r).await;
    assert_eq!(catalog.generations.len(), 1);
    assert_eq!(catalog.generations[0].snapshots[0].offset, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_under_a_new_replid_keeps_the_generation() {
    let good = rdb();
    let mut first = format!("${}\r\n", good.len()).into_bytes();
    first.extend_from_slice(&good);
    let a = cmd(&["SET", "a", "1"]);
    first.extend_from_slice(&a);
    let new_id = "aaaabbbbccccddddeeeeffff0000111122223333";
    let b = cmd(&["SET", "b", "2"]);
    let (port, seen) = fake_master(vec![
        (fullresync(0), Act::SendAndClose(first)),
        (
            format!("+CONTINUE {new_id}\r\n"),
            Act::SendAndStay(b.clone()),
        ),
    ])
    .await;
    let r = start_archiver(port);
    let end = (a.len() + b.len()) as u64;
    wait_for("the ack of the second write", || {
        seen.lock().unwrap().acks.contains(&end)
    })
    .await;
    let (catalog, store, _dir) = stop(r).await;
    assert_eq!(
        catalog.generations.len(),
        1,
        "a failover continues the generation"
    );
    let g = &catalog.generations[0];
    assert_eq!(g.replids.len(), 2);
    assert_eq!(g.replid.to_string(), new_id);
    assert!(g.is_contiguous());
    assert!(
        redis_pitr::maintain::verify::verify(&store)
            .await
            .unwrap()
            .ok
    );
}
