//! `pitr serve`: the archive as a replication master. Real `redis-server` and
//! `valkey-server` replicas (`REPLICAOF <host> <port>`) get a full sync from an archived
//! snapshot, then the archived stream after it, byte for byte (the offsets a replica counts
//! are the archived master's): up to a cut (`--to`, on the same whole-command and
//! `MULTI … EXEC` boundary as a restore), or, with `--follow`, whatever the archive gains.
//! `PSYNC <replid> <offset>` for an offset the archive holds is answered with `+CONTINUE`.
//!
//! One task per replica ([`conn`]); the snapshot is streamed from the store (never held
//! whole), the segments fetched ahead within a byte budget. Every network wait has a timeout.

pub mod conn;
pub mod moment;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::store::{Store, StoreError};
use crate::replay::plan::{PlanError, Target};
use crate::replay::RestoreError;

pub use moment::Moment;

/// What to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The moment `--to` names: the stream ends at its cut; the link is then held with PINGs.
    To(Target),
    /// The newest snapshot, then the stream as the archive grows.
    Follow,
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub store: Store,
    pub mode: Mode,
    pub listen: SocketAddr,
    /// `AUTH` a replica must send first (`masterauth`), if any.
    pub password: Option<String>,
    /// `--to`: a `PING` this often once the stream reached the cut (0: none).
    pub ping_interval: Duration,
    /// Every network wait: a command of the handshake, each write, and (once the snapshot is
    /// sent) the silence of a replica (it acknowledges every second).
    pub timeout: Duration,
    /// `--follow`: how often the archive is listed for what it gained.
    pub poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the snapshot cannot be served: {0}")]
    Snapshot(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The replica's link ended (internal: one replica's end, never the server's).
    #[error("the replica is gone")]
    Gone,
}

impl From<PlanError> for ServeError {
    fn from(e: PlanError) -> Self {
        ServeError::Restore(RestoreError::Plan(e))
    }
}

/// The server, bound.
pub struct Server {
    listener: TcpListener,
    shared: Arc<conn::Shared>,
    /// One replica at a time (see [`Server::one_replica`]).
    one: Option<Arc<tokio::sync::Semaphore>>,
}

impl Server {
    /// Plans what `cfg` serves (for `--to`, finds the cut) and binds the listening socket.
    pub async fn bind(cfg: ServeConfig) -> Result<Server, ServeError> {
        let moment = match cfg.mode {
            Mode::To(t) => Some(moment::plan_moment(&cfg.store, t, true).await?),
            Mode::Follow => None,
        };
        Server::bind_with(cfg, moment).await
    }

    /// Binds a server of `moment`, already planned (a restore's plan, see
    /// [`moment::moment_of_plan`]); `cfg.mode` must be [`Mode::To`].
    pub async fn bind_moment(cfg: ServeConfig, moment: Moment) -> Result<Server, ServeError> {
        debug_assert!(matches!(cfg.mode, Mode::To(_)) && moment.cut.is_some());
        Server::bind_with(cfg, Some(moment)).await
    }

