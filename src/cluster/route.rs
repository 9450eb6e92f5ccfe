//! A slot-routed live target (`--target cluster://…`): one [`LiveSink`] per master of the
//! target cluster, each key's snapshot events and each command after the snapshot sent to the
//! master that owns the key's slot in the target. A transaction goes whole to the master of its
//! first key (a cluster runs a transaction on one slot only); commands without keys
//! (`SELECT`, `FLUSHALL`, scripts, functions) go to every master.

use std::sync::Arc;

use bytes::Bytes;

use crate::rdb::Event;
use crate::replay::filter::Filter;
use crate::replay::live_sink::{ContinuingOpener, LiveOpener, LiveSink};
use crate::replay::sink::{CommandSink, Opener, Outgoing, RdbHeader, Sink, SnapshotNeeds};
use crate::replay::{Report, RestoreError};
use crate::resp::commands::{self, Kind, Tx};

use super::slot::{key_slot, SLOTS};

/// The masters of a target cluster, before the snapshot's header is known.
pub struct RoutingOpener {
    /// One opener per master.
    pub masters: Vec<LiveOpener>,
    /// Slot → index in `masters`.
    pub owner: Arc<Vec<u16>>,
    /// The target was checked (or flushed) already: the next shards of a restore.
    pub checked: bool,
}

/// Slot → master index from each master's slot ranges; `None` when a slot has no master.
pub fn owner_table(ranges: &[Vec<(u16, u16)>]) -> Option<Vec<u16>> {
    let mut t = vec![u16::MAX; SLOTS];
    for (i, rs) in ranges.iter().enumerate() {
        for &(a, b) in rs {
            for s in a..=b.min(SLOTS as u16 - 1) {
                t[s as usize] = i as u16;
            }
        }
    }
    (!t.contains(&u16::MAX)).then_some(t)
}

impl Opener for RoutingOpener {
    type Sink = RoutingSink;

    fn needs(&self) -> SnapshotNeeds {
        self.masters[0].needs()
    }

    async fn open(self, header: RdbHeader) -> Result<RoutingSink, RestoreError> {
        let mut sinks = Vec::new();
        for m in self.masters {
            let sink = if self.checked {
                ContinuingOpener(m).open(header).await
            } else {
                m.open(header).await
            };
            match sink {
                Ok(s) => sinks.push(s),
                Err(e) => {
                    for s in sinks {
                        s.abort().await;
                    }
                    return Err(e);
                }
            }
        }
        let n = sinks.len();
        Ok(RoutingSink {
            sinks,
            owner: self.owner,
            events: vec![Vec::new(); n],
            keys: vec![0; n],
            current: None,
            tx: None,
        })
    }
}

/// The masters of a target cluster being restored into.
pub struct RoutingSink {
    sinks: Vec<LiveSink>,
    owner: Arc<Vec<u16>>,
    /// The snapshot events at hand, per master (reused).
    events: Vec<Vec<Event>>,
    /// Snapshot keys sent to each master.
    keys: Vec<u64>,
    /// The master of the key whose events are under way.
    current: Option<usize>,
    /// An open transaction: its master once a keyed command says, and its commands so far.
    tx: Option<(Option<usize>, Vec<TxItem>)>,
}

/// What an open transaction holds.
enum TxItem {
    Command(Vec<Bytes>),
    /// A scoped `FLUSHALL`/`FLUSHDB` (see [`CommandSink::flush_selected`]).
    Flush(Option<u32>, Filter),
    /// `TRIMSLOTS` as deletes (see [`CommandSink::delete_slots`]).
    Trim(u32, Vec<(u16, u16)>, Filter),
}

impl RoutingSink {
    fn master_of(&self, key: &[u8]) -> usize {
        self.owner[key_slot(key) as usize] as usize
    }

    /// The master of a command: `None` for one without keys (every master).
    fn route(&self, args: &[Bytes]) -> Option<usize> {
        let info = commands::info(args);
        if matches!(
            info.kind,
            Kind::Select { .. } | Kind::Databases(_) | Kind::Scripts | Kind::Transaction(_)
        ) {
            return None;
        }
        let mut keys = info.keys.of(args)?;
        keys.next().map(|k| self.master_of(k))
    }

    async fn broadcast(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
        for s in &mut self.sinks {
            s.command(cmd).await?;
        }
        Ok(())
    }
}

fn add(into: &mut Report, r: &Report) {
    into.keys_by_restore += r.keys_by_restore;
    into.keys_by_commands += r.keys_by_commands;
    into.expiries_moved_back += r.expiries_moved_back;
    if let Some(n) = r.commands_mixed_failed {
        *into.commands_mixed_failed.get_or_insert(0) += n;
    }
    into.expiries_in_reserved_range += r.expiries_in_reserved_range;
    into.ttls_shifted |= r.ttls_shifted;
    into.field_ttls_shifted |= r.field_ttls_shifted;
}

