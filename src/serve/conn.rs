//! One replica's link: the handshake (`PING`, `AUTH`, `REPLCONF`), then `PSYNC` or `SYNC`
//! answered with a full sync or `+CONTINUE`, then the stream. Three parts run side by side
//! once the sync starts: the producer (snapshot and segments from the store), the writer (the
//! socket, each write bounded by the timeout) and the reader (the replica's `REPLCONF ACK`s);
//! the first to end ends the others. What replicas send is decoded by `redis-protocol`
//! (inline commands, which a replica sends for its `SYNC` fallback, are split on spaces as
//! Redis does).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::rdb::Magic;
use crate::replay::plan::Target;
use crate::replay::sink::RdbHeader;

use super::moment::{self, Cursor, Moment};
use super::{Mode, ServeConfig, ServeError};

/// The `PING` a master sends to hold the link.
pub const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Longest command a replica may send (they send a few short ones).
const MAX_COMMAND: usize = 64 << 10;

/// Error replies before a client is dropped.
const MAX_ERRORS: u32 = 16;

/// What every replica task shares.
#[derive(Debug)]
pub struct Shared {
    pub cfg: ServeConfig,
    /// `--to`: the moment, planned once.
    pub moment: Option<Moment>,
    pub next_id: AtomicU64,
}

/// Why a link ended.
#[derive(Debug)]
enum End {
    /// The replica closed the connection.
    Closed,
    Timeout(&'static str),
    Io(std::io::Error),
    /// It sent something that is not RESP.
    Protocol(String),
    Serve(Box<ServeError>),
    /// The server stops.
    Stopped,
    /// Refused with an error reply (already logged).
    Refused(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("the replica closed the connection"),
            End::Timeout(what) => write!(f, "timed out {what}"),
            End::Io(e) => write!(f, "{e}"),
            End::Protocol(d) => write!(f, "protocol error: {d}"),
            End::Serve(e) => write!(f, "{e}"),
            End::Stopped => f.write_str("pitr serve is stopping"),
            End::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// The snapshot or a segment cannot be served.
fn broken(what: String) -> End {
    End::Serve(Box::new(ServeError::Snapshot(what)))
}

impl From<ServeError> for End {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Gone => End::Closed,
            e => End::Serve(Box::new(e)),
        }
    }
}

/// Serves one connection until it ends; logs how it ended.
pub async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(replica = id, %peer, "connection accepted");
    let (rd, wr) = sock.into_split();
    let mut link = Link {
        id,
        peer,
        shared,
        reader: Some(Reader {
            rd,
            buf: BytesMut::with_capacity(1024),
        }),
        wr: Some(wr),
        authed: false,
        listening_port: None,
        capa: Vec::new(),
        version: None,
        errors: 0,
    };
    let ended = tokio::select! {
        r = link.run(stop.clone()) => r,
        _ = stop.cancelled() => Err(End::Stopped),
    };
    match ended {
        Ok(()) => tracing::info!(replica = id, %peer, "connection closed"),
        Err(End::Closed) => {
            tracing::info!(replica = id, %peer, "the replica closed the connection")
        }
        Err(End::Stopped) => {
            tracing::info!(replica = id, %peer, "link ended: pitr serve is stopping")
        }
        Err(e) => tracing::warn!(replica = id, %peer, reason = %e, "replica dropped"),
    }
}

struct Link {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// Taken by the ACK reader once the sync starts.
    reader: Option<Reader>,
    wr: Option<OwnedWriteHalf>,
    authed: bool,
    listening_port: Option<String>,
    capa: Vec<String>,
    version: Option<String>,
    errors: u32,
}

/// What a replica asked for.
enum Sync {
    Full,
    Partial { replid: String, offset: u64 },
}

impl Link {
    fn cfg(&self) -> &ServeConfig {
        &self.shared.cfg
    }

    async fn reply(&mut self, bytes: &[u8]) -> Result<(), End> {
        let timeout = self.cfg().timeout;
        let wr = self.wr.as_mut().expect("the writer is here until the sync");
        write_timeout(wr, bytes, timeout).await
    }

