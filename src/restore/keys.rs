//! Events to commands. PLACEHOLDER so the tree compiles while this module is being written:
//! replace the whole file.
use bytes::Bytes;

use crate::rdb::Event;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

pub struct ConvertConfig {
    pub restore_version: Option<u16>,
    pub max_restore_bytes: usize,
    pub max_batch_bytes: usize,
}

#[derive(Debug, Default, Clone)]
pub struct ConvertStats {
    pub keys_by_restore: u64,
    pub keys_by_commands: u64,
}

pub struct KeyConverter;

impl KeyConverter {
    pub fn new(_cfg: ConvertConfig) -> Self {
        KeyConverter
    }
    pub fn push(&mut self, _ev: &Event, _out: &mut Vec<Vec<Bytes>>) -> Result<(), ConvertError> {
        Err(ConvertError("not written yet".into()))
    }
    pub fn stats(&self) -> ConvertStats {
        ConvertStats::default()
    }
}
