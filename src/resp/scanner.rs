//! Framing of the replication stream: finds whole RESP commands in the bytes the master sends
//! after the full-sync payload, so that segments hold whole commands and the archiver knows the
//! selected database and when the master asks for an ACK (`REPLCONF GETACK`).
//!
//! Pure and resumable: [`CommandScanner::scan`] takes the unconsumed bytes, reports how many of
//! them form complete commands, and remembers its progress inside an incomplete command so that
//! a command arriving in many reads is not scanned again from its start. It never copies or
//! re-encodes: the bytes it accepts are archived as received, and every byte it consumes is one
//! byte of replication offset. Argument payloads are skipped by length, not scanned.

/// Largest bulk argument accepted (Redis' `proto-max-bulk-len` can be raised to this).
pub const MAX_BULK_LEN: u64 = 1 << 34;
/// Largest argument count accepted.
pub const MAX_ARGS: u64 = 1 << 31;
/// A header line (`*<n>` or `$<n>`) longer than this is garbage.
const MAX_HEADER_LINE: usize = 24;

/// What the master sent that is not a well-formed command, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed replication stream at offset {offset}: {what}")]
pub struct StreamError {
    /// Replication offset of the first byte that does not fit (0-based, as the master counts).
    pub offset: u64,
    pub what: String,
}

/// The commands the archiver reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Select,
    ReplconfGetack,
    Replconf,
    Multi,
    Exec,
    Ping,
    Other,
}

/// Result of one [`CommandScanner::scan`] call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes at the front of the input that form complete commands.
    pub consumed: usize,
    /// Complete commands among them.
    pub commands: u64,
    /// Whether one of them was `REPLCONF GETACK`.
    pub getack: bool,
    /// Set when the bytes after the complete commands are not a command: the stream is broken
    /// there. The complete commands before it are still good.
    pub error: Option<StreamError>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    ArrayHeader,
    ArgHeader,
    ArgData(u64),
}

#[derive(Clone, Debug)]
pub struct CommandScanner {
    db: u32,
    state: State,
    /// Position of the next byte to look at, relative to the first unconsumed byte.
    pos: usize,
    args_total: u64,
    args_done: u64,
    kind: CommandKind,
}

impl CommandScanner {
    /// A scanner whose stream starts with `db` selected.
    pub fn new(db: u32) -> Self {
        CommandScanner {
            db,
            state: State::ArrayHeader,
            pos: 0,
            args_total: 0,
            args_done: 0,
            kind: CommandKind::Other,
        }
    }