    async fn error(&mut self, text: &str) -> Result<(), End> {
        self.errors += 1;
        self.reply(format!("-{text}\r\n").as_bytes()).await?;
        if self.errors >= MAX_ERRORS {
            return Err(End::Refused(format!("{MAX_ERRORS} error replies")));
        }
        Ok(())
    }

    async fn run(&mut self, stop: CancellationToken) -> Result<(), End> {
        let sync = loop {
            let timeout = self.cfg().timeout;
            let reader = self
                .reader
                .as_mut()
                .expect("the reader is here until the sync");
            let args = match reader.next(Some(timeout), "waiting for a command").await {
                Ok(a) => a,
                Err(End::Protocol(d)) => {
                    let _ = self
                        .reply(format!("-ERR Protocol error: {d}\r\n").as_bytes())
                        .await;
                    return Err(End::Protocol(d));
                }
                Err(e) => return Err(e),
            };
            let Some(first) = args.first() else { continue };
            let name = String::from_utf8_lossy(first).to_ascii_uppercase();
            if name == "AUTH" {
                self.auth(&args).await?;
                continue;
            }
            if name == "QUIT" {
                self.reply(b"+OK\r\n").await?;
                return Ok(());
            }
            if self.cfg().password.is_some() && !self.authed {
                self.error("NOAUTH Authentication required.").await?;
                continue;
            }
            match name.as_str() {
                "PING" => self.reply(b"+PONG\r\n").await?,
                "REPLCONF" => self.replconf(&args).await?,
                "SYNC" => break Sync::Full,
                "PSYNC" if args.len() == 3 => {
                    let replid = String::from_utf8_lossy(&args[1]).into_owned();
                    match std::str::from_utf8(&args[2])
                        .ok()
                        .and_then(|o| o.parse::<i64>().ok())
                    {
                        Some(o) if replid != "?" && o > 0 => {
                            break Sync::Partial {
                                replid,
                                offset: o as u64,
                            }
                        }
                        Some(_) => break Sync::Full,
                        None => {
                            self.error("ERR value is not an integer or out of range")
                                .await?
                        }
                    }
                }
                "PSYNC" => {
                    self.error("ERR wrong number of arguments for 'psync' command")
                        .await?
                }
                _ => {
                    let shown: String = name.chars().take(40).collect();
                    tracing::info!(replica = self.id, peer = %self.peer, command = %shown, "an unknown command");
                    self.error(&format!(
                        "ERR unknown command '{shown}': pitr serve speaks the master side of replication only (PING, AUTH, REPLCONF, PSYNC, SYNC)"
                    ))
                    .await?
                }
            }
        };
        self.sync(sync, stop).await
    }

    async fn auth(&mut self, args: &[Vec<u8>]) -> Result<(), End> {
        let Some(password) = self.cfg().password.clone() else {
            return self
                .error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
                .await;
        };
        // `AUTH <password>` or `AUTH <user> <password>` (masteruser): the user is not checked.
        let given = match args.len() {
            2 => &args[1],
            3 => &args[2],
            _ => {
                return self
                    .error("ERR wrong number of arguments for 'auth' command")
                    .await
            }
        };
        if constant_time_eq(given, password.as_bytes()) {
            self.authed = true;
            self.reply(b"+OK\r\n").await
        } else {
            tracing::warn!(replica = self.id, peer = %self.peer, "AUTH with a wrong password");
            self.error("WRONGPASS invalid username-password pair or user is disabled.")
                .await
        }
    }

