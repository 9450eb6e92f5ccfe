//! What the replicated commands are: one table from a command's name to what a replay needs to
//! know about it (its [`Kind`], where its keys are, which arguments are expiries and in which
//! unit, whether it names another database or trims a stream).
//!
//! Why one table: the cut, the filter, the relative-TTL rewrite for old servers and the live
//! target's expiry shift each need to recognise the same commands; with the knowledge in one
//! place, a command added here (a new expiry form, a new key layout) reaches all of them. What
//! each of them does with a command (how a TTL is rewritten, what a filter decides) stays with
//! it. Pure, and no allocation: a lookup lower-cases the name into a small stack buffer.

use crate::resp::scanner::parse_u64;

/// What a command does to the server, as far as a replay cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Part of the replication link itself, not of the data (`PING`, `REPLCONF`), a message
    /// to subscribers (`PUBLISH`, `SPUBLISH`), or a cluster node's own state (`CLUSTER
    /// SYNCSLOTS …`, which Valkey 9 propagates to the replicas of both ends of an atomic slot
    /// migration; the keys themselves come as ordinary writes and deletes): never replayed.
    Internal,
    /// `MULTI … EXEC`: a transaction is applied whole or not at all. A master propagates a
    /// transaction only when it is executed, so `DISCARD` never reaches a replica and is not
    /// in the table.
    Transaction(Tx),
    /// `SELECT db`: the database the commands after it run in; the number is at `db`.
    Select { db: usize },
    /// A command on whole databases rather than on keys.
    Databases(Databases),
    /// Server-wide scripts and functions (`FUNCTION`, `SCRIPT`): not tied to a key or database.
    Scripts,
    /// Everything else: a write to the keys at [`CommandInfo::keys`].
    Write,
}

/// The two ends of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tx {
    Multi,
    Exec,
}

/// Which databases a whole-database command touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Databases {
    /// `FLUSHALL`: every database.
    All,
    /// `FLUSHDB`: the selected one.
    Selected,
    /// `SWAPDB a b`: the two numbered at `a` and `b`.
    Swap { a: usize, b: usize },
    /// The keys of some hash slots in the selected database, the slots listed as in
    /// [`SlotRanges`]: `TRIMSLOTS RANGES n start end…`, which a Redis 8.4 cluster node
    /// propagates when it drops the slots an atomic slot migration moved away (or a failed
    /// import brought in), and `SFLUSH start end… [SYNC|ASYNC]` (Redis 8.0+).
    Slots(SlotRanges),
}

/// Where a [`Databases::Slots`] command lists its slot ranges (inclusive `start end` pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRanges {
    /// The word `RANGES` at `count - 1`, the number of ranges at `count`, then exactly that
    /// many pairs: `TRIMSLOTS RANGES n s e…` (2).
    Counted { count: usize },
    /// Pairs from `from` to the end, less a last `SYNC` or `ASYNC`: `SFLUSH s e… [ASYNC]` (1).
    Trailing { from: usize },
}

impl SlotRanges {
    /// The ranges of `args` (the whole command, name first); `None` when they are malformed
    /// (an odd count, a slot past 16383, a start after its end, a count that does not match).
    pub fn of<A: AsRef<[u8]>>(self, args: &[A]) -> Option<Vec<(u16, u16)>> {
        let mut end = args.len();
        let from = match self {
            SlotRanges::Counted { count } => {
                if !args
                    .get(count.checked_sub(1)?)?
                    .as_ref()
                    .eq_ignore_ascii_case(b"ranges")
                {
                    return None;
                }
                let n = parse_u64(args.get(count)?.as_ref())?;
                if n == 0 || (end - count - 1) as u64 != n.checked_mul(2)? {
                    return None;
                }
                count + 1
            }
            SlotRanges::Trailing { from } => {
                let last = args.last()?.as_ref();
                if last.eq_ignore_ascii_case(b"sync") || last.eq_ignore_ascii_case(b"async") {
                    end -= 1;
                }
                from
            }
        };
        if from >= end || (end - from) % 2 != 0 {
            return None;
        }
        // A cluster has 16384 slots.
        let slot = |a: &A| {
            parse_u64(a.as_ref())
                .filter(|&s| s < 16384)
                .map(|s| s as u16)
        };
        args[from..end]
            .chunks(2)
            .map(|p| {
                let (s, e) = (slot(&p[0])?, slot(&p[1])?);
                (s <= e).then_some((s, e))
            })
            .collect()
    }
}