    /// The database selected after the last complete command.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// Whether the scanner is between commands.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::ArrayHeader) && self.pos == 0
    }

    /// The least number of bytes, counted from the first unconsumed byte, that the command
    /// being received needs before it is complete (0 between commands): what has been scanned
    /// of it, plus the rest of the argument whose length is known. Lets a caller refuse a
    /// command larger than it may hold before all of it has arrived.
    pub fn pending_len(&self) -> u64 {
        match self.state {
            State::ArgData(len) => self.pos as u64 + len + 2,
            _ => self.pos as u64,
        }
    }

    /// Scans `buf`, the bytes not yet consumed, whose first byte has replication offset `base`
    /// (0-based). On success the caller must drop `consumed` bytes from the front before the next
    /// call, and keep the rest.
    pub fn scan(&mut self, buf: &[u8], base: u64) -> Scanned {
        self.scan_limit(buf, base, u64::MAX)
    }

    /// Like [`scan`](Self::scan), but stops after `max_commands` complete commands.
    pub fn scan_limit(&mut self, buf: &[u8], base: u64, max_commands: u64) -> Scanned {
        let mut out = Scanned::default();
        if let Err(e) = self.scan_inner(buf, base, max_commands, &mut out) {
            out.error = Some(e);
        }
        self.pos -= out.consumed;
        out
    }

    fn scan_inner(
        &mut self,
        buf: &[u8],
        base: u64,
        max_commands: u64,
        out: &mut Scanned,
    ) -> Result<(), StreamError> {
        let fail = |at: usize, what: String| StreamError {
            offset: base + at as u64,
            what,
        };
        while out.commands < max_commands {
            match self.state {
                State::ArrayHeader => match header_line(buf, self.pos, b'*') {
                    Line::Incomplete => break,
                    Line::Bad(what) => return Err(fail(self.pos, what)),
                    Line::Value(n, next) => {
                        if n == 0 || n > MAX_ARGS {
                            return Err(fail(self.pos, format!("command with {n} arguments")));
                        }
                        self.args_total = n;
                        self.args_done = 0;
                        self.kind = CommandKind::Other;
                        self.pos = next;
                        self.state = State::ArgHeader;
                    }
                },
                State::ArgHeader => match header_line(buf, self.pos, b'$') {
                    Line::Incomplete => break,
                    Line::Bad(what) => return Err(fail(self.pos, what)),
                    Line::Value(n, next) => {
                        if n > MAX_BULK_LEN {
                            return Err(fail(self.pos, format!("argument of {n} bytes")));
                        }
                        self.pos = next;
                        self.state = State::ArgData(n);
                    }
                },
                State::ArgData(len) => {
                    let end = self.pos as u64 + len;
                    if end + 2 > buf.len() as u64 {
                        break;
                    }
                    let end = end as usize;
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(fail(end, "argument not followed by CRLF".into()));
                    }
                    self.argument(&buf[self.pos..end]);
                    self.pos = end + 2;
                    self.args_done += 1;
                    self.state = State::ArgHeader;
                    if self.args_done == self.args_total {
                        out.consumed = self.pos;
                        out.commands += 1;
                        out.getack |= self.kind == CommandKind::ReplconfGetack;
                        self.state = State::ArrayHeader;
                    }
                }
            }
        }
        Ok(())
    }

    fn argument(&mut self, arg: &[u8]) {
        match self.args_done {
            0 => {
                let name = arg;
                self.kind = if name.eq_ignore_ascii_case(b"select") {
                    CommandKind::Select
                } else if name.eq_ignore_ascii_case(b"replconf") {
                    CommandKind::Replconf
                } else if name.eq_ignore_ascii_case(b"multi") {
                    CommandKind::Multi
                } else if name.eq_ignore_ascii_case(b"exec") {
                    CommandKind::Exec
                } else if name.eq_ignore_ascii_case(b"ping") {
                    CommandKind::Ping
                } else {
                    CommandKind::Other
                };
            }
            1 => match self.kind {
                CommandKind::Select => {
                    if let Some(db) = parse_u64(arg).and_then(|d| u32::try_from(d).ok()) {
                        self.db = db;
                    }
                }
                CommandKind::Replconf if arg.eq_ignore_ascii_case(b"getack") => {
                    self.kind = CommandKind::ReplconfGetack;
                }
                _ => {}
            },
            _ => {}
        }
    }
}

enum Line {
    Incomplete,
    Bad(String),
    /// The number and the position just past the line's CRLF.
    Value(u64, usize),
}

/// Parses `<prefix><digits>\r\n` at `pos`.
fn header_line(buf: &[u8], pos: usize, prefix: u8) -> Line {
    let Some(&first) = buf.get(pos) else {
        return Line::Incomplete;
    };
    if first != prefix {
        return Line::Bad(format!(
            "expected {:?}, found byte 0x{first:02x}",
            prefix as char
        ));
    }
    let window = &buf[pos..buf.len().min(pos + MAX_HEADER_LINE)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if window.len() == MAX_HEADER_LINE {
            Line::Bad("header line too long".into())
        } else {
            Line::Incomplete
        };
    };
    if nl < 2 || window[nl - 1] != b'\r' {
        return Line::Bad("header line not ended by CRLF".into());
    }
    match parse_u64(&window[1..nl - 1]) {
        Some(n) => Line::Value(n, pos + nl + 1),
        None => Line::Bad(format!(
            "bad number {:?} in header line",
            String::from_utf8_lossy(&window[1..nl - 1])
        )),
    }
}

