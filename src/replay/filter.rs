//! Selective restore: `--db` and `--match` pick a subset of keys. Keys of the snapshot are
//! kept or dropped one by one; a replicated command is kept when every key it touches is
//! selected, dropped when none is, and applied whole (and counted) when it touches both.
//! Pure: glob matching as Redis' `stringmatchlen` does it; which command touches what comes
//! from the command table ([`crate::resp::commands`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::resp::commands::{self, CommandInfo, Databases, Kind};
use crate::resp::scanner::parse_u64;

/// What a command touches, for the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key it touches is selected (or the filter selects everything).
    Keep,
    /// No key it touches is selected.
    Drop,
    /// Some keys selected, some not: applied whole, counted in the report.
    Mixed,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub dbs: Vec<u32>,
    pub patterns: Vec<Vec<u8>>,
    /// One shard of a cluster archive: keys by the owner of their slot.
    pub slots: Option<SlotFilter>,
}

/// A shard's keys by slot ownership (see `crate::cluster::restore`): the keys of the slots
/// the shard owns, or (`foreign`) those of the other slots except the keys the owner holds.
#[derive(Clone, Default)]
pub struct SlotFilter {
    /// Indexed by slot: the shard owns it.
    pub owned: Arc<Vec<bool>>,
    /// Select the keys of the slots the shard does not own, instead of those it owns.
    pub foreign: bool,
    /// With `foreign`: keys left out all the same (their slot's owner holds them).
    pub except: Arc<HashSet<Vec<u8>>>,
    /// Keys of slots the shard does not own met so far (counted when not `foreign`).
    pub foreign_seen: Arc<AtomicU64>,
}

impl std::fmt::Debug for SlotFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotFilter")
            .field("owned", &self.owned.iter().filter(|o| **o).count())
            .field("foreign", &self.foreign)
            .field("except", &self.except.len())
            .finish()
    }
}

impl SlotFilter {
    /// Whether the pass takes `key`; a key of a slot the shard does not own is counted.
    pub fn selects(&self, key: &[u8]) -> bool {
        let (owned, selected) = self.decide(key);
        if !self.foreign && !owned {
            self.foreign_seen.fetch_add(1, Relaxed);
        }
        selected
    }

    /// (the shard owns the key's slot, the pass takes the key)
    fn decide(&self, key: &[u8]) -> (bool, bool) {
        let owned = self
            .owned
            .get(crate::cluster::slot::key_slot(key) as usize)
            .copied()
            .unwrap_or(false);
        let selected = if self.foreign {
            !owned && !self.except.contains(key)
        } else {
            owned
        };
        (owned, selected)
    }
}

impl Filter {
    pub fn is_all(&self) -> bool {
        self.dbs.is_empty() && self.patterns.is_empty() && self.slots.is_none()
    }

    pub fn db_selected(&self, db: u32) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    pub fn key_selected(&self, db: u32, key: &[u8]) -> bool {
        self.db_and_pattern(db, key) && self.slots.as_ref().is_none_or(|s| s.selects(key))
    }

