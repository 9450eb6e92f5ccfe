//! Branch records: writes a failover lost.
//!
//! When the master the archive follows fails over and the archive holds bytes past the
//! promoted replica's offset at its promotion (commands the old master took that never
//! reached the replica), those bytes are on a branch the new master does not have. Two cases:
//!
//! - **Data was lost** (any command that changes data): the bytes stay in their generation,
//!   restorable for moments before the failover, and the archive goes on in a new generation
//!   from a full sync of the new master, so they are never replayed for a moment after it.
//! - **Nothing but no-ops** (`PING`, `PUBLISH` — Sentinel's hellos on the old master after the
//!   promotion —, `REPLCONF`, `SELECT`, an empty `MULTI`/`EXEC`): replaying them changes no
//!   data, so the generation goes on from the new master without a full sync. Its stream
//!   continues after the branch's bytes: from there on, the archive's offsets are the master's
//!   plus `delta` (the lost bytes of this and every earlier such branch of the generation).
//!
//! The archiver writes one record per such failover, `<archive>/branches/<gen:010>-<at:020>.json`,
//! beside the lease (a name that is not an archive object name: listings skip it), and `pitr
//! ls` reports them (`docs/format.md`, "Branches").

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::archive::format::decode_segment;
use crate::archive::names::ObjectKind;
use crate::archive::store::{Store, StoreError};
use crate::resp::scanner::CommandScanner;

/// The records' folder under the archive prefix.
pub const BRANCHES_DIR: &str = "branches";

/// One failover that lost writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The generation that holds the lost bytes.
    pub generation: u64,
    /// The offset where the new master's history leaves the archived one: every archived
    /// byte at or past it (up to `archived_end`) was lost by the failover.
    pub at: u64,
    /// The end of the archived stream of the old master.
    pub archived_end: u64,
    /// The archived replication id, and the new master's.
    pub replid: String,
    pub new_replid: String,
    /// The new master (`host:port`).
    pub new_master: String,
    /// When the archiver found it (ms since the epoch): moments before this restore with the
    /// lost writes (the old master had them then), later ones from the new generation.
    pub found_ms: u64,
    /// The generation that continues from the new master: the same one when `shifted`.
    pub continued_in: u64,
    /// Whether the generation went on without a full sync (the lost bytes were no-ops).
    #[serde(default)]
    pub shifted: bool,
    /// Where the lost bytes start in the archive's offsets (`at` plus the generation's
    /// earlier delta).
    #[serde(default)]
    pub archive_at: u64,
    /// The generation's delta after this branch: archive offset = master offset + delta.
    #[serde(default)]
    pub delta: u64,
    /// The commands in the lost bytes, and those among them that change data (`None`: they
    /// could not be read).
    #[serde(default)]
    pub lost_commands: Option<u64>,
    #[serde(default)]
    pub lost_data_commands: Option<u64>,
}

impl Branch {
    /// The bytes the failover lost.
    pub fn lost_bytes(&self) -> u64 {
        self.archived_end.saturating_sub(self.at)
    }

    fn rel(&self) -> String {
        format!(
            "{BRANCHES_DIR}/{:010}-{:020}.json",
            self.generation, self.at
        )
    }
}

fn err(store: &Store, op: &'static str, object: &str, source: object_store::Error) -> StoreError {
    StoreError::Backend {
        op,
        object: format!("{}/{object}", store.url().trim_end_matches('/')),
        source,
    }
}

fn path(store: &Store, rel: &str) -> Path {
    store.rel_path(rel)
}

/// Writes a record; one already there for the same point is left as it is.
pub async fn put(store: &Store, branch: &Branch) -> Result<(), StoreError> {
    let rel = branch.rel();
    let body = serde_json::to_vec_pretty(branch).unwrap_or_default();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .backend()
        .put_opts(
            &path(store, &rel),
            PutPayload::from(Bytes::from(body)),
            opts,
        )
        .await
    {
        Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(err(store, "put", &rel, e)),
    }
}

