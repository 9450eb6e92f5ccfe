//! A live server as the destination of a restore: the [`Sink`] that sends the snapshot's keys
//! (by `RESTORE` when the target takes the payload's version, otherwise as commands, see
//! [`keys`]) and then the replayed commands into a [`LiveTarget`].
//!
//! Why it exists apart from [`live`]: the connection knows nothing of RDB or of what commands
//! mean, while a replay into a running server has to: expiries that could pass while the
//! replay runs are moved out of the way and moved back at the end ([`ExpiryShift`]), and stream
//! trims a replica accepts but a client may not send are rewritten
//! ([`stream_trim_for_client`]).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use super::filter::Filter;
use super::keys::{self, KeyConverter};
use super::live::LiveTarget;
use super::restore::{Report, RestoreError};
use super::sink::{CommandSink, Opener, Outgoing, RdbHeader, Sink, SnapshotNeeds};
use crate::rdb::{self, Event};
use crate::resp::commands::{self, AbsoluteTtl, Kind, StreamTrim, Unit};

/// A live server to restore into, before the snapshot's header is known.
#[derive(Clone, Debug)]
pub struct LiveOpener {
    /// `redis://[user[:password]@]host:port`.
    pub url: String,
    pub password: Option<String>,
    /// How long connecting, and each wait for a reply, may take.
    pub timeout: Duration,
    /// Flush a non-empty target.
    pub force: bool,
    /// Values larger than this go as batched commands instead of one RESTORE.
    pub max_restore_bytes: usize,
    /// How expiries are moved during the replay (from the restore's start).
    pub shift: ExpiryShift,
}

impl Opener for LiveOpener {
    type Sink = LiveSink;

    fn needs(&self) -> SnapshotNeeds {
        SnapshotNeeds {
            events: true,
            max_raw_value: self.max_restore_bytes,
        }
    }

    async fn open(self, header: RdbHeader) -> Result<LiveSink, RestoreError> {
        self.open_checked(header, false).await
    }
}

/// A [`LiveOpener`] for a target an earlier restore into it already checked (or flushed):
/// the next shards of a cluster archive restored into one server. Its keys are not counted,
/// nor flushed.
#[derive(Clone, Debug)]
pub struct ContinuingOpener(pub LiveOpener);

impl Opener for ContinuingOpener {
    type Sink = LiveSink;

    fn needs(&self) -> SnapshotNeeds {
        self.0.needs()
    }

    async fn open(self, header: RdbHeader) -> Result<LiveSink, RestoreError> {
        self.0.open_checked(header, true).await
    }
}

impl LiveOpener {
    /// Connects; unless `checked`, the target must be empty (or is flushed with `force`).
    async fn open_checked(
        self,
        header: RdbHeader,
        checked: bool,
    ) -> Result<LiveSink, RestoreError> {
        let mut target =
            LiveTarget::connect_with_timeout(&self.url, self.password.clone(), self.timeout)
                .await?;
        let n = if checked {
            0
        } else {
            target.key_count().await?
        };
        if n > 0 {
            if !self.force {
                return Err(RestoreError::TargetNotEmpty { keys: n });
            }
            target.flush_all().await?;
        }
        let accepts = target.rdb_version().await?;
        let restore_version = payload_version(header.magic, header.version, accepts);
        let conv = KeyConverter::new(keys::ConvertConfig {
            restore_version,
            max_restore_bytes: self.max_restore_bytes,
            max_batch_bytes: 1 << 20,
            // Every expiry is moved ahead during the replay, field TTLs included, and
            // those inside a payload cannot be.
            field_ttls_by_restore: false,
            // Redis 7.0+ (RDB 10) and every Valkey.
            stream_entries_added: accepts >= 10,
        });
        Ok(LiveSink {
            url: self.url,
            password: self.password,
            timeout: self.timeout,
            db: 0,
            target: Box::new(target),
            conv,
            shift: self.shift,
            by_restore: restore_version.is_some(),
            cmds: Vec::new(),
            ttls_shifted: false,
            field_ttls_shifted: false,
            in_reserved_range: 0,
        })
    }
}

/// A live server being restored into.
pub struct LiveSink {
    /// Where the target is, for a second connection (see [`CommandSink::flush_selected`]).
    url: String,
    password: Option<String>,
    timeout: Duration,
    /// The database the replayed commands last selected.
    db: u32,
    target: Box<LiveTarget>,
    conv: KeyConverter,
    shift: ExpiryShift,
    by_restore: bool,
    /// The commands of the events at hand (reused).
    cmds: Vec<Vec<Bytes>>,
    /// An expiry was moved ahead (and must be moved back at the end).
    ttls_shifted: bool,
    /// A hash field's expiry was among them.
    field_ttls_shifted: bool,
    /// Expiries sent as they are that lie in the reserved range.
    in_reserved_range: u64,
}

