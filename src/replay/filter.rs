//! Selective restore: `--db` and `--match` pick a subset of keys. Keys of the snapshot are
//! kept or dropped one by one; a replicated command is kept when every key it touches is
//! selected, dropped when none is, and applied whole (and counted) when it touches both.
//! Pure: glob matching as Redis' `stringmatchlen` does it, and the key positions of commands.

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
}

impl Filter {
    pub fn is_all(&self) -> bool {
        self.dbs.is_empty() && self.patterns.is_empty()
    }

    pub fn db_selected(&self, db: u32) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    pub fn key_selected(&self, db: u32, key: &[u8]) -> bool {
        self.db_selected(db)
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, key)))
    }

    /// The verdict for a replicated command running in `db`.
    pub fn command(&self, db: u32, args: &[impl AsRef<[u8]>]) -> Verdict {
        if self.is_all() {
            return Verdict::Keep;
        }
        let Some(name) = args.first().map(|a| a.as_ref().to_ascii_lowercase()) else {
            return Verdict::Keep;
        };
        match name.as_slice() {
            // Connection state and transactions: always kept (empty transactions are harmless).
            b"select" | b"multi" | b"exec" | b"ping" | b"replconf" => return Verdict::Keep,
            // Whole-database commands.
            b"flushall" => {
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
            b"flushdb" => {
                return if !self.db_selected(db) {
                    Verdict::Drop
                } else if self.patterns.is_empty() {
                    Verdict::Keep
                } else {
                    Verdict::Mixed
                }
            }
            b"swapdb" => {
                let a = args
                    .get(1)
                    .and_then(|a| crate::resp::scanner::parse_u64(a.as_ref()));
                let b = args
                    .get(2)
                    .and_then(|a| crate::resp::scanner::parse_u64(a.as_ref()));
                return match (a, b) {
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
            b"function" | b"script" | b"publish" | b"spublish" => return Verdict::Keep,
            _ => {}
        }
        let keys = command_keys(&name, args);
        let Some(keys) = keys else {
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
        if name == b"move" || name == b"copy" {
            let other = if name == b"move" {
                args.get(2)
                    .and_then(|a| crate::resp::scanner::parse_u64(a.as_ref()))
            } else {
                args.iter()
                    .position(|a| a.as_ref().eq_ignore_ascii_case(b"db"))
                    .and_then(|i| args.get(i + 1))
                    .and_then(|a| crate::resp::scanner::parse_u64(a.as_ref()))
            };
            if let Some(o) = other {
                total += 1;
                if self.db_selected(o as u32) && selected > 0 {
                    selected += 1;
                }
            }
        }
        match selected {
            0 => Verdict::Drop,
            n if n == total => Verdict::Keep,
            _ => Verdict::Mixed,
        }
    }
}

/// The keys a write command touches, by its name (lower case). `None` for a shape this table
/// does not know.
fn command_keys<'a, A: AsRef<[u8]>>(name: &[u8], args: &'a [A]) -> Option<Vec<&'a [u8]>> {
    let a = |i: usize| args.get(i).map(|x| x.as_ref());
    let from = |i: usize| args.iter().skip(i).map(|x| x.as_ref()).collect::<Vec<_>>();
    let num = |i: usize| {
        a(i).and_then(crate::resp::scanner::parse_u64)
            .map(|n| n as usize)
    };
    Some(match name {
        // Every argument is a key.
        b"del" | b"unlink" | b"touch" | b"exists" | b"watch" => from(1),
        // Alternating key value.
        b"mset" | b"msetnx" => args.iter().skip(1).step_by(2).map(|x| x.as_ref()).collect(),
        // Two keys.
        b"rename" | b"renamenx" | b"smove" | b"lmove" | b"rpoplpush" | b"blmove"
        | b"brpoplpush" | b"copy" | b"geosearchstore" | b"zrangestore" => {
            vec![a(1)?, a(2)?]
        }
        // Destination, then all keys.
        b"sinterstore" | b"sunionstore" | b"sdiffstore" | b"pfmerge" => from(1),
        b"bitop" => from(2),
        // Destination, numkeys, keys.
        b"zunionstore" | b"zinterstore" | b"zdiffstore" => {
            let n = num(2)?;
            let mut v = vec![a(1)?];
            v.extend(args.iter().skip(3).take(n).map(|x| x.as_ref()));
            v
        }
        // numkeys first.
        b"lmpop" | b"zmpop" | b"blmpop" | b"bzmpop" | b"sintercard" | b"zintercard" => {
            let base = if name.starts_with(b"b") { 2 } else { 1 };
            let n = num(base)?;
            args.iter()
                .skip(base + 1)
                .take(n)
                .map(|x| x.as_ref())
                .collect()
        }
        b"eval" | b"evalsha" | b"eval_ro" | b"evalsha_ro" | b"fcall" | b"fcall_ro" => {
            let n = num(2)?;
            args.iter().skip(3).take(n).map(|x| x.as_ref()).collect()
        }
        // Subcommand, then the key.
        b"xgroup" | b"object" => vec![a(2)?],
        // Everything else that replicates: the key is the first argument.
        _ => vec![a(1)?],
    })
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
        ];
        for (filter, db, args, want) in cases {
            assert_eq!(filter.command(*db, args), *want, "db {db} {args:?}");
        }
        assert!(dbf.key_selected(1, b"x") && !dbf.key_selected(2, b"x"));
    }
}