    async fn replconf(&mut self, args: &[Vec<u8>]) -> Result<(), End> {
        let mut i = 1;
        while i + 1 < args.len() {
            let key = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&args[i + 1]).into_owned();
            match key.as_str() {
                "listening-port" => self.listening_port = Some(value),
                "capa" => self.capa.push(value),
                "version" => self.version = Some(value),
                // An ACK before the sync: nothing to answer.
                "ack" => return Ok(()),
                _ => {}
            }
            i += 2;
        }
        if args.len() % 2 == 0 {
            return self.error("ERR syntax error").await;
        }
        self.reply(b"+OK\r\n").await
    }

    /// The sync, then the stream, until the link ends.
    async fn sync(&mut self, sync: Sync, stop: CancellationToken) -> Result<(), End> {
        let shared = self.shared.clone();
        let cfg = &shared.cfg;
        let (id, peer) = (self.id, self.peer);
        // Where a partial resync continues, if it can.
        let resume = match &sync {
            Sync::Partial { replid, offset } => match continue_at(&shared, replid, *offset).await {
                Ok(Some(c)) => Some(c),
                Ok(None) => {
                    tracing::info!(replica = id, %peer, %replid, offset, "partial resync not possible: the archive does not hold that offset of that replication id here; full sync");
                    None
                }
                Err(e) => {
                    tracing::warn!(replica = id, %peer, error = %e, "partial resync not possible; full sync");
                    None
                }
            },
            Sync::Full => None,
        };
        let link = stop.child_token();
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let sent = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let first_ack = Arc::new(Notify::new());
        let wr = self.wr.take().expect("the writer is here until the sync");
        let writer = tokio::spawn(write_loop(wr, rx, cfg.timeout, link.clone()));
        let mut reader = self
            .reader
            .take()
            .expect("the reader is here until the sync");
        let acks = {
            let (sent, acked, first_ack, link, timeout) = (
                sent.clone(),
                acked.clone(),
                first_ack.clone(),
                link.clone(),
                cfg.timeout,
            );
            tokio::spawn(async move {
                // Ends with the link too: a replica that stops reading mid-snapshot sends
                // nothing either, and its reader would otherwise wait for it forever.
                let r = tokio::select! {
                    r = ack_loop(&mut reader, timeout, &sent, &acked, &first_ack) => r,
                    _ = link.cancelled() => Err(End::Stopped),
                };
                link.cancel();
                r
            })
        };
        let produce = async {
            match resume {
                Some((m, pos, replid)) => {
                    tracing::info!(replica = id, %peer, %replid, offset = pos, generation = %m.generation,
                        "partial resync: +CONTINUE at offset {pos}");
                    send(&tx, format!("+CONTINUE {replid}\r\n").into_bytes()).await?;
                    sent.store(true, Ordering::Relaxed);
                    self.stream_on(&tx, &m, pos).await
                }
                None => {
                    let m = match &shared.moment {
                        Some(m) => m.clone(),
                        None => moment::plan_moment(&cfg.store, Target::Latest, false).await?,
                    };
                    self.full_sync(&tx, &m).await?;
                    sent.store(true, Ordering::Relaxed);
                    if m.filtered.is_some() {
                        // As a master does after an EOF-marked snapshot: the stream waits for
                        // the replica's first ACK, since a replica loading from the socket
                        // reads past the end mark and drops what came with it. The replica
                        // sends a newline each second while it loads; the ACK reader ends the
                        // link when it falls silent.
                        first_ack.notified().await;
                        tracing::debug!(
                            replica = id,
                            "the replica loaded the snapshot and acknowledged it"
                        );
                    }
                    self.stream_on(&tx, &m, m.offset()).await
                }
            }
        };
        let ended: Result<(), End> = tokio::select! {
            r = produce => r,
            _ = link.cancelled() => Err(End::Stopped),
        };
        drop(tx);
        // An error reply, or what the producer sent before it ended, goes out first.
        let wrote = if matches!(ended, Err(End::Refused(_))) || ended.is_ok() {
            tokio::time::timeout(cfg.timeout, writer).await.ok()
        } else {
            link.cancel();
            writer.await.ok().map(Ok)
        };
        link.cancel();
        let read = acks.await.unwrap_or(Err(End::Stopped));
        let wrote = wrote.and_then(|w| w.ok()).unwrap_or(Ok(()));
        tracing::debug!(
            replica = id,
            acked = acked.load(Ordering::Relaxed),
            "link ends"
        );
        // The first cause: the replica's side, then the socket, then the producer (whose
        // `Closed` only says that the writer went away: the writer's error is the cause).
        match (ended, read, wrote) {
            (Err(End::Stopped | End::Closed), Err(r), _) if !matches!(r, End::Stopped) => Err(r),
            (Err(End::Stopped | End::Closed), _, Err(w)) => Err(w),
            (e, _, _) => e,
        }
    }

    async fn full_sync(&self, tx: &mpsc::Sender<Bytes>, m: &Moment) -> Result<(), End> {
        if let Some(f) = &m.filtered {
            return self.full_sync_filtered(tx, m, f).await;
        }
        let cfg = &self.shared.cfg;
        let mut snap = moment::read_snapshot(&cfg.store, m.snapshot, m.snapshot_size).await?;
        let Some(first) = snap.rx.recv().await else {
            return Err(match snap.task.await {
                Ok(Err(e)) => End::from(e),
                _ => broken(format!("{}: empty", m.snapshot)),
            });
        };
        let Some(header) = moment::rdb_header(&first) else {
            return Err(broken(format!("{}: no RDB header", m.snapshot)));
        };
        if let Some(why) = refusal(self.version.as_deref(), header) {
            tracing::warn!(replica = self.id, peer = %self.peer, version = self.version.as_deref().unwrap_or("?"),
                rdb = %format!("{}{:03}", header.magic, header.version), "replica refused: {why}");
            send(tx, format!("-ERR {why}\r\n").into_bytes()).await?;
            return Err(End::Refused(why));
        }
        if self.version.is_none() {
            tracing::debug!(replica = self.id, "the replica did not say its version: the snapshot (RDB {}{}) is sent; a replica that cannot load it says so in its own log", header.magic, header.version);
        }
        let replid = m.served_replid(!self.shared.cfg.ping_interval.is_zero());
        tracing::info!(replica = self.id, peer = %self.peer, listening_port = self.listening_port.as_deref().unwrap_or("?"),
            capa = %self.capa.join(","), generation = %m.generation, snapshot = %m.snapshot, offset = m.offset(),
            rdb_bytes = snap.raw_len, "full sync: +FULLRESYNC {replid} {}", m.offset());
        send(
            tx,
            format!("+FULLRESYNC {replid} {}\r\n", m.offset()).into_bytes(),
        )
        .await?;
        send(tx, format!("${}\r\n", snap.raw_len).into_bytes()).await?;
        let mut n = first.len() as u64;
        tx.send(first).await.map_err(|_| End::Closed)?;
        while let Some(b) = snap.rx.recv().await {
            n += b.len() as u64;
            tx.send(b).await.map_err(|_| End::Closed)?;
        }
        match snap.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(broken(e.to_string())),
        }
        if n != snap.raw_len {
            return Err(broken(format!(
                "{}: {n} RDB bytes, its trailer says {}",
                m.snapshot, snap.raw_len
            )));
        }
        tracing::info!(replica = self.id, bytes = n, "snapshot sent");
        Ok(())
    }

    /// A filtered moment's full sync: `+FULLRESYNC` with its own replication id, then the
    /// snapshot re-encoded without the unselected keys (on a blocking thread), EOF-marked.
    /// A replica that did not announce `capa eof` is refused (every Redis replica since
    /// 2.8.18 announces it).
    async fn full_sync_filtered(
        &self,
        tx: &mpsc::Sender<Bytes>,
        m: &Moment,
        f: &Arc<moment::Filtered>,
    ) -> Result<(), End> {
        let cfg = &self.shared.cfg;
        if !self.capa.iter().any(|c| c.eq_ignore_ascii_case("eof")) {
            let why = "a restore with --db/--match sends a re-encoded snapshot whose length is known only at its end, EOF-marked, and this replica did not announce REPLCONF capa eof (Redis 2.8.18 and later do): restore with --via commands".to_string();
            tracing::warn!(replica = self.id, peer = %self.peer, capa = %self.capa.join(","), "replica refused: {why}");
            send(tx, format!("-ERR {why}\r\n").into_bytes()).await?;
            return Err(End::Refused(why));
        }
        let mut snap = moment::read_snapshot(&cfg.store, m.snapshot, m.snapshot_size).await?;
        let Some(first) = snap.rx.recv().await else {
            return Err(match snap.task.await {
                Ok(Err(e)) => End::from(e),
                _ => broken(format!("{}: empty", m.snapshot)),
            });
        };
        let Some(header) = moment::rdb_header(&first) else {
            return Err(broken(format!("{}: no RDB header", m.snapshot)));
        };
        if let Some(why) = refusal(self.version.as_deref(), header) {
            tracing::warn!(replica = self.id, peer = %self.peer, "replica refused: {why}");
            send(tx, format!("-ERR {why}\r\n").into_bytes()).await?;
            return Err(End::Refused(why));
        }
        tracing::info!(replica = self.id, peer = %self.peer, generation = %m.generation, snapshot = %m.snapshot,
            offset = m.offset(), archived_replid = %m.replid, "full sync of a filtered moment: +FULLRESYNC {} {}", f.replid, m.offset());
        send(
            tx,
            format!("+FULLRESYNC {} {}\r\n", f.replid, m.offset()).into_bytes(),
        )
        .await?;
        send(tx, format!("$EOF:{}\r\n", f.eof_mark).into_bytes()).await?;
        let (etx, mut erx) = mpsc::channel::<Bytes>(4);
        let filter = f.filter.clone();
        let mut rx = std::mem::replace(&mut snap.rx, mpsc::channel(1).1);
        let encode = tokio::task::spawn_blocking(move || {
            // By database only: those databases go whole, their size hints with them.
            let whole = if filter.patterns.is_empty() && filter.slots.is_none() {
                filter.dbs.iter().map(|&d| u64::from(d)).collect()
            } else {
                Vec::new()
            };
            let mut r = crate::rdb::reencode::Reencoder::new(|db, key: &[u8]| {
                filter.key_selected(db as u32, key)
            })
            .keep_resize_hints(whole);
            let mut out = Vec::new();
            let mut next = Some(first);
            while let Some(b) = next.take().or_else(|| rx.blocking_recv()) {
                r.feed(b, &mut out).map_err(|e| e.to_string())?;
                for o in out.drain(..) {
                    etx.blocking_send(o).map_err(|_| String::new())?;
                }
            }
            let done = r.finish(&mut out).map_err(|e| e.to_string())?;
            for o in out.drain(..) {
                etx.blocking_send(o).map_err(|_| String::new())?;
            }
            Ok::<_, String>(done)
        });
        while let Some(b) = erx.recv().await {
            tx.send(b).await.map_err(|_| End::Closed)?;
        }
        let encoded = encode.await;
        // The store's error first: a re-encoding cut short by it says only "truncated".
        match snap.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(broken(e.to_string())),
        }
        let done = match encoded {
            Ok(Ok(d)) => d,
            Ok(Err(e)) if e.is_empty() => return Err(End::Closed),
            Ok(Err(e)) => return Err(broken(format!("{}: {e}", m.snapshot))),
            Err(e) => return Err(broken(e.to_string())),
        };
        send(tx, f.eof_mark.clone().into_bytes()).await?;
        let mut served = f.served.lock().expect("not poisoned");
        *served = Some(moment::FilteredServed {
            keys: done.keys,
            keys_skipped: done.keys_skipped,
            rdb_bytes: done.bytes_out,
            ..Default::default()
        });
        tracing::info!(
            replica = self.id,
            keys = done.keys,
            keys_skipped = done.keys_skipped,
            bytes = done.bytes_out,
            of = done.bytes_in,
            "filtered snapshot sent"
        );
        Ok(())
    }

    /// The stream from `pos`: to the cut then PINGs (`--to`), or as the archive grows.
    async fn stream_on(&self, tx: &mpsc::Sender<Bytes>, m: &Moment, pos: u64) -> Result<(), End> {
        let cfg = &self.shared.cfg;
        if let (Some(f), Some(cut)) = (&m.filtered, m.cut) {
            let snapshot = f.served.lock().expect("not poisoned").clone();
            let mut served = moment::FilteredServed {
                stream_done: false,
                commands: 0,
                commands_skipped: 0,
                commands_mixed: 0,
                commands_from_unselected: 0,
                commands_internal: 0,
                stream_bytes: 0,
                ..snapshot.unwrap_or_default()
            };
            moment::send_filtered_stream(&cfg.store, m, &f.filter, tx, &mut served).await?;
            tracing::info!(
                replica = self.id,
                offset = cut,
                commands = served.commands,
                skipped = served.commands_skipped,
                mixed = served.commands_mixed,
                bytes = served.stream_bytes,
                "the filtered stream reached the cut"
            );
            served.stream_done = true;
            *f.served.lock().expect("not poisoned") = Some(served);
            return std::future::pending().await;
        }
        let mut cursor = Cursor::new(m, pos, cfg.poll_interval);
        match m.cut {
            Some(cut) => {
                if cursor.pos < cut {
                    cursor.send_known(&cfg.store, Some(cut), tx).await?;
                    if cursor.pos < cut {
                        return Err(broken(format!(
                            "the archive ends at offset {} before the cut at {cut}",
                            cursor.pos
                        )));
                    }
                }
                tracing::info!(
                    replica = self.id,
                    offset = cut,
                    "the stream reached the cut"
                );
                if cfg.ping_interval.is_zero() {
                    return std::future::pending().await;
                }
                loop {
                    tokio::time::sleep(cfg.ping_interval).await;
                    send(tx, PING.to_vec()).await?;
                }
            }
            None => loop {
                cursor.send_known(&cfg.store, None, tx).await?;
                tokio::time::sleep(cursor.poll()).await;
                match cursor.refresh(&cfg.store).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(broken(format!(
                            "generation {} ended at offset {} and a newer one began: the replica must sync again",
                            m.generation, cursor.pos
                        )))
                    }
                    Err(e) => {
                        tracing::warn!(replica = self.id, error = %e, "listing the archive failed; trying again")
                    }
                }
            },
        }
    }
}