impl LiveSink {
    /// Moves the expiry at `ms` as [`ExpiryShift`] says, and counts it.
    fn shift_expiry(&mut self, ms: &mut i64, field: bool) {
        match self.shift.map(*ms) {
            Moved::To(sent) => {
                *ms = sent;
                self.ttls_shifted = true;
                self.field_ttls_shifted |= field;
            }
            Moved::InReserved => self.in_reserved_range += 1,
            Moved::Same => {}
        }
    }
}

impl LiveSink {
    /// Deletes the keys of database `db` (every database: `None`) that `pick` takes: they
    /// are found on a connection of their own (this one may be inside a `MULTI`) once
    /// everything sent before is answered, and deleted on this one, in order with the
    /// commands around them.
    async fn delete_where(
        &mut self,
        db: Option<u32>,
        pick: impl Fn(u32, &[u8]) -> bool,
    ) -> Result<(), RestoreError> {
        self.target.sync().await?;
        let mut scan =
            LiveTarget::connect_with_timeout(&self.url, self.password.clone(), self.timeout)
                .await?;
        let dbs = match db {
            Some(db) => vec![db],
            None => scan.databases().await?,
        };
        for d in dbs {
            let keys = scan.scan_keys(d, |k| pick(d, k)).await?;
            if keys.is_empty() {
                continue;
            }
            let select = |db: u32| [Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
            if d != self.db {
                self.target.send(&select(d)).await?;
            }
            // A cluster node deletes the keys of one slot per command.
            let mut by_slot = std::collections::BTreeMap::<u16, Vec<Bytes>>::new();
            for k in keys {
                by_slot
                    .entry(crate::cluster::slot::key_slot(&k))
                    .or_default()
                    .push(k);
            }
            for chunk in by_slot.values().flat_map(|keys| keys.chunks(512)) {
                let mut del = Vec::with_capacity(chunk.len() + 1);
                del.push(Bytes::from_static(b"DEL"));
                del.extend(chunk.iter().cloned());
                self.target.send(&del).await?;
            }
            if d != self.db {
                self.target.send(&select(self.db)).await?;
            }
        }
        Ok(())
    }
}

impl CommandSink for LiveSink {
    async fn command(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
        if let Kind::Select { .. } = commands::info(cmd.args()).kind {
            if let Some(db) = cmd
                .args()
                .get(1)
                .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
            {
                self.db = db;
            }
        }
        let mut args = Cow::Borrowed(cmd.args());
        if let Some(a) = stream_trim_for_client(&args) {
            args = Cow::Owned(a);
        }
        let shifted = shift_ttl(&args, &self.shift);
        self.ttls_shifted |= shifted.moved;
        self.field_ttls_shifted |= shifted.moved && shifted.field;
        self.in_reserved_range += u64::from(shifted.reserved);
        match (shifted.args, cmd, args) {
            (Some(a), _, _) => self.target.send(&a).await?,
            // Unchanged: its archived bytes go as they are.
            (None, Outgoing::Archived { args, raw }, Cow::Borrowed(_)) => {
                self.target.send_encoded(args, raw).await?
            }
            (None, _, args) => self.target.send(&args).await?,
        }
        Ok(())
    }

    /// The keys are found on a connection of their own (this one may be inside a
    /// `MULTI`) once everything sent before is answered, and deleted on this one, in order with
    /// the commands around them.
    async fn flush_selected(
        &mut self,
        db: Option<u32>,
        filter: &Filter,
    ) -> Result<bool, RestoreError> {
        self.delete_where(db, |d, k| filter.key_in_scope(d, k))
            .await?;
        Ok(true)
    }

    /// As a scoped flush, limited to the keys of those slots: the target need not know the
    /// command (it came with Redis 8.4) nor be a cluster node.
    async fn delete_slots(
        &mut self,
        db: u32,
        ranges: &[(u16, u16)],
        filter: &Filter,
    ) -> Result<bool, RestoreError> {
        self.delete_where(Some(db), |d, k| {
            let s = crate::cluster::slot::key_slot(k);
            ranges.iter().any(|&(a, b)| (a..=b).contains(&s)) && filter.key_in_scope(d, k)
        })
        .await?;
        Ok(true)
    }

    fn tolerate_errors(&mut self, on: bool) {
        self.target.tolerate_errors(on);
    }
}

impl Sink for LiveSink {
    fn values_by_restore(&self) -> bool {
        self.by_restore
    }

