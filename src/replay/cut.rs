//! The cut: turns archived segments into the commands a restore replays, stopping at the
//! requested moment on a whole-command boundary and never inside `MULTI … EXEC` (a transaction
//! is applied whole or not at all). Pure: segments in, commands out.

use bytes::Bytes;

use crate::archive::format::Segment;
use crate::resp::commands::{self, CommandInfo, Kind, Tx};
use crate::resp::scanner::{parse_u64, StreamError};

/// One replicated command, with where and when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub args: Vec<Bytes>,
    /// The command exactly as the master sent it (RESP).
    pub raw: Bytes,
    /// Offset just past the command.
    pub end: u64,
    /// Arrival time of its last byte.
    pub ms: u64,
    /// The database it runs in (after any `SELECT` before it).
    pub db: u32,
}

impl Command {
    /// What the command table knows about it.
    pub fn info(&self) -> &'static CommandInfo {
        commands::info(&self.args)
    }

    /// The RESP encoding (what the master sent).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_args(&self.args, out);
    }
}

pub fn encode_args<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(b"*");
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(b"$");
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Splits one segment's raw bytes into commands.
pub fn commands(seg: &Segment) -> Result<Vec<Command>, StreamError> {
    Commands::new(seg).collect()
}

/// The commands of a segment, one at a time (a segment can hold millions: they are never
/// all materialised).
pub struct Commands<'a> {
    seg: &'a Segment,
    at: usize,
    db: u32,
    failed: bool,
}

impl<'a> Commands<'a> {
    pub fn new(seg: &'a Segment) -> Commands<'a> {
        Commands {
            seg,
            at: 0,
            db: seg.header.db_start,
            failed: false,
        }
    }
}

impl Iterator for Commands<'_> {
    type Item = Result<Command, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (raw, h) = (&self.seg.raw, &self.seg.header);
        if self.failed || self.at >= raw.len() {
            return None;
        }
        let start = self.at;
        let (args, len) = match parse_one(raw, start, h.start + start as u64) {
            Ok(x) => x,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        self.at += len;
        let end = h.start + self.at as u64;
        let ms = h.time_at(end).unwrap_or(h.last_ms);
        if let Kind::Select { db } = commands::info(&args).kind {
            if let Some(d) = args.get(db).and_then(|a| parse_u64(a)) {
                self.db = d as u32;
            }
        }
        Some(Ok(Command {
            args,
            raw: raw.slice(start..self.at),
            end,
            ms,
            db: self.db,
        }))
    }
}

fn parse_one(raw: &Bytes, at: usize, base: u64) -> Result<(Vec<Bytes>, usize), StreamError> {
    let fail = |pos: usize, what: &str| StreamError {
        offset: base + (pos - at) as u64,
        what: what.to_string(),
    };
    let line = |pos: usize, prefix: u8| -> Result<(u64, usize), StreamError> {
        if raw.get(pos) != Some(&prefix) {
            return Err(fail(pos, "unexpected byte"));
        }
        let nl =
            memchr::memchr(b'\n', &raw[pos..]).ok_or_else(|| fail(pos, "incomplete command"))?;
        if nl < 2 || raw[pos + nl - 1] != b'\r' {
            return Err(fail(pos, "header line not ended by CRLF"));
        }
        let n = parse_u64(&raw[pos + 1..pos + nl - 1]).ok_or_else(|| fail(pos, "bad number"))?;
        Ok((n, pos + nl + 1))
    };
    let (argc, mut pos) = line(at, b'*')?;
    if argc == 0 || argc > (raw.len() - at) as u64 {
        return Err(fail(at, "bad argument count"));
    }
    let mut args = Vec::with_capacity(argc as usize);
    for _ in 0..argc {
        let (len, p) = line(pos, b'$')?;
        let end = p as u64 + len;
        if end + 2 > raw.len() as u64 {
            return Err(fail(p, "incomplete argument"));
        }
        let end = end as usize;
        if &raw[end..end + 2] != b"\r\n" {
            return Err(fail(end, "argument not followed by CRLF"));
        }
        args.push(raw.slice(p..end));
        pos = end + 2;
    }
    Ok((args, pos - at))
}

/// Where a cut stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub time_ms: Option<u64>,
    pub offset: Option<u64>,
}

impl Limit {
    fn admits(&self, c: &Command) -> bool {
        self.time_ms.is_none_or(|t| c.ms <= t) && self.offset.is_none_or(|o| c.end <= o)
    }
}

/// Applies the cut across segments: feed commands in order; it releases them whole
/// transactions at a time, and stops for good at the first command past the limit.
#[derive(Debug)]
pub struct Cutter {
    limit: Limit,
    /// Commands of an open `MULTI`, held until its `EXEC`.
    held: Vec<Command>,
    done: bool,
    /// The last released position: offset and arrival time.
    pub reached_offset: u64,
    pub reached_ms: u64,
    /// Commands released.
    pub released: u64,
    /// Whether a transaction open at the cut was left out.
    pub dropped_open_transaction: bool,
}