    fn db_and_pattern(&self, db: u32, key: &[u8]) -> bool {
        self.db_selected(db)
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, key)))
    }

    /// Like [`key_selected`](Self::key_selected) for a key found in the destination rather
    /// than in the archive: nothing is counted.
    pub fn key_in_scope(&self, db: u32, key: &[u8]) -> bool {
        self.db_and_pattern(db, key) && self.slots.as_ref().is_none_or(|s| s.decide(key).1)
    }

    /// The verdict for a replicated command running in `db`, and whether it brings keys in
    /// from a database the filter leaves out (`MOVE`/`COPY … DB` out of it, `SWAPDB` of it with
    /// a selected one), which a restore cannot reproduce.
    pub fn judge(&self, db: u32, args: &[impl AsRef<[u8]>]) -> (Verdict, bool) {
        if self.is_all() || args.is_empty() {
            return (Verdict::Keep, false);
        }
        let info = commands::info(args);
        (self.verdict(db, args, info), self.brings_in(db, args, info))
    }

    /// The verdict alone, `info` being the command's.
    fn verdict(&self, db: u32, args: &[impl AsRef<[u8]>], info: &CommandInfo) -> Verdict {
        let number = |i: usize| args.get(i).and_then(|a| parse_u64(a.as_ref()));
        match info.kind {
            // Connection state and transactions: always kept (empty transactions are harmless).
            // So are the replication link's own commands, and server-wide scripts.
            Kind::Select { .. } | Kind::Transaction(_) | Kind::Internal | Kind::Scripts => {
                return Verdict::Keep
            }
            // A shard's FLUSHALL/FLUSHDB/TRIMSLOTS: each pass deletes the keys it selects (see
            // `CommandSink::flush_selected`, `CommandSink::delete_slots`). SWAPDB: a cluster has one
            // database.
            Kind::Databases(_) if self.slots.is_some() => return Verdict::Mixed,
            Kind::Databases(Databases::All) => {
                return if self.dbs.is_empty() {
                    if self.patterns.is_empty() {
                        Verdict::Keep
                    } else {
                        Verdict::Mixed
                    }
                } else {
                    Verdict::Mixed
                }
            }
            // The keys of some slots in the selected database: as for `FLUSHDB`, and applied
            // by deleting them (`CommandSink::delete_slots`).
            Kind::Databases(Databases::Selected | Databases::Slots(_)) => {
                return if !self.db_selected(db) {
                    Verdict::Drop
                } else if self.patterns.is_empty() {
                    Verdict::Keep
                } else {
                    Verdict::Mixed
                }
            }
            Kind::Databases(Databases::Swap { a, b }) => {
                return match (number(a), number(b)) {
                    (Some(a), Some(b)) => {
                        match (self.db_selected(a as u32), self.db_selected(b as u32)) {
                            (true, true) if self.patterns.is_empty() => Verdict::Keep,
                            (false, false) => Verdict::Drop,
                            _ => Verdict::Mixed,
                        }
                    }
                    _ => Verdict::Mixed,
                };
            }
            Kind::Write => {}
        }
        let Some(keys) = info.keys.of(args) else {
            // Unknown shape: apply it whole, and count it.
            return Verdict::Mixed;
        };
        let mut selected = 0usize;
        let mut total = 0usize;
        for k in keys {
            total += 1;
            if self.key_selected(db, k) {
                selected += 1;
            }
        }
        // Cross-database moves touch another database too.
        if let Some(o) = info.other_db.and_then(|o| o.db(args)) {
            total += 1;
            if self.db_selected(o as u32) && selected > 0 {
                selected += 1;
            }
        }
        match selected {
            0 => Verdict::Drop,
            n if n == total => Verdict::Keep,
            _ => Verdict::Mixed,
        }
    }

    /// Whether `args`, running in `db`, brings keys from a database the filter leaves out into
    /// one it selects: `MOVE`/`COPY … DB` out of an unselected database, or `SWAPDB` of a
    /// selected with an unselected one. A restore never held the database they come from, so
    /// those keys end up missing (or, for `SWAPDB`, the selected database holds what the
    /// restore had of the other): counted and warned of, as it cannot be reproduced.
    fn brings_in(&self, db: u32, args: &[impl AsRef<[u8]>], info: &CommandInfo) -> bool {
        if self.dbs.is_empty() {
            return false;
        }
        let number = |i: usize| args.get(i).and_then(|a| parse_u64(a.as_ref()));
        if let Kind::Databases(Databases::Swap { a, b }) = info.kind {
            return match (number(a), number(b)) {
                (Some(a), Some(b)) => self.db_selected(a as u32) != self.db_selected(b as u32),
                _ => false,
            };
        }
        let Some(to) = info.other_db.and_then(|o| o.db(args)) else {
            return false;
        };
        if self.db_selected(db) || !self.db_selected(to as u32) {
            return false;
        }
        // The keys the command writes in the selected database: MOVE's key, COPY's
        // destination (the last key it names).
        info.keys
            .of(args)
            .and_then(|keys| keys.last())
            .is_some_and(|k| self.key_selected(to as u32, k))
    }
}

