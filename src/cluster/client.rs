//! The replies of the few commands cluster discovery sends (`AUTH`, `CLUSTER SHARDS`,
//! `CLUSTER SLOTS`) as [`Value`]s, over [`crate::net::client::Client`] (which dials through
//! [`crate::net::connect`], so it reaches a node the way the replica link does).

use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;

use crate::net::client::Client as NetClient;
use crate::net::Source;

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

impl From<OwnedFrame> for Value {
    fn from(f: OwnedFrame) -> Value {
        match f {
            OwnedFrame::SimpleString(b) => Value::Simple(String::from_utf8_lossy(&b).into_owned()),
            OwnedFrame::Error(e) => Value::Error(e),
            OwnedFrame::Integer(n) => Value::Int(n),
            OwnedFrame::BulkString(b) => Value::Bulk(Some(b)),
            OwnedFrame::Array(items) => {
                Value::Array(Some(items.into_iter().map(Value::from).collect()))
            }
            OwnedFrame::Null => Value::Bulk(None),
        }
    }
}

/// Parses one value from the start of `buf` (by redis-protocol): `Ok(None)` when more bytes
/// are needed, otherwise the value and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    match redis_protocol::resp2::decode::decode(buf) {
        Ok(Some((f, used))) => Ok(Some((Value::from(f), used))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A connection to one node for commands and their replies ([`crate::net::client::Client`],
/// its replies as [`Value`]s and its errors as text).
pub struct Client(NetClient);

impl Client {
    /// Connects to `source` (its host and port as they are: nothing is resolved) and
    /// authenticates with its user and password, each step within `timeout`.
    pub async fn connect(source: &Source, timeout: Duration) -> Result<Client, String> {
        NetClient::connect(source, timeout)
            .await
            .map(Client)
            .map_err(|e| e.to_string())
    }

    pub fn addr(&self) -> &str {
        self.0.addr()
    }

    /// Sends one command and reads its reply (an error reply is a [`Value::Error`]).
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, String> {
        self.0
            .call(args)
            .await
            .map(Value::from)
            .map_err(|e| e.to_string())
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