/// Where a command's keys are (argument 0 is the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// No keys (the kinds other than [`Kind::Write`]).
    None,
    /// One key, at this position: `SET key …` (1), `XGROUP CREATE key …` (2).
    One(usize),
    /// Every argument from this position: `DEL k…` (1), `BITOP op dest k…` (2).
    AllFrom(usize),
    /// Every second argument from this position: `MSET k v k v…` (1).
    Alternating(usize),
    /// Two keys, at these positions: `RENAME src dst`.
    Pair(usize, usize),
    /// A count at `at` and that many keys after it: `LMPOP numkeys k…`, `EVAL script numkeys
    /// k…`.
    NumKeys { at: usize },
    /// A destination key at `dest`, a count at `numkeys` and that many keys after it:
    /// `ZUNIONSTORE dest numkeys k…`.
    DestNumKeys { dest: usize, numkeys: usize },
}

/// The unit of an expiry argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Milliseconds,
}

impl Unit {
    /// Milliseconds in one of this unit.
    pub const fn ms(self) -> i64 {
        match self {
            Unit::Seconds => 1000,
            Unit::Milliseconds => 1,
        }
    }
}

/// A TTL relative to the moment the command runs, as Redis 6 and older replicate them (7.0
/// propagates absolute times instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelativeTtl {
    /// `EXPIRE key seconds [cond]`, `PEXPIRE key ms [cond]`: the TTL at `at`.
    Arg { at: usize, unit: Unit },
    /// `SETEX key seconds value`, `PSETEX key ms value`: the TTL at `at`, the value after it.
    SetEx { at: usize, unit: Unit },
    /// `SET key value [… EX seconds | PX ms …]`: an option among those from `from`
    /// ([`RelativeTtl::find_option`]).
    Option { from: usize },
    /// `RESTORE key ttl payload …` without `ABSTTL`.
    Restore(RestoreTtl),
}

impl RelativeTtl {
    /// For [`RelativeTtl::Option`]: the position of the first `EX` or `PX` from `from` that has
    /// an argument after it, and its unit.
    pub fn find_option<A: AsRef<[u8]>>(from: usize, args: &[A]) -> Option<(usize, Unit)> {
        let last = args.len().saturating_sub(1);
        (from..last).find_map(|i| {
            let a = args[i].as_ref();
            if a.eq_ignore_ascii_case(b"ex") {
                Some((i, Unit::Seconds))
            } else if a.eq_ignore_ascii_case(b"px") {
                Some((i, Unit::Milliseconds))
            } else {
                None
            }
        })
    }
}

/// An expiry given as a time since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbsoluteTtl {
    /// `PEXPIREAT key ms [NX|XX|GT|LT]…`, `EXPIREAT key seconds …`: the time at `at`, the
    /// conditions after it.
    Key { at: usize, unit: Unit },
    /// `HPEXPIREAT key ms [NX|XX|GT|LT] FIELDS n f…`, `HEXPIREAT key seconds …` (Redis 7.4+,
    /// Valkey 9+): the time at `at`, the condition (if any) at `at + 1`, the field names from
    /// `at + 4` ([`AbsoluteTtl::FIELDS_AFTER_TIME`]).
    Fields { at: usize, unit: Unit },
    /// `SET key value [… PXAT ms | EXAT seconds …]`, `GETEX key […]`, and with `fields` (hash
    /// field TTLs) `HSETEX key [opts] FIELDS n f v…`, `HGETEX key [opts] FIELDS n f…`, whose
    /// options end at `FIELDS`: an option among those from `from`
    /// ([`AbsoluteTtl::find_option`]).
    Option { from: usize, fields: bool },
    /// `RESTORE key ms payload … ABSTTL`.
    Restore(RestoreTtl),
}

impl AbsoluteTtl {
    /// In [`AbsoluteTtl::Fields`], how far after the time the field names start (condition,
    /// `FIELDS`, count).
    pub const FIELDS_AFTER_TIME: usize = 4;

    /// Whether the expiry is a hash field's rather than a key's.
    pub fn is_field(self) -> bool {
        matches!(
            self,
            AbsoluteTtl::Fields { .. } | AbsoluteTtl::Option { fields: true, .. }
        )
    }

