//! A master behind Sentinel: `sentinel://[user[:password]@]host:port[,host:port…]/<master-name>`.
//!
//! The user and password of the URL (or `PITR_SOURCE_PASSWORD`) are the master's, as for
//! `redis://`; the sentinels' own are separate (`PITR_SENTINEL_USER`, `PITR_SENTINEL_PASSWORD`),
//! since a deployment usually protects them differently. [`SentinelLocate`] asks the sentinels
//! in turn for the master's address (`SENTINEL GET-MASTER-ADDR-BY-NAME`), the one that answered
//! first asked first next time, and keeps a subscription to `+switch-master` on one of them so
//! that a failover drops the archiving link at once instead of when the old master's link
//! times out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::client::{text, Client, ClientError, Frame};
use super::{Locate, Source};

/// Sentinel's default port.
pub const DEFAULT_PORT: u16 = 26379;
/// The subscription sends PING when it has heard nothing for this long...
const PING_EVERY: Duration = Duration::from_secs(5);
/// ...and gives the sentinel up when nothing came back for this long.
const SILENT_LIMIT: Duration = Duration::from_secs(15);

/// The sentinels' own credentials (not the master's).
#[derive(Clone, Default)]
pub struct SentinelAuth {
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Parses a `sentinel://` URL into the master's [`Source`], located through the sentinels.
/// `master_password` (the environment) is used when the URL has no password. `template`
/// carries the transport settings (TLS) that the sentinels and the master share. Errors never
/// show a password.
pub fn parse(
    url: &str,
    master_password: Option<String>,
    auth: SentinelAuth,
    template: &Source,
) -> Result<Source, String> {
    let shown = super::redact_url(url);
    let rest = url
        .strip_prefix("sentinel://")
        .ok_or_else(|| format!("{shown:?}: not a sentinel:// URL"))?;
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    let (hosts, name) = rest.split_once('/').ok_or_else(|| {
        format!("{shown:?}: no master name (sentinel://host:port[,host:port…]/<master-name>)")
    })?;
    let name = super::percent_decode(name.trim_end_matches('/'));
    if name.is_empty() || name.contains('/') {
        return Err(format!("{shown:?}: invalid master name {name:?}"));
    }
    let mut sentinels = Vec::new();
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        sentinels.push(host_port(h, DEFAULT_PORT).map_err(|e| format!("{shown:?}: {e}"))?);
    }
    if sentinels.is_empty() {
        return Err(format!("{shown:?}: no sentinel address"));
    }
    let (user, password) = match userinfo {
        None => (None, master_password),
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (
                Some(super::percent_decode(user)).filter(|s| !s.is_empty()),
                Some(super::percent_decode(pw)),
            ),
            None => (
                Some(super::percent_decode(u)).filter(|s| !s.is_empty()),
                master_password,
            ),
        },
    };
    let sentinel_source = |(host, port): &(String, u16)| Source {
        host: host.clone(),
        port: *port,
        user: auth.user.clone(),
        password: auth.password.clone(),
        locate: None,
        ..template.clone()
    };
    let locate = SentinelLocate {
        sentinels: Mutex::new(sentinels.iter().map(sentinel_source).collect()),
        master: name,
        moved: OnceLock::new(),
        denied: AtomicBool::new(false),
    };
    let (host, port) = sentinels[0].clone();
    Ok(Source {
        host,
        port,
        user,
        password,
        locate: Some(Arc::new(locate)),
        ..template.clone()
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub(crate) fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("invalid address {s:?}");
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.contains(':') => {
            Ok((h.to_string(), p.parse().map_err(|_| bad())?))
        }
        None if !s.is_empty() => Ok((s.to_string(), default_port)),
        _ => Err(bad()),
    }
}

/// Where Sentinel says the named master is.
pub struct SentinelLocate {
    /// The sentinels, the one that answered last first.
    sentinels: Mutex<Vec<Source>>,
    master: String,
    moved: OnceLock<watch::Receiver<u64>>,
    /// Every sentinel refused the last request (credentials or permission).
    denied: AtomicBool,
}

