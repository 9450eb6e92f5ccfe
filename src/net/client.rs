//! A request/response client for the few commands pitr sends outside the replication stream:
//! Sentinel's `SENTINEL GET-MASTER-ADDR-BY-NAME` and its `+switch-master` messages, `INFO
//! replication` on a server before attaching, `CLUSTER SHARDS`. Replies are decoded whole by
//! `redis-protocol` (RESP2). Every wait has the client's timeout; errors name the address and
//! what was awaited, never a password.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BoxedStream, Source};

/// Replies larger than this are refused (`CLUSTER SHARDS` of a big cluster is well below).
const MAX_REPLY: usize = 64 << 20;

/// A reply, decoded whole.
pub type Frame = OwnedFrame;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} closed the connection while {during}")]
    Closed { addr: String, during: String },
    #[error("no reply from {addr} within {secs} s while {during}")]
    Timeout {
        addr: String,
        secs: u64,
        during: String,
    },
    #[error("{addr} sent a malformed reply while {during}: {detail}")]
    Protocol {
        addr: String,
        during: String,
        detail: String,
    },
    #[error("authentication to {addr} failed: {reply}")]
    Auth { addr: String, reply: String },
    #[error("{addr} refused {command}: {reply}")]
    Refused {
        addr: String,
        command: String,
        reply: String,
    },
}

impl ClientError {
    /// A wrong password or a missing permission: trying again does not help.
    pub fn is_denied(&self) -> bool {
        match self {
            ClientError::Auth { .. } => true,
            ClientError::Refused { reply, .. } => {
                reply.starts_with("NOPERM") || reply.starts_with("NOAUTH")
            }
            _ => false,
        }
    }
}

/// A connection for commands and their replies.
pub struct Client {
    stream: BoxedStream,
    buf: BytesMut,
    addr: String,
    timeout: Duration,
}

impl Client {
    /// Dials `source` where it says (no [`Source::resolve`]) within `timeout`, and
    /// authenticates with its user and password if it has one. `timeout` then bounds every
    /// reply.
    pub async fn connect(source: &Source, timeout: Duration) -> Result<Client, ClientError> {
        let addr = source.addr();
        let stream =
            super::connect(source, timeout)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
        let mut client = Client {
            stream,
            buf: BytesMut::with_capacity(4096),
            addr,
            timeout,
        };
        if let Some(password) = &source.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &source.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            if let Frame::Error(e) = client.call(&args).await? {
                return Err(ClientError::Auth {
                    addr: client.addr,
                    reply: e,
                });
            }
        }
        Ok(client)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends a command and reads its reply; an error reply is returned as [`Frame::Error`].
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Frame, ClientError> {
        self.send(args).await?;
        let during = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
        self.read(&during, self.timeout).await
    }

    /// [`call`](Client::call), with an error reply turned into [`ClientError::Refused`]
    /// naming `command` (which may be shorter than `args`: no secrets in it).
    pub async fn call_ok(&mut self, command: &str, args: &[&[u8]]) -> Result<Frame, ClientError> {
        match self.call(args).await? {
            Frame::Error(reply) => Err(ClientError::Refused {
                addr: self.addr.clone(),
                command: command.to_string(),
                reply,
            }),
            f => Ok(f),
        }
    }

    /// Sends a command without reading a reply (`SUBSCRIBE`, whose messages come with
    /// [`read`](Client::read)).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(r) => r.map_err(|source| ClientError::Io {
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                secs: self.timeout.as_secs(),
                during: "sending a command".into(),
            }),
        }
    }

    /// Reads the next reply or message within `wait`.
    pub async fn read(&mut self, during: &str, wait: Duration) -> Result<Frame, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.advance(used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        during: during.to_string(),
                        detail: e.to_string(),
                    })
                }
            }
            if self.buf.len() > MAX_REPLY {
                return Err(ClientError::Protocol {
                    addr: self.addr.clone(),
                    during: during.to_string(),
                    detail: format!("a reply of more than {MAX_REPLY} bytes"),
                });
            }
            self.buf.reserve(4096);
            let n = match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(source)) => {
                    return Err(ClientError::Io {
                        addr: self.addr.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(ClientError::Timeout {
                        addr: self.addr.clone(),
                        secs: wait.as_secs(),
                        during: during.to_string(),
                    })
                }
            };
            if n == 0 {
                return Err(ClientError::Closed {
                    addr: self.addr.clone(),
                    during: during.to_string(),
                });
            }
        }
    }
}

/// The text of a bulk or simple string reply.
pub fn text(f: &Frame) -> Option<String> {
    match f {
        Frame::BulkString(b) | Frame::SimpleString(b) => Some(String::from_utf8_lossy(b).into()),
        _ => None,
    }
}

/// The `field:value` lines of an `INFO` reply.
pub fn info_fields(info: &str) -> std::collections::HashMap<String, String> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