/// A plain decimal number without sign, at most 19 digits.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Splits a buffer of whole commands into the commands' end positions (used by verification
/// and replay; the archiver's hot path uses [`CommandScanner::scan`] only).
pub fn command_ends(buf: &[u8], base: u64) -> Result<Vec<usize>, StreamError> {
    let mut scanner = CommandScanner::new(0);
    let mut ends = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let s = scanner.scan_limit(&buf[at..], base + at as u64, 1);
        if let Some(e) = s.error {
            return Err(e);
        }
        if s.consumed == 0 {
            return Err(StreamError {
                offset: base + at as u64,
                what: "incomplete command at the end".into(),
            });
        }
        at += s.consumed;
        ends.push(at);
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn pending_len_tells_the_size_of_a_command_before_it_arrives() {
        let big = vec![b'x'; 40 << 20];
        let whole = cmd(&[b"SET", b"k", &big]);
        let mut sc = CommandScanner::new(0);
        assert_eq!(sc.pending_len(), 0);
        // Only the headers and the start of the value have arrived.
        let head = &whole[..64];
        let s = sc.scan(head, 0);
        assert_eq!((s.consumed, s.error), (0, None));
        assert_eq!(sc.pending_len(), whole.len() as u64);
        // Complete: nothing pending.
        let s = sc.scan(&whole, 0);
        assert_eq!(s.consumed, whole.len());
        assert_eq!(sc.pending_len(), 0);
    }

    fn sample() -> (Vec<u8>, Vec<usize>) {
        let cmds = [
            cmd(&[b"SELECT", b"3"]),
            cmd(&[b"SET", b"k", b"v\r\n with crlf"]),
            cmd(&[b"PING"]),
            cmd(&[b"REPLCONF", b"GETACK", b"*"]),
            cmd(&[b"MULTI"]),
            cmd(&[b"RPUSH", b"list", b"", b"x"]),
            cmd(&[b"EXEC"]),
            cmd(&[b"select", b"12"]),
            cmd(&[b"DEL", &[0u8, 255, b'\n'][..]]),
        ];
        let mut all = Vec::new();
        let mut ends = Vec::new();
        for c in &cmds {
            all.extend_from_slice(c);
            ends.push(all.len());
        }
        (all, ends)
    }

    /// Feeds `input` in the given pieces, as the archiver does (dropping consumed bytes).
    fn feed(pieces: &[&[u8]]) -> (Vec<usize>, u32, bool) {
        let mut sc = CommandScanner::new(0);
        let mut pending: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut boundaries = Vec::new();
        let mut getack = false;
        for p in pieces {
            pending.extend_from_slice(p);
            let s = sc.scan(&pending, base);
            assert!(s.error.is_none());
            if s.consumed > 0 {
                base += s.consumed as u64;
                boundaries.push(base as usize);
                pending.drain(..s.consumed);
            }
            getack |= s.getack;
        }
        assert!(pending.is_empty(), "left over {pending:?}");
        (boundaries, sc.db(), getack)
    }

    #[test]
    fn whole_input_is_consumed_and_db_tracked() {
        let (all, ends) = sample();
        let (b, db, getack) = feed(&[&all]);
        assert_eq!(b, vec![all.len()]);
        assert_eq!(db, 12);
        assert!(getack);
        assert_eq!(command_ends(&all, 0).unwrap(), ends);
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let (all, ends) = sample();
        for i in 0..=all.len() {
            let (b, db, getack) = feed(&[&all[..i], &all[i..]]);
            assert_eq!(db, 12, "split at {i}");
            assert!(getack);
            assert_eq!(*b.last().unwrap(), all.len());
            // The first boundary is the last command end at or before the split.
            let expect = ends.iter().copied().filter(|&e| e <= i).max();
            if let Some(e) = expect {
                assert_eq!(b[0], e, "split at {i}");
            }
        }
    }

    #[test]
    fn byte_at_a_time_finds_every_command() {
        let (all, ends) = sample();
        let pieces: Vec<&[u8]> = all.chunks(1).collect();
        let (b, db, _) = feed(&pieces);
        assert_eq!(b, ends);
        assert_eq!(db, 12);
    }

    #[test]
    fn partial_big_argument_is_not_rescanned_from_start() {
        let big = vec![b'x'; 100_000];
        let c = cmd(&[b"SET", b"k", &big]);
        let mut sc = CommandScanner::new(0);
        let s = sc.scan(&c[..50_000], 0);
        assert_eq!(s.consumed, 0);
        let s = sc.scan(&c, 0);
        assert_eq!(s.consumed, c.len());
        assert!(sc.at_boundary());
    }

    #[test]
    fn garbage_is_an_error_with_its_offset() {
        let mut sc = CommandScanner::new(0);
        let mut input = cmd(&[b"PING"]);
        input.extend_from_slice(b"+OK\r\n");
        let s = sc.scan(&input, 100);
        // The whole command before the garbage is still good.
        assert_eq!(s.consumed, 14);
        let e = s.error.unwrap();
        assert_eq!(e.offset, 100 + 14);
        assert!(e.what.contains("0x2b"), "{e}");

        let e = CommandScanner::new(0)
            .scan(b"*1\r\n$4\r\nPINGxx", 0)
            .error
            .unwrap();
        assert_eq!(e.offset, 12);
        let e = CommandScanner::new(0)
            .scan(b"*99999999999999999999999\r\n", 0)
            .error
            .unwrap();
        assert_eq!(e.offset, 0);
        let e = CommandScanner::new(0).scan(b"*0\r\n", 7).error.unwrap();
        assert_eq!(e.offset, 7);
        let e = CommandScanner::new(0)
            .scan(b"*1\r\n$-1\r\n", 0)
            .error
            .unwrap();
        assert_eq!(e.offset, 4);
        assert!(command_ends(b"*1\r\n$4\r\nPI", 0).is_err());
    }

    #[test]
    fn truncated_command_is_not_consumed() {
        let (all, _) = sample();
        let mut sc = CommandScanner::new(0);
        let s = sc.scan(&all[..all.len() - 1], 0);
        assert!(s.consumed < all.len() - 1);
        assert!(!sc.at_boundary() || s.consumed == all.len() - 1);
    }

    /// A random argument: empty, short or a few hundred bytes, any byte values, often with
    /// CRLF (and header-like bytes) inside, which only the length may frame.
    fn random_arg(rng: &mut impl rand::Rng) -> Vec<u8> {
        let len = match rng.gen_range(0..10) {
            0 => 0,
            1..=6 => rng.gen_range(1..16),
            7 | 8 => rng.gen_range(16..128),
            _ => rng.gen_range(128..700),
        };
        let mut a: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        for _ in 0..rng.gen_range(0..3) {
            if a.len() >= 2 {
                let at = rng.gen_range(0..a.len() - 1);
                let insert: &[u8] =
                    [&b"\r\n"[..], b"\r\n*3\r\n", b"$5\r\n", b"\n", b"\r"][rng.gen_range(0..5)];
                let end = (at + insert.len()).min(a.len());
                a[at..end].copy_from_slice(&insert[..end - at]);
            }
        }
        a
    }

    /// A random command: a few the scanner reacts to (SELECT, REPLCONF GETACK, MULTI, EXEC,
    /// PING), the rest random names with 0 to 40 random arguments. SELECT comes with its one
    /// argument only, as a master replicates it (the scanner takes the database from the
    /// second argument as soon as it has arrived).
    fn random_command(rng: &mut impl rand::Rng) -> Vec<Vec<u8>> {
        match rng.gen_range(0..24) {
            0 | 1 => {
                return vec![
                    b"SELECT".to_vec(),
                    rng.gen_range(0..16u32).to_string().into(),
                ]
            }
            2 => return vec![b"select".to_vec(), random_arg(rng)],
            _ => {}
        }
        let mut args: Vec<Vec<u8>> = match rng.gen_range(0..11) {
            0 => vec![b"RePlCoNf".to_vec()],
            1 => vec![b"replconf".to_vec(), b"GETACK".to_vec(), b"*".to_vec()],
            2 => vec![b"MULTI".to_vec()],
            3 => vec![b"EXEC".to_vec()],
            4 => vec![b"PING".to_vec()],
            _ => vec![random_arg(rng)],
        };
        let more = match rng.gen_range(0..8) {
            0 => rng.gen_range(10..41),
            _ => rng.gen_range(0..5),
        };
        args.extend((0..more).map(|_| random_arg(rng)));
        args
    }

    /// What redis-protocol's RESP2 decoder finds at the front of `buf`: the whole commands'
    /// bytes and count, the database the last SELECT among them chose, and whether one was
    /// `REPLCONF GETACK`.
    fn oracle(buf: &[u8], mut db: u32) -> (usize, u64, u32, bool) {
        use redis_protocol::resp2::decode::decode;
        use redis_protocol::resp2::types::OwnedFrame;
        let (mut at, mut commands, mut getack) = (0, 0, false);
        while let Some((frame, n)) = decode(&buf[at..]).expect("the oracle decodes its own") {
            let OwnedFrame::Array(args) = frame else {
                panic!("not an array: {frame:?}");
            };
            let args: Vec<&[u8]> = args
                .iter()
                .map(|a| match a {
                    OwnedFrame::BulkString(b) => &b[..],
                    other => panic!("not a bulk string: {other:?}"),
                })
                .collect();
            if let [name, arg] = &args[..] {
                let digits = !arg.is_empty() && arg.iter().all(u8::is_ascii_digit);
                let number = std::str::from_utf8(arg).ok().and_then(|d| d.parse().ok());
                if name.eq_ignore_ascii_case(b"select") && digits {
                    db = number.unwrap_or(db);
                }
            }
            getack |= args[0].eq_ignore_ascii_case(b"replconf")
                && args
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
            at += n;
            commands += 1;
        }
        (at, commands, db, getack)
    }

    /// The scanner against redis-protocol as an oracle: random commands encoded by its RESP2
    /// encoder, concatenated, fed in pieces split at random points; after every piece the
    /// scanner consumes exactly the whole commands the decoder finds in the same bytes.
    #[test]
    fn agrees_with_redis_protocol_on_random_commands_split_anywhere() {
        use bytes::BytesMut;
        use rand::{Rng, SeedableRng};
        use redis_protocol::resp2::encode::extend_encode;
        use redis_protocol::resp2::types::BytesFrame;

        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e59_0002);
        let mut total_commands = 0u64;
        for case in 0..3000 {
            let mut wire = BytesMut::new();
            for _ in 0..rng.gen_range(1..10) {
                let frame = BytesFrame::Array(
                    random_command(&mut rng)
                        .into_iter()
                        .map(|a| BytesFrame::BulkString(a.into()))
                        .collect(),
                );
                extend_encode(&mut wire, &frame, false).expect("encodes");
            }
            let mut cuts: Vec<usize> = (0..rng.gen_range(0..8))
                .map(|_| rng.gen_range(0..=wire.len()))
                .collect();
            if rng.gen_bool(0.1) {
                // Byte at a time, now and then.
                cuts = (0..wire.len()).collect();
            }
            cuts.push(wire.len());
            cuts.sort_unstable();
            let start_db = rng.gen_range(0..4);
            let mut sc = CommandScanner::new(start_db);
            let (mut pending, mut base, mut from, mut db) = (Vec::new(), 0u64, 0, start_db);
            for cut in cuts {
                pending.extend_from_slice(&wire[from..cut]);
                from = cut;
                let s = sc.scan(&pending, base);
                assert_eq!(s.error, None, "case {case}");
                let (consumed, commands, want_db, getack) = oracle(&pending, db);
                assert_eq!(
                    (s.consumed, s.commands, s.getack),
                    (consumed, commands, getack),
                    "case {case}, at offset {base}"
                );
                db = want_db;
                assert_eq!(sc.db(), db, "case {case}, at offset {base}");
                if consumed == pending.len() {
                    assert!(sc.at_boundary(), "case {case}");
                }
                pending.drain(..s.consumed);
                base += s.consumed as u64;
                total_commands += commands;
            }
            assert!(
                pending.is_empty() && base == wire.len() as u64,
                "case {case}"
            );
        }
        assert!(total_commands > 10_000, "{total_commands}");
    }
}