impl CommandSink for RoutingSink {
    async fn command(&mut self, cmd: Outgoing<'_>) -> Result<(), RestoreError> {
        let args = cmd.args();
        match commands::info(args).kind {
            Kind::Transaction(Tx::Multi) => {
                self.tx = Some((None, vec![TxItem::Command(args.to_vec())]));
                return Ok(());
            }
            Kind::Transaction(_) => {
                // EXEC or DISCARD: the transaction to its master, or to every master when
                // none of its commands has a key.
                // A scoped flush inside it goes to every master, in its place on the
                // transaction's own.
                let Some((master, items)) = self.tx.take() else {
                    return Ok(());
                };
                for (i, s) in self.sinks.iter_mut().enumerate() {
                    let whole = master.is_none_or(|m| m == i);
                    for item in &items {
                        match item {
                            TxItem::Command(c) if whole => s.command(Outgoing::Args(c)).await?,
                            TxItem::Command(_) => {}
                            TxItem::Flush(db, filter) => {
                                s.flush_selected(*db, filter).await?;
                            }
                            TxItem::Trim(db, ranges, filter) => {
                                s.delete_slots(*db, ranges, filter).await?;
                            }
                        }
                    }
                    if whole {
                        s.command(cmd).await?;
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        let to = self.route(args);
        if let Some((master, cmds)) = &mut self.tx {
            if master.is_none() {
                *master = to;
            }
            cmds.push(TxItem::Command(args.to_vec()));
            return Ok(());
        }
        match to {
            Some(m) => self.sinks[m].command(cmd).await,
            None => self.broadcast(cmd).await,
        }
    }

    /// Every master deletes the keys it holds that `filter` selects.
    async fn flush_selected(
        &mut self,
        db: Option<u32>,
        filter: &Filter,
    ) -> Result<bool, RestoreError> {
        if let Some((_, items)) = &mut self.tx {
            items.push(TxItem::Flush(db, filter.clone()));
            return Ok(true);
        }
        for s in &mut self.sinks {
            if !s.flush_selected(db, filter).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every master deletes the keys of those slots it holds that `filter` selects (only the
    /// master that serves a slot here can hold its keys).
    async fn delete_slots(
        &mut self,
        db: u32,
        ranges: &[(u16, u16)],
        filter: &Filter,
    ) -> Result<bool, RestoreError> {
        if let Some((_, items)) = &mut self.tx {
            items.push(TxItem::Trim(db, ranges.to_vec(), filter.clone()));
            return Ok(true);
        }
        for s in &mut self.sinks {
            if !s.delete_slots(db, ranges, filter).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn tolerate_errors(&mut self, on: bool) {
        self.sinks.iter_mut().for_each(|s| s.tolerate_errors(on));
    }
}

impl Sink for RoutingSink {
    fn values_by_restore(&self) -> bool {
        self.sinks.iter().all(|s| s.values_by_restore())
    }

    async fn snapshot(&mut self, raw: &Bytes, events: &mut [Event]) -> Result<(), RestoreError> {
        for ev in events.iter() {
            match ev {
                Event::KeyStart { key, .. } => {
                    let m = self.master_of(key);
                    self.keys[m] += 1;
                    self.current = Some(m);
                    self.events[m].push(ev.clone());
                }
                Event::KeyEnd { .. } => {
                    if let Some(m) = self.current.take() {
                        self.events[m].push(ev.clone());
                    }
                }
                _ => match self.current {
                    Some(m) => self.events[m].push(ev.clone()),
                    // Outside a key (header, aux fields, functions): every master.
                    None => self.events.iter_mut().for_each(|e| e.push(ev.clone())),
                },
            }
        }
        for (s, evs) in self.sinks.iter_mut().zip(self.events.iter_mut()) {
            if !evs.is_empty() {
                s.snapshot(raw, evs).await?;
                evs.clear();
            }
        }
        Ok(())
    }

    async fn snapshot_done(&mut self, _keys: u64, report: &mut Report) -> Result<(), RestoreError> {
        for (s, keys) in self.sinks.iter_mut().zip(&self.keys) {
            let mut r = Report::default();
            s.snapshot_done(*keys, &mut r).await?;
            add(report, &r);
        }
        Ok(())
    }

    async fn finish(self, report: &mut Report) -> Result<(), RestoreError> {
        for s in self.sinks {
            let mut r = Report::default();
            s.finish(&mut r).await?;
            add(report, &r);
        }
        Ok(())
    }

    async fn abort(self) {
        for s in self.sinks {
            s.abort().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tables() {
        let t = owner_table(&[vec![(0, 99), (200, 16383)], vec![(100, 199)]]).unwrap();
        assert_eq!(
            (t[0], t[99], t[100], t[199], t[200], t[16383]),
            (0, 0, 1, 1, 0, 0)
        );
        assert!(
            owner_table(&[vec![(0, 16382)]]).is_none(),
            "slot 16383 unserved"
        );
    }
}
