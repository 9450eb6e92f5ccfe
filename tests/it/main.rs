//! The integration tests: one binary, so that `support` (real redis-server, Garage and `pitr`
//! processes) is compiled once. Run one group with `cargo test --release --test it <module>::`.

mod support;

mod acl;
mod archive_garage;
mod archive_redis;
mod cluster;
mod cluster_metrics;
mod cluster_restore;
mod cluster_topology;
mod compaction;
mod config;
mod drill;
mod fake_master;
mod fidelity;
mod format_v1;
mod harness;
mod lease;
mod metrics;
mod moments;
mod prune;
mod rdb_fixtures;
mod restore_files;
mod restore_live;
mod restore_via;
mod restore_via_versions;
mod runbook;
mod secrets;
mod sentinel;
mod serve;
mod serve_psync;
mod ship;
mod snapshot_sched;
mod state_dump;
mod tls;
