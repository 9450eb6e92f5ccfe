//! Shared harness for the integration tests of `redis-pitr`.
//!
//! Declared once in `tests/it/main.rs`; every test module uses it with
//! `use crate::support::*;`. Not every item is used by the tests of a given run, so unused
//! items are allowed here.
//!
//! What it gives:
//! - [`free_port`], [`require_binary`], [`wait_until`]: small utilities;
//! - [`RedisServer`]: a throw-away `redis-server` in a temporary directory;
//! - [`Garage`]: a throw-away single-node Garage S3 server with a bucket and a key;
//! - [`PitrProcess`] / [`run_pitr`]: running the crate's own `pitr` binary.
//!
//! Every process started here is recorded (see [`live_children`]), killed when
//! its owner is dropped (also while a test panics), and watched by a tiny
//! shell watchdog that kills it if the test process itself dies.
#![allow(dead_code, unused_imports)]

pub mod archiving;
pub mod cluster;
pub mod garage;
pub mod pitr;
pub mod process;
pub mod redis_server;
pub mod restored;
pub mod servers;
pub mod state;
pub mod util;
pub mod workload;

pub use garage::Garage;
pub use pitr::{pitr_bin, run_pitr, run_pitr_ok, run_pitr_timeout, PitrProcess};
pub use process::{live_children, ManagedChild};
pub use redis_server::RedisServer;
pub use util::{
    files_under, free_port, read_tail, require_binary, temp_dir, wait_until, wait_until_msg,
    LOCALHOST,
};
