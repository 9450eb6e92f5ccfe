//! Following the master: before each attach, where to attach and how to resume.
//!
//! The server a source names (or Sentinel names, or a cluster shard's view) is asked `INFO
//! replication`. A replica there is followed to its master (a `FAILOVER` or `REPLICAOF` turned
//! the archived master into one), unless the operator asked to stay on it. Then the master's
//! replication ids say how the archive continues:
//!
//! - its id is the archive's: `PSYNC <id> <offset+1>`, as always;
//! - its previous id (`master_replid2`) is the archive's and the archive ends at or before the
//!   promotion (`second_repl_offset - 1`): the same, and the master answers `+CONTINUE` with
//!   its new id: the same generation goes on;
//! - its previous id is the archive's but the archive holds bytes past the promotion: the old
//!   master's writes that the promoted replica never received, lost by the failover. That is a
//!   [`Resume::Branch`]: the lost range is recorded and the archive goes on from a full sync;
//! - anything else: a full sync starts a new generation.
//!
//! A server that refuses `INFO` (an ACL without `+info`) is attached to as named, without
//! following: the PSYNC answer alone decides, as before.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{info, warn};

use crate::archive::names::ReplId;
use crate::ingest::link::LinkError;
use crate::net::client::{info_fields, text, Client, ClientError, Frame};
use crate::net::Source;

/// How many replica-to-master steps are taken at most (a chain of replicas).
const MAX_HOPS: usize = 3;

/// What `INFO replication` says about a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// `master`, or a replica of `master_host:master_port`.
    pub master_of: Option<(String, u16)>,
    /// A replica's link to its master is up.
    pub link_up: bool,
    pub replid: Option<ReplId>,
    pub replid2: Option<ReplId>,
    /// The first offset past the history shared under `replid2` (`-1`: none).
    pub second_offset: i64,
    pub offset: u64,
}

