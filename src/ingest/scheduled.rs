//! Scheduled snapshots: so that a restore replays at most one interval of stream, the archiver
//! takes a fresh snapshot of the master every `--snapshot-interval` (counted from the newest
//! snapshot of the generation it writes, so a restart does not reset it), and whenever
//! `pitr snapshot` asks for one (`archive::request`). Each goes through a second replica link
//! of its own (`PSYNC ? -1`, the RDB streamed into the store by the archiver's own code, then
//! the link is dropped), in a task of its own: it never touches the archiving link, and its
//! failures are logged and tried again later with backoff, never ending the archiver.
//!
//! A snapshot is kept only when it belongs to the generation being written: the master's
//! replication id is the one the archiving link is on, and its offset lies within the
//! generation ([`accept`]). Otherwise its upload is aborted.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::archive::format::{SnapshotHeader, Taken};
use crate::archive::lease::LeaseGuard;
use crate::archive::names::{GenerationId, ReplId};
use crate::archive::request::{self, Found, SnapshotRequest};
use crate::archive::store::Store;
use crate::ingest::archiver::{now_ms, receive_snapshot, snapshot_name, ArchiveError, Received};
use crate::ingest::link::{Connection, Psync};
use crate::net::Source;

/// How often the archiver looks for a snapshot request (and whether a snapshot is due).
pub const POLL: Duration = Duration::from_secs(3);
/// The client name of the snapshot link (`CLIENT SETNAME`).
pub const CLIENT_NAME: &str = "pitr-snapshot";
/// The first delay after a failed snapshot; it doubles with each failure in a row.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest delay after failures.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How long dialing the master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the archiving link is on: the generation it writes and the master's replication id.
/// Published by the archiver while a session streams; `None` while it is not attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub generation: GenerationId,
    pub replid: ReplId,
    /// Archive offset less master offset in the generation (`archive::branch`).
    pub delta: u64,
}

/// The snapshots a generation holds, from a listing of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The offset of its base (its first offset).
    pub first_offset: u64,
    /// When its newest snapshot was taken.
    pub newest_ms: u64,
    /// Every snapshot's offset.
    pub offsets: Vec<u64>,
    /// Every snapshot's time.
    pub times: Vec<u64>,
}

impl Held {
    fn from_names(names: &[crate::archive::names::ObjectName]) -> Option<Held> {
        Some(Held {
            first_offset: names.iter().map(|n| n.start).min()?,
            newest_ms: names.iter().map(|n| n.first_ms).max()?,
            offsets: names.iter().map(|n| n.start).collect(),
            times: names.iter().map(|n| n.first_ms).collect(),
        })
    }
}

/// Whether a snapshot the master sent (`+FULLRESYNC <replid> <offset>`) for `generation` may be
/// recorded in it, given what the archiving link is on now (`attached`) and what the
/// generation holds. `Err` says why not.
pub fn accept(
    replid: ReplId,
    offset: u64,
    generation: GenerationId,
    attached: Option<Attached>,
    held: &Held,
) -> Result<(), String> {
    let Some(a) = attached else {
        return Err("the archiving link is not attached to the master".into());
    };
    if a.generation != generation {
        return Err(format!(
            "the archiver moved on from generation {generation} to generation {}",
            a.generation
        ));
    }
    if a.replid != replid {
        return Err(format!(
            "the master sent replication id {replid}, the archiving link is on {}",
            a.replid
        ));
    }
    if offset < held.first_offset {
        return Err(format!(
            "offset {offset} is before the generation's first offset {}",
            held.first_offset
        ));
    }
    if held.offsets.contains(&offset) {
        return Err(format!(
            "the generation has a snapshot at offset {offset} already (nothing was written since)"
        ));
    }
    Ok(())
}

/// Why a snapshot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The interval has passed since the generation's newest snapshot.
    Interval,
    /// `pitr snapshot` asked for one.
    Requested,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Interval => "interval",
            Why::Requested => "requested",
        }
    }
}

/// When snapshots are due: every `interval` after the generation's newest one, or when
/// requested; after a failure, not before a delay that doubles with each failure in a row.
#[derive(Clone, Debug)]
pub struct Schedule {
    interval: Option<Duration>,
    failures: u32,
    not_before_ms: u64,
}

impl Schedule {
    /// `interval`: `None` takes snapshots only when requested.
    pub fn new(interval: Option<Duration>) -> Schedule {
        Schedule {
            interval: interval.filter(|d| !d.is_zero()),
            failures: 0,
            not_before_ms: 0,
        }
    }

