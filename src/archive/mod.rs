//! The archive itself, as both halves see it: typed object names ([`names`]), the object format
//! ([`format`]) and snapshot bodies as zstd frames ([`frames`]), the object store under the
//! archive's prefix ([`store`]), reading many objects with several GETs in flight, handed over
//! in order ([`fetch`]), the catalog of generations, windows and gaps that a listing alone
//! gives ([`catalog`]), the lease that lets one writer at a time work on an archive
//! ([`lease`]), and the request for a snapshot now that `pitr snapshot` leaves for the archiver
//! ([`request`]).

pub mod branch;
pub mod catalog;
#[cfg(test)]
pub(crate) mod fault_store;
pub mod fetch;
pub mod format;
pub mod frames;
pub mod lease;
pub mod names;
pub mod request;
pub mod scan;
pub mod stopped;
pub mod store;