impl Standing {
    pub fn from_info(info: &str) -> Result<Standing, String> {
        let f: HashMap<String, String> = info_fields(info);
        let role = f.get("role").ok_or("no role in INFO replication")?;
        let master_of = match role.as_str() {
            "master" => None,
            "slave" | "replica" => {
                let host = f
                    .get("master_host")
                    .ok_or("a replica without master_host")?;
                let port = f
                    .get("master_port")
                    .and_then(|p| p.parse().ok())
                    .ok_or("a replica without master_port")?;
                Some((host.clone(), port))
            }
            other => return Err(format!("unknown role {other:?}")),
        };
        let id = |k: &str| f.get(k).and_then(|v| v.parse::<ReplId>().ok());
        Ok(Standing {
            master_of,
            link_up: f.get("master_link_status").is_some_and(|s| s == "up"),
            replid: id("master_replid"),
            replid2: id("master_replid2").filter(|r| r.as_str().bytes().any(|b| b != b'0')),
            second_offset: f
                .get("second_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
            offset: f
                .get("master_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }

    /// How an archive at `pos` (its replication id and the offset just past its last byte)
    /// continues on this server.
    pub fn resume(&self, pos: Option<(ReplId, u64)>) -> Resume {
        let Some((id, offset)) = pos else {
            return Resume::Full;
        };
        if self.replid == Some(id) {
            return Resume::Continue;
        }
        if self.replid2 == Some(id) && self.second_offset >= 1 {
            let shared_end = (self.second_offset - 1) as u64;
            if offset <= shared_end {
                return Resume::Continue;
            }
            return Resume::Branch {
                at: shared_end,
                archived_end: offset,
            };
        }
        Resume::Full
    }
}

/// How to resume on the server found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// `PSYNC` from the archive's end (the server may still answer with a full sync).
    Continue,
    /// The archive holds `[at, archived_end)` past the promotion of this master: lost writes.
    Branch { at: u64, archived_end: u64 },
    /// Nothing to continue: a full sync.
    Full,
}

/// Where to attach: the server and what it said (`None`: it refused `INFO`).
pub struct Found {
    pub source: Source,
    pub standing: Option<Standing>,
}

/// Finds the server to attach to for an archive at `pos`: `source` resolved (Sentinel, a
/// cluster shard), then, when `follow` and it is a replica, its master, as long as that master
/// answers and is not further from the archive (it can continue it, or the replica could not
/// either). The returned source has no locator: it is dialled as is.
pub async fn find(
    source: &Source,
    pos: Option<(ReplId, u64)>,
    follow: bool,
    timeout: Duration,
) -> Result<Found, LinkError> {
    let mut at = source
        .resolve(timeout)
        .await
        .map_err(|what| LinkError::locate(source, what))?;
    at.locate = None;
    if !follow {
        return Ok(Found {
            source: at,
            standing: None,
        });
    }
    let mut standing = match standing(&at, timeout).await? {
        Some(s) => s,
        None => {
            return Ok(Found {
                source: at,
                standing: None,
            })
        }
    };
    for _ in 0..MAX_HOPS {
        let Some((host, port)) = standing.master_of.clone() else {
            break;
        };
        let next = Source {
            host,
            port,
            locate: None,
            ..at.clone()
        };
        let next_standing = match standing_of(&next, timeout).await {
            Ok(Some(s)) => s,
            Ok(None) | Err(_) if standing.link_up => {
                warn!(replica = %at.addr(), master = %next.addr(),
                    "the source is a replica whose master does not answer pitr: archiving from the replica");
                break;
            }
            _ => break,
        };
        // Stay on a replica only while it is attached to its master and can continue the
        // archive where its master cannot (chained replication gives the same stream).
        let better = match (standing.resume(pos), next_standing.resume(pos)) {
            (_, Resume::Continue) => true,
            (Resume::Continue, _) => !standing.link_up,
            _ => true,
        };
        if !better {
            break;
        }
        info!(replica = %at.addr(), master = %next.addr(),
            "the source is a replica now (a failover or REPLICAOF): following its master");
        at = next;
        standing = next_standing;
    }
    Ok(Found {
        source: at,
        standing: Some(standing),
    })
}

/// `INFO replication` of `source`; `None` when the server refuses it (no permission).
async fn standing(source: &Source, timeout: Duration) -> Result<Option<Standing>, LinkError> {
    standing_of(source, timeout).await.map_err(|e| match e {
        ClientError::Auth { addr, reply } => LinkError::Auth { addr, reply },
        ClientError::Connect { addr, source } => LinkError::Connect { addr, source },
        ClientError::Timeout { addr, secs, .. } => LinkError::Timeout {
            addr,
            secs,
            during: "asking INFO replication",
        },
        ClientError::Io { addr, source } => LinkError::Io { addr, source },
        ClientError::Closed { addr, .. } => LinkError::Closed {
            addr,
            during: "while asked INFO replication",
        },
        ClientError::Protocol { addr, detail, .. } => LinkError::Protocol {
            addr,
            what: "INFO replication reply",
            detail,
        },
        ClientError::Refused { addr, reply, .. } => LinkError::Refused {
            addr,
            command: "INFO replication",
            reply,
        },
    })
}

async fn standing_of(source: &Source, timeout: Duration) -> Result<Option<Standing>, ClientError> {
    let mut c = Client::connect(source, timeout).await?;
    let reply = c.call(&[b"INFO", b"replication"]).await?;
    match reply {
        Frame::Error(e) if e.starts_with("LOADING") => Err(ClientError::Refused {
            addr: c.addr().to_string(),
            command: "INFO replication".into(),
            reply: e,
        }),
        // No permission (an ACL without +info), or a renamed command: attach as named.
        Frame::Error(e) => {
            warn_once_no_info(c.addr(), &e);
            Ok(None)
        }
        f => {
            let info = text(&f).ok_or_else(|| ClientError::Protocol {
                addr: c.addr().to_string(),
                during: "INFO replication".into(),
                detail: format!("{f:?}"),
            })?;
            Standing::from_info(&info)
                .map(Some)
                .map_err(|detail| ClientError::Protocol {
                    addr: c.addr().to_string(),
                    during: "INFO replication".into(),
                    detail,
                })
        }
    }
}

/// Logs once per process that failovers are followed only by the PSYNC answer.
fn warn_once_no_info(addr: &str, reply: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        warn!(%addr, %reply,
            "INFO replication refused: a failover that demotes this server is not followed (grant +info to follow it)")
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn promoted(second: i64) -> Standing {
        Standing::from_info(&format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:{B}\r\nmaster_replid2:{A}\r\nmaster_repl_offset:5000\r\nsecond_repl_offset:{second}\r\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_promoted_replica_continues_up_to_the_promotion_and_branches_past_it() {
        let a: ReplId = A.parse().unwrap();
        let s = promoted(1001);
        assert_eq!(s.master_of, None);
        assert_eq!(s.resume(Some((a, 900))), Resume::Continue);
        assert_eq!(s.resume(Some((a, 1000))), Resume::Continue);
        assert_eq!(
            s.resume(Some((a, 1200))),
            Resume::Branch {
                at: 1000,
                archived_end: 1200
            }
        );
        assert_eq!(s.resume(Some((B.parse().unwrap(), 4000))), Resume::Continue);
        let other: ReplId = "cccccccccccccccccccccccccccccccccccccccc".parse().unwrap();
        assert_eq!(s.resume(Some((other, 10))), Resume::Full);
        assert_eq!(s.resume(None), Resume::Full);
    }

    #[test]
    fn a_replica_names_its_master() {
        let s = Standing::from_info(&format!(
            "role:slave\r\nmaster_host:10.0.0.2\r\nmaster_port:6380\r\nmaster_link_status:up\r\nmaster_replid:{A}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nsecond_repl_offset:-1\r\nmaster_repl_offset:7\r\n"
        ))
        .unwrap();
        assert_eq!(s.master_of, Some(("10.0.0.2".into(), 6380)));
        assert!(s.link_up);
        assert_eq!(s.replid2, None);
        assert!(Standing::from_info("nothing").is_err());
    }
}