    async fn snapshot(&mut self, _raw: &Bytes, events: &mut [Event]) -> Result<(), RestoreError> {
        for ev in events.iter_mut() {
            match ev {
                Event::KeyStart {
                    expire_ms: Some(ms),
                    ..
                } => self.shift_expiry(ms, false),
                Event::HashField {
                    expire_ms: Some(ms),
                    ..
                } => self.shift_expiry(ms, true),
                _ => {}
            }
        }
        for ev in events.iter() {
            self.conv.push(ev, &mut self.cmds)?;
            for c in self.cmds.drain(..) {
                self.target.send(&c).await?;
            }
        }
        Ok(())
    }

    async fn snapshot_done(&mut self, keys: u64, report: &mut Report) -> Result<(), RestoreError> {
        self.target.sync().await?;
        self.target.snapshot_applied(keys);
        let st = self.conv.stats();
        report.keys_by_restore = st.keys_by_restore;
        report.keys_by_commands = st.keys_by_commands;
        Ok(())
    }

    async fn finish(mut self, report: &mut Report) -> Result<(), RestoreError> {
        self.target.sync().await?;
        let (failed, first) = self.target.tolerated_errors();
        report.commands_mixed_failed = Some(failed);
        if let Some(first) = first {
            tracing::warn!(
                count = failed,
                "{failed} commands touching selected and unselected keys failed on the target, as they would on a replica (first: {first}): a key they move from outside the selection is missing"
            );
        }
        report.ttls_shifted = self.ttls_shifted;
        report.field_ttls_shifted = self.field_ttls_shifted;
        report.expiries_in_reserved_range = self.in_reserved_range;
        if self.ttls_shifted {
            report.expiries_moved_back = self
                .target
                .unshift_ttls(
                    RESERVED_FROM_MS..self.shift.reserved_end(),
                    self.shift.floor,
                    self.field_ttls_shifted,
                )
                .await?;
        }
        if self.in_reserved_range > 0 {
            tracing::warn!(
                count = self.in_reserved_range,
                "{} expiries lie where a live restore keeps the expiries it moves ({} to {} ms since the epoch) and may have been moved wrongly: restore to files (--output-dir) for those",
                self.in_reserved_range,
                RESERVED_FROM_MS,
                self.shift.reserved_end()
            );
        }
        Ok(())
    }

    /// What was applied stays: the target's errors already say that it holds a partial
    /// restore and how to clear it.
    async fn abort(self) {}
}

/// The RESTORE payload version for values of an RDB `(magic, version)` on a target that accepts
/// payloads up to `accepts`; `None` when the target cannot take them (commands instead).
pub fn payload_version(magic: rdb::Magic, version: u32, accepts: u16) -> Option<u16> {
    let v = u16::try_from(version).ok()?;
    // Valkey 9's RDB 80 and Redis' 12+ are different families: only the same family, and only
    // versions the target knows.
    let valkey_family = |x: u16| x >= 80;
    if magic == rdb::Magic::Valkey && !valkey_family(accepts) {
        return None;
    }
    if valkey_family(accepts) && (12..80).contains(&v) {
        return None;
    }
    (v <= accepts).then_some(v)
}

/// Where a live replay puts the expiries it moves, in ms since the epoch: 2^45 + 2^44 (in the
/// year 3642), below the largest hash field expiry Redis 7.4 accepts (2^46 - 1, t_hash.c's
/// `HFE_MAX_ABS_TIME_MSEC`), and small enough for the Lua numbers (doubles) of the script that
/// moves them back to hold exactly. See [`ExpiryShift`].
pub const RESERVED_FROM_MS: i64 = (1 << 45) + (1 << 44);
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Expiries this far before the restore's start keep their exact time through the move (a
/// target whose clock is behind the restorer's may not have reached them yet); older ones are
/// all moved to the start of the reserved range, and so moved back to this far in the past.
const KEPT_PAST_MS: i64 = 366 * DAY_MS;
/// Expiries this far or further after the restore's start cannot pass while it runs: they are
/// sent as they are, never moved.
const HORIZON_MS: i64 = 10 * 366 * DAY_MS;

/// How a live replay keeps the target from expiring keys and hash fields itself.
///
/// A replica never expires keys on its own: it applies the master's DEL when the master expired
/// them, and so must a replay, or a key whose TTL passed between a write and the restore would
/// be re-created by the writes that followed it on the master. So every expiry that could pass
/// before the restore completes (earlier than [`HORIZON_MS`] after its start) is moved into a
/// reserved range [`RESERVED_FROM_MS`, `reserved_end()`), keeping its offset from `floor`, and
/// moved back exactly once the replay is complete ([`LiveTarget::unshift_ttls`]). Later
/// expiries are sent as they are, so nothing is ever moved near a server's limit (Redis refuses
/// field TTLs past 2^46 - 1 ms, and key TTLs past i64::MAX), and every time is computed in
/// integers. An expiry sent as it is that happens to lie in the reserved range would be moved
/// "back" too: such times are counted ([`Report::expiries_in_reserved_range`]) and warned about.
/// (Loading files needs none of this: a server does not expire keys while it loads.)
///
/// The move does not keep the order of times, so `GT`/`LT` conditions of `PEXPIREAT` (which a
/// master propagates only when they held) are dropped, and those of `HPEXPIREAT` (which Valkey
/// propagates for every field named, also those whose condition failed) are evaluated on the
/// target by a script that compares the real times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryShift {
    /// Expiries before this are moved to [`RESERVED_FROM_MS`] (they have passed: moved back,
    /// they delete their key or field, as on the master).
    pub floor: i64,
    /// Expiries at or after this are not moved.
    pub horizon: i64,
}