    /// For [`AbsoluteTtl::Option`]: the position of the first `PXAT` or `EXAT` from `from` that
    /// has an argument after it, and its unit; `None` also when, with `fields`, `FIELDS` comes
    /// first (what follows it are field names and values).
    pub fn find_option<A: AsRef<[u8]>>(
        from: usize,
        fields: bool,
        args: &[A],
    ) -> Option<(usize, Unit)> {
        let last = args.len().saturating_sub(1);
        for (i, a) in args.iter().enumerate().take(last).skip(from) {
            let a = a.as_ref();
            if fields && a.eq_ignore_ascii_case(b"fields") {
                return None;
            }
            if a.eq_ignore_ascii_case(b"pxat") {
                return Some((i, Unit::Milliseconds));
            }
            if a.eq_ignore_ascii_case(b"exat") {
                return Some((i, Unit::Seconds));
            }
        }
        None
    }
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]`: the TTL (ms, 0 for
/// none) at `at`, absolute when `ABSTTL` is among the arguments from `flags_from` (5.0+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreTtl {
    pub at: usize,
    pub flags_from: usize,
}

impl RestoreTtl {
    const RESTORE: RestoreTtl = RestoreTtl {
        at: 2,
        flags_from: 4,
    };

    /// Whether the command has its key, TTL and payload.
    pub fn complete<A>(self, args: &[A]) -> bool {
        args.len() >= self.flags_from
    }

    /// Whether the TTL is absolute (`ABSTTL`).
    pub fn absolute<A: AsRef<[u8]>>(self, args: &[A]) -> bool {
        args.iter()
            .skip(self.flags_from)
            .any(|a| a.as_ref().eq_ignore_ascii_case(b"absttl"))
    }
}

/// Where a command names a database other than the selected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherDb {
    /// The number at this position: `MOVE key db` (2).
    At(usize),
    /// The number after the first argument equal to this word, wherever it is: `COPY src dst
    /// DB db`.
    After(&'static [u8]),
}

impl OtherDb {
    /// The other database's number, if the command has a valid one.
    pub fn db<A: AsRef<[u8]>>(self, args: &[A]) -> Option<u64> {
        let at = match self {
            OtherDb::At(i) => i,
            OtherDb::After(word) => {
                args.iter()
                    .position(|a| a.as_ref().eq_ignore_ascii_case(word))?
                    + 1
            }
        };
        args.get(at).and_then(|a| parse_u64(a.as_ref()))
    }
}

/// A stream command whose trim options (`MAXLEN|MINID [=|~] n [LIMIT c]`) start at
/// [`StreamTrim::OPTIONS_FROM`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamTrim {
    /// `XADD key [NOMKSTREAM] [trim] id|* field value…`: the options end at the id.
    Xadd,
    /// `XTRIM key trim`.
    Xtrim,
}

impl StreamTrim {
    pub const OPTIONS_FROM: usize = 2;
}

/// Everything the table knows about one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    pub kind: Kind,
    pub keys: Keys,
    /// The relative TTL a restore from an old server makes absolute.
    pub relative_ttl: Option<RelativeTtl>,
    /// The absolute expiry a live replay may move.
    pub absolute_ttl: Option<AbsoluteTtl>,
    /// The database it also touches (`MOVE`, `COPY … DB`).
    pub other_db: Option<OtherDb>,
    /// Its stream trim, which a client may not send as a master propagates it.
    pub stream_trim: Option<StreamTrim>,
}

impl Keys {
    /// The keys among `args` (the whole command, name first); `None` when the command lacks a
    /// key this layout requires or its count is not a number.
    pub fn of<A: AsRef<[u8]>>(self, args: &[A]) -> Option<KeyArgs<'_, A>> {
        let len = args.len();
        let has = |i: usize| (i < len).then_some(i);
        let count = |i: usize| {
            args.get(i)
                .and_then(|a| parse_u64(a.as_ref()))
                .map(|n| n as usize)
        };
        let span = |from: usize, n: usize| from.min(len)..from.saturating_add(n).min(len);
        let (first, rest, step) = match self {
            Keys::None => (None, 0..0, 1),
            Keys::One(i) => (Some(has(i)?), 0..0, 1),
            Keys::AllFrom(i) => (None, i.min(len)..len, 1),
            Keys::Alternating(i) => (None, i.min(len)..len, 2),
            Keys::Pair(a, b) => (Some(has(a)?), has(b)?..b + 1, 1),
            Keys::NumKeys { at } => (None, span(at + 1, count(at)?), 1),
            Keys::DestNumKeys { dest, numkeys } => {
                let n = count(numkeys)?;
                (Some(has(dest)?), span(numkeys + 1, n), 1)
            }
        };
        Some(KeyArgs {
            args,
            first,
            rest: rest.step_by(step),
        })
    }
}