/// Commands whose replay changes no data.
pub fn is_no_op(name: &[u8]) -> bool {
    [
        &b"PING"[..],
        b"PUBLISH",
        b"SPUBLISH",
        b"REPLCONF",
        b"SELECT",
        b"MULTI",
        b"EXEC",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// Counts the commands that start in the archive's offsets `[from, to)` of `generation`, and
/// those among them that change data, from the lowest level of segments that holds the range
/// whole. An error names what is missing or unreadable.
pub async fn count_commands(
    store: &Store,
    generation: u64,
    from: u64,
    to: u64,
) -> Result<(u64, u64), String> {
    let listing = store.list().await.map_err(|e| e.to_string())?;
    let mut objects: Vec<_> = listing
        .objects
        .iter()
        .filter(|o| {
            o.name.kind == ObjectKind::Segment
                && o.name.generation.0 == generation
                && o.name.start < to
                && o.name.end > from
        })
        .collect();
    objects.sort_by_key(|o| (o.name.level, o.name.start));
    let level = objects
        .first()
        .map(|o| o.name.level)
        .ok_or_else(|| format!("no object holds offsets {from}..{to}"))?;
    let (mut all, mut data) = (0u64, 0u64);
    let mut covered = from;
    for o in objects.iter().filter(|o| o.name.level == level) {
        if o.name.start > covered {
            return Err(format!("offsets {covered}..{} are missing", o.name.start));
        }
        let bytes = store.get(&o.name).await.map_err(|e| e.to_string())?;
        let seg = decode_segment(&bytes).map_err(|e| format!("{}: {e}", o.name))?;
        let mut at = o.name.start;
        let mut rest = &seg.raw[..];
        while !rest.is_empty() && at < to {
            let Some(len) = whole_command(rest) else {
                return Err(format!("{}: a command cut short at offset {at}", o.name));
            };
            if at >= from {
                all += 1;
                if !command_name(&rest[..len]).is_some_and(is_no_op) {
                    data += 1;
                }
            }
            at += len as u64;
            rest = &rest[len..];
        }
        covered = covered.max(o.name.end);
    }
    if covered < to {
        return Err(format!("offsets {covered}..{to} are missing"));
    }
    Ok((all, data))
}

/// The length of the whole command at the start of `buf`.
fn whole_command(buf: &[u8]) -> Option<usize> {
    let mut scanner = CommandScanner::new(0);
    let one = scanner.scan_limit(buf, 0, 1);
    (one.commands == 1 && one.consumed > 0).then_some(one.consumed)
}

/// The first argument of a RESP command (an inline command's first word).
fn command_name(cmd: &[u8]) -> Option<&[u8]> {
    match redis_protocol::resp2::decode::decode(cmd) {
        Ok(Some((redis_protocol::resp2::types::OwnedFrame::Array(_), _))) => {
            // `*N\r\n$len\r\nNAME\r\n…`
            let mut lines = cmd.split(|b| *b == b'\n');
            lines.next()?;
            lines.next()?;
            lines.next().map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        }
        _ => cmd
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty()),
    }
}

/// Every record, oldest generation and offset first. A record that does not parse is an
/// error naming it.
pub async fn list(store: &Store) -> Result<Vec<Branch>, StoreError> {
    let dir = path(store, BRANCHES_DIR);
    let metas: Vec<_> = match store.backend().list(Some(&dir)).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(err(store, "list", BRANCHES_DIR, e)),
    };
    let mut out = Vec::new();
    for m in metas {
        let bytes = store
            .backend()
            .get(&m.location)
            .await
            .map_err(|e| err(store, "get", m.location.as_ref(), e))?
            .bytes()
            .await
            .map_err(|e| err(store, "get", m.location.as_ref(), e))?;
        let b: Branch = serde_json::from_slice(&bytes).map_err(|e| StoreError::Backend {
            op: "read",
            object: m.location.to_string(),
            source: object_store::Error::Generic {
                store: "branch",
                source: format!("not a branch record: {e}").into(),
            },
        })?;
        out.push(b);
    }
    out.sort_by_key(|b| (b.generation, b.at));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_ops_are_told_from_writes() {
        for c in [
            &b"*1\r\n$4\r\nPING\r\n"[..],
            b"*3\r\n$7\r\npublish\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"PING\r\n",
        ] {
            assert!(command_name(c).is_some_and(is_no_op), "{c:?}");
        }
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        assert_eq!(command_name(set), Some(&b"SET"[..]));
        assert!(!is_no_op(b"SET"));
        assert_eq!(whole_command(set), Some(set.len()));
        assert_eq!(whole_command(&set[..5]), None);
    }

    #[tokio::test]
    async fn records_round_trip_and_are_not_archive_objects() {
        let store = Store::with_backend(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://",
            &"a".parse().unwrap(),
        );
        assert!(list(&store).await.unwrap().is_empty());
        let b = Branch {
            generation: 1,
            at: 1000,
            archived_end: 1234,
            replid: "a".repeat(40),
            new_replid: "b".repeat(40),
            new_master: "127.0.0.1:6380".into(),
            found_ms: 1_700_000_000_000,
            continued_in: 2,
            shifted: false,
            archive_at: 1000,
            delta: 0,
            lost_commands: Some(3),
            lost_data_commands: Some(1),
        };
        put(&store, &b).await.unwrap();
        put(&store, &b).await.unwrap();
        assert_eq!(list(&store).await.unwrap(), vec![b.clone()]);
        assert_eq!(b.lost_bytes(), 234);
        let listing = store.list().await.unwrap();
        assert!(
            listing.objects.is_empty() && listing.foreign.is_empty(),
            "{listing:?}"
        );
    }
}