/// What [`ExpiryShift::map`] does with one expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Sent as it is.
    Same,
    /// Sent as it is, but it lies in the reserved range.
    InReserved,
    /// Sent as this time instead.
    To(i64),
}

impl ExpiryShift {
    /// The move for a restore that starts at `now_ms` (the restorer's clock).
    pub fn new(now_ms: i64) -> ExpiryShift {
        ExpiryShift {
            floor: now_ms.saturating_sub(KEPT_PAST_MS),
            horizon: now_ms.saturating_add(HORIZON_MS),
        }
    }

    /// The end (exclusive) of the reserved range.
    pub fn reserved_end(&self) -> i64 {
        RESERVED_FROM_MS.saturating_add(self.horizon.saturating_sub(self.floor))
    }

    /// The time to send for the absolute expiry `at` (ms).
    pub fn map(&self, at: i64) -> Moved {
        if at < self.horizon {
            Moved::To(RESERVED_FROM_MS + (at.max(self.floor) - self.floor))
        } else if at >= RESERVED_FROM_MS && at < self.reserved_end() {
            Moved::InReserved
        } else {
            Moved::Same
        }
    }

    /// The real time of a time found on the target (what the script that moves times back
    /// computes).
    pub fn unmap(&self, sent: i64) -> i64 {
        if sent >= RESERVED_FROM_MS && sent < self.reserved_end() {
            sent - RESERVED_FROM_MS + self.floor
        } else {
            sent
        }
    }
}

/// What [`shift_ttl`] did to one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shifted {
    /// The command to send instead; `None`: send it as it is.
    pub args: Option<Vec<Bytes>>,
    /// An expiry was moved into the reserved range (it must be moved back at the end).
    pub moved: bool,
    /// The expiry is a hash field's.
    pub field: bool,
    /// An expiry sent as it is lies in the reserved range.
    pub reserved: bool,
}

/// Sets hash field TTLs with `GT`/`LT` as the master did: compares the real new time with each
/// field's real current time (times in the reserved range are moved back first), and sets the
/// time to send on the fields where the condition holds. KEYS[1]: the hash; ARGV: reserved
/// range start and end, floor, `GT` or `LT`, the real time, the time to send, the fields.
const FIELD_CONDITION_SCRIPT: &str = r#"
local lo, hi, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cond, new = ARGV[4], tonumber(ARGV[5])
local n = 0
for i = 7, #ARGV do
  local t = redis.call('HPEXPIRETIME', KEYS[1], 'FIELDS', 1, ARGV[i])[1]
  if t >= lo and t < hi then t = t - lo + floor end
  local ok
  if cond == 'GT' then ok = t >= 0 and new > t else ok = t == -1 or (t >= 0 and new < t) end
  if ok then
    redis.call('HPEXPIREAT', KEYS[1], ARGV[6], 'FIELDS', 1, ARGV[i])
    n = n + 1
  end
end
return n
"#;