/// The keys of one command, in argument order ([`Keys::of`]).
pub struct KeyArgs<'a, A> {
    args: &'a [A],
    first: Option<usize>,
    rest: std::iter::StepBy<std::ops::Range<usize>>,
}

impl<'a, A: AsRef<[u8]>> Iterator for KeyArgs<'a, A> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let i = self.first.take().or_else(|| self.rest.next())?;
        Some(self.args[i].as_ref())
    }
}

const fn kind(kind: Kind) -> CommandInfo {
    CommandInfo {
        kind,
        keys: Keys::None,
        relative_ttl: None,
        absolute_ttl: None,
        other_db: None,
        stream_trim: None,
    }
}

const fn write(keys: Keys) -> CommandInfo {
    CommandInfo {
        keys,
        ..kind(Kind::Write)
    }
}

const fn relative(ttl: RelativeTtl) -> CommandInfo {
    CommandInfo {
        relative_ttl: Some(ttl),
        ..write(Keys::One(1))
    }
}

const fn absolute(ttl: AbsoluteTtl) -> CommandInfo {
    CommandInfo {
        absolute_ttl: Some(ttl),
        ..write(Keys::One(1))
    }
}

const fn trim(t: StreamTrim) -> CommandInfo {
    CommandInfo {
        stream_trim: Some(t),
        ..write(Keys::One(1))
    }
}

static INTERNAL: CommandInfo = kind(Kind::Internal);
static MULTI: CommandInfo = kind(Kind::Transaction(Tx::Multi));
static EXEC: CommandInfo = kind(Kind::Transaction(Tx::Exec));
static SELECT: CommandInfo = kind(Kind::Select { db: 1 });
static FLUSHALL: CommandInfo = kind(Kind::Databases(Databases::All));
static FLUSHDB: CommandInfo = kind(Kind::Databases(Databases::Selected));
static SWAPDB: CommandInfo = kind(Kind::Databases(Databases::Swap { a: 1, b: 2 }));
static TRIMSLOTS: CommandInfo = kind(Kind::Databases(Databases::Slots(SlotRanges::Counted {
    count: 2,
})));
static SFLUSH: CommandInfo = kind(Kind::Databases(Databases::Slots(SlotRanges::Trailing {
    from: 1,
})));
static SCRIPTS: CommandInfo = kind(Kind::Scripts);

/// Unknown names and most known ones: the key is the first argument.
static FIRST_KEY: CommandInfo = write(Keys::One(1));
static SUBCOMMAND_KEY: CommandInfo = write(Keys::One(2));
static ALL_KEYS: CommandInfo = write(Keys::AllFrom(1));
static BITOP: CommandInfo = write(Keys::AllFrom(2));
static KEY_VALUE_PAIRS: CommandInfo = write(Keys::Alternating(1));
static TWO_KEYS: CommandInfo = write(Keys::Pair(1, 2));
static DEST_NUMKEYS: CommandInfo = write(Keys::DestNumKeys {
    dest: 1,
    numkeys: 2,
});
static NUMKEYS_FIRST: CommandInfo = write(Keys::NumKeys { at: 1 });
/// After a timeout (`BLMPOP timeout numkeys k…`) or a script (`EVAL script numkeys k…`).
static NUMKEYS_SECOND: CommandInfo = write(Keys::NumKeys { at: 2 });

static MOVE: CommandInfo = CommandInfo {
    other_db: Some(OtherDb::At(2)),
    ..write(Keys::One(1))
};
static COPY: CommandInfo = CommandInfo {
    other_db: Some(OtherDb::After(b"db")),
    ..write(Keys::Pair(1, 2))
};

