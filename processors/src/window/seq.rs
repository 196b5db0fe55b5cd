//! Per-sensor duplicate detection by sequence number: [`SeqGuard`], shared with ingest (it lives
//! in the schema crate, pure).

pub use citypulse_schema::seq::SeqGuard;
