//! Work on an archive at rest: [`verify`] reads every object back and checks everything
//! `docs/format.md` promises; [`compact`] merges runs of small segments into fewer, larger
//! objects by level. (Retention and shipping come here too: each a plan over the listing, then
//! an executor.)

pub mod compact;
pub mod verify;
