//! Reaching a server: where and as whom to connect ([`Source`]), and the dial itself. Both the
//! replica link (`ingest`) and a restore's live target (`replay`) connect through here, so a new
//! way of reaching a server (TLS, Sentinel, Cluster) is a change here, not in their loops.

pub mod client;
pub mod sentinel;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use tls::{Tls, TlsError, TlsOptions};

/// Where and as whom to connect. The password is never printed.
///
/// `host` and `port` are the server to dial. A source whose master can move (behind Sentinel,
/// a shard of a cluster) also has a [`Locate`]: [`Source::resolve`] asks it where the master is
/// now before each connection, and its [`Locate::moved`] tells a running link to let go.
///
/// `tls` is set for `rediss://`: every connection to the source, wherever it is located, is
/// made with those settings.
#[derive(Clone, Default)]
pub struct Source {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub locate: Option<Arc<dyn Locate>>,
    pub tls: Option<Arc<Tls>>,
}

/// Finds the master of a source that can move: Sentinel's view of a named master, or the
/// master of one shard of a cluster.
pub trait Locate: Send + Sync {
    /// The master's address now, within `timeout`; the error names what was asked and why it
    /// failed (never a password).
    fn master(&self, timeout: Duration) -> BoxFuture<'_, Result<(String, u16), String>>;
    /// A value that changes whenever the master is known to have moved (a `+switch-master`, a
    /// new topology), so that a link to the old one is dropped at once rather than when it
    /// times out. `None`: only a failed link says so.
    fn moved(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// What is followed, for messages: `sentinel 10.0.0.1:26379/mymaster`.
    fn describe(&self) -> String;
    /// Whether the last [`master`](Locate::master) failed because every server asked refused
    /// the credentials or a permission: trying again does not help.
    fn denied(&self) -> bool {
        false
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("locate", &self.locate.as_ref().map(|l| l.describe()))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Source {
    /// Parses `redis://[user[:password]@]host[:port]`, or `rediss://…` for TLS with the
    /// process's default settings ([`tls::default_tls`]). A password in the URL wins over
    /// `env_password`; the environment keeps it out of argv. Errors never show the password.
    pub fn parse(url: &str, env_password: Option<String>) -> Result<Source, String> {
        let shown = redact_url(url);
        let u = url::Url::parse(url).map_err(|e| format!("{shown:?}: {e}"))?;
        let tls = match u.scheme() {
            "redis" => None,
            "rediss" => Some(tls::default_tls().map_err(|e| format!("{shown:?}: TLS: {e}"))?),
            other => {
                return Err(format!(
                    "{shown:?}: scheme {other:?} not supported (use redis://host:port, or rediss:// for TLS)"
                ))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{shown:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let user = Some(percent_decode(u.username())).filter(|s| !s.is_empty());
        let password = u.password().map(percent_decode).or(env_password);
        Ok(Source {
            host,
            port: u.port().unwrap_or(6379),
            user,
            password,
            locate: None,
            tls,
        })
    }

    /// This source with `host` and `port` set to where its master is now: itself when nothing
    /// locates it, otherwise what its [`Locate`] answers within `timeout`.
    pub async fn resolve(&self, timeout: Duration) -> Result<Source, String> {
        let Some(locate) = &self.locate else {
            return Ok(self.clone());
        };
        let (host, port) = locate.master(timeout).await?;
        Ok(Source {
            host,
            port,
            ..self.clone()
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A redis URL with its user and password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, rest)) => match scheme_user.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…@{rest}"),
            None => format!("…@{rest}"),
        },
        None => url.to_string(),
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A connected byte stream to a server, whatever carries it: plain TCP or TLS over it. The
/// replica link and the live target read and write through this alone, so a new transport is a
/// new dialer here, not a change to their loops.
pub trait ServerStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> ServerStream for T {}

/// A stream from [`connect`]: the transport is chosen at run time, the link does not know it.
pub type BoxedStream = Box<dyn ServerStream>;

/// Connects to `source` (its `host` and `port` as they are: [resolve](Source::resolve) first a
/// source that can move) by the transport it asks for, within `timeout`: see [`connect_to`].
pub async fn connect(source: &Source, timeout: Duration) -> std::io::Result<BoxedStream> {
    connect_to(&source.host, source.port, source.tls.as_deref(), timeout).await
}

/// Connects to `host:port` within `timeout` (then an error of kind `TimedOut`): TCP ([`dial`]),
/// then, with `tls`, the TLS handshake in what is left of the same `timeout`, verified for the
/// server-name override or `host` (see [`tls::handshake`]). For whoever dials other hosts with a
/// source's settings (Sentinel, the nodes of a cluster).
pub async fn connect_to(
    host: &str,
    port: u16,
    tls: Option<&Tls>,
    timeout: Duration,
) -> std::io::Result<BoxedStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = dial(host, port, timeout).await?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => Ok(Box::new(tls::handshake(tcp, host, tls, deadline).await?)),
    }
}

/// A TCP connection to `host:port` within `timeout` (then an error of kind `TimedOut`), with
/// Nagle's algorithm off: commands and ACKs are small and must go at once. Both the master link
/// and a restore's target connect this way (under TLS when they ask for it).
pub async fn dial(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", timeout.as_secs()),
            ))
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure() -> Arc<Tls> {
        Arc::new(
            Tls::new(&TlsOptions {
                insecure: true,
                ..TlsOptions::default()
            })
            .unwrap(),
        )
    }

    #[test]
    fn rediss_urls_are_tls_and_other_schemes_are_refused() {
        tls::set_default(insecure());
        let s = Source::parse("rediss://u:secret@127.0.0.1:6380", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 6380));
        assert!(s.tls.as_ref().is_some_and(|t| t.insecure()));
        assert!(!format!("{s:?}").contains("secret"));
        assert!(Source::parse("redis://h", None).unwrap().tls.is_none());
        let e = Source::parse("http://u:secret@h:1", None).unwrap_err();
        assert!(e.contains("rediss://") && !e.contains("secret"), "{e}");
    }

    /// A server that accepts the connection and never answers the handshake: the dial fails
    /// within its timeout, as `TimedOut`.
    #[tokio::test]
    async fn a_silent_server_times_the_handshake_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move { listener.accept().await });
        let tls = insecure();
        let start = std::time::Instant::now();
        let e = match connect_to("127.0.0.1", port, Some(&tls), Duration::from_millis(300)).await {
            Ok(_) => panic!("connected to a silent server"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        drop(accept);
    }
}
