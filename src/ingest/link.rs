//! The replica link: one connection to the master, owned here and nowhere else. Does the
//! handshake a real replica does (PING, AUTH, REPLCONF, PSYNC), frames the full-sync payload
//! (`$<len>` and diskless `$EOF:<mark>`), hands out the bytes that follow, and writes
//! `REPLCONF ACK`, the only thing ever sent after PSYNC. Knows nothing of storage, nor of the
//! transport: it works over any [`ServerStream`] that `net` dials.

use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::archive::names::ReplId;
use crate::net::{BoxedStream, ServerStream, Source};

/// Longest reply line accepted during the handshake.
const MAX_LINE: usize = 4096;
/// Read buffer reservation per read.
pub const READ_CHUNK: usize = 256 * 1024;
/// The version announced to a Valkey master (`REPLCONF version`): the newest Valkey whose full
/// sync format (RDB 80, `VALKEY080`) the RDB parser reads. A later Valkey then sends RDB 80 rather
/// than a newer format.
pub const REPLICA_VERSION: &str = "9.1.0";
/// The client name of the archiving link (`CLIENT SETNAME`).
pub const ARCHIVER_CLIENT_NAME: &str = "pitr-archiver";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} closed the connection {during}")]
    Closed { addr: String, during: &'static str },
    /// An error reply; `-NOPERM` (the user lacks the ACL permission for `command`) is fatal.
    #[error("{addr} refused {command}: {reply}")]
    Refused {
        addr: String,
        command: &'static str,
        reply: String,
    },
    #[error("authentication to {addr} failed: {reply}")]
    Auth { addr: String, reply: String },
    /// `-LOADING`, `-NOMASTERLINK` and the like: try again later.
    #[error("{addr} is not ready to sync: {reply}")]
    NotReady { addr: String, reply: String },
    #[error("{addr} sent a malformed {what}: {detail}")]
    Protocol {
        addr: String,
        what: &'static str,
        detail: String,
    },
    /// Sentinel or the cluster said the master moved: the link to `addr` is let go.
    #[error("the master moved ({what}): letting go of {addr}")]
    Moved { addr: String, what: String },
    /// Sentinel or the cluster could not say where the master is now.
    #[error("cannot locate the master: {what}")]
    Locate { what: String },
    /// Every server asked where the master is refused the credentials or a permission.
    #[error("cannot locate the master: {what}")]
    LocateDenied { what: String },
    #[error("no data from {addr} for {secs} s {during}")]
    Timeout {
        addr: String,
        secs: u64,
        during: &'static str,
    },
}

impl LinkError {
    /// A failure to locate `source`'s master: [`LinkError::LocateDenied`] when its locator was
    /// refused everywhere, otherwise [`LinkError::Locate`].
    pub fn locate(source: &Source, what: String) -> LinkError {
        match &source.locate {
            Some(l) if l.denied() => LinkError::LocateDenied { what },
            _ => LinkError::Locate { what },
        }
    }

    /// Whether retrying can never help (wrong password, missing permission).
    pub fn is_fatal(&self) -> bool {
        match self {
            LinkError::Auth { .. } | LinkError::LocateDenied { .. } => true,
            LinkError::Refused { reply, .. } => reply.starts_with("NOPERM"),
            _ => false,
        }
    }
}

/// The master's answer to PSYNC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Psync {
    /// A full sync: the snapshot payload follows; the stream after it starts at `offset`.
    FullResync { replid: ReplId, offset: u64 },
    /// A partial sync: the stream continues at the requested offset, possibly under a new id.
    Continue { replid: Option<ReplId> },
}

/// How the snapshot payload is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `$<len>`: exactly `len` bytes, then the stream immediately.
    Len(u64),
    /// `$EOF:<mark>`: bytes until the 40-byte mark; the stream starts after our first ACK.
    Eof([u8; 40]),
}

/// One step of EOF-mark detection over the unconsumed payload bytes `buf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EofStep {
    /// The first `n` bytes are certainly payload; keep the rest (it may be part of the mark).
    Forward(usize),
    /// The payload ends after `n` bytes, followed by the mark.
    Done(usize),
}

