//! The similarity index for signed events (issue 7): a FAISS index whose ids are the
//! events' sequence numbers, a crash-safe side store of the fields needed to display a
//! hit, and atomic snapshots described by a verified manifest.
//!
//! This crate owns the files in one index directory and nothing else. It never reads the
//! event log, never embeds (vectors come from the caller) and never trusts an index file
//! it cannot verify: `EventIndex::open` refuses a missing or corrupt snapshot with an
//! error naming the file and the reason, so the caller can rebuild from the verified log.
//!
//! Layout of an index directory:
//!
//! | file | written | content |
//! |---|---|---|
//! | `manifest.json` | at each `save`, atomically (the commit point) | dims, factory, count, last id, generation, the index file's name, size and SHA-256, the side store's committed length |
//! | `index.<generation>.faiss` | at each `save`, atomically, a new name each time | the FAISS index (`IDMap,<factory>`), event ids as FAISS ids |
//! | `fields.log` | on every `add` (appended) | length-prefixed, CRC-checked records: id, the vector, JSON `HitFields` |

mod error;
mod fields;
mod index;
mod manifest;
mod side_store;

pub use error::{IndexError, Result};
pub use fields::{Hit, HitFields, SearchFilter, MAX_FIELDS_BYTES};
pub use index::{read_stored_events, BatchSink, EventIndex, MemoryReport, DEFAULT_FACTORY, MAX_CANDIDATES};
pub use manifest::{Manifest, MANIFEST_FILE};
pub use side_store::{StoredEvent, FIELDS_FILE, MAX_STORED_DIMS};