/// Where `PSYNC <replid> <offset>` continues: the moment, the 0-based position (`offset - 1`:
/// the replica asks for the next byte) and the replication id to answer with; `None` when
/// the archive does not hold it here.
async fn continue_at(
    shared: &Shared,
    replid: &str,
    offset: u64,
) -> Result<Option<(Moment, u64, String)>, ServeError> {
    let pos = offset - 1;
    match shared.cfg.mode {
        Mode::To(_) => {
            let m = shared.moment.as_ref().expect("planned at bind");
            if m.filtered.is_some() {
                // Filtered: the replica's offsets are not the archive's.
                return Ok(None);
            }
            let cut = m.cut.expect("--to has a cut");
            let pings = !shared.cfg.ping_interval.is_zero();
            let served = m.served_replid(pings);
            // Past the cut, the replica holds the PINGs this server sent after it, under the
            // served id. Up to the cut, the archived id is the same history (a replica of the
            // master, or served with --repl-ping 0): it continues under the served id.
            let ping = PING.len() as u64;
            let held = if replid == served {
                pos <= cut || (pings && (pos - cut) % ping == 0)
            } else {
                replid == m.replid && pos <= cut
            };
            let ok = m.offset() <= pos && held;
            Ok(ok.then(|| (m.clone(), pos, served)))
        }
        Mode::Follow => {
            let m = match moment::plan_moment(&shared.cfg.store, Target::Offset(pos), false).await {
                Ok(m) => m,
                Err(ServeError::Restore(crate::replay::RestoreError::Plan(_))) => return Ok(None),
                Err(e) => return Err(e),
            };
            let ours = m.replid == replid
                || m.segments
                    .iter()
                    .any(|s| s.object.replid.as_str() == replid);
            let ok = ours && m.offset() <= pos && pos <= m.known_end();
            Ok(ok.then(|| (m, pos, replid.to_string())))
        }
    }
}

