//! RDB parsing (placeholder).