    /// When the next scheduled snapshot is due, for a generation whose newest snapshot was
    /// taken at `newest_ms`; `None` when snapshots are only taken on request.
    pub fn due_at(&self, newest_ms: u64) -> Option<u64> {
        let interval = self.interval?;
        Some(
            newest_ms
                .saturating_add(interval.as_millis() as u64)
                .max(self.not_before_ms),
        )
    }

    /// Whether a snapshot is to be taken at `now_ms`, and why.
    pub fn due(&self, now_ms: u64, newest_ms: u64, requested: bool) -> Option<Why> {
        if now_ms < self.not_before_ms {
            return None;
        }
        if requested {
            return Some(Why::Requested);
        }
        match self.due_at(newest_ms) {
            Some(at) if now_ms >= at => Some(Why::Interval),
            _ => None,
        }
    }

    /// How long to wait from `now_ms` before looking again: until the next snapshot is due,
    /// at most [`POLL`] (a request may come meanwhile).
    pub fn wait(&self, now_ms: u64, newest_ms: u64) -> Duration {
        let until = self
            .due_at(newest_ms)
            .unwrap_or(u64::MAX)
            .max(self.not_before_ms);
        Duration::from_millis(until.saturating_sub(now_ms)).clamp(Duration::from_millis(10), POLL)
    }

    /// A snapshot failed (or was discarded) at `now_ms`: returns the delay before the next try.
    pub fn failed(&mut self, now_ms: u64) -> Duration {
        let delay = FIRST_RETRY
            .saturating_mul(1u32 << self.failures.min(20))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        self.not_before_ms = now_ms.saturating_add(delay.as_millis() as u64);
        delay
    }

    /// A snapshot was stored: the backoff starts again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before_ms = 0;
    }
}

/// What one attempt came to.
enum Outcome {
    Stored,
    Discarded(String),
    Shutdown,
}

/// The role that takes scheduled and requested snapshots beside the archiving link.
pub struct Scheduler {
    pub store: Store,
    pub source: Source,
    pub announce_port: u16,
    /// Of the snapshot link's reads, and the patience of its upload's parts.
    pub read_timeout: Duration,
    pub lease: LeaseGuard,
    /// What the archiving link is on.
    pub attached: watch::Receiver<Option<Attached>>,
    pub schedule: Schedule,
}

impl Scheduler {
    /// Runs until `stop`; errors are logged, never returned.
    pub async fn run(mut self, stop: CancellationToken) {
        // The snapshots of the generation last looked at; listed again when the generation
        // changes and after each snapshot taken.
        let mut known: Option<(GenerationId, Held)> = None;
        let mut request_error = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let attached = *self.attached.borrow();
            let Some(at) = attached else {
                tokio::select! {
                    _ = self.attached.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            };
            if known.as_ref().map(|k| k.0) != Some(at.generation) {
                match self.store.generation_snapshots(at.generation).await {
                    Ok(names) => match Held::from_names(&names) {
                        Some(h) => known = Some((at.generation, h)),
                        None => {
                            debug!(generation = %at.generation, "no snapshot listed for the generation yet");
                            self.pause(POLL, &stop).await;
                            continue;
                        }
                    },
                    Err(e) => {
                        warn!(generation = %at.generation, error = %e, "cannot list the generation's snapshots; trying again");
                        self.pause(POLL, &stop).await;
                        continue;
                    }
                }
            }
            let Some((_, held)) = known.clone() else {
                continue;
            };
            let pending = match request::get(&self.store).await {
                Ok(found) => {
                    request_error = false;
                    self.pending_request(found, &held).await
                }
                Err(e) => {
                    if !request_error {
                        warn!(error = %e, "cannot read the snapshot request");
                    }
                    request_error = true;
                    None
                }
            };
            let now = now_ms();
            let Some(why) = self.schedule.due(now, held.newest_ms, pending.is_some()) else {
                let wait = self.schedule.wait(now, held.newest_ms);
                self.pause(wait, &stop).await;
                continue;
            };
            if let Some(r) = &pending {
                info!(requested_ms = r.requested_ms, host = %r.host, pid = r.pid,
                    source = r.source.as_deref().unwrap_or("-"), "snapshot requested");
                if let Some(s) = r.source.as_deref().filter(|s| *s != self.source.addr()) {
                    warn!(requested_source = %s, source = %self.source.addr(),
                        "the request names another master than the one archived; the snapshot is taken of the archived one");
                }
            }
            match self.take(at, &held, why, &stop).await {
                Ok(Outcome::Stored) => {
                    self.schedule.succeeded();
                    known = None;
                    if let Some(r) = &pending {
                        if let Err(e) = request::delete_if_same(&self.store, r).await {
                            warn!(error = %e, "cannot remove the answered snapshot request");
                        }
                    }
                }
                Ok(Outcome::Shutdown) => return,
                Ok(Outcome::Discarded(why)) => {
                    let delay = self.schedule.failed(now_ms());
                    warn!(generation = %at.generation, reason = %why, retry_in_ms = delay.as_millis() as u64,
                        "scheduled snapshot discarded (its upload aborted, nothing stored)");
                    known = None;
                }
                Err(e) => {
                    let delay = self.schedule.failed(now_ms());
                    warn!(generation = %at.generation, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "scheduled snapshot failed (nothing stored); the archiving link is not affected");
                    known = None;
                }
            }
        }
    }

