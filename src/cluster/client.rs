//! A small request/response client for the few commands cluster discovery sends (`AUTH`,
//! `CLUSTER SHARDS`, `CLUSTER SLOTS`): RESP2 replies, nested arrays included. It dials through
//! [`crate::net::connect`], so it reaches a node the way the replica link does.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{BoxedStream, Source};

/// The largest reply accepted (a `CLUSTER SHARDS` of a thousand nodes is far smaller).
const MAX_REPLY: usize = 64 << 20;

/// One RESP value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// An integer, or a string that holds one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            v => v.text()?.parse().ok(),
        }
    }

    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(v)) => Some(v),
            _ => None,
        }
    }

    /// The value under `key` of a flat key/value array (`CLUSTER SHARDS` answers maps so in
    /// RESP2).
    pub fn field(&self, key: &str) -> Option<&Value> {
        let items = self.items()?;
        items
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv[0].text().as_deref() == Some(key))
            .map(|kv| &kv[1])
    }
}

/// Parses one value from the start of `buf`: `Ok(None)` when more bytes are needed, otherwise
/// the value and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        return Ok(None);
    };
    if nl == 0 || buf[nl - 1] != b'\r' {
        return Err("a reply line without CRLF".into());
    }
    let line = String::from_utf8_lossy(&buf[1..nl - 1]).into_owned();
    let after = nl + 1;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| format!("bad number {line:?}"))
    };
    match buf[0] {
        b'+' => Ok(Some((Value::Simple(line), after))),
        b'-' => Ok(Some((Value::Error(line), after))),
        b':' => Ok(Some((Value::Int(number()?), after))),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Value::Bulk(Some(buf[after..end].to_vec())), end + 2)))
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Array(None), after)));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        c => Err(format!("unexpected reply type byte {:?}", c as char)),
    }
}

/// A connection to one node for commands and their replies.
pub struct Client {
    stream: BoxedStream,
    buf: BytesMut,
    addr: String,
    timeout: Duration,
}

impl Client {
    /// Connects to `source` (its host and port as they are: nothing is resolved) and
    /// authenticates with its user and password, each step within `timeout`.
    pub async fn connect(source: &Source, timeout: Duration) -> Result<Client, String> {
        let addr = source.addr();
        let stream = crate::net::connect(source, timeout)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let mut c = Client {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            addr,
            timeout,
        };
        if let Some(password) = &source.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &source.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            if let Value::Error(e) = c.call(&args).await? {
                return Err(format!("authentication to {} failed: {e}", c.addr));
            }
        }
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and reads its reply (an error reply is a [`Value::Error`]).
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, String> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let addr = self.addr.clone();
        let io = |e: std::io::Error| format!("talking to {addr}: {e}");
        tokio::time::timeout(self.timeout, self.stream.write_all(&out))
            .await
            .map_err(|_| format!("{}: no progress in {:?}", self.addr, self.timeout))?
            .map_err(io)?;
        loop {
            if let Some((v, used)) = parse(&self.buf)
                .map_err(|e| format!("{} sent a malformed reply: {e}", self.addr))?
            {
                self.buf.advance(used);
                return Ok(v);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(format!(
                    "{}: reply larger than {MAX_REPLY} bytes",
                    self.addr
                ));
            }
            self.buf.reserve(16 * 1024);
            let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| format!("{}: no reply within {:?}", self.addr, self.timeout))?
                .map_err(io)?;
            if n == 0 {
                return Err(format!("{} closed the connection", self.addr));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies_and_waits_for_the_rest() {
        let wire = b"*2\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$2\r\nid\r\n$-1\r\n+OK\r\n";
        let (v, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        let shard = &v.items().unwrap()[0];
        let slots = shard.field("slots").unwrap().items().unwrap();
        assert_eq!(slots[1].int(), Some(5460));
        assert_eq!(shard.field("id"), Some(&Value::Bulk(None)));
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(b"?x\r\n").is_err());
    }
}