/// Why a replica that says its version cannot load the snapshot, or `None`.
///
/// Only Valkey replicas send `REPLCONF version` (checked with Redis 5.0, 6.2, 7.0, 7.4 and
/// Valkey 9.1): the version is read as Valkey's. Valkey 7.2 to 8.x loads `REDIS` RDBs up to
/// version 11; 9.x also `VALKEY` RDB 80. A replica that does not say its version is not
/// refused: Redis replicas of every version send the same handshake, so nothing tells their
/// version, and one that cannot load the RDB refuses it itself (and logs the RDB version).
pub fn refusal(version: Option<&str>, rdb: RdbHeader) -> Option<String> {
    let v = version?;
    let mut it = v.split('.');
    let major: u32 = it.next()?.trim().parse().ok()?;
    let minor: u32 = it.next().and_then(|m| m.trim().parse().ok()).unwrap_or(0);
    let (redis_max, valkey_max) = match (major, minor) {
        (m, _) if m >= 9 => (11, Some(80)),
        (8, _) => (11, None),
        (7, n) if n >= 2 => (11, None),
        (7, _) => (10, None),
        (5..=6, _) => (9, None),
        (4, _) => (8, None),
        (3, n) if n >= 2 => (7, None),
        _ => (6, None),
    };
    let loads = match rdb.magic {
        Magic::Redis => rdb.version <= redis_max,
        Magic::Valkey => valkey_max.is_some_and(|m| rdb.version <= m),
    };
    if loads {
        return None;
    }
    let upto = match valkey_max {
        Some(m) => format!("REDIS RDB up to version {redis_max} and VALKEY RDB up to version {m}"),
        None => format!("REDIS RDB up to version {redis_max}"),
    };
    Some(format!(
        "the replica (version {v}) loads {upto}; the archived snapshot is {} RDB version {}: replicate it into a server of the archived master's version or newer",
        rdb.magic, rdb.version
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn send(tx: &mpsc::Sender<Bytes>, b: Vec<u8>) -> Result<(), End> {
    tx.send(Bytes::from(b)).await.map_err(|_| End::Closed)
}

async fn write_timeout(wr: &mut OwnedWriteHalf, b: &[u8], timeout: Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, wr.write_all(b)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::Io(e)),
        Err(_) => Err(End::Timeout("writing to the replica")),
    }
}

/// Writes what the producer sends, in order; ends the link on an error.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
    link: CancellationToken,
) -> Result<(), End> {
    loop {
        let b = tokio::select! {
            b = rx.recv() => b,
            _ = link.cancelled() => None,
        };
        let Some(b) = b else {
            let _ = wr.shutdown().await;
            return Ok(());
        };
        if let Err(e) = write_timeout(&mut wr, &b, timeout).await {
            link.cancel();
            return Err(e);
        }
    }
}

