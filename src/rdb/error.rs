//! The one error type of the RDB parser: every variant says what went wrong and where.

use super::Magic;

/// Why an RDB (or DUMP payload) could not be parsed.
///
/// Every `offset` is the absolute byte offset in the RDB file where the bad item starts (the magic
/// is at offset 0). "Need more bytes" is never an error: [`super::Parser::feed`] just returns and
/// waits; only [`super::Parser::finish`] turns a short input into [`RdbError::Truncated`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdbError {
    /// The first 9 bytes are neither `REDISnnnn` nor `VALKEYnnn`.
    #[error("not an RDB file: bad magic {found:?} at offset 0 (expected REDISnnnn or VALKEYnnn)")]
    BadMagic {
        /// The bytes found, escaped.
        found: String,
    },
    /// A magic this parser does not read (REDIS 1..=12 and VALKEY 80 are supported).
    #[error("unsupported RDB version {version} with magic {magic} at offset 0")]
    UnsupportedVersion {
        /// Which magic the file has.
        magic: Magic,
        /// The version number after it.
        version: u32,
    },
    /// A value type byte this parser does not know for this file's magic and version.
    #[error("unknown value type {type_id} at offset {offset}")]
    UnknownType {
        /// The type byte.
        type_id: u8,
        /// Offset of the type byte.
        offset: u64,
    },
    /// An opcode byte in the 0xF0..=0xFF range this parser does not know.
    #[error("unknown opcode 0x{opcode:02x} at offset {offset}")]
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Offset of the opcode byte.
        offset: u64,
    },
    /// A known item in a form this parser refuses (as the servers do), e.g. pre-GA formats.
    #[error("unsupported {what} at offset {offset}")]
    Unsupported {
        /// What was found.
        what: String,
        /// Offset where it starts.
        offset: u64,
    },
    /// The bytes do not follow the format.
    #[error("corrupt RDB at offset {offset}: {what}")]
    Corrupt {
        /// What is wrong.
        what: String,
        /// Offset of the item that is wrong.
        offset: u64,
    },
    /// The CRC64 trailer does not match the bytes before it.
    #[error(
        "CRC64 mismatch at offset {offset}: the trailer says {expected:#018x}, the file hashes to {actual:#018x}"
    )]
    CrcMismatch {
        /// The checksum stored in the trailer.
        expected: u64,
        /// The checksum computed over the file.
        actual: u64,
        /// Offset of the 8-byte trailer.
        offset: u64,
    },
    /// Bytes follow the end of the RDB (after the CRC64 trailer, or after 0xFF for RDB < 5).
    #[error("unexpected bytes after the end of the RDB at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: u64,
    },
    /// An item is larger than a configured bound ([`super::ParserConfig`]).
    #[error(
        "{what} of {size} bytes at offset {offset} exceeds the configured limit of {limit} bytes"
    )]
    LimitExceeded {
        /// Which item.
        what: String,
        /// Its size as declared in the file.
        size: u64,
        /// The configured limit.
        limit: u64,
        /// Offset where the item starts.
        offset: u64,
    },
    /// The input ended before the RDB was complete.
    #[error("RDB truncated at offset {offset}: expected {expected}")]
    Truncated {
        /// What the parser was waiting for.
        expected: String,
        /// Offset of the incomplete item (bytes consumed so far).
        offset: u64,
    },
    /// Reading the input failed (only from [`super::check`]).
    #[error("I/O error after {offset} bytes of RDB: {message}")]
    Io {
        /// Bytes read before the error.
        offset: u64,
        /// The I/O error, as text.
        message: String,
    },
}

impl RdbError {
    /// The offset named by the error, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            RdbError::BadMagic { .. } | RdbError::UnsupportedVersion { .. } => Some(0),
            RdbError::UnknownType { offset, .. }
            | RdbError::UnknownOpcode { offset, .. }
            | RdbError::Unsupported { offset, .. }
            | RdbError::Corrupt { offset, .. }
            | RdbError::CrcMismatch { offset, .. }
            | RdbError::TrailingBytes { offset }
            | RdbError::LimitExceeded { offset, .. }
            | RdbError::Truncated { offset, .. }
            | RdbError::Io { offset, .. } => Some(*offset),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, offset: u64) -> Self {
        RdbError::Corrupt {
            what: what.into(),
            offset,
        }
    }
}