/// Decides what of `buf` is payload, holding back the last 40 bytes until it is known whether
/// they are the mark. The mark is recognised only at the end of what has arrived (the master
/// sends nothing after it until the replica ACKs), so a mark split across reads is found.
pub fn eof_step(buf: &[u8], mark: &[u8; 40]) -> EofStep {
    if buf.len() >= 40 && buf[buf.len() - 40..] == mark[..] {
        EofStep::Done(buf.len() - 40)
    } else {
        EofStep::Forward(buf.len().saturating_sub(40))
    }
}

/// The connection to the master: the stream and its read buffer. Generic over the stream so
/// that any transport (or an in-memory pipe in tests) carries the same handshake and loops;
/// [`Connection::connect`] gives one over whatever `net` dials.
pub struct Connection<S = BoxedStream> {
    stream: S,
    buf: BytesMut,
    addr: String,
    /// Reads that get nothing for this long fail (the master PINGs every 10 s by default).
    /// Measured from the last byte received (or [`restart_read_clock`](Self::restart_read_clock)),
    /// not from the start of each read: a read that is given up and started again (a `select!`
    /// with other work) does not restart it.
    pub read_timeout: Duration,
    /// When the last byte arrived, or when the caller last started waiting for one again.
    last_data: Instant,
}

impl Connection {
    /// Dials `source` (see [`crate::net::connect`]) within `timeout`, where it is now: a source
    /// that can move is [resolved](Source::resolve) first.
    pub async fn connect(source: &Source, timeout: Duration) -> Result<Connection, LinkError> {
        let source = &source
            .resolve(timeout)
            .await
            .map_err(|what| LinkError::locate(source, what))?;
        let addr = source.addr();
        let stream = crate::net::connect(source, timeout)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => LinkError::Timeout {
                    addr: addr.clone(),
                    secs: timeout.as_secs(),
                    during: "while connecting",
                },
                _ => LinkError::Connect {
                    addr: addr.clone(),
                    source: e,
                },
            })?;
        Ok(Connection::over(stream, addr))
    }
}

impl<S: ServerStream> Connection<S> {
    /// A link over an established `stream` to `addr` (the name used in errors).
    pub fn over(stream: S, addr: String) -> Connection<S> {
        Connection {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            addr,
            read_timeout: Duration::from_secs(60),
            last_data: Instant::now(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The bytes read and not yet consumed.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn io(&self, source: std::io::Error) -> LinkError {
        LinkError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Starts the read timeout again from now: for a caller that has not been reading for a
    /// while on purpose (backpressure from the store), so that time does not count as silence.
    pub fn restart_read_clock(&mut self) {
        self.last_data = Instant::now();
    }

    /// Reads more bytes into the buffer. Returns how many; fails on EOF, or when nothing has
    /// arrived for `read_timeout` since the last byte.
    pub async fn read_more(&mut self, during: &'static str) -> Result<usize, LinkError> {
        self.buf.reserve(READ_CHUNK);
        let deadline = self.last_data + self.read_timeout;
        let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| LinkError::Timeout {
                addr: self.addr.clone(),
                secs: self.read_timeout.as_secs(),
                during,
            })?
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(LinkError::Closed {
                addr: self.addr.clone(),
                during,
            });
        }
        self.last_data = Instant::now();
        Ok(n)
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), LinkError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).await.map_err(|e| self.io(e))
    }

