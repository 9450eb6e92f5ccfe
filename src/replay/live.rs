//! The live target: one connection to the server being restored into, owned here, with the
//! commands pipelined as `redis-cli --pipe` does it.
//!
//! Why it exists: a restore sends millions of commands, and waiting for each reply would make
//! it latency-bound. [`LiveTarget::send`] only encodes a command into a reusable buffer; the
//! buffer goes out in large writes while the replies are read in the same loop (one poll of
//! the stream for both, TCP or TLS alike), so writing and reading overlap fully. Replies
//! are counted (`+OK` and `:n` without allocating) and matched to the commands in order; the
//! first error reply fails the restore and names the command it answers, from a descriptor
//! (command name and first key, truncated) kept for each command still unanswered. At most a
//! window of commands (and bytes) is unanswered at once, which bounds memory on both sides.
//!
//! Speaks RESP2 (no `HELLO`); knows nothing of RDB or of what the commands mean.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::net::{redact_url, BoxedStream, Source};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::rdb::logical::escape;

/// Default for how long connecting may take, and how long the server may stay silent while
/// replies are awaited (`--target-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Queued bytes that trigger a write.
const WRITE_AT: usize = 64 << 10;
/// Space reserved for each read.
const READ_CHUNK: usize = 256 << 10;
/// Default largest number of unanswered commands.
pub const DEFAULT_WINDOW_COMMANDS: usize = 16 << 10;
/// Default largest number of bytes of unanswered commands.
pub const DEFAULT_WINDOW_BYTES: usize = 8 << 20;
/// Bytes of a command descriptor (name, space, first key).
const DESC_LEN: usize = 48;
/// Longest error reply kept in a [`TargetError`].
const MAX_REPLY_TEXT: usize = 512;

/// What went wrong with the target, and where.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}{partial}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
        /// Empty, or what a restore had applied when this happened (see [`Self::set_partial`]).
        partial: String,
    },
    #[error("{addr} closed the connection with {unanswered} commands unanswered{partial}")]
    Closed {
        addr: String,
        unanswered: usize,
        partial: String,
    },
    #[error("no answer from {addr} within {after} while waiting for {waiting} ({unanswered} commands unanswered){partial}")]
    Timeout {
        addr: String,
        /// The timeout, as text (`2s`, `500ms`).
        after: String,
        /// What was awaited: the reply to which command, or the server taking more bytes.
        waiting: String,
        unanswered: usize,
        partial: String,
    },
    #[error("authentication to {addr} failed: {reply}")]
    Auth { addr: String, reply: String },
    /// `-LOADING`: the server is still loading its dataset.
    #[error("{addr} is loading its dataset (-LOADING): try again once it has finished")]
    Loading { addr: String },
    /// An error reply: the restore cannot go on.
    #[error("{addr} refused `{command}`: {reply}{partial}")]
    Reply {
        addr: String,
        /// The command's name and first argument (escaped, truncated).
        command: String,
        reply: String,
        partial: String,
    },
    #[error("{addr} sent something that is not a RESP2 reply: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("cannot tell which RDB version {addr} accepts: {detail}")]
    Version { addr: String, detail: String },
    /// A call after an earlier error (the connection's state is unknown).
    #[error("the connection to {addr} failed earlier: {cause}")]
    Failed { addr: String, cause: String },
}

impl TargetError {
    /// Appends `note` (what a restore had already applied to the target, and what to do about
    /// it) to the message of an error that can stop a restore part-way; other errors are left
    /// as they are.
    pub fn set_partial(&mut self, note: &str) {
        match self {
            TargetError::Io { partial, .. }
            | TargetError::Closed { partial, .. }
            | TargetError::Timeout { partial, .. }
            | TargetError::Reply { partial, .. } => *partial = format!("; {note}"),
            _ => {}
        }
    }
}

/// A duration as text for messages: `2s`, `1m 30s`, `500ms`.
fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// An unanswered command: its encoded size and a short description for error messages.
#[derive(Clone, Copy)]
struct Desc {
    size: usize,
    len: u8,
    truncated: bool,
    /// An error reply to it is counted, not raised (see [`LiveTarget::tolerate_errors`]).
    tolerated: bool,
    text: [u8; DESC_LEN],
}

impl Desc {
    fn new(args: &[Bytes], size: usize) -> Desc {
        let mut text = [0u8; DESC_LEN];
        let mut len = 0;
        let mut truncated = false;
        for (i, a) in args.iter().take(2).enumerate() {
            if i > 0 {
                if len == DESC_LEN {
                    truncated = true;
                    break;
                }
                text[len] = b' ';
                len += 1;
            }
            let n = a.len().min(DESC_LEN - len);
            text[len..len + n].copy_from_slice(&a[..n]);
            len += n;
            truncated |= n < a.len();
        }
        Desc {
            size,
            len: len as u8,
            truncated,
            tolerated: false,
            text,
        }
    }

    fn describe(&self) -> String {
        let mut s = escape(&self.text[..usize::from(self.len)]);
        if self.truncated {
            s.push('…');
        }
        s
    }
}

/// A reply read whole (for the few commands whose answer matters).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    /// An array (its elements are not kept).
    Array(i64),
}

