//! redis-pitr: point-in-time recovery for Redis and Valkey.
pub mod rdb;