/// Reads the replica's `REPLCONF ACK`s; the link ends when it closes, sends garbage, or is
/// silent for `timeout` once the snapshot was sent (a replica acknowledges every second).
async fn ack_loop(
    reader: &mut Reader,
    timeout: Duration,
    sent: &AtomicBool,
    acked: &AtomicU64,
    first_ack: &Notify,
) -> Result<(), End> {
    loop {
        match reader.next(Some(timeout), "waiting for REPLCONF ACK").await {
            Ok(args) => {
                if args.len() >= 3
                    && args[0].eq_ignore_ascii_case(b"REPLCONF")
                    && args[1].eq_ignore_ascii_case(b"ACK")
                {
                    if let Some(o) = std::str::from_utf8(&args[2])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        acked.store(o, Ordering::Relaxed);
                    }
                    first_ack.notify_one();
                }
            }
            Err(End::Timeout(_)) if !sent.load(Ordering::Relaxed) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Commands from a replica.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// The next command's arguments, within `wait` when given.
    async fn next(
        &mut self,
        wait: Option<Duration>,
        during: &'static str,
    ) -> Result<Vec<Vec<u8>>, End> {
        loop {
            if let Some(args) = self.parse()? {
                return Ok(args);
            }
            if self.buf.len() > MAX_COMMAND {
                return Err(End::Protocol(format!(
                    "a command of more than {MAX_COMMAND} bytes"
                )));
            }
            self.buf.reserve(4096);
            let read = self.rd.read_buf(&mut self.buf);
            let n = match wait {
                Some(w) => match tokio::time::timeout(w, read).await {
                    Ok(r) => r,
                    Err(_) => return Err(End::Timeout(during)),
                },
                None => read.await,
            }
            .map_err(End::Io)?;
            if n == 0 {
                return Err(End::Closed);
            }
        }
    }

    /// One command from the buffer: a RESP array (decoded by `redis-protocol`), or an inline
    /// command line.
    fn parse(&mut self) -> Result<Option<Vec<Vec<u8>>>, End> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] != b'*' {
            let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                return Ok(None);
            };
            let line = self.buf.split_to(nl + 1);
            let args: Vec<Vec<u8>> = line[..]
                .split(|c: &u8| c.is_ascii_whitespace())
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            return Ok(Some(args));
        }
        match decode(&self.buf) {
            Ok(Some((frame, used))) => {
                self.buf.advance(used);
                match frame {
                    OwnedFrame::Array(items) => items
                        .into_iter()
                        .map(|f| match f {
                            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Ok(b),
                            _ => Err(End::Protocol("expected bulk strings in a command".into())),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Some),
                    _ => Err(End::Protocol("expected an array".into())),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(End::Protocol(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(magic: Magic, version: u32) -> RdbHeader {
        RdbHeader { magic, version }
    }

    #[test]
    fn replicas_that_say_their_version_are_refused_an_rdb_they_cannot_load() {
        assert_eq!(refusal(None, h(Magic::Redis, 12)), None);
        assert_eq!(refusal(Some("9.1.2"), h(Magic::Valkey, 80)), None);
        assert_eq!(refusal(Some("9.1.2"), h(Magic::Redis, 11)), None);
        assert_eq!(refusal(Some("8.1.0"), h(Magic::Redis, 10)), None);
        let e = refusal(Some("8.1.0"), h(Magic::Valkey, 80)).unwrap();
        assert!(
            e.contains("8.1.0") && e.contains("VALKEY RDB version 80"),
            "{e}"
        );
        let e = refusal(Some("9.1.2"), h(Magic::Redis, 12)).unwrap();
        assert!(
            e.contains("9.1.2") && e.contains("REDIS RDB version 12"),
            "{e}"
        );
        assert!(e.contains("up to version 11"), "{e}");
        assert!(refusal(Some("7.0.15"), h(Magic::Redis, 11)).is_some());
        assert!(refusal(Some("7.0.15"), h(Magic::Redis, 10)).is_none());
    }

    #[tokio::test]
    async fn commands_come_as_resp_arrays_or_inline_lines() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\nSYNC\r\n*1\r\n+x")
                .await
                .unwrap();
            s.write_all(b"\r\n*x\r\n").await.unwrap();
            s
        });
        let (sock, _) = l.accept().await.unwrap();
        let (rd, _wr) = sock.into_split();
        let mut r = Reader {
            rd,
            buf: BytesMut::new(),
        };
        let w = Some(Duration::from_secs(5));
        assert_eq!(
            r.next(w, "t").await.unwrap(),
            vec![b"PSYNC".to_vec(), b"?".to_vec(), b"-1".to_vec()]
        );
        assert_eq!(r.next(w, "t").await.unwrap(), vec![b"SYNC".to_vec()]);
        assert_eq!(r.next(w, "t").await.unwrap(), vec![b"x".to_vec()]);
        assert!(matches!(r.next(w, "t").await, Err(End::Protocol(_))));
        drop(client.await);
    }
}
