//! Work on an archive at rest: [`verify`] reads every object back and checks everything
//! `docs/format.md` promises. (Compaction, retention and shipping come here too: each a plan over
//! the catalog, then an executor.)

pub mod verify;