static EXPIRE: CommandInfo = relative(RelativeTtl::Arg {
    at: 2,
    unit: Unit::Seconds,
});
static PEXPIRE: CommandInfo = relative(RelativeTtl::Arg {
    at: 2,
    unit: Unit::Milliseconds,
});
static SETEX: CommandInfo = relative(RelativeTtl::SetEx {
    at: 2,
    unit: Unit::Seconds,
});
static PSETEX: CommandInfo = relative(RelativeTtl::SetEx {
    at: 2,
    unit: Unit::Milliseconds,
});
static SET: CommandInfo = CommandInfo {
    relative_ttl: Some(RelativeTtl::Option { from: 3 }),
    absolute_ttl: Some(AbsoluteTtl::Option {
        from: 3,
        fields: false,
    }),
    ..write(Keys::One(1))
};
/// Also `RESTORE-ASKING`, what a cluster node propagates for a `MIGRATE` it received: the same
/// arguments, so its relative TTL (from a server before 7.0) is made absolute the same way.
static RESTORE: CommandInfo = CommandInfo {
    relative_ttl: Some(RelativeTtl::Restore(RestoreTtl::RESTORE)),
    absolute_ttl: Some(AbsoluteTtl::Restore(RestoreTtl::RESTORE)),
    ..write(Keys::One(1))
};
static EXPIREAT: CommandInfo = absolute(AbsoluteTtl::Key {
    at: 2,
    unit: Unit::Seconds,
});
static PEXPIREAT: CommandInfo = absolute(AbsoluteTtl::Key {
    at: 2,
    unit: Unit::Milliseconds,
});
static HEXPIREAT: CommandInfo = absolute(AbsoluteTtl::Fields {
    at: 2,
    unit: Unit::Seconds,
});
static HPEXPIREAT: CommandInfo = absolute(AbsoluteTtl::Fields {
    at: 2,
    unit: Unit::Milliseconds,
});
static GETEX: CommandInfo = absolute(AbsoluteTtl::Option {
    from: 2,
    fields: false,
});
static HASH_FIELD_OPTIONS: CommandInfo = absolute(AbsoluteTtl::Option {
    from: 2,
    fields: true,
});
static XADD: CommandInfo = trim(StreamTrim::Xadd);
static XTRIM: CommandInfo = trim(StreamTrim::Xtrim);

/// The longest name in the table (`geosearchstore`, `restore-asking`); longer names are
/// unknown.
const LONGEST_NAME: usize = 14;

/// What the table knows about the command called `name` (any case). An unknown name is an
/// ordinary write whose first argument is its key.
pub fn lookup(name: &[u8]) -> &'static CommandInfo {
    let mut buf = [0u8; LONGEST_NAME];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return &FIRST_KEY;
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    match &*lower {
        b"ping" | b"replconf" | b"publish" | b"spublish" | b"cluster" => &INTERNAL,
        b"multi" => &MULTI,
        b"exec" => &EXEC,
        b"select" => &SELECT,
        b"flushall" => &FLUSHALL,
        b"flushdb" => &FLUSHDB,
        b"swapdb" => &SWAPDB,
        b"trimslots" => &TRIMSLOTS,
        b"sflush" => &SFLUSH,
        b"function" | b"script" => &SCRIPTS,

        b"del" | b"unlink" | b"touch" | b"exists" | b"watch" => &ALL_KEYS,
        b"mset" | b"msetnx" => &KEY_VALUE_PAIRS,
        b"rename" | b"renamenx" | b"smove" | b"lmove" | b"rpoplpush" | b"blmove"
        | b"brpoplpush" | b"geosearchstore" | b"zrangestore" => &TWO_KEYS,
        b"copy" => &COPY,
        b"move" => &MOVE,
        // Destination, then all keys.
        b"sinterstore" | b"sunionstore" | b"sdiffstore" | b"pfmerge" => &ALL_KEYS,
        b"bitop" => &BITOP,
        b"zunionstore" | b"zinterstore" | b"zdiffstore" => &DEST_NUMKEYS,
        b"lmpop" | b"zmpop" | b"sintercard" | b"zintercard" => &NUMKEYS_FIRST,
        b"blmpop" | b"bzmpop" | b"eval" | b"evalsha" | b"eval_ro" | b"evalsha_ro" | b"fcall"
        | b"fcall_ro" => &NUMKEYS_SECOND,
        b"xgroup" | b"object" => &SUBCOMMAND_KEY,

        b"expire" => &EXPIRE,
        b"pexpire" => &PEXPIRE,
        b"setex" => &SETEX,
        b"psetex" => &PSETEX,
        b"set" => &SET,
        b"restore" | b"restore-asking" => &RESTORE,
        b"expireat" => &EXPIREAT,
        b"pexpireat" => &PEXPIREAT,
        b"hexpireat" => &HEXPIREAT,
        b"hpexpireat" => &HPEXPIREAT,
        b"getex" => &GETEX,
        b"hsetex" | b"hgetex" => &HASH_FIELD_OPTIONS,

        b"xadd" => &XADD,
        b"xtrim" => &XTRIM,
        _ => &FIRST_KEY,
    }
}