/// For a live target: the command that sets the same expiry as `args` with the expiry moved
/// as `shift` says (see [`ExpiryShift`]): key TTLs (`PEXPIREAT`, `EXPIREAT`, `SET … PXAT|EXAT`,
/// `GETEX`, `RESTORE … ABSTTL`) and hash field TTLs (`HPEXPIREAT`, `HEXPIREAT`, `HSETEX`,
/// `HGETEX`). Seconds become milliseconds when the time is moved.
pub fn shift_ttl(args: &[Bytes], shift: &ExpiryShift) -> Shifted {
    let num = |a: &Bytes| {
        std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    let Some(ttl) = commands::info(args).absolute_ttl else {
        return Shifted::default();
    };
    let field = ttl.is_field();
    // The time at `args[at]` (in `unit`), moved: the command with `args[name_at]` renamed to
    // `new_name` (milliseconds) when it is.
    let moved = |name_at: usize, new_name: &'static [u8], at: usize, unit: Unit| -> Shifted {
        let Some(ms) = num(&args[at]).and_then(|v| v.checked_mul(unit.ms())) else {
            return Shifted::default();
        };
        match shift.map(ms) {
            Moved::Same => Shifted::default(),
            Moved::InReserved => Shifted {
                reserved: true,
                ..Shifted::default()
            },
            Moved::To(sent) => {
                let mut out = args.to_vec();
                out[name_at] = Bytes::from_static(new_name);
                out[at] = Bytes::from(sent.to_string());
                Shifted {
                    args: Some(out),
                    moved: true,
                    field,
                    reserved: false,
                }
            }
        }
    };
    match ttl {
        // `PEXPIREAT key ms [NX|XX|GT|LT]...`: a master propagates it only when its condition
        // held, so GT/LT (which the move can invert) are dropped.
        AbsoluteTtl::Key { at, unit } if args.len() > at => {
            let mut r = moved(0, b"PEXPIREAT", at, unit);
            let base = r.args.take().unwrap_or_else(|| args.to_vec());
            let kept: Vec<Bytes> = base
                .iter()
                .enumerate()
                .filter(|(i, a)| {
                    *i <= at || !(a.eq_ignore_ascii_case(b"gt") || a.eq_ignore_ascii_case(b"lt"))
                })
                .map(|(_, a)| a.clone())
                .collect();
            if r.moved || kept.len() != args.len() {
                r.args = Some(kept);
            }
            r
        }
        // `HPEXPIREAT key ms [NX|XX|GT|LT] FIELDS n f...` (Redis 7.4+, Valkey 9+).
        AbsoluteTtl::Fields { at, unit } if args.len() > at => {
            let mut r = moved(0, b"HPEXPIREAT", at, unit);
            let cond = args
                .get(at + 1)
                .filter(|a| a.eq_ignore_ascii_case(b"gt") || a.eq_ignore_ascii_case(b"lt"));
            let (Some(cond), Some(real)) =
                (cond, num(&args[at]).and_then(|v| v.checked_mul(unit.ms())))
            else {
                return r;
            };
            let sent = r
                .args
                .as_ref()
                .map_or_else(|| Bytes::from(real.to_string()), |a| a[at].clone());
            let mut eval = vec![
                Bytes::from_static(b"EVAL"),
                Bytes::from_static(FIELD_CONDITION_SCRIPT.as_bytes()),
                Bytes::from_static(b"1"),
                args[1].clone(),
                Bytes::from(RESERVED_FROM_MS.to_string()),
                Bytes::from(shift.reserved_end().to_string()),
                Bytes::from(shift.floor.to_string()),
                Bytes::from(cond.to_ascii_uppercase()),
                Bytes::from(real.to_string()),
                sent,
            ];
            eval.extend(
                args.iter()
                    .skip(at + AbsoluteTtl::FIELDS_AFTER_TIME)
                    .cloned(),
            );
            r.args = Some(eval);
            r.field = true;
            r
        }
        // `SET key value [opts]`, `GETEX key [opts]`; `HSETEX key [opts] FIELDS n f v ...`,
        // `HGETEX key [opts] FIELDS n f ...`, whose options end at FIELDS.
        AbsoluteTtl::Option { from, fields } => {
            match AbsoluteTtl::find_option(from, fields, args) {
                Some((i, unit)) => moved(i, b"PXAT", i + 1, unit),
                None => Shifted::default(),
            }
        }
        AbsoluteTtl::Restore(rt) if rt.complete(args) => {
            if !rt.absolute(args) || num(&args[rt.at]).is_none_or(|v| v <= 0) {
                return Shifted::default();
            }
            let mut r = moved(0, b"RESTORE", rt.at, Unit::Milliseconds);
            // Keep the command's own name.
            if let Some(a) = &mut r.args {
                a[0] = args[0].clone();
            }
            r
        }
        _ => Shifted::default(),
    }
}