    /// Reads one reply line (`+…`, `-…`), skipping the bare `\n` keepalives before it.
    async fn read_line(&mut self, during: &'static str) -> Result<String, LinkError> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(nl + 1);
                let line = line.strip_suffix(b"\r\n").unwrap_or(&line[..nl]);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(LinkError::Protocol {
                    addr: self.addr.clone(),
                    what: "reply",
                    detail: format!("no line end in {} bytes {during}", self.buf.len()),
                });
            }
            self.read_more(during).await?;
        }
    }

    /// Sends a command and reads its one-line reply (errors come back as `Err(line)`).
    async fn call(
        &mut self,
        args: &[&[u8]],
        during: &'static str,
    ) -> Result<Result<String, String>, LinkError> {
        self.send(args).await?;
        let line = self.read_line(during).await?;
        if let Some(err) = line.strip_prefix('-') {
            return Ok(Err(err.to_string()));
        }
        // Skip a bulk or integer reply's payload (CLIENT SETNAME and the like answer +OK).
        if let Some(len) = line.strip_prefix('$') {
            if let Ok(n) = len.parse::<i64>() {
                if n >= 0 {
                    let want = n as usize + 2;
                    while self.buf.len() < want {
                        self.read_more(during).await?;
                    }
                    self.buf.advance(want);
                }
            }
        }
        Ok(Ok(line))
    }

    /// The replica handshake, as `syncWithMaster()` does it: PING, AUTH, REPLCONF
    /// listening-port, REPLCONF capa, REPLCONF version (Valkey), each reply read before the next
    /// command. The client is named `pitr-archiver`.
    pub async fn handshake(
        &mut self,
        source: &Source,
        announce_port: u16,
    ) -> Result<(), LinkError> {
        self.handshake_as(source, announce_port, ARCHIVER_CLIENT_NAME)
            .await
    }

    /// [`handshake`](Connection::handshake) under another client name (`CLIENT SETNAME`), so
    /// that operators tell the links apart in `CLIENT LIST`.
    pub async fn handshake_as(
        &mut self,
        source: &Source,
        announce_port: u16,
        client_name: &str,
    ) -> Result<(), LinkError> {
        let addr = self.addr.clone();
        match self.call(&[b"PING"], "waiting for PONG").await? {
            Ok(_) => {}
            Err(e)
                if e.starts_with("NOAUTH")
                    || e.starts_with("NOPERM")
                    || e.contains("operation not permitted") => {}
            Err(e) if e.starts_with("LOADING") => {
                return Err(LinkError::NotReady { addr, reply: e })
            }
            Err(e) => {
                return Err(LinkError::Refused {
                    addr,
                    command: "PING",
                    reply: e,
                })
            }
        }
        if let Some(password) = &source.password {
            let reply = match &source.user {
                Some(user) => {
                    self.call(
                        &[b"AUTH", user.as_bytes(), password.as_bytes()],
                        "authenticating",
                    )
                    .await?
                }
                None => {
                    self.call(&[b"AUTH", password.as_bytes()], "authenticating")
                        .await?
                }
            };
            if let Err(e) = reply {
                return Err(LinkError::Auth { addr, reply: e });
            }
        }
        // Lets operators tell the archiver apart in CLIENT LIST; not every user may do it.
        let _ = self
            .call(
                &[b"CLIENT", b"SETNAME", client_name.as_bytes()],
                "naming the client",
            )
            .await?;
        let port = announce_port.to_string();
        if let Err(e) = self
            .call(
                &[b"REPLCONF", b"listening-port", port.as_bytes()],
                "REPLCONF listening-port",
            )
            .await?
        {
            if e.starts_with("NOAUTH") {
                return Err(LinkError::Auth { addr, reply: e });
            }
            if e.starts_with("NOPERM") {
                return Err(LinkError::Refused {
                    addr,
                    command: "REPLCONF listening-port",
                    reply: e,
                });
            }
            tracing::debug!(reply = %e, "REPLCONF listening-port refused (not critical)");
        }
        if let Err(e) = self
            .call(
                &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"],
                "REPLCONF capa",
            )
            .await?
        {
            return Err(LinkError::Refused {
                addr,
                command: "REPLCONF capa",
                reply: e,
            });
        }
        // Valkey 9.1 picks the RDB version of a full sync from the replica's version, and falls
        // back to RDB 11 without one, where hashes with field TTLs cannot be saved (the sync
        // fails on the master). Redis does not know the option and refuses it: harmless.
        if let Err(e) = self
            .call(
                &[b"REPLCONF", b"version", REPLICA_VERSION.as_bytes()],
                "REPLCONF version",
            )
            .await?
        {
            tracing::debug!(reply = %e, "REPLCONF version refused (a Redis master)");
        }
        Ok(())
    }

    /// Sends PSYNC and reads the answer. `resume` is the replication id and the offset just past
    /// the last archived byte; PSYNC asks for the next byte, `offset + 1`.
    pub async fn psync(&mut self, resume: Option<(ReplId, u64)>) -> Result<Psync, LinkError> {
        let (id, off) = match resume {
            Some((id, off)) => (id.to_string(), (off + 1).to_string()),
            None => ("?".to_string(), "-1".to_string()),
        };
        self.send(&[b"PSYNC", id.as_bytes(), off.as_bytes()])
            .await?;
        let line = self.read_line("waiting for the PSYNC reply").await?;
        let addr = self.addr.clone();
        let proto = |detail: String| LinkError::Protocol {
            addr: addr.clone(),
            what: "PSYNC reply",
            detail,
        };
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("+FULLRESYNC") => {
                let replid = words
                    .next()
                    .and_then(|w| w.parse::<ReplId>().ok())
                    .ok_or_else(|| proto(line.clone()))?;
                let offset = words
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .ok_or_else(|| proto(line.clone()))?;
                Ok(Psync::FullResync { replid, offset })
            }
            Some("+CONTINUE") => match words.next() {
                None => Ok(Psync::Continue { replid: None }),
                Some(w) => Ok(Psync::Continue {
                    replid: Some(w.parse().map_err(|_| proto(line.clone()))?),
                }),
            },
            Some(w)
                if w.starts_with("-NOMASTERLINK")
                    || w.starts_with("-LOADING")
                    || w.starts_with("-MASTERDOWN") =>
            {
                Err(LinkError::NotReady {
                    addr,
                    reply: line[1..].to_string(),
                })
            }
            Some(w) if w.starts_with("-NOAUTH") => Err(LinkError::Auth {
                addr,
                reply: line[1..].to_string(),
            }),
            Some(w) if w.starts_with('-') => Err(LinkError::Refused {
                addr,
                command: "PSYNC",
                reply: line[1..].to_string(),
            }),
            _ => Err(proto(line)),
        }
    }

    /// Reads the payload header after `+FULLRESYNC`, skipping keepalive newlines.
    pub async fn payload_header(&mut self) -> Result<Payload, LinkError> {
        let line = self.read_line("waiting for the snapshot").await?;
        let addr = self.addr.clone();
        let proto = |detail: String| LinkError::Protocol {
            addr: addr.clone(),
            what: "snapshot header",
            detail,
        };
        let rest = line
            .strip_prefix('$')
            .ok_or_else(|| proto(format!("{line:?}")))?;
        if let Some(mark) = rest.strip_prefix("EOF:") {
            let m = mark.as_bytes();
            if m.len() != 40 {
                return Err(proto(format!("EOF mark of {} bytes", m.len())));
            }
            let mut out = [0u8; 40];
            out.copy_from_slice(m);
            return Ok(Payload::Eof(out));
        }
        rest.parse::<u64>()
            .map(Payload::Len)
            .map_err(|_| proto(format!("{line:?}")))
    }

    /// `REPLCONF ACK <offset>`: tells the master everything before `offset` is archived.
    pub async fn ack(&mut self, offset: u64) -> Result<(), LinkError> {
        let off = offset.to_string();
        self.send(&[b"REPLCONF", b"ACK", off.as_bytes()]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_permission_is_fatal_and_named() {
        let refused = |reply: &str| LinkError::Refused {
            addr: "m:6379".into(),
            command: "PSYNC",
            reply: reply.into(),
        };
        let e = refused("NOPERM this user has no permissions to run the 'psync' command");
        assert!(e.is_fatal());
        assert!(e.to_string().contains("refused PSYNC: NOPERM"), "{e}");
        assert!(!refused("ERR something transient").is_fatal());
    }

    #[test]
    fn eof_mark_found_at_every_split_point() {
        let mark: [u8; 40] = *b"0123456789abcdef0123456789abcdef01234567";
        let mut payload = b"REDIS0010".to_vec();
        payload.extend((0..300u32).map(|i| (i * 7 % 251) as u8));
        // The payload contains a near-miss of the mark.
        payload.extend_from_slice(&mark[..39]);
        payload.extend_from_slice(b"x");
        let mut wire = payload.clone();
        wire.extend_from_slice(&mark);
        for split in 0..=wire.len() {
            for second in [split, (split + 17).min(wire.len())] {
                let mut buf: Vec<u8> = Vec::new();
                let mut got = Vec::new();
                let mut done = false;
                for piece in [&wire[..split], &wire[split..second], &wire[second..]] {
                    buf.extend_from_slice(piece);
                    match eof_step(&buf, &mark) {
                        EofStep::Forward(n) => {
                            got.extend_from_slice(&buf[..n]);
                            buf.drain(..n);
                        }
                        EofStep::Done(n) => {
                            got.extend_from_slice(&buf[..n]);
                            done = true;
                            break;
                        }
                    }
                }
                assert!(done, "mark not found, split {split}/{second}");
                assert_eq!(got, payload, "split {split}/{second}");
            }
        }
    }

    #[test]
    fn source_urls() {
        let s = Source::parse("redis://127.0.0.1:7000", Some("env-secret".into())).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 7000));
        assert_eq!(s.password.as_deref(), Some("env-secret"));
        assert!(s.user.is_none());
        let s = Source::parse("redis://archiver:p%40ss@db.local", None).unwrap();
        assert_eq!(s.user.as_deref(), Some("archiver"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(s.port, 6379);
        assert!(!format!("{s:?}").contains("p@ss"));
        assert!(Source::parse("http://x", None).is_err());
        assert!(Source::parse("not a url", None).is_err());
        let s = Source::parse("redis://[::1]", Some("env".into())).unwrap();
        assert_eq!(s.addr(), "[::1]:6379");
        let e = Source::parse("http://u:secret@h:1", None).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    /// The link over an in-memory pipe instead of TCP: the same handshake, PSYNC, payload
    /// framing and ACK, whatever carries the bytes.
    #[tokio::test]
    async fn the_link_runs_over_any_stream() {
        let (ours, mut master) = tokio::io::duplex(64 << 10);
        let replid = "0123456789abcdef0123456789abcdef01234567";
        // Every reply at once: the link reads one line per command and keeps the rest.
        let replies = format!(
            "+PONG\r\n+OK\r\n+OK\r\n+OK\r\n-ERR unknown option\r\n\n+FULLRESYNC {replid} 7\r\n$5\r\nHELLO*1\r\n$4\r\nPING\r\n"
        );
        master.write_all(replies.as_bytes()).await.unwrap();
        let mut conn = Connection::over(ours, "pipe".into());
        let source = Source::parse("redis://pipe", None).unwrap();
        conn.handshake(&source, 0).await.unwrap();
        let reply = conn.psync(None).await.unwrap();
        assert_eq!(
            reply,
            Psync::FullResync {
                replid: replid.parse().unwrap(),
                offset: 7
            }
        );
        assert_eq!(conn.payload_header().await.unwrap(), Payload::Len(5));
        while conn.buffer().len() < 19 {
            conn.read_more("test").await.unwrap();
        }
        assert_eq!(&conn.buffer()[..], b"HELLO*1\r\n$4\r\nPING\r\n");
        conn.ack(12).await.unwrap();
        drop(conn);
        let mut sent = Vec::new();
        master.read_to_end(&mut sent).await.unwrap();
        let sent = String::from_utf8(sent).unwrap();
        assert!(sent.starts_with("*1\r\n$4\r\nPING\r\n"), "{sent}");
        assert!(
            sent.contains("$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n"),
            "{sent}"
        );
        assert!(sent.ends_with("$3\r\nACK\r\n$2\r\n12\r\n"), "{sent}");
    }

    /// A read that a `select!` gives up and starts again (the archiver's ACK tick every second)
    /// must not restart the read timeout: it counts from the last byte received.
    #[tokio::test(start_paused = true)]
    async fn read_timeout_counts_from_the_last_byte_not_from_each_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let source = Source::parse(&format!("redis://127.0.0.1:{port}"), None).unwrap();
        let mut conn = Connection::connect(&source, Duration::from_secs(5))
            .await
            .unwrap();
        // The peer is accepted and stays silent.
        let (_peer, _) = listener.accept().await.unwrap();
        conn.read_timeout = Duration::from_secs(5);
        let mut restarts = 0;
        let err = loop {
            tokio::select! {
                r = conn.read_more("streaming") => break r.unwrap_err(),
                _ = tokio::time::sleep(Duration::from_secs(1)) => restarts += 1,
            }
            assert!(restarts < 30, "the read timeout never fired");
        };
        assert!(matches!(err, LinkError::Timeout { secs: 5, .. }), "{err}");
        assert!(restarts >= 4, "timed out after {restarts} ticks");
    }
}