impl Cutter {
    /// `start_offset`/`start_ms`: the snapshot's position, reached before any command.
    pub fn new(limit: Limit, start_offset: u64, start_ms: u64) -> Cutter {
        Cutter {
            limit,
            held: Vec::new(),
            done: false,
            reached_offset: start_offset,
            reached_ms: start_ms,
            released: 0,
            dropped_open_transaction: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one command; returns the commands released by it (in order).
    pub fn push(&mut self, c: Command, out: &mut Vec<Command>) {
        if self.done {
            return;
        }
        if !self.limit.admits(&c) {
            self.finish();
            return;
        }
        let kind = c.info().kind;
        if !self.held.is_empty() || kind == Kind::Transaction(Tx::Multi) {
            let exec = kind == Kind::Transaction(Tx::Exec);
            self.held.push(c);
            if exec {
                self.release_held(out);
            }
            return;
        }
        self.release(c, out);
    }

    fn release_held(&mut self, out: &mut Vec<Command>) {
        for c in std::mem::take(&mut self.held) {
            self.release(c, out);
        }
    }

    fn release(&mut self, c: Command, out: &mut Vec<Command>) {
        self.reached_offset = c.end;
        self.reached_ms = c.ms;
        self.released += 1;
        out.push(c);
    }

    /// Ends the cut: a transaction still open is left out.
    pub fn finish(&mut self) {
        if !self.held.is_empty() {
            self.dropped_open_transaction = true;
            self.held.clear();
        }
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::{SegmentHeader, TimeMark};
    use crate::archive::names::GenerationId;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_args(args, &mut v);
        v
    }

    /// A segment of `cmds`, each arriving at its own time.
    fn segment(start: u64, cmds: &[(&[&str], u64)]) -> Segment {
        let mut raw = Vec::new();
        let mut index = Vec::new();
        for (args, ms) in cmds {
            raw.extend_from_slice(&cmd(args));
            index.push(TimeMark {
                end: start + raw.len() as u64,
                ms: *ms,
            });
        }
        Segment {
            header: SegmentHeader {
                generation: GenerationId(1),
                start,
                end: start + raw.len() as u64,
                first_ms: cmds[0].1,
                last_ms: cmds.last().unwrap().1,
                db_start: 2,
                db_end: 0,
                replid: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
                link: crate::archive::format::Link::PrevObject(0),
                level: 0,
                frames: Vec::new(),
                index,
            },
            raw: raw.into(),
            checksum: 0,
        }
    }

    fn run(seg: &Segment, limit: Limit) -> (Vec<String>, Cutter) {
        let mut c = Cutter::new(limit, seg.header.start, 0);
        let mut out = Vec::new();
        for x in commands(seg).unwrap() {
            c.push(x, &mut out);
        }
        c.finish();
        (
            out.iter()
                .map(|c| String::from_utf8_lossy(&c.args[0]).into_owned())
                .collect(),
            c,
        )
    }

    fn sample() -> Segment {
        segment(
            100,
            &[
                (&["SET", "a", "1"], 10),
                (&["MULTI"], 20),
                (&["SELECT", "5"], 20),
                (&["INCR", "b"], 21),
                (&["EXEC"], 30),
                (&["DEL", "a"], 40),
            ],
        )
    }

    #[test]
    fn commands_carry_offsets_times_and_db() {
        let cs = commands(&sample()).unwrap();
        assert_eq!(cs.len(), 6);
        assert_eq!(cs[0].db, 2);
        assert_eq!(cs[3].db, 5);
        assert_eq!(cs[5].ms, 40);
        assert_eq!(cs[5].end, sample().header.end);
        let mut enc = Vec::new();
        for c in &cs {
            c.encode_into(&mut enc);
        }
        assert_eq!(enc, sample().raw, "re-encoding gives the bytes as received");
    }

    #[test]
    fn a_transaction_is_applied_whole_or_not_at_all() {
        let lim = |t| Limit {
            time_ms: Some(t),
            offset: None,
        };
        assert_eq!(run(&sample(), lim(10)).0, vec!["SET"]);
        // The cut falls inside the transaction: it is left out, the report says so.
        let (out, c) = run(&sample(), lim(25));
        assert_eq!(out, vec!["SET"]);
        assert!(c.dropped_open_transaction);
        assert_eq!(c.reached_ms, 10);
        assert_eq!(
            run(&sample(), lim(30)).0,
            vec!["SET", "MULTI", "SELECT", "INCR", "EXEC"]
        );
        assert_eq!(run(&sample(), lim(99)).0.len(), 6);
        assert!(run(&sample(), lim(5)).0.is_empty());
    }

    #[test]
    fn offset_cuts_round_down_to_a_whole_command() {
        let seg = sample();
        let cs = commands(&seg).unwrap();
        let (out, c) = run(
            &seg,
            Limit {
                time_ms: None,
                offset: Some(cs[0].end + 3),
            },
        );
        assert_eq!(out, vec!["SET"]);
        assert_eq!(c.reached_offset, cs[0].end);
    }

    #[test]
    fn truncated_segments_are_errors_with_offsets() {
        let mut seg = sample();
        seg.raw.truncate(seg.raw.len() - 2);
        let e = commands(&seg).unwrap_err();
        assert!(e.offset >= 100, "{e}");
    }
}