/// Redis' glob: `*`, `?`, `[abc]`, `[^abc]`, `[a-z]`, and `\x` to escape.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Backtracking point for the last `*`.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches `c` against the class starting at `pattern[p] == b'['`. Returns whether it matched
/// and the position after the class; `None` if the class is not closed.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pattern.len() && (pattern[j] != b']' || first) {
        first = false;
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (lo, hi) = if pattern[j] <= pattern[j + 2] {
                (pattern[j], pattern[j + 2])
            } else {
                (pattern[j + 2], pattern[j])
            };
            matched |= lo <= c && c <= hi;
            j += 3;
        } else {
            matched |= pattern[j] == c;
            j += 1;
        }
    }
    if j >= pattern.len() {
        return None;
    }
    Some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let yes = [
            ("*", ""),
            ("*", "abc"),
            ("user:*", "user:42"),
            ("u?er:*", "user:"),
            ("h[ae]llo", "hello"),
            ("h[^e]llo", "hallo"),
            ("h[a-c]llo", "hbllo"),
            ("a\\*b", "a*b"),
            ("*:*:x", "a:b:c:x"),
            ("[]]", "]"),
        ];
        for (p, s) in yes {
            assert!(glob_match(p.as_bytes(), s.as_bytes()), "{p} {s}");
        }
        let no = [
            ("user:*", "users:1"),
            ("h[^e]llo", "hello"),
            ("h[a-c]llo", "hdllo"),
            ("a\\*b", "axb"),
            ("?", ""),
            ("abc", "abcd"),
            ("[abc", "a"),
        ];
        for (p, s) in no {
            assert!(!glob_match(p.as_bytes(), s.as_bytes()), "{p} {s}");
        }
    }

    fn f(dbs: &[u32], pats: &[&str]) -> Filter {
        Filter {
            dbs: dbs.to_vec(),
            patterns: pats.iter().map(|p| p.as_bytes().to_vec()).collect(),
            slots: None,
        }
    }

    #[test]
    fn command_verdicts() {
        use Verdict::*;
        let flt = f(&[], &["user:*"]);
        let dbf = f(&[1], &[]);
        let all = Filter::default();
        let cases: &[(&Filter, u32, &[&str], Verdict)] = &[
            (&flt, 0, &["SET", "user:1", "x"], Keep),
            (&flt, 0, &["SET", "order:1", "x"], Drop),
            (&flt, 0, &["DEL", "user:1", "order:1"], Mixed),
            (&flt, 0, &["MSET", "user:1", "a", "user:2", "b"], Keep),
            (&flt, 0, &["RENAME", "user:1", "gone"], Mixed),
            (
                &flt,
                0,
                &["ZUNIONSTORE", "user:z", "2", "user:a", "other"],
                Mixed,
            ),
            (&flt, 0, &["XGROUP", "CREATE", "user:s", "g", "$"], Keep),
            (&flt, 0, &["MULTI"], Keep),
            (&flt, 0, &["FLUSHDB"], Mixed),
            (&dbf, 0, &["SET", "k", "v"], Drop),
            (&dbf, 1, &["SET", "k", "v"], Keep),
            (&dbf, 0, &["FLUSHDB"], Drop),
            (&dbf, 1, &["MOVE", "k", "0"], Mixed),
            (&dbf, 0, &["SWAPDB", "0", "2"], Drop),
            (&dbf, 0, &["SWAPDB", "0", "1"], Mixed),
            (&all, 5, &["ANYTHING"], Keep),
            // Redis 8.4's TRIMSLOTS (and SFLUSH): the selected database's keys of some slots.
            (&all, 0, &["TRIMSLOTS", "RANGES", "1", "0", "99"], Keep),
            (&flt, 0, &["TRIMSLOTS", "RANGES", "1", "0", "99"], Mixed),
            (&dbf, 0, &["TRIMSLOTS", "RANGES", "1", "0", "99"], Drop),
            (&dbf, 1, &["SFLUSH", "0", "16383", "ASYNC"], Keep),
        ];
        for (filter, db, args, want) in cases {
            assert_eq!(filter.judge(*db, args).0, *want, "db {db} {args:?}");
        }
        assert!(dbf.key_selected(1, b"x") && !dbf.key_selected(2, b"x"));
    }

    #[test]
    fn keys_brought_in_from_an_unselected_database() {
        let dbf = f(&[1], &[]);
        let both = f(&[1], &["user:*"]);
        let cases: &[(&Filter, u32, &[&str], bool)] = &[
            (&dbf, 0, &["MOVE", "k", "1"], true),
            (&dbf, 0, &["MOVE", "k", "2"], false),
            (&dbf, 1, &["MOVE", "k", "0"], false),
            (&dbf, 0, &["COPY", "a", "b", "DB", "1"], true),
            (&dbf, 0, &["COPY", "a", "b", "db", "1", "REPLACE"], true),
            (&dbf, 0, &["COPY", "a", "b"], false),
            (&dbf, 0, &["SWAPDB", "0", "1"], true),
            (&dbf, 5, &["SWAPDB", "1", "3"], true),
            (&dbf, 0, &["SWAPDB", "0", "2"], false),
            (&dbf, 1, &["SET", "k", "v"], false),
            (&both, 0, &["MOVE", "user:1", "1"], true),
            (&both, 0, &["MOVE", "order:1", "1"], false),
            (&both, 0, &["COPY", "order:1", "user:1", "DB", "1"], true),
            (&f(&[], &["user:*"]), 0, &["MOVE", "user:1", "1"], false),
        ];
        for (filter, db, args, want) in cases {
            assert_eq!(filter.judge(*db, args).1, *want, "db {db} {args:?}");
        }
    }

    #[test]
    fn slot_owners() {
        use crate::cluster::slot::{key_slot, table};
        let s = key_slot(b"a");
        let owner = SlotFilter {
            owned: Arc::new(table(&[(s, s)])),
            ..Default::default()
        };
        let f = Filter {
            slots: Some(owner.clone()),
            ..Default::default()
        };
        assert!(!f.is_all());
        assert!(f.key_selected(0, b"a") && f.key_selected(0, b"{a}x"));
        assert!(!f.key_selected(0, b"b"));
        assert_eq!(owner.foreign_seen.load(Relaxed), 1);
        assert_eq!(f.judge(0, &["SET", "b", "1"]).0, Verdict::Drop);
        assert_eq!(f.judge(0, &["FLUSHALL"]).0, Verdict::Mixed);
        assert_eq!(
            f.judge(0, &["TRIMSLOTS", "RANGES", "1", "5", "6"]).0,
            Verdict::Mixed
        );
        let foreign = Filter {
            slots: Some(SlotFilter {
                foreign: true,
                except: Arc::new([b"c".to_vec()].into_iter().collect()),
                ..owner
            }),
            ..Default::default()
        };
        assert!(!foreign.key_selected(0, b"a"));
        assert!(foreign.key_selected(0, b"b") && !foreign.key_selected(0, b"c"));
        // Both passes delete what they select (the sink scopes it).
        assert_eq!(foreign.judge(0, &["FLUSHALL"]).0, Verdict::Mixed);
    }
}