impl SentinelLocate {
    fn sentinels(&self) -> Vec<Source> {
        self.sentinels.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Moves the sentinel at `addr` to the front.
    fn prefer(&self, addr: &str) {
        if let Ok(mut s) = self.sentinels.lock() {
            if let Some(i) = s.iter().position(|x| x.addr() == addr) {
                let first = s.remove(i);
                s.insert(0, first);
            }
        }
    }

    /// Where `sentinel` says the master is; the error, and whether it was a refusal.
    async fn ask(
        &self,
        sentinel: &Source,
        timeout: Duration,
    ) -> Result<(String, u16), (String, bool)> {
        let addr = sentinel.addr();
        let failed = |e: ClientError| (e.to_string(), e.is_denied());
        let mut c = Client::connect(sentinel, timeout).await.map_err(failed)?;
        let reply = c
            .call_ok(
                "SENTINEL GET-MASTER-ADDR-BY-NAME",
                &[
                    b"SENTINEL",
                    b"GET-MASTER-ADDR-BY-NAME",
                    self.master.as_bytes(),
                ],
            )
            .await
            .map_err(failed)?;
        self.read_addr(&addr, reply).map_err(|e| (e, false))
    }

    fn read_addr(&self, addr: &str, reply: Frame) -> Result<(String, u16), String> {
        match reply {
            Frame::Array(a) if a.len() == 2 => {
                let host = text(&a[0]).filter(|h| !h.is_empty());
                let port = text(&a[1]).and_then(|p| p.parse::<u16>().ok());
                match (host, port) {
                    (Some(h), Some(p)) => Ok((h, p)),
                    _ => Err(format!("sentinel {addr} sent an invalid address {a:?}")),
                }
            }
            Frame::Null | Frame::Array(_) => Err(format!(
                "sentinel {addr} knows no master named {:?}",
                self.master
            )),
            other => Err(format!("sentinel {addr} answered {other:?}")),
        }
    }
}

impl Locate for SentinelLocate {
    fn master(&self, timeout: Duration) -> BoxFuture<'_, Result<(String, u16), String>> {
        Box::pin(async move {
            let mut failures = Vec::new();
            let mut all_denied = true;
            for s in self.sentinels() {
                match self.ask(&s, timeout).await {
                    Ok(at) => {
                        self.denied.store(false, Ordering::Relaxed);
                        self.prefer(&s.addr());
                        debug!(sentinel = %s.addr(), master = %self.master, host = %at.0, port = at.1,
                            "sentinel names the master");
                        return Ok(at);
                    }
                    Err((e, denied)) => {
                        all_denied &= denied;
                        failures.push(e);
                    }
                }
            }
            self.denied.store(all_denied, Ordering::Relaxed);
            Err(format!(
                "no sentinel named the master {:?}: {}",
                self.master,
                failures.join("; ")
            ))
        })
    }

    fn moved(&self) -> Option<watch::Receiver<u64>> {
        let rx = self.moved.get_or_init(|| {
            let (tx, rx) = watch::channel(0u64);
            let sentinels = self.sentinels();
            let master = self.master.clone();
            tokio::spawn(subscribe(sentinels, master, tx));
            rx
        });
        Some(rx.clone())
    }

    fn denied(&self) -> bool {
        self.denied.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        let addrs: Vec<String> = self.sentinels().iter().map(Source::addr).collect();
        format!("sentinel {}/{}", addrs.join(","), self.master)
    }
}