    async fn bind_with(cfg: ServeConfig, moment: Option<Moment>) -> Result<Server, ServeError> {
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: cfg.listen,
                    source,
                })?;
        Ok(Server {
            listener,
            shared: Arc::new(conn::Shared {
                cfg,
                moment,
                next_id: Default::default(),
            }),
            one: None,
        })
    }

    /// Serves one connection at a time: another one, while a link is up, is closed at once
    /// (a restore serves the one server it restores into; a replica that reconnects is let in
    /// once its previous link has ended).
    pub fn one_replica(mut self) -> Server {
        self.one = Some(Arc::new(tokio::sync::Semaphore::new(1)));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The moment served with `--to` (planned once, at [`bind`](Server::bind)).
    pub fn moment(&self) -> Option<&Moment> {
        self.shared.moment.as_ref()
    }

    /// Why a replica's TTLs may end later than the archived master's, if they may: the
    /// served snapshot (with `--follow`, the newest one now) was written by a master before
    /// 7.0 ([`moment::sends_relative_ttls`]), whose stream carries relative TTLs that a
    /// replica counts from when it applies them. `None` too when the archive holds no
    /// snapshot yet.
    pub async fn relative_ttls(&self) -> Result<Option<String>, ServeError> {
        let store = &self.shared.cfg.store;
        let m = match &self.shared.moment {
            Some(m) => m.clone(),
            None => match moment::plan_moment(store, Target::Latest, false).await {
                Ok(m) => m,
                Err(ServeError::Restore(RestoreError::Plan(_))) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let Some(h) = moment::snapshot_header(store, m.snapshot, m.snapshot_size).await? else {
            return Ok(None);
        };
        Ok(moment::sends_relative_ttls(h).then(|| {
            format!(
                "the archived master wrote {} RDB version {} (Redis before 7.0): its stream carries relative TTLs (EXPIRE, SETEX, SET … EX), which a replica applies from when it receives them, so a served key's TTL ends later than it did on the master (by up to the time since the master ran the command)",
                h.magic, h.version
            )
        }))
    }

    /// Accepts replicas until `stop`, each on a task of its own; then ends their links.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ServeError> {
        let tasks = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((sock, peer)) => {
                    let permit = match &self.one {
                        Some(one) => match one.clone().try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) => {
                                tracing::warn!(%peer, "a second connection while a replica is linked: closed (one replica only)");
                                drop(sock);
                                continue;
                            }
                        },
                        None => None,
                    };
                    let _ = sock.set_nodelay(true);
                    let shared = self.shared.clone();
                    let stop = stop.child_token();
                    tasks.spawn(async move {
                        conn::handle(sock, peer, shared, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: the others go on; try again shortly.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::names::ArchiveName;
    use crate::maintain::verify::test_objects::{segment_of, snapshot};
    use crate::replay::filter::Filter;
    use crate::replay::restore::make_plan;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// After an EOF-marked (filtered) snapshot, the stream waits for the replica's first
    /// `REPLCONF ACK`, as a master's does: a replica loading from the socket reads past the
    /// mark and would drop bytes that came with it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_stream_after_an_eof_marked_snapshot_waits_for_the_first_ack() {
        let n: ArchiveName = "a".parse().unwrap();
        let store = Store::open("memory://", &n).unwrap();
        let raw: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let (_, seed) = snapshot(&store, 1, 0, 1000).await;
        segment_of(&store, 1, 0, raw, 1100, seed).await;
        let plan = make_plan(&store, Target::Latest).await.unwrap();
        let (mut m, _) = moment::moment_of_plan(&store, &plan, false).await.unwrap();
        let mark = crate::random_hex(20);
        m.filtered = Some(Arc::new(moment::Filtered {
            filter: Filter {
                dbs: vec![0],
                ..Default::default()
            },
            replid: crate::random_hex(20),
            eof_mark: mark.clone(),
            served: Default::default(),
        }));
        let cfg = ServeConfig {
            store,
            mode: Mode::To(Target::Latest),
            listen: "127.0.0.1:0".parse().unwrap(),
            password: None,
            ping_interval: Duration::ZERO,
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        };
        let server = Server::bind_moment(cfg, m).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(server.run(stop.clone()));

        let (rd, mut wr) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        let mut rd = BufReader::new(rd);
        let mut line = String::new();
        for cmd in [
            "PING\r\n",
            "REPLCONF capa eof capa psync2\r\n",
            "PSYNC ? -1\r\n",
        ] {
            wr.write_all(cmd.as_bytes()).await.unwrap();
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            assert!(line.starts_with('+'), "{cmd:?}: {line:?}");
        }
        assert!(line.starts_with("+FULLRESYNC "), "{line:?}");
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("$EOF:{mark}\r\n"));
        let mut rdb = Vec::new();
        while !rdb.ends_with(mark.as_bytes()) {
            let mut b = [0u8; 1];
            rd.read_exact(&mut b).await.unwrap();
            rdb.push(b[0]);
        }
        assert!(rdb.starts_with(b"REDIS"), "{rdb:?}");
        // Nothing until the replica says it loaded the snapshot.
        let mut b = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(500), rd.read(&mut b)).await;
        assert!(early.is_err(), "sent before the ACK: {early:?}");
        wr.write_all(b"REPLCONF ACK 0\r\n").await.unwrap();
        let want = [&b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"[..], raw].concat();
        let mut stream = vec![0u8; want.len()];
        tokio::time::timeout(Duration::from_secs(10), rd.read_exact(&mut stream))
            .await
            .expect("the stream after the ACK")
            .unwrap();
        assert_eq!(stream, want);
        stop.cancel();
        run.await.unwrap().unwrap();
    }
}