    /// Sleeps for `d`, or until `stop`.
    async fn pause(&self, d: Duration, stop: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.cancelled() => {}
        }
    }

    /// The request that still waits for a snapshot, if any. One answered already (by a
    /// snapshot taken at or after it) is removed; an unreadable one is removed with a warning.
    async fn pending_request(&self, found: Found, held: &Held) -> Option<SnapshotRequest> {
        match found {
            Found::None => None,
            Found::Request(r) if held.times.iter().any(|t| r.answered_by(*t)) => {
                if let Err(e) = request::delete_if_same(&self.store, &r).await {
                    warn!(error = %e, "cannot remove the answered snapshot request");
                }
                None
            }
            Found::Request(r) => Some(r),
            Found::Unreadable(why) => {
                warn!(reason = %why, "removing a snapshot request this version cannot read");
                if let Err(e) = request::delete(&self.store).await {
                    warn!(error = %e, "cannot remove the snapshot request");
                }
                None
            }
        }
    }

    /// Takes one snapshot for generation `at.generation` on a link of its own.
    async fn take(
        &self,
        at: Attached,
        held: &Held,
        why: Why,
        stop: &CancellationToken,
    ) -> Result<Outcome, ArchiveError> {
        let source = self.source.clone();
        let attach = async {
            let mut conn = Connection::connect(&source, CONNECT_TIMEOUT).await?;
            conn.read_timeout = self.read_timeout;
            conn.handshake_as(&source, self.announce_port, CLIENT_NAME)
                .await?;
            let reply = conn.psync(None).await?;
            Ok::<_, ArchiveError>((conn, reply))
        };
        let (mut conn, reply) = tokio::select! {
            r = attach => r?,
            _ = stop.cancelled() => return Ok(Outcome::Shutdown),
        };
        let time_ms = now_ms();
        let Psync::FullResync { replid, offset } = reply else {
            return Err(ArchiveError::UnexpectedContinue {
                addr: conn.addr().to_string(),
            });
        };
        // In the archive's offsets.
        let offset = offset + at.delta;
        let generation = at.generation;
        // Dropping the link before its RDB is read ends the master's transfer.
        if let Err(why) = accept(replid, offset, generation, *self.attached.borrow(), held) {
            return Ok(Outcome::Discarded(why));
        }
        let header = SnapshotHeader {
            generation,
            offset,
            time_ms,
            replid,
            taken: Some(Taken::Scheduled),
        };
        let name = snapshot_name(&header);
        info!(%generation, object = %name, offset, reason = why.as_str(), "scheduled snapshot: the master is sending its RDB");
        let attached = self.attached.clone();
        let held = held.clone();
        let keep = move || accept(replid, offset, generation, *attached.borrow(), &held);
        let received = receive_snapshot(
            &mut conn,
            &self.store,
            &self.lease,
            &header,
            self.read_timeout,
            &keep,
            stop,
        )
        .await;
        // The stream after the RDB is not wanted: the link ends here.
        drop(conn);
        match received? {
            Received::Stored { done, secs } => {
                info!(
                    %generation, object = %name, offset, bytes = done.raw_len, stored = done.stored,
                    seconds = format!("{secs:.2}"), reason = why.as_str(),
                    "scheduled snapshot durable"
                );
                Ok(Outcome::Stored)
            }
            Received::Shutdown { received } => {
                info!(%generation, object = %name, received,
                    "shutdown during a scheduled snapshot: abandoned (its upload aborted, nothing stored)");
                Ok(Outcome::Shutdown)
            }
            Received::Discarded { why } => Ok(Outcome::Discarded(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(c: char) -> ReplId {
        c.to_string().repeat(40).parse().unwrap()
    }

    const H: u64 = 3_600_000;

    #[test]
    fn the_next_snapshot_is_due_an_interval_after_the_newest_one() {
        let s = Schedule::new(Some(Duration::from_secs(3600)));
        let newest = 10 * H;
        assert_eq!(s.due_at(newest), Some(11 * H));
        assert_eq!(s.due(newest + H - 1, newest, false), None);
        assert_eq!(s.due(newest + H, newest, false), Some(Why::Interval));
        // At start-up, only if the newest snapshot is older than the interval.
        assert_eq!(s.due(newest + 5 * H, newest, false), Some(Why::Interval));
        assert_eq!(s.due(newest + 1, newest, false), None);
        // A request is due at once.
        assert_eq!(s.due(newest + 1, newest, true), Some(Why::Requested));
        // The wait is until it is due, but never longer than the poll for requests.
        assert_eq!(s.wait(newest + H - 500, newest), Duration::from_millis(500));
        assert_eq!(s.wait(newest, newest), POLL);
    }

    #[test]
    fn zero_or_no_interval_takes_snapshots_only_on_request() {
        for s in [Schedule::new(None), Schedule::new(Some(Duration::ZERO))] {
            assert_eq!(s.due_at(0), None);
            assert_eq!(s.due(u64::MAX / 2, 0, false), None);
            assert_eq!(s.due(5, 0, true), Some(Why::Requested));
            assert_eq!(s.wait(0, 0), POLL);
        }
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap_and_a_success_resets() {
        let mut s = Schedule::new(Some(Duration::from_secs(1)));
        let t = 100 * H;
        assert_eq!(s.failed(t), FIRST_RETRY);
        // Neither the interval nor a request goes before the retry's time.
        assert_eq!(s.due(t + 4_999, 0, true), None);
        assert_eq!(s.due(t + 5_000, 0, false), Some(Why::Interval));
        assert_eq!(s.wait(t, 0), POLL);
        assert_eq!(s.failed(t), FIRST_RETRY * 2);
        assert_eq!(s.failed(t), FIRST_RETRY * 4);
        for _ in 0..40 {
            s.failed(t);
        }
        assert_eq!(s.failed(t), MAX_RETRY);
        s.succeeded();
        assert_eq!(s.due(t, t - 1_000, false), Some(Why::Interval));
        assert_eq!(s.failed(t), FIRST_RETRY);
    }

    #[test]
    fn a_snapshot_is_kept_only_on_the_archiving_links_history() {
        let g = GenerationId(4);
        let held = Held {
            first_offset: 1000,
            newest_ms: 5,
            offsets: vec![1000, 5000],
            times: vec![1, 5],
        };
        let on = |generation, replid| {
            Some(Attached {
                generation,
                replid,
                delta: 0,
            })
        };
        assert_eq!(accept(rid('a'), 6000, g, on(g, rid('a')), &held), Ok(()));
        // Exactly at the base's offset is within the generation, but taken already.
        assert!(accept(rid('a'), 1000, g, on(g, rid('a')), &held)
            .unwrap_err()
            .contains("already"));
        // Another history of the master (a failover the archiving link has not followed).
        let e = accept(rid('b'), 6000, g, on(g, rid('a')), &held).unwrap_err();
        assert!(e.contains("replication id"), "{e}");
        // Before the generation's first offset.
        let e = accept(rid('a'), 999, g, on(g, rid('a')), &held).unwrap_err();
        assert!(e.contains("first offset"), "{e}");
        // The archiving link started another generation, or is not attached.
        let e = accept(rid('a'), 6000, g, on(GenerationId(5), rid('a')), &held).unwrap_err();
        assert!(e.contains("generation 0000000005"), "{e}");
        let e = accept(rid('a'), 6000, g, None, &held).unwrap_err();
        assert!(e.contains("not attached"), "{e}");
    }

    #[test]
    fn held_snapshots_from_names() {
        use crate::archive::names::ObjectName;
        assert_eq!(Held::from_names(&[]), None);
        let names = [
            ObjectName::snapshot(GenerationId(2), 700, 20, rid('a')).v2(0),
            ObjectName::snapshot(GenerationId(2), 100, 10, rid('a')).v2(0),
        ];
        let h = Held::from_names(&names).unwrap();
        assert_eq!((h.first_offset, h.newest_ms), (100, 20));
        assert_eq!(h.offsets, vec![700, 100]);
    }
}
