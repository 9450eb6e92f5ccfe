//! Work on an archive at rest: [`verify`] reads every object back and checks everything
//! `docs/format.md` promises; [`compact`] merges runs of small segments into fewer, larger
//! objects by level; [`prune`] removes what the retention policy no longer needs. (Shipping
//! comes here too: a plan over the listing, then an executor.)

pub mod compact;
pub mod prune;
pub mod verify;