/// For a live target: `XADD`/`XTRIM` with an exact trim and `LIMIT` without it, or `None` to
/// send the command as it is.
///
/// A master propagates an approximate trim (`MAXLEN ~ 10 LIMIT 5`) as an exact one with the
/// stream's resulting length or first id (`MAXLEN = 7 LIMIT 5`, t_stream.c's
/// `streamRewriteTrimArgument`). Replicas and AOF loading accept that and ignore the `LIMIT`
/// (`mustObeyClient`: the limit is set to 0, no limit), but an ordinary client is refused
/// ("LIMIT cannot be used without the special ~ option"). An exact trim from a client has no
/// limit either, so dropping `LIMIT n` trims exactly what the replica trims.
pub fn stream_trim_for_client(args: &[Bytes]) -> Option<Vec<Bytes>> {
    let xadd = match commands::info(args).stream_trim? {
        StreamTrim::Xadd => true,
        StreamTrim::Xtrim => false,
    };
    let mut approx = false;
    let mut limit = None;
    // The option parser of t_stream.c's streamParseAddOrTrimArgsOrReply.
    let mut i = StreamTrim::OPTIONS_FROM;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = args[i].to_ascii_lowercase();
        if xadd && opt == b"*" {
            break;
        } else if (opt == b"maxlen" || opt == b"minid") && more > 0 {
            if more >= 2 && (args[i + 1].as_ref() == b"~" || args[i + 1].as_ref() == b"=") {
                approx = args[i + 1].as_ref() == b"~";
                i += 1;
            }
            i += 2;
        } else if opt == b"limit" && more > 0 {
            limit = Some(i);
            i += 2;
        } else if xadd && opt == b"nomkstream" {
            i += 1;
        } else {
            // XADD: the id; XTRIM: nothing else may follow.
            break;
        }
    }
    let at = limit.filter(|_| !approx)?;
    let mut out = args.to_vec();
    out.drain(at..at + 2);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Redis 8.4's `TRIMSLOTS RANGES 2 0 4999 12000 12999` as the archive holds it, replayed
    /// into a redis-server 7.0 (which has no such command): the keys of those slots that the
    /// restore wrote are deleted, in order with the commands around it; keys the pass does not
    /// select (another shard's, here another pattern's) stay.
    #[tokio::test]
    async fn trimslots_become_deletes_of_the_keys_of_those_slots() {
        use crate::cluster::slot::key_slot;
        use crate::replay::test_server::Server;
        let dir = tempfile::tempdir().unwrap();
        let server = Server::plain(dir.path());
        let mut sink = LiveOpener {
            url: server.url(),
            password: None,
            timeout: Duration::from_secs(10),
            force: false,
            max_restore_bytes: 1 << 20,
            shift: ExpiryShift::new(0),
        }
        .open(RdbHeader {
            magic: rdb::Magic::Redis,
            version: 10,
        })
        .await
        .unwrap();
        // Keys that are not the restore's (another shard's in a shared target), written
        // beside it, in the trimmed slots and out of them.
        let mut other = LiveTarget::connect(&server.url(), None).await.unwrap();
        let others: Vec<String> = (0..50).map(|i| format!("other:{i}")).collect();
        for k in &others {
            other.send(&[b("SET"), b(k), b("x")]).await.unwrap();
        }
        other.sync().await.unwrap();

        let keys: Vec<String> = (0..300)
            .map(|i| format!("k:{i}"))
            .chain((0..20).map(|i| format!("k:{{tag{i}}}:x")))
            .collect();
        for k in &keys {
            sink.command(Outgoing::Args(&[b("SET"), b(k), b("v")]))
                .await
                .unwrap();
        }
        // The stream, as 8.4 propagates it: one TRIMSLOTS with two ranges.
        let ranges = [(0u16, 4999u16), (12000, 12999)];
        let trimmed = |k: &str| {
            let s = key_slot(k.as_bytes());
            ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
        };
        let args: Vec<Bytes> = ["TRIMSLOTS", "RANGES", "2", "0", "4999", "12000", "12999"]
            .into_iter()
            .map(b)
            .collect();
        let commands::Kind::Databases(commands::Databases::Slots(layout)) =
            commands::info(&args).kind
        else {
            panic!("TRIMSLOTS is not a slots command");
        };
        assert_eq!(layout.of(&args).unwrap(), ranges);
        let filter = Filter {
            patterns: vec![b"k:*".to_vec()],
            ..Default::default()
        };
        assert!(sink.delete_slots(0, &ranges, &filter).await.unwrap());
        // Written after the trim, in a trimmed slot: stays.
        let late = keys.iter().find(|k| trimmed(k)).unwrap().clone();
        sink.command(Outgoing::Args(&[b("SET"), b(&late), b("v")]))
            .await
            .unwrap();
        let mut report = Report::default();
        sink.finish(&mut report).await.unwrap();

        let mut got: Vec<String> = other
            .scan_keys(0, |_| true)
            .await
            .unwrap()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = keys
            .iter()
            .filter(|k| !trimmed(k))
            .chain(&others)
            .cloned()
            .chain([late.clone()])
            .collect();
        want.sort();
        let gone = keys.iter().filter(|k| trimmed(k)).count();
        assert!(gone > 50 && gone < keys.len() - 50, "{gone} keys trimmed");
        assert!(others.iter().any(|k| trimmed(k)));
        assert_eq!(got, want);
    }

    fn text(v: Vec<Bytes>) -> Vec<String> {
        v.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn expiries_that_may_pass_during_the_replay_are_moved() {
        let now = 1_700_000_000_000i64;
        let sh = ExpiryShift::new(now);
        let near = now + 5000;
        let m = |at: i64| (RESERVED_FROM_MS + at - sh.floor).to_string();
        let args = |a: &[&str]| -> Vec<Bytes> {
            a.iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        let t = |a: &[&str]| {
            let a = args(a);
            text(shift_ttl(&a, &sh).args.unwrap_or(a))
        };
        let (n, ns) = (near.to_string(), (near / 1000).to_string());
        assert_eq!(t(&["PEXPIREAT", "k", &n]), ["PEXPIREAT", "k", &m(near)]);
        assert_eq!(
            t(&["EXPIREAT", "k", &ns]),
            ["PEXPIREAT", "k", &m(near / 1000 * 1000)]
        );
        assert_eq!(
            t(&["SET", "k", "v", "PXAT", &n]),
            ["SET", "k", "v", "PXAT", &m(near)]
        );
        assert_eq!(
            t(&["set", "k", "v", "exat", &ns, "GET"]),
            ["set", "k", "v", "PXAT", &m(near / 1000 * 1000), "GET"]
        );
        assert_eq!(
            t(&["RESTORE", "k", &n, "payload", "ABSTTL"]),
            ["RESTORE", "k", &m(near), "payload", "ABSTTL"]
        );
        assert_eq!(
            t(&["RESTORE", "k", "0", "payload", "ABSTTL"]),
            ["RESTORE", "k", "0", "payload", "ABSTTL"]
        );
        assert_eq!(t(&["SET", "pxat", "v"]), ["SET", "pxat", "v"]);
        assert_eq!(
            t(&["HPEXPIREAT", "h", &n, "FIELDS", "1", "f"]),
            ["HPEXPIREAT", "h", &m(near), "FIELDS", "1", "f"]
        );
        assert_eq!(
            t(&["hexpireat", "h", &ns, "NX", "FIELDS", "1", "f"]),
            [
                "HPEXPIREAT",
                "h",
                &m(near / 1000 * 1000),
                "NX",
                "FIELDS",
                "1",
                "f"
            ]
        );
        assert_eq!(
            t(&["hsetex", "h", "FNX", "PXAT", &n, "FIELDS", "1", "f", "v"]),
            [
                "hsetex",
                "h",
                "FNX",
                "PXAT",
                &m(near),
                "FIELDS",
                "1",
                "f",
                "v"
            ]
        );
        assert_eq!(
            t(&["HGETEX", "h", "EXAT", &ns, "FIELDS", "1", "f"]),
            [
                "HGETEX",
                "h",
                "PXAT",
                &m(near / 1000 * 1000),
                "FIELDS",
                "1",
                "f"
            ]
        );
        // Option names after FIELDS are field names and values.
        assert_eq!(
            t(&["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]),
            ["HSETEX", "pxat", "KEEPTTL", "FIELDS", "1", "PXAT", "7"]
        );
        assert_eq!(t(&["HSET", "k", "PXAT", "1"]), ["HSET", "k", "PXAT", "1"]);
        // Moved back, each time is the real one again; times long past are moved back to the
        // floor (they delete their key), never into the reserved range.
        for at in [sh.floor, now - 1, now, near, sh.horizon - 1] {
            assert_eq!(sh.map(at), Moved::To(m(at).parse().unwrap()));
            assert_eq!(sh.unmap(m(at).parse().unwrap()), at);
        }
        assert_eq!(sh.map(1), Moved::To(RESERVED_FROM_MS));
        assert_eq!(sh.map(i64::MIN), Moved::To(RESERVED_FROM_MS));
        assert!(sh.reserved_end() < (1 << 46) - 1 && sh.reserved_end() < 1 << 53);
        // A shifted command says so; a field's too.
        let r = shift_ttl(&args(&["PEXPIREAT", "k", &n]), &sh);
        assert!(r.moved && !r.field && !r.reserved);
        let r = shift_ttl(&args(&["HPEXPIREAT", "h", &n, "FIELDS", "1", "f"]), &sh);
        assert!(r.moved && r.field);
    }

    /// The values the Redis test suite found changed by the old 100-year shift: far expiries
    /// are sent exactly as they are, and never near a server's limit.
    #[test]
    fn expiries_near_the_limits_are_sent_exactly() {
        let sh = ExpiryShift::new(1_700_000_000_000);
        for a in [
            &["PEXPIREAT", "a", "9007199254740993"][..],
            &["PEXPIREAT", "b", "9223372036854775807"],
            &["HPEXPIREAT", "h", "70368744176664", "FIELDS", "1", "f"],
            &["SET", "k", "v", "PXAT", "9223372036854775807"],
            &["EXPIREAT", "k", "9223372036854775"],
        ] {
            let args: Vec<Bytes> = a
                .iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect();
            assert_eq!(shift_ttl(&args, &sh), Shifted::default(), "{a:?}");
        }
        // Inside the reserved range: sent as it is, and counted.
        let args: Vec<Bytes> = ["PEXPIREAT", "k", &(RESERVED_FROM_MS + 7).to_string()]
            .iter()
            .map(|x| Bytes::copy_from_slice(x.as_bytes()))
            .collect();
        let r = shift_ttl(&args, &sh);
        assert!(r.reserved && r.args.is_none() && !r.moved);
    }

    #[test]
    fn expiry_conditions_survive_the_move() {
        let sh = ExpiryShift::new(1_700_000_000_000);
        let args = |a: &[&str]| -> Vec<Bytes> {
            a.iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect()
        };
        // Keys: GT/LT dropped (a master propagates the command only when its condition held).
        let r = shift_ttl(&args(&["PEXPIREAT", "k", "9000000000000000", "GT"]), &sh);
        assert_eq!(
            text(r.args.unwrap()),
            ["PEXPIREAT", "k", "9000000000000000"]
        );
        let r = shift_ttl(&args(&["PEXPIREAT", "k", "1700000001000", "XX", "lt"]), &sh);
        assert_eq!(
            text(r.args.unwrap()),
            [
                "PEXPIREAT",
                "k",
                &(RESERVED_FROM_MS + 366 * DAY_MS + 1000).to_string(),
                "XX"
            ]
        );
        // Fields: a script that compares the real times.
        let r = shift_ttl(
            &args(&[
                "HPEXPIREAT",
                "h",
                "1700000001000",
                "gt",
                "FIELDS",
                "2",
                "f",
                "g",
            ]),
            &sh,
        );
        let a = text(r.args.unwrap());
        assert_eq!(a[0], "EVAL");
        assert_eq!(a[2..4], ["1", "h"]);
        assert_eq!(
            a[4..],
            [
                RESERVED_FROM_MS.to_string(),
                sh.reserved_end().to_string(),
                sh.floor.to_string(),
                "GT".to_string(),
                "1700000001000".to_string(),
                (RESERVED_FROM_MS + 366 * DAY_MS + 1000).to_string(),
                "f".to_string(),
                "g".to_string()
            ]
        );
        assert!(r.moved && r.field);
    }

    #[test]
    fn exact_stream_trims_lose_their_limit() {
        let t = |a: &[&str]| -> Option<Vec<String>> {
            let args: Vec<Bytes> = a
                .iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect();
            stream_trim_for_client(&args).map(text)
        };
        assert_eq!(
            t(&["XADD", "s", "MAXLEN", "=", "7", "LIMIT", "5", "1-1", "f", "v"]).unwrap(),
            ["XADD", "s", "MAXLEN", "=", "7", "1-1", "f", "v"]
        );
        assert_eq!(
            t(&["xtrim", "s", "maxlen", "=", "0", "limit", "100"]).unwrap(),
            ["xtrim", "s", "maxlen", "=", "0"]
        );
        assert_eq!(
            t(&[
                "XADD",
                "s",
                "NOMKSTREAM",
                "MINID",
                "=",
                "5-0",
                "LIMIT",
                "5",
                "6-0",
                "a",
                "b"
            ])
            .unwrap(),
            [
                "XADD",
                "s",
                "NOMKSTREAM",
                "MINID",
                "=",
                "5-0",
                "6-0",
                "a",
                "b"
            ]
        );
        // Fields named LIMIT, approximate trims, and no trim at all stay as they are.
        assert_eq!(t(&["XADD", "s", "1-1", "LIMIT", "5"]), None);
        assert_eq!(
            t(&["XADD", "s", "MAXLEN", "~", "7", "LIMIT", "5", "*", "f", "v"]),
            None
        );
        assert_eq!(t(&["XADD", "s", "MAXLEN", "7", "1-1", "f", "v"]), None);
        assert_eq!(t(&["SET", "LIMIT", "5"]), None);
    }

    #[test]
    fn payload_versions() {
        use rdb::Magic::*;
        assert_eq!(payload_version(Redis, 10, 10), Some(10));
        assert_eq!(payload_version(Redis, 11, 10), None);
        assert_eq!(payload_version(Redis, 9, 12), Some(9));
        assert_eq!(payload_version(Redis, 12, 80), None);
        assert_eq!(payload_version(Redis, 11, 80), Some(11));
        assert_eq!(payload_version(Valkey, 80, 12), None);
        assert_eq!(payload_version(Valkey, 80, 80), Some(80));
    }
}
