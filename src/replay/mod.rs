//! The restoring half: a pure plan from a listing ([`plan`]), the snapshot through the RDB
//! parser and the archived commands up to the cut ([`cut`]), selected ([`filter`]) and converted
//! ([`keys`]), into a destination behind one trait ([`sink`]): a live server ([`live_sink`], over
//! the connection in [`live`]) or files a stock server loads ([`files`]). [`restore`] runs a
//! plan. Never imports `ingest`.

pub mod cut;
pub mod files;
pub mod filter;
pub mod keys;
pub mod live;
pub mod live_sink;
pub mod plan;
pub mod restore;
pub mod sink;
pub mod via;

pub use restore::{make_plan, restore, Destination, Progress, Report, RestoreConfig, RestoreError};