/// Keeps a `+switch-master` subscription on one sentinel after another, bumping `tx` for
/// each switch of `master`, until every receiver is gone.
async fn subscribe(sentinels: Vec<Source>, master: String, tx: watch::Sender<u64>) {
    let mut delay = Duration::from_millis(200);
    let mut i = 0usize;
    let mut warned = false;
    loop {
        let s = &sentinels[i % sentinels.len()];
        i += 1;
        let ended = tokio::select! {
            r = listen(s, &master, &tx) => r,
            _ = tx.closed() => return,
        };
        match ended {
            Ok(()) => return,
            Err(e) => {
                if !warned || !e.is_transient() {
                    warn!(sentinel = %s.addr(), error = %e,
                        "the +switch-master subscription failed: trying the next sentinel (failovers are still noticed when the link drops)");
                    warned = true;
                } else {
                    debug!(sentinel = %s.addr(), error = %e, "the +switch-master subscription failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

impl ClientError {
    fn is_transient(&self) -> bool {
        !self.is_denied()
    }
}

/// One subscription; `Ok` when every receiver is gone.
async fn listen(s: &Source, master: &str, tx: &watch::Sender<u64>) -> Result<(), ClientError> {
    let mut c = Client::connect(s, Duration::from_secs(5)).await?;
    c.send(&[b"SUBSCRIBE", b"+switch-master"]).await?;
    match c
        .read("subscribing to +switch-master", Duration::from_secs(5))
        .await?
    {
        Frame::Error(reply) => {
            return Err(ClientError::Refused {
                addr: c.addr().to_string(),
                command: "SUBSCRIBE +switch-master".into(),
                reply,
            })
        }
        _ => debug!(sentinel = %c.addr(), "subscribed to +switch-master"),
    }
    let mut silent = Duration::ZERO;
    loop {
        let frame = match c.read("waiting for +switch-master", PING_EVERY).await {
            Ok(f) => f,
            Err(ClientError::Timeout { .. }) if silent < SILENT_LIMIT => {
                silent += PING_EVERY;
                c.send(&[b"PING"]).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        silent = Duration::ZERO;
        let Frame::Array(parts) = frame else { continue };
        // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
        if parts.len() != 3 || text(&parts[0]).as_deref() != Some("message") {
            continue;
        }
        let Some(body) = text(&parts[2]) else {
            continue;
        };
        let words: Vec<&str> = body.split_ascii_whitespace().collect();
        if words.len() == 5 && words[0] == master {
            info!(master, from = %format!("{}:{}", words[1], words[2]),
                to = %format!("{}:{}", words[3], words[4]), sentinel = %c.addr(),
                "sentinel announced a failover (+switch-master)");
            tx.send_modify(|n| *n += 1);
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Source {
        Source::parse("redis://x", None).unwrap()
    }

    #[test]
    fn urls_parse_with_the_master_credentials_apart_from_the_sentinels() {
        let auth = SentinelAuth {
            user: Some("sentinel-user".into()),
            password: Some("sentinel-pw".into()),
        };
        let s = parse(
            "sentinel://app:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:5000/my%20master",
            Some("env".into()),
            auth,
            &template(),
        )
        .unwrap();
        assert_eq!(s.user.as_deref(), Some("app"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        let l = s.locate.as_ref().unwrap();
        assert_eq!(
            l.describe(),
            "sentinel 10.0.0.1:26379,10.0.0.2:26380,[::1]:5000/my master"
        );
        let s = parse(
            "sentinel://h/m",
            Some("env".into()),
            SentinelAuth::default(),
            &template(),
        )
        .unwrap();
        assert_eq!(s.password.as_deref(), Some("env"));
        for bad in [
            "sentinel://h",
            "sentinel://h/",
            "sentinel:///m",
            "sentinel://h:x/m",
            "sentinel://u:secret@h:99999/m",
        ] {
            let e = parse(bad, None, SentinelAuth::default(), &template()).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn no_sentinel_answering_is_an_error_naming_each() {
        let s = parse(
            "sentinel://127.0.0.1:1,127.0.0.1:2/m",
            None,
            SentinelAuth::default(),
            &template(),
        )
        .unwrap();
        let e = s.resolve(Duration::from_secs(2)).await.unwrap_err();
        assert!(
            e.contains("127.0.0.1:1") && e.contains("127.0.0.1:2"),
            "{e}"
        );
        assert!(e.contains("\"m\""), "{e}");
    }
}
