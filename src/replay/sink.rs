//! The one interface between the restore executor ([`crate::replay::restore`]) and a
//! destination. The executor reads the snapshot and the archived commands; a sink only writes
//! what it is handed: the snapshot's raw bytes with their parser events, then the commands up
//! to the cut. A new destination (a restore through replication, a cluster target) is a new
//! [`Opener`] and [`Sink`], not a branch inside the executor.
//!
//! The executor is generic over the sink (no boxing of each call: a command is one call), and
//! every future a sink returns is `Send`, so a restore can run on any runtime thread.

use std::future::Future;

use bytes::Bytes;

use super::files::CommandFile;
use super::filter::Filter;
use super::restore::{Report, RestoreError};
use crate::rdb::{self, Event};

/// The magic and version at the start of the snapshot's RDB: they decide whether values can
/// go by `RESTORE` and which file layout a server loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdbHeader {
    pub magic: rdb::Magic,
    pub version: u32,
}

impl RdbHeader {
    /// The header at the start of `raw`, or `None` when `raw` does not start with one.
    pub fn parse(raw: &[u8]) -> Option<RdbHeader> {
        let h = raw.get(..9)?;
        let (magic, digits) = if h.starts_with(b"REDIS") {
            (rdb::Magic::Redis, &h[5..])
        } else if h.starts_with(b"VALKEY") {
            (rdb::Magic::Valkey, &h[6..])
        } else {
            return None;
        };
        let version = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some(RdbHeader { magic, version })
    }
}

/// What a sink needs from the snapshot, known before the snapshot is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotNeeds {
    /// The sink uses the parser's events. When it does not (it copies the raw bytes), the
    /// executor parses the RDB beside the copy only to check it and count its keys.
    pub events: bool,
    /// [`rdb::ParserConfig::max_raw_value`]: values up to this size come with their raw bytes
    /// (for `RESTORE` payloads).
    pub max_raw_value: usize,
}

/// A destination before the snapshot's header is known: it says what it needs from the
/// snapshot, and opens once the header is read.
pub trait Opener: Send {
    type Sink: Sink;

    fn needs(&self) -> SnapshotNeeds;

    /// Opens the destination for a snapshot with this header: connects, checks that it is
    /// empty (or empties it with `--force`), creates the staging files.
    fn open(
        self,
        header: RdbHeader,
    ) -> impl Future<Output = Result<Self::Sink, RestoreError>> + Send;
}

/// One command for a sink: as archived (its RESP bytes can be written as they are unless the
/// sink has to change it), or rewritten by the executor.
#[derive(Clone, Copy, Debug)]
pub enum Outgoing<'a> {
    /// A command as archived: its arguments and its RESP encoding.
    Archived { args: &'a [Bytes], raw: &'a [u8] },
    /// A command made or rewritten by the executor (`SELECT`, a relative TTL made absolute).
    Args(&'a [Bytes]),
}

impl<'a> Outgoing<'a> {
    pub fn args(&self) -> &'a [Bytes] {
        match *self {
            Outgoing::Archived { args, .. } | Outgoing::Args(args) => args,
        }
    }
}

/// A destination of a restore, opened. The executor calls [`snapshot`](Sink::snapshot) for
/// every piece of the snapshot in order, [`snapshot_done`](Sink::snapshot_done) once, then
/// [`command`](CommandSink::command) for every command after the snapshot up to the cut, and at the
/// end [`finish`](Sink::finish), or [`abort`](Sink::abort) after any error. It takes the
/// commands as a [`CommandSink`].
pub trait Sink: CommandSink {
    /// Whether the snapshot's values go by `RESTORE` (their raw bytes are used; the parser
    /// need not decompress large LZF strings).
    fn values_by_restore(&self) -> bool;

    /// Raw RDB bytes of the snapshot and the events of the keys selected among them. A sink
    /// may change the events (a live target moves their expiries).
    fn snapshot(
        &mut self,
        raw: &Bytes,
        events: &mut [Event],
    ) -> impl Future<Output = Result<(), RestoreError>> + Send;

    /// The snapshot is complete: `keys` keys of it were selected. Fills the fields of the
    /// report this destination owns for the snapshot.
    fn snapshot_done(
        &mut self,
        keys: u64,
        report: &mut Report,
    ) -> impl Future<Output = Result<(), RestoreError>> + Send;

    /// The part of the destination that takes the commands, when it is independent of where
    /// the snapshot goes (files: the AOF is a file of its own). The executor then replays the
    /// commands while the snapshot is still being copied, and hands the part back with
    /// [`commands_back`](Sink::commands_back) before [`finish`](Sink::finish) or
    /// [`abort`](Sink::abort). By default the commands follow the snapshot through
    /// [`command`](CommandSink::command).
    fn commands_apart(&mut self) -> Option<CommandFile> {
        None
    }

    /// The part lent by [`commands_apart`](Sink::commands_apart), back.
    fn commands_back(&mut self, _part: CommandFile) {}

    /// Everything was handed over: make it durable, visible or final, and fill the fields of
    /// the report this destination owns.
    fn finish(self, report: &mut Report) -> impl Future<Output = Result<(), RestoreError>> + Send
    where
        Self: Sized;

    /// The restore failed: leave nothing that looks complete (staging files are removed).
    fn abort(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized;
}

/// Where the commands after the snapshot go: a whole [`Sink`], or the part of one that takes
/// them apart ([`Sink::commands_apart`]).
pub trait CommandSink: Send {
    /// One command after the snapshot.
    fn command(
        &mut self,
        cmd: Outgoing<'_>,
    ) -> impl Future<Output = Result<(), RestoreError>> + Send;

    /// While `on`, an error reply to a command handed over is counted in the report's
    /// `commands_mixed_failed`, not raised: set around the commands that touch selected and
    /// unselected keys (a `RENAME` from a key left out fails), which a replica ignores too.
    /// A destination that cannot tell keeps raising them.
    fn tolerate_errors(&mut self, _on: bool) {}

    /// A `FLUSHALL` (`db` `None`) or `FLUSHDB` of database `db` of a restore that shares its
    /// destination with others (a shard of a cluster archive): deletes only the keys there
    /// that `filter` selects, after everything handed over so far. `false`: the destination
    /// cannot, and the command is to be applied whole.
    fn flush_selected(
        &mut self,
        _db: Option<u32>,
        _filter: &Filter,
    ) -> impl Future<Output = Result<bool, RestoreError>> + Send {
        async { Ok(false) }
    }

    /// `TRIMSLOTS` (or `SFLUSH`) in database `db`: deletes the keys there whose slot is in
    /// `ranges` (inclusive) and that `filter` selects, after everything handed over so far.
    /// Servers before Redis 8.4, and any server outside cluster mode, refuse the command, so
    /// a destination applies it as deletes. `false`: the destination cannot, and the command
    /// is to be applied as it is.
    fn delete_slots(
        &mut self,
        _db: u32,
        _ranges: &[(u16, u16)],
        _filter: &Filter,
    ) -> impl Future<Output = Result<bool, RestoreError>> + Send {
        async { Ok(false) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_headers() {
        assert_eq!(
            RdbHeader::parse(b"REDIS0011\xfa"),
            Some(RdbHeader {
                magic: rdb::Magic::Redis,
                version: 11
            })
        );
        assert_eq!(
            RdbHeader::parse(b"VALKEY080"),
            Some(RdbHeader {
                magic: rdb::Magic::Valkey,
                version: 80
            })
        );
        assert_eq!(RdbHeader::parse(b"REDIS001"), None);
        assert_eq!(RdbHeader::parse(b"NOTRDB0011"), None);
    }
}
