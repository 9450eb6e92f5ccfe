//! RESP, the Redis protocol, as the replication stream carries it: the pure, resumable scanner
//! that finds whole commands in the master's bytes ([`scanner`]), and the table of what the
//! replicated commands are and where their keys and expiries lie ([`commands`]). No I/O, no
//! tokio.

pub mod commands;
pub mod scanner;

pub use scanner::{parse_u64, CommandScanner, StreamError};