/// What the table knows about a command, from its arguments (name first; none: unknown).
pub fn info<A: AsRef<[u8]>>(args: &[A]) -> &'static CommandInfo {
    lookup(args.first().map_or(&[][..], |a| a.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(args: &[&str]) -> Option<Vec<String>> {
        let k = info(args).keys.of(args)?;
        Some(k.map(|k| String::from_utf8_lossy(k).into_owned()).collect())
    }

    #[test]
    fn lookups_ignore_case() {
        for name in ["set", "SET", "Set", "sEt"] {
            assert!(std::ptr::eq(lookup(name.as_bytes()), &SET), "{name}");
        }
        assert_eq!(lookup(b"MULTI").kind, Kind::Transaction(Tx::Multi));
        assert_eq!(lookup(b"Exec").kind, Kind::Transaction(Tx::Exec));
        assert_eq!(lookup(b"select").kind, Kind::Select { db: 1 });
        for name in ["PING", "replconf", "Publish", "SPUBLISH"] {
            assert_eq!(lookup(name.as_bytes()).kind, Kind::Internal, "{name}");
        }
        // Valkey 9's atomic slot migration: the importing node's stream carries its steps.
        for args in [
            &[
                "CLUSTER",
                "SYNCSLOTS",
                "ESTABLISH",
                "SOURCE",
                "a1",
                "NAME",
                "b2",
            ][..],
            &["cluster", "syncslots", "ACK"],
            &[
                "CLUSTER",
                "SYNCSLOTS",
                "FINISH",
                "STATE",
                "FAILED",
                "NAME",
                "b2",
            ],
        ] {
            assert_eq!(info(args).kind, Kind::Internal, "{args:?}");
            assert_eq!(
                info(args).keys.of(args).map(|k| k.count()),
                Some(0),
                "{args:?}"
            );
        }
        for name in ["FUNCTION", "script"] {
            assert_eq!(lookup(name.as_bytes()).kind, Kind::Scripts, "{name}");
        }
        assert_eq!(
            lookup(b"SwapDb").kind,
            Kind::Databases(Databases::Swap { a: 1, b: 2 })
        );
        // The longest names fit the buffer.
        assert_eq!(lookup(b"GEOSEARCHSTORE").keys, Keys::Pair(1, 2));
        assert!(lookup(b"RESTORE-ASKING").absolute_ttl.is_some());
        assert!(std::ptr::eq(lookup(b"restore-asking"), &RESTORE));
    }

    /// The RESP bytes of a command, as arguments (a test's own small reader).
    fn resp_args(mut raw: &[u8]) -> Vec<Vec<u8>> {
        fn line<'a>(raw: &mut &'a [u8]) -> &'a [u8] {
            let at = raw.windows(2).position(|w| w == b"\r\n").unwrap();
            let l = &raw[..at];
            *raw = &raw[at + 2..];
            l
        }
        let n: usize = std::str::from_utf8(&line(&mut raw)[1..])
            .unwrap()
            .parse()
            .unwrap();
        (0..n)
            .map(|_| {
                let len: usize = std::str::from_utf8(&line(&mut raw)[1..])
                    .unwrap()
                    .parse()
                    .unwrap();
                let a = raw[..len].to_vec();
                raw = &raw[len + 2..];
                a
            })
            .collect()
    }

    /// What a Redis 8.4 cluster node propagates around an atomic slot migration
    /// (cluster_asm.c): `TRIMSLOTS RANGES <n> <start> <end>…` (propagateTrimSlots) when it
    /// drops slots, `CLUSTER SYNCSLOTS CONF ASM-TASK <task>` (asmNotifyReplicasStateChange) to
    /// its replicas at each step; and `SFLUSH` (8.0+).
    #[test]
    fn slot_trims_of_redis_8_4() {
        let trim = resp_args(
            b"*7\r\n$9\r\nTRIMSLOTS\r\n$6\r\nRANGES\r\n$1\r\n2\r\n$1\r\n0\r\n$3\r\n100\r\n$4\r\n5000\r\n$5\r\n16383\r\n",
        );
        let info = info(&trim);
        let Kind::Databases(Databases::Slots(layout)) = info.kind else {
            panic!("{:?}", info.kind);
        };
        assert_eq!(layout.of(&trim), Some(vec![(0, 100), (5000, 16383)]));
        assert_eq!(info.keys.of(&trim).map(|k| k.count()), Some(0));
        let task = resp_args(
            b"*5\r\n$7\r\nCLUSTER\r\n$9\r\nSYNCSLOTS\r\n$4\r\nCONF\r\n$8\r\nASM-TASK\r\n$5\r\nt:a:b\r\n",
        );
        assert_eq!(self::info(&task).kind, Kind::Internal);
        // Malformed ranges are not guessed at.
        let t = SlotRanges::Counted { count: 2 };
        for bad in [
            &["TRIMSLOTS", "RANGES", "2", "0", "100"][..],
            &["TRIMSLOTS", "RANGES", "1", "0", "100", "7"],
            &["TRIMSLOTS", "RANGES", "0"],
            &["TRIMSLOTS", "SLOTS", "1", "0", "100"],
            &["TRIMSLOTS", "RANGES", "1", "100", "0"],
            &["TRIMSLOTS", "RANGES", "1", "0", "16384"],
            &["TRIMSLOTS", "RANGES", "x", "0", "1"],
            &["TRIMSLOTS"],
        ] {
            assert_eq!(t.of(bad), None, "{bad:?}");
        }
        let Kind::Databases(Databases::Slots(sflush)) = lookup(b"sflush").kind else {
            panic!("SFLUSH");
        };
        assert_eq!(
            sflush.of(&["SFLUSH", "0", "99", "200", "300", "async"]),
            Some(vec![(0, 99), (200, 300)])
        );
        assert_eq!(sflush.of(&["SFLUSH", "0", "99"]), Some(vec![(0, 99)]));
        assert_eq!(sflush.of(&["SFLUSH", "0", "99", "1"]), None);
        assert_eq!(sflush.of(&["SFLUSH", "SYNC"]), None);
    }

    #[test]
    fn unknown_names_are_writes_to_their_first_argument() {
        for name in [
            "",
            "nosuchcommand",
            "a-name-longer-than-any-in-the-table",
            "DISCARD",
        ] {
            let i = lookup(name.as_bytes());
            assert!(std::ptr::eq(i, &FIRST_KEY), "{name}");
            assert_eq!(i.kind, Kind::Write);
            assert_eq!(i.keys, Keys::One(1));
        }
        assert_eq!(keys(&["FOO", "k", "x"]).unwrap(), ["k"]);
        assert_eq!(keys(&["FOO"]), None);
        assert_eq!(info::<&[u8]>(&[]).kind, Kind::Write);
    }

    #[test]
    fn key_positions() {
        let cases: &[(&[&str], Option<&[&str]>)] = &[
            (&["SET", "k", "v"], Some(&["k"])),
            (&["XGROUP", "CREATE", "s", "g", "$"], Some(&["s"])),
            (&["OBJECT", "ENCODING"], None),
            (&["DEL", "a", "b", "c"], Some(&["a", "b", "c"])),
            (&["DEL"], Some(&[])),
            (&["BITOP", "AND", "d", "a", "b"], Some(&["d", "a", "b"])),
            (&["MSET", "a", "1", "b", "2"], Some(&["a", "b"])),
            (&["MSETNX", "a", "1", "b"], Some(&["a", "b"])),
            (&["RENAME", "a", "b"], Some(&["a", "b"])),
            (&["RENAME", "a"], None),
            (&["COPY", "a", "b", "DB", "3"], Some(&["a", "b"])),
            (
                &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
                Some(&["d", "a", "b"]),
            ),
            (&["ZINTERSTORE", "d", "5", "a"], Some(&["d", "a"])),
            (&["ZDIFFSTORE", "d", "x", "a"], None),
            (&["LMPOP", "2", "a", "b", "LEFT"], Some(&["a", "b"])),
            (&["BLMPOP", "0", "1", "a", "LEFT"], Some(&["a"])),
            (&["EVAL", "return 1", "1", "k", "arg"], Some(&["k"])),
            (&["FCALL", "f", "0", "arg"], Some(&[])),
            (&["SINTERCARD", "99999999999999999999", "a"], None),
            (&["FLUSHALL"], Some(&[])),
        ];
        for (args, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(keys(args), want, "{args:?}");
        }
        // A count far past the arguments takes the ones there are.
        assert_eq!(
            keys(&["ZINTERCARD", "9999999999999999999", "a", "b"]).unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn other_databases() {
        assert_eq!(
            info(&["MOVE", "k", "3"])
                .other_db
                .unwrap()
                .db(&["MOVE", "k", "3"]),
            Some(3)
        );
        let copy = ["COPY", "a", "b", "db", "4", "REPLACE"];
        assert_eq!(info(&copy).other_db.unwrap().db(&copy), Some(4));
        let copy = ["COPY", "a", "b"];
        assert_eq!(info(&copy).other_db.unwrap().db(&copy), None);
        assert_eq!(lookup(b"SET").other_db, None);
    }

    #[test]
    fn expiry_arguments() {
        assert_eq!(
            lookup(b"expire").relative_ttl,
            Some(RelativeTtl::Arg {
                at: 2,
                unit: Unit::Seconds
            })
        );
        assert_eq!(
            lookup(b"PSETEX").relative_ttl,
            Some(RelativeTtl::SetEx {
                at: 2,
                unit: Unit::Milliseconds
            })
        );
        assert_eq!(
            RelativeTtl::find_option(3, &["SET", "k", "v", "NX", "ex", "2"]),
            Some((4, Unit::Seconds))
        );
        assert_eq!(RelativeTtl::find_option(3, &["SET", "k", "v", "PX"]), None);
        assert_eq!(RelativeTtl::find_option(3, &["SET", "px", "v"]), None);
        assert_eq!(
            AbsoluteTtl::find_option(3, false, &["SET", "k", "v", "GET", "pxat", "5"]),
            Some((4, Unit::Milliseconds))
        );
        assert_eq!(
            AbsoluteTtl::find_option(2, true, &["HGETEX", "h", "EXAT", "5", "FIELDS", "1", "f"]),
            Some((2, Unit::Seconds))
        );
        assert_eq!(
            AbsoluteTtl::find_option(2, true, &["HSETEX", "h", "FIELDS", "1", "PXAT", "7"]),
            None
        );
        assert!(lookup(b"HPEXPIREAT").absolute_ttl.unwrap().is_field());
        assert!(lookup(b"hsetex").absolute_ttl.unwrap().is_field());
        assert!(!lookup(b"GETEX").absolute_ttl.unwrap().is_field());
        assert!(!lookup(b"EXPIREAT").absolute_ttl.unwrap().is_field());
        assert_eq!(lookup(b"HSET").absolute_ttl, None);
        // RESTORE: relative without ABSTTL, absolute with it.
        let r = RestoreTtl::RESTORE;
        assert!(r.absolute(&["RESTORE", "k", "5", "p", "REPLACE", "absttl"]));
        assert!(!r.absolute(&["RESTORE", "k", "5", "p"]));
        assert!(!r.complete(&["RESTORE", "k", "5"]));
        // RESTORE-ASKING: the same arguments, made absolute the same way.
        assert_eq!(
            lookup(b"restore-asking").relative_ttl,
            Some(RelativeTtl::Restore(r))
        );
        assert_eq!(Unit::Seconds.ms(), 1000);
    }

    #[test]
    fn stream_trims() {
        assert_eq!(lookup(b"XADD").stream_trim, Some(StreamTrim::Xadd));
        assert_eq!(lookup(b"xtrim").stream_trim, Some(StreamTrim::Xtrim));
        assert_eq!(lookup(b"XDEL").stream_trim, None);
    }
}
