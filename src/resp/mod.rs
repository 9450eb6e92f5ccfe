//! RESP, the Redis protocol, as the replication stream carries it: the pure, resumable scanner
//! that finds whole commands in the master's bytes ([`scanner`]). No I/O, no tokio.

pub mod scanner;

pub use scanner::{parse_u64, CommandScanner, StreamError};