/// Parses a decimal integer of a RESP header line.
fn parse_int(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// The length of the complete RESP2 reply at the start of `buf` and whether it is an error
/// reply; `Ok(None)` if it is not complete yet. Nested arrays are walked without recursion.
fn reply_len(buf: &[u8]) -> Result<Option<(usize, bool)>, String> {
    let mut pos = 0usize;
    let mut left: u64 = 1;
    let mut is_error = false;
    while left > 0 {
        let Some(nl) = memchr::memchr(b'\n', buf.get(pos..).unwrap_or_default()) else {
            return Ok(None);
        };
        let end = pos + nl; // index of '\n'
        if end == pos || buf[end - 1] != b'\r' {
            return Err(format!(
                "a reply line without CRLF: {:?}",
                escape(&buf[pos..=end])
            ));
        }
        let line = &buf[pos + 1..end - 1];
        let next = end + 1;
        let bad_len = || format!("bad length in {:?}", escape(&buf[pos..end - 1]));
        match buf[pos] {
            b'+' | b':' => pos = next,
            b'-' => {
                is_error |= pos == 0;
                pos = next;
            }
            b'$' => {
                let n = parse_int(line).ok_or_else(bad_len)?;
                if n < 0 {
                    pos = next;
                } else {
                    let n = n as usize;
                    let Some(stop) = next.checked_add(n).and_then(|s| s.checked_add(2)) else {
                        return Err(bad_len());
                    };
                    if buf.len() < stop {
                        return Ok(None);
                    }
                    if &buf[stop - 2..stop] != b"\r\n" {
                        return Err("a bulk string not followed by CRLF".to_string());
                    }
                    pos = stop;
                }
            }
            b'*' => {
                let n = parse_int(line).ok_or_else(bad_len)?;
                pos = next;
                if n > 0 {
                    left += n as u64;
                }
            }
            c => return Err(format!("unexpected reply type byte {:?}", escape(&[c]))),
        }
        left -= 1;
    }
    Ok(Some((pos, is_error)))
}

/// Decodes a complete reply as found by [`reply_len`] (arrays only by their length).
fn decode_reply(r: &[u8]) -> Reply {
    let line_end = memchr::memchr(b'\r', r).unwrap_or(r.len());
    let line = &r[1.min(r.len())..line_end];
    let text = || String::from_utf8_lossy(line).into_owned();
    match r.first() {
        Some(b'+') => Reply::Simple(text()),
        Some(b'-') => Reply::Error(text()),
        Some(b':') => Reply::Int(parse_int(line).unwrap_or_default()),
        Some(b'$') => match parse_int(line) {
            Some(n) if n >= 0 => {
                let start = line_end + 2;
                Reply::Bulk(Bytes::copy_from_slice(
                    r.get(start..start + n as usize).unwrap_or_default(),
                ))
            }
            _ => Reply::Nil,
        },
        _ => Reply::Array(parse_int(line).unwrap_or(-1)),
    }
}

/// `[cursor, [key…]]`, the reply of SCAN.
fn parse_scan(raw: &[u8]) -> Option<(Bytes, Vec<Bytes>)> {
    use redis_protocol::resp2::types::OwnedFrame;
    let (frame, _) = redis_protocol::resp2::decode::decode(raw).ok()??;
    let OwnedFrame::Array(mut parts) = frame else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let OwnedFrame::Array(keys) = parts.pop()? else {
        return None;
    };
    let OwnedFrame::BulkString(cursor) = parts.pop()? else {
        return None;
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            OwnedFrame::BulkString(k) => Some(Bytes::from(k)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((Bytes::from(cursor), keys))
}

/// An error reply, with what to do when it says that a cluster target's slots moved while a
/// restore ran (the restore routes each key by the layout it read at the start).
fn with_cluster_hint(reply: String) -> String {
    let moved = ["MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN"]
        .iter()
        .any(|p| reply.starts_with(p));
    if moved {
        format!(
            "{reply} (the target cluster's slots moved or went down while the restore ran: a \
             restore routes every key by the layout it read at its start, so keep the target \
             cluster's layout fixed, no resharding and no failover, and restore again with \
             --force)"
        )
    } else {
        reply
    }
}

/// Appends the RESP encoding of `args` to `out`, without allocating per argument.
fn encode(args: &[Bytes], out: &mut Vec<u8>) {
    let total: usize = args.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    out.reserve(total);
    out.push(b'*');
    push_usize(out, args.len());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_usize(out, a.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_usize(out: &mut Vec<u8>, mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The RDB version a server accepts in RESTORE payloads, from its `INFO server` text.
///
/// Redis: 2.6-3.0 → 6, 3.2 → 7, 4.0 → 8, 5.0-6.2 → 9, 7.0 → 10, 7.2 → 11, 7.4 and later → 12
/// (Redis 8.6+ reads newer versions too; 12 is what this crate's parser reads at most). Valkey
/// (`server_name:valkey` or `valkey_version`): 7.2-8.x → 11, 9.x and later → 80.
pub fn rdb_version_from_info(info: &str) -> Result<u16, String> {
    let field = |name: &str| {
        info.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let major_minor = |v: &str| -> Option<(u32, u32)> {
        let mut it = v.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next().unwrap_or("0").parse().ok()?;
        Some((major, minor))
    };
    let valkey = field("valkey_version")
        .or_else(|| (field("server_name").as_deref() == Some("valkey")).then(String::new));
    if let Some(v) = valkey {
        let v = if v.is_empty() {
            field("redis_version").unwrap_or_default()
        } else {
            v
        };
        let (major, _) = major_minor(&v).ok_or_else(|| format!("valkey_version {v:?}"))?;
        return Ok(if major >= 9 { 80 } else { 11 });
    }
    let v = field("redis_version").ok_or("no redis_version in INFO server")?;
    let mm = major_minor(&v).ok_or_else(|| format!("redis_version {v:?}"))?;
    Ok(match mm {
        (m, _) if m >= 8 => 12,
        (7, n) if n >= 4 => 12,
        (7, n) if n >= 2 => 11,
        (7, _) => 10,
        (5..=6, _) => 9,
        (4, _) => 8,
        (3, n) if n >= 2 => 7,
        _ => 6,
    })
}

/// The sum of `keys=` over the `dbN:` lines of `INFO keyspace`.
fn key_count_from_info(info: &str) -> Result<u64, String> {
    let mut total = 0u64;
    for line in info.lines() {
        let line = line.trim();
        let Some((db, rest)) = line.split_once(':') else {
            continue;
        };
        if !db.starts_with("db") {
            continue;
        }
        let keys = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("unreadable keyspace line {line:?}"))?;
        total += keys;
    }
    Ok(total)
}

/// What [`LiveTarget::pump`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Everything queued is written.
    Written,
    /// The unanswered commands fit well within the window.
    Window,
    /// Every command is answered.
    Answered,
}

/// A pipelined connection to the target server. See the module documentation.
pub struct LiveTarget {
    addr: String,
    /// TCP, or TLS over it (see [`crate::net::connect`]).
    stream: BoxedStream,
    /// Encoded commands; `wbuf[wpos..]` is not written yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes were written since the stream was last flushed: a TLS stream may hold the last
    /// records until it is.
    unflushed: bool,
    rbuf: BytesMut,
    /// Unanswered commands (written or queued), oldest first.
    pending: VecDeque<Desc>,
    pending_bytes: usize,
    window_commands: usize,
    window_bytes: usize,
    reply_timeout: Duration,
    /// Replies read so far.
    replies: u64,
    /// While set, the reply to the only pending command is kept here, errors included.
    capture: Option<Option<Bytes>>,
    failed: Option<String>,
    /// Whether the target's data was changed (flushed, or a command sent by `send`).
    touched: bool,
    /// Commands sent by `send`/`send_encoded` that the target answered without an error.
    applied: u64,
    /// Once the snapshot's keys are all applied: how many keys, and `applied` then.
    snapshot_applied: Option<(u64, u64)>,
    /// While set, commands queued get error replies counted instead of raised.
    tolerant: bool,
    /// Error replies counted so far, and the first of them (command and reply).
    tolerated_errors: u64,
    first_tolerated: Option<String>,
}

impl fmt::Debug for LiveTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTarget")
            .field("addr", &self.addr)
            .field("unanswered", &self.pending.len())
            .field("replies", &self.replies)
            .finish()
    }
}

impl LiveTarget {
    /// redis://[user[:password]@]host:port, or rediss://… for TLS (with the process's default
    /// settings, see [`crate::net::tls::default_tls`]); the password may come from `password`
    /// (env), never logged. Authenticates and checks that the server answers `PING`.
    pub async fn connect(url: &str, password: Option<String>) -> Result<LiveTarget, TargetError> {
        Self::connect_with_timeout(url, password, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with `timeout` for connecting and for every reply after it
    /// (the handshake's included): a server that accepts the connection and never answers
    /// fails with [`TargetError::Timeout`] naming its address and what was awaited.
    pub async fn connect_with_timeout(
        url: &str,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<LiveTarget, TargetError> {
        let ep = Source::parse(url, password).map_err(|reason| TargetError::Url {
            url: redact_url(url),
            reason,
        })?;
        Self::connect_source(&ep, timeout).await
    }

    /// [`connect_with_timeout`](Self::connect_with_timeout) to a parsed `source`: its address
    /// (where it is now, for a source that can move), user, password and TLS settings.
    pub async fn connect_source(
        source: &Source,
        timeout: Duration,
    ) -> Result<LiveTarget, TargetError> {
        let ep = source
            .resolve(timeout)
            .await
            .map_err(|what| TargetError::Connect {
                addr: source.addr(),
                source: std::io::Error::other(what),
            })?;
        let addr = ep.addr();
        let stream =
            crate::net::connect(&ep, timeout)
                .await
                .map_err(|source| TargetError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
        let mut t = LiveTarget {
            addr,
            stream,
            wbuf: Vec::with_capacity(2 * WRITE_AT),
            wpos: 0,
            unflushed: false,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            pending: VecDeque::new(),
            pending_bytes: 0,
            window_commands: DEFAULT_WINDOW_COMMANDS,
            window_bytes: DEFAULT_WINDOW_BYTES,
            reply_timeout: timeout,
            replies: 0,
            capture: None,
            failed: None,
            touched: false,
            applied: 0,
            snapshot_applied: None,
            tolerant: false,
            tolerated_errors: 0,
            first_tolerated: None,
        };
        if let Some(pw) = &ep.password {
            let mut args = vec![Bytes::from_static(b"AUTH")];
            if let Some(u) = &ep.user {
                args.push(Bytes::copy_from_slice(u.as_bytes()));
            }
            args.push(Bytes::copy_from_slice(pw.as_bytes()));
            match t.call(&args).await? {
                // A password from the environment for a server that has none: go on (as
                // redis-cli does); the PING below tells whether access is granted.
                Reply::Error(e) if e.contains("without any password configured") => {}
                Reply::Error(e) => {
                    return Err(TargetError::Auth {
                        addr: t.addr.clone(),
                        reply: e,
                    })
                }
                _ => {}
            }
        }
        match t.call(&[Bytes::from_static(b"PING")]).await? {
            Reply::Error(e) if e.starts_with("LOADING") => Err(TargetError::Loading {
                addr: t.addr.clone(),
            }),
            Reply::Error(e) if e.starts_with("NOAUTH") || e.starts_with("NOPERM") => {
                Err(TargetError::Auth {
                    addr: t.addr.clone(),
                    reply: e,
                })
            }
            Reply::Error(e) => Err(TargetError::Reply {
                addr: t.addr.clone(),
                command: "PING".to_string(),
                reply: e,
                partial: String::new(),
            }),
            _ => Ok(t),
        }
    }

    /// `host:port` of the target.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets the pipelining window: at most `commands` commands and `bytes` bytes of commands
    /// unanswered (a single larger command still goes, alone). Defaults:
    /// [`DEFAULT_WINDOW_COMMANDS`], [`DEFAULT_WINDOW_BYTES`].
    pub fn set_window(&mut self, commands: usize, bytes: usize) {
        self.window_commands = commands.max(1);
        self.window_bytes = bytes.max(1);
    }

    /// How long the server may stay silent while replies are awaited (default
    /// [`DEFAULT_TIMEOUT`], or the one given to [`connect_with_timeout`](Self::connect_with_timeout)).
    pub fn set_reply_timeout(&mut self, t: Duration) {
        self.reply_timeout = t;
    }

    /// Replies received so far.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    /// The RDB version the target accepts in RESTORE payloads: from `INFO server`
    /// (redis_version: <7.0 → 9, 7.0 → 10, 7.2 → 11, ≥7.4 → 12; Valkey (`valkey_version`/server_name) 7.2–8.x → 11, 9.x → 80).
    /// See [`rdb_version_from_info`].
    pub async fn rdb_version(&mut self) -> Result<u16, TargetError> {
        let info = self.info("server").await?;
        rdb_version_from_info(&info).map_err(|detail| TargetError::Version {
            addr: self.addr.clone(),
            detail,
        })
    }

    /// Number of keys in all databases (INFO keyspace).
    pub async fn key_count(&mut self) -> Result<u64, TargetError> {
        let info = self.info("keyspace").await?;
        key_count_from_info(&info).map_err(|detail| TargetError::Protocol {
            addr: self.addr.clone(),
            detail: format!("INFO keyspace: {detail}"),
        })
    }

    /// Records that every key of the snapshot (`keys` of them) has been applied: an error after
    /// this says so, and counts the replayed commands applied before it.
    pub fn snapshot_applied(&mut self, keys: u64) {
        self.snapshot_applied = Some((keys, self.applied));
    }

    /// What the target holds after an error part-way, and what to do about it.
    fn partial_note(&self) -> String {
        let what = match self.snapshot_applied {
            None => format!(
                "{} commands of the snapshot's keys were applied before this",
                self.applied
            ),
            Some((keys, then)) => format!(
                "all {keys} keys of the snapshot and {} commands after it were applied before this",
                self.applied - then
            ),
        };
        format!(
            "the target now holds a partial restore ({what}): empty it (FLUSHALL) before using it, or restore again with --force"
        )
    }

    /// FLUSHALL (and FUNCTION FLUSH), for --force.
    pub async fn flush_all(&mut self) -> Result<(), TargetError> {
        let r = self.call(&[Bytes::from_static(b"FLUSHALL")]).await?;
        self.check(r, "FLUSHALL")?;
        self.touched = true;
        match self
            .call(&[
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"FLUSH"),
            ])
            .await?
        {
            // Before 7.0 there are no functions to flush.
            Reply::Error(e) if e.to_ascii_lowercase().contains("unknown command") => Ok(()),
            r => self.check(r, "FUNCTION FLUSH").map(drop),
        }
    }

    /// While `on`, an error reply to a command queued by [`send`](Self::send) or
    /// [`send_encoded`](Self::send_encoded) is counted (see
    /// [`tolerated_errors`](Self::tolerated_errors)) instead of failing the restore: for
    /// commands that a `--db`/`--match` selection makes fail (a `RENAME` from a key left
    /// out), which a replica would ignore too.
    pub fn tolerate_errors(&mut self, on: bool) {
        self.tolerant = on;
    }

    /// Error replies counted under [`tolerate_errors`](Self::tolerate_errors) so far, and
    /// the first (its command and reply).
    pub fn tolerated_errors(&self) -> (u64, Option<&str>) {
        (self.tolerated_errors, self.first_tolerated.as_deref())
    }

    /// Queues a command; writes are pipelined with at most `window` replies outstanding;
    /// replies are read while writing. An error reply to any earlier command makes this (or a
    /// later call) fail with [`TargetError::Reply`].
    pub async fn send(&mut self, args: &[Bytes]) -> Result<(), TargetError> {
        self.check_failed()?;
        self.touched = true;
        let start = self.wbuf.len();
        encode(args, &mut self.wbuf);
        let size = self.wbuf.len() - start;
        self.pending.push_back(Desc {
            tolerated: self.tolerant,
            ..Desc::new(args, size)
        });
        self.pending_bytes += size;
        if self.wbuf.len() - self.wpos >= WRITE_AT {
            self.pump(Until::Written).await?;
        }
        if self.over_window() {
            self.pump(Until::Window).await?;
        }
        Ok(())
    }

    /// The databases that hold keys (`INFO keyspace`).
    pub async fn databases(&mut self) -> Result<Vec<u32>, TargetError> {
        let info = self.info("keyspace").await?;
        Ok(info
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter_map(|(db, _)| db.strip_prefix("db")?.parse().ok())
            .collect())
    }

    /// Every key of database `db` that `select` picks, by SCAN (a key SCAN returns twice is
    /// listed once). Leaves database `db` selected.
    pub async fn scan_keys(
        &mut self,
        db: u32,
        select: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Bytes>, TargetError> {
        let r = self
            .call(&[Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())])
            .await?;
        self.check(r, "SELECT")?;
        let mut keys = std::collections::HashSet::new();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let raw = self
                .call_raw(&[
                    Bytes::from_static(b"SCAN"),
                    cursor.clone(),
                    Bytes::from_static(b"COUNT"),
                    Bytes::from_static(b"1000"),
                ])
                .await?;
            if raw.first() == Some(&b'-') {
                self.check(decode_reply(&raw), "SCAN")?;
            }
            let (next, batch) = parse_scan(&raw).ok_or_else(|| TargetError::Protocol {
                addr: self.addr.clone(),
                detail: "SCAN answered something that is not [cursor, [keys]]".into(),
            })?;
            keys.extend(batch.into_iter().filter(|k| select(k)));
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next;
        }
        Ok(keys.into_iter().collect())
    }

    /// Moves back the expiries a live replay moved into `range` (see
    /// `restore::ExpiryShift`): a time `t` in it becomes `t - range.start + floor`. A server-side
    /// script walks the keys of each database with SCAN, a slice at a time (so the target never
    /// runs one long script), and rewrites each such TTL with PEXPIREAT; a time already past
    /// deletes the key, as the master would have. With `fields`, hash field TTLs are moved back
    /// the same way (HPEXPIREAT). Times moved back lie far below the range, so a key that SCAN
    /// returns twice is moved once. The range's times are below 2^53, so the script's numbers
    /// (doubles) hold them exactly. Returns the keys and fields fixed.
    pub async fn unshift_ttls(
        &mut self,
        range: std::ops::Range<i64>,
        floor: i64,
        fields: bool,
    ) -> Result<u64, TargetError> {
        const SCRIPT: &str = r#"
local lo, hi, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = ARGV[4] == '1'
local cursor = ARGV[5]
-- PEXPIRETIME (7.0+) gives the exact expiry; older servers only have PTTL.
local exact = type(redis.pcall('PEXPIRETIME', 'pitr:probe')) == 'number'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fixed = 0
local function moved(at) return at >= lo and at < hi end
local function back(at) return string.format('%.0f', at - lo + floor) end
local function unshift_fields(k)
  local names = redis.call('HKEYS', k)
  for i = 1, #names, 500 do
    local part = {}
    for j = i, math.min(i + 499, #names) do part[#part + 1] = names[j] end
    local times = redis.call('HPEXPIRETIME', k, 'FIELDS', #part, unpack(part))
    for j, at in ipairs(times) do
      if moved(at) then
        redis.call('HPEXPIREAT', k, back(at), 'FIELDS', 1, part[j])
        fixed = fixed + 1
      end
    end
  end
end
local seen = 0
repeat
  local r = redis.call('SCAN', cursor, 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    seen = seen + 1
    local at = -1
    if exact then
      at = redis.call('PEXPIRETIME', k)
    else
      local pttl = redis.call('PTTL', k)
      if pttl > 0 then at = now + pttl end
    end
    if moved(at) then
      redis.call('PEXPIREAT', k, back(at))
      fixed = fixed + 1
    end
    if fields and redis.call('TYPE', k)['ok'] == 'hash' then
      unshift_fields(k)
    end
  end
until cursor == "0" or seen >= 5000
return cursor .. ':' .. fixed
"#;
        let dbs = self.databases().await?;
        let mut fixed = 0u64;
        for db in dbs {
            let r = self
                .call(&[Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())])
                .await?;
            self.check(r, "SELECT")?;
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let r = self
                    .call(&[
                        Bytes::from_static(b"EVAL"),
                        Bytes::from_static(SCRIPT.as_bytes()),
                        Bytes::from_static(b"0"),
                        Bytes::from(range.start.to_string()),
                        Bytes::from(range.end.to_string()),
                        Bytes::from(floor.to_string()),
                        Bytes::from_static(if fields { b"1" } else { b"0" }),
                        cursor.clone(),
                    ])
                    .await?;
                let reply = self.check(r, "EVAL (moving expiries back)")?;
                // "<next cursor>:<fixed>"
                let next = match &reply {
                    Reply::Bulk(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|t| t.split_once(':'))
                        .and_then(|(c, n)| {
                            Some((Bytes::copy_from_slice(c.as_bytes()), n.parse::<u64>().ok()?))
                        })
                        .map(|(c, n)| {
                            fixed += n;
                            c
                        }),
                    _ => None,
                };
                let Some(next) = next else {
                    return Err(TargetError::Protocol {
                        addr: self.addr.clone(),
                        detail: format!("the expiry script answered {reply:?}"),
                    });
                };
                if next.as_ref() == b"0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(fixed)
    }

    /// Like [`send`](Self::send) for a command already encoded as RESP (`encoded`); `args`
    /// only names it in error messages (its first two arguments are enough).
    pub async fn send_encoded(
        &mut self,
        args: &[Bytes],
        encoded: &[u8],
    ) -> Result<(), TargetError> {
        self.check_failed()?;
        self.touched = true;
        self.wbuf.extend_from_slice(encoded);
        self.pending.push_back(Desc {
            tolerated: self.tolerant,
            ..Desc::new(args, encoded.len())
        });
        self.pending_bytes += encoded.len();
        if self.wbuf.len() - self.wpos >= WRITE_AT {
            self.pump(Until::Written).await?;
        }
        if self.over_window() {
            self.pump(Until::Window).await?;
        }
        Ok(())
    }

    /// Waits until every queued command is answered.
    pub async fn sync(&mut self) -> Result<(), TargetError> {
        self.check_failed()?;
        self.pump(Until::Answered).await
    }

    /// Whether more than the window is unanswered (a single command always goes).
    fn over_window(&self) -> bool {
        self.pending.len() > 1
            && (self.pending.len() > self.window_commands || self.pending_bytes > self.window_bytes)
    }

    fn check_failed(&self) -> Result<(), TargetError> {
        match &self.failed {
            Some(cause) => Err(TargetError::Failed {
                addr: self.addr.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, mut e: TargetError) -> TargetError {
        if self.touched {
            e.set_partial(&self.partial_note());
        }
        self.failed = Some(e.to_string());
        e
    }

    fn check(&mut self, r: Reply, command: &str) -> Result<Reply, TargetError> {
        let r = self.check_reply(r, command);
        r.map_err(|mut e| {
            if self.touched {
                e.set_partial(&self.partial_note());
            }
            e
        })
    }

    fn check_reply(&self, r: Reply, command: &str) -> Result<Reply, TargetError> {
        match r {
            Reply::Error(e) if e.starts_with("LOADING") => Err(TargetError::Loading {
                addr: self.addr.clone(),
            }),
            Reply::Error(reply) => Err(TargetError::Reply {
                addr: self.addr.clone(),
                command: command.to_string(),
                reply,
                partial: String::new(),
            }),
            r => Ok(r),
        }
    }

    /// `INFO <section>`.
    pub async fn info(&mut self, section: &'static str) -> Result<String, TargetError> {
        let r = self
            .call(&[
                Bytes::from_static(b"INFO"),
                Bytes::from_static(section.as_bytes()),
            ])
            .await?;
        match self.check(r, &format!("INFO {section}"))? {
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => Err(TargetError::Protocol {
                addr: self.addr.clone(),
                detail: format!("INFO {section} answered {other:?}"),
            }),
        }
    }

    /// Sends one command after every queued one is answered and returns its reply decoded;
    /// an error reply is `Ok(Err(text))`. The target's data is not counted as touched.
    pub async fn command(
        &mut self,
        args: &[Bytes],
    ) -> Result<Result<redis_protocol::resp2::types::OwnedFrame, String>, TargetError> {
        use redis_protocol::resp2::types::OwnedFrame;
        let raw = self.call_raw(args).await?;
        match redis_protocol::resp2::decode::decode(&raw) {
            Ok(Some((OwnedFrame::Error(e), _))) => Ok(Err(e)),
            Ok(Some((f, _))) => Ok(Ok(f)),
            _ => Err(TargetError::Protocol {
                addr: self.addr.clone(),
                detail: format!(
                    "an unreadable reply to {}",
                    String::from_utf8_lossy(args.first().map_or(&b""[..], |a| &a[..]))
                ),
            }),
        }
    }

    /// Sends one command after everything before it is answered and returns its reply (an
    /// error reply is returned, not raised).
    async fn call(&mut self, args: &[Bytes]) -> Result<Reply, TargetError> {
        Ok(decode_reply(&self.call_raw(args).await?))
    }

    /// Sends one command after every queued one is answered, and returns its reply as
    /// received (RESP).
    async fn call_raw(&mut self, args: &[Bytes]) -> Result<Bytes, TargetError> {
        self.sync().await?;
        let start = self.wbuf.len();
        encode(args, &mut self.wbuf);
        let size = self.wbuf.len() - start;
        self.pending.push_back(Desc::new(args, size));
        self.pending_bytes += size;
        self.capture = Some(None);
        let r = self.pump(Until::Answered).await;
        let captured = self.capture.take().flatten();
        r?;
        match captured {
            Some(raw) => Ok(raw),
            None => Err(self.fail(TargetError::Protocol {
                addr: self.addr.clone(),
                detail: "no reply captured".to_string(),
            })),
        }
    }

    fn done(&self, until: Until) -> bool {
        match until {
            Until::Written => self.wpos == self.wbuf.len(),
            // Hysteresis: once over the window, drain to 3/4 of it, so that the next commands
            // do not wait one by one.
            Until::Window => {
                self.pending.len() <= 1
                    || (self.pending.len() * 4 <= self.window_commands * 3
                        && self.pending_bytes * 4 <= self.window_bytes * 3)
            }
            Until::Answered => self.pending.is_empty(),
        }
    }

    /// Writes queued bytes and reads replies, both as the socket allows, until `until`.
    async fn pump(&mut self, until: Until) -> Result<(), TargetError> {
        let r = self.pump_inner(until).await;
        r.map_err(|e| self.fail(e))
    }

    async fn pump_inner(&mut self, until: Until) -> Result<(), TargetError> {
        while !self.done(until) {
            let want_write = self.wpos < self.wbuf.len() || self.unflushed;
            let after = self.reply_timeout;
            let step = std::future::poll_fn(|cx| self.poll_step(cx));
            match tokio::time::timeout(after, step).await {
                Ok(r) => r?,
                Err(_) => return Err(self.timeout_err(want_write)),
            }
        }
        Ok(())
    }

    /// One step of the pump: writes what is queued (and flushes it once all is written), then
    /// reads what has arrived, each as far as the stream takes it without waiting. Ready once
    /// anything moved; pending (woken by the stream) while nothing can.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TargetError>> {
        let mut moved = false;
        if self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(self.io_err(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    self.written(n);
                    moved = true;
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => moved = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_err(e))),
                Poll::Pending => {}
            }
        }
        if self.wpos == self.wbuf.len() && self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    moved = true;
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => moved = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_err(e))),
                Poll::Pending => {}
            }
        }
        // Read until the stream has nothing more (a TLS stream gives a record at a time), or
        // a bounded amount, so that writing gets its turn.
        let mut read = 0usize;
        while read < 4 * READ_CHUNK {
            self.rbuf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(TargetError::Closed {
                        addr: self.addr.clone(),
                        unanswered: self.pending.len(),
                        partial: String::new(),
                    }))
                }
                Poll::Ready(Ok(n)) => {
                    read += n;
                    moved = true;
                    if let Err(e) = self.parse_replies() {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_err(e))),
                Poll::Pending => break,
            }
        }
        if moved {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// `n` more bytes of `wbuf` were taken by the stream.
    fn written(&mut self, n: usize) {
        self.wpos += n;
        self.unflushed = true;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 16 * WRITE_AT {
                self.wbuf.shrink_to(2 * WRITE_AT);
            }
        }
    }

    /// The server stayed silent for the reply timeout: what was awaited.
    fn timeout_err(&self, want_write: bool) -> TargetError {
        let oldest = self
            .pending
            .front()
            .map_or_else(|| "nothing".to_string(), Desc::describe);
        let waiting = if want_write {
            format!(
                "the server to read {} more bytes of commands (the oldest unanswered: `{oldest}`)",
                self.wbuf.len() - self.wpos
            )
        } else {
            format!("the reply to `{oldest}`")
        };
        TargetError::Timeout {
            addr: self.addr.clone(),
            after: fmt_duration(self.reply_timeout),
            waiting,
            unanswered: self.pending.len(),
            partial: String::new(),
        }
    }

    fn io_err(&self, source: std::io::Error) -> TargetError {
        TargetError::Io {
            addr: self.addr.clone(),
            source,
            partial: String::new(),
        }
    }

    /// Matches the complete replies in `rbuf` to the unanswered commands, oldest first.
    fn parse_replies(&mut self) -> Result<(), TargetError> {
        let mut pos = 0usize;
        let buf = &self.rbuf[..];
        let mut answered = 0usize;
        let mut answered_bytes = 0usize;
        let mut tolerated = 0u64;
        let mut result = Ok(());
        while pos < buf.len() {
            let Some(desc) = self.pending.get(answered) else {
                result = Err(TargetError::Protocol {
                    addr: self.addr.clone(),
                    detail: format!(
                        "a reply to no command: {:?}",
                        escape(&buf[pos..buf.len().min(pos + 64)])
                    ),
                });
                break;
            };
            let rest = &buf[pos..];
            // Fast paths: +OK and :<n>, counted without looking further.
            let (n, is_error) = if rest.starts_with(b"+OK\r\n") {
                (5, false)
            } else if rest[0] == b':' {
                match memchr::memchr(b'\n', rest) {
                    Some(i) => (i + 1, false),
                    None => break,
                }
            } else {
                match reply_len(rest) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(detail) => {
                        result = Err(TargetError::Protocol {
                            addr: self.addr.clone(),
                            detail,
                        });
                        break;
                    }
                }
            };
            pos += n;
            answered += 1;
            answered_bytes += desc.size;
            if let Some(slot) = &mut self.capture {
                *slot = Some(Bytes::copy_from_slice(&rest[..n]));
            } else if is_error {
                let text = String::from_utf8_lossy(&rest[1..n.saturating_sub(2).max(1)]);
                let mut reply: String = text.chars().take(MAX_REPLY_TEXT).collect();
                if reply.len() < text.len() {
                    reply.push('…');
                }
                let loading = reply.starts_with("LOADING");
                if desc.tolerated && !loading {
                    self.tolerated_errors += 1;
                    tolerated += 1;
                    if self.first_tolerated.is_none() {
                        self.first_tolerated = Some(format!("`{}`: {reply}", desc.describe()));
                    }
                } else {
                    result = Err(if loading {
                        TargetError::Loading {
                            addr: self.addr.clone(),
                        }
                    } else {
                        TargetError::Reply {
                            addr: self.addr.clone(),
                            command: desc.describe(),
                            reply: with_cluster_hint(reply),
                            partial: String::new(),
                        }
                    });
                    break;
                }
            }
        }
        self.pending.drain(..answered);
        self.pending_bytes -= answered_bytes;
        self.replies += answered as u64;
        if self.capture.is_none() {
            // The refused command (if any) is the last one answered.
            let refused = matches!(
                result,
                Err(TargetError::Reply { .. } | TargetError::Loading { .. })
            );
            self.applied += answered as u64 - u64::from(refused) - tolerated;
        }
        self.rbuf.advance(pos);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn scan_replies() {
        let (cursor, keys) = parse_scan(b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n").unwrap();
        assert_eq!((cursor, keys), (b("17"), vec![b("a"), b("")]));
        assert!(parse_scan(b"*1\r\n$1\r\n0\r\n").is_none());
        assert!(parse_scan(b"-ERR no\r\n").is_none());
        assert!(parse_scan(b"*2\r\n$1\r\n0\r\n*1\r\n:1\r\n").is_none());
    }

    #[test]
    fn a_moved_slot_says_what_to_do() {
        let hinted = with_cluster_hint("MOVED 3999 127.0.0.1:7002".into());
        assert!(
            hinted.starts_with("MOVED 3999 127.0.0.1:7002 ("),
            "{hinted}"
        );
        assert!(
            hinted.contains("keep the target cluster's layout fixed"),
            "{hinted}"
        );
        assert!(with_cluster_hint("ASK 1 h:1".into()).contains("--force"));
        assert_eq!(with_cluster_hint("WRONGTYPE x".into()), "WRONGTYPE x");
    }

    #[test]
    fn encodes_resp_arrays() {
        let mut out = Vec::new();
        encode(&[b("SET"), b("k"), b("")], &mut out);
        encode(&[b("PING")], &mut out);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"
        );
        let mut big = Vec::new();
        push_usize(&mut big, 0);
        push_usize(&mut big, 1234567890);
        push_usize(&mut big, usize::MAX);
        assert_eq!(big, format!("01234567890{}", usize::MAX).as_bytes());
        // The crate's encoder agrees.
        let args = [b("RESTORE"), b("k\r\n"), Bytes::from(vec![0u8; 300])];
        let (mut a, mut c) = (Vec::new(), Vec::new());
        encode(&args, &mut a);
        crate::replay::cut::encode_args(&args, &mut c);
        assert_eq!(a, c);
    }

    #[test]
    fn reply_lengths_at_every_split() {
        let replies: &[(&[u8], bool)] = &[
            (b"+OK\r\n", false),
            (b":12\r\n", false),
            (b"-ERR wrong\r\n", true),
            (b"$-1\r\n", false),
            (b"$0\r\n\r\n", false),
            (b"$5\r\na\r\nbc\r\n", false),
            (b"*-1\r\n", false),
            (b"*0\r\n", false),
            (b"*2\r\n$3\r\n1-1\r\n*2\r\n:1\r\n-ERR x\r\n", false),
            (b"*3\r\n:1\r\n:2\r\n:-2\r\n", false),
        ];
        for (r, err) in replies {
            assert_eq!(reply_len(r), Ok(Some((r.len(), *err))), "{}", escape(r));
            for cut in 0..r.len() {
                assert_eq!(reply_len(&r[..cut]), Ok(None), "{} at {cut}", escape(r));
            }
            let mut two = r.to_vec();
            two.extend_from_slice(b"+OK\r\n");
            assert_eq!(reply_len(&two), Ok(Some((r.len(), *err))));
        }
        assert!(reply_len(b"?x\r\n").is_err());
        assert!(reply_len(b"$x\r\n").is_err());
        assert!(reply_len(b"+OK\n").is_err());
        assert!(reply_len(b"$1\r\nab\r\n").is_err());
    }

    #[test]
    fn decodes_whole_replies() {
        assert_eq!(decode_reply(b"+PONG\r\n"), Reply::Simple("PONG".into()));
        assert_eq!(decode_reply(b"-ERR x\r\n"), Reply::Error("ERR x".into()));
        assert_eq!(decode_reply(b":-3\r\n"), Reply::Int(-3));
        assert_eq!(decode_reply(b"$3\r\na\rb\r\n"), Reply::Bulk(b("a\rb")));
        assert_eq!(decode_reply(b"$-1\r\n"), Reply::Nil);
        assert_eq!(decode_reply(b"*2\r\n:1\r\n:2\r\n"), Reply::Array(2));
    }

    #[test]
    fn descriptors_name_command_and_key() {
        let d = Desc::new(&[b("RESTORE"), b("my\nkey"), b("payload")], 10);
        assert_eq!(d.describe(), "RESTORE my\\x0akey");
        let long = "k".repeat(100);
        let d = Desc::new(&[b("SET"), b(&long), b("v")], 10);
        assert_eq!(d.describe(), format!("SET {}…", &long[..DESC_LEN - 4]));
        assert_eq!(Desc::new(&[b("PING")], 1).describe(), "PING");
    }

    #[test]
    fn rdb_versions_from_info() {
        let redis = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        for (v, want) in [
            ("3.0.7", 6),
            ("3.2.12", 7),
            ("4.0.14", 8),
            ("5.0.14", 9),
            ("6.2.14", 9),
            ("7.0.15", 10),
            ("7.2.4", 11),
            ("7.4.1", 12),
            ("8.0.2", 12),
            ("255.255.255", 12),
        ] {
            assert_eq!(rdb_version_from_info(&redis(v)), Ok(want), "{v}");
        }
        let valkey = |v: &str| {
            format!(
                "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:{v}\r\n"
            )
        };
        assert_eq!(rdb_version_from_info(&valkey("7.2.5")), Ok(11));
        assert_eq!(rdb_version_from_info(&valkey("8.1.1")), Ok(11));
        assert_eq!(rdb_version_from_info(&valkey("9.0.0")), Ok(80));
        assert_eq!(
            rdb_version_from_info("redis_version:7.2.4\r\nserver_name:valkey\r\n"),
            Ok(11)
        );
        assert!(rdb_version_from_info("# Server\r\n").is_err());
        assert!(rdb_version_from_info("redis_version:x\r\n").is_err());
    }

    #[test]
    fn key_counts_from_info() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb12:keys=40,expires=0,avg_ttl=0\r\n";
        assert_eq!(key_count_from_info(info), Ok(43));
        assert_eq!(key_count_from_info("# Keyspace\r\n"), Ok(0));
        assert!(key_count_from_info("db0:expires=1\r\n").is_err());
    }
}
