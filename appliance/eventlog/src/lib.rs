//! The signed event log.
//!
//! Every record is one JSON object on one line. Its last four fields are always, in
//! this order, `seq` (strictly increasing per node, across files), `prev_tag` (the
//! previous record's tag), `key_id` and `hmac`: HMAC-SHA256, under the key named by
//! `key_id`, of the node id, a NUL byte and the line's bytes up to (not including)
//! `,"hmac":`. The tag is chained through `prev_tag`, and every file starts with a
//! header record that names the node, the file's index and where the previous file
//! ended. Together they make forgery, deletion, reordering, duplication or replay,
//! truncation, dropping a rotated file and splicing two nodes' files detectable by
//! [`verify`].
//!
//! Invariant: this crate is the only writer of the security log. The key never leaves
//! [`LogKey`], which zeroizes it on drop and refuses key files that are symbolic links,
//! not owned by root or their reader, or open to group or others (the one reader of
//! secret files, `mld_secret::open_secret_file`).

mod anchor;
mod chain;
mod checkpoint;
mod community_id;
mod event;
mod key;
mod search;
mod verify;
mod writer;

pub use anchor::{check_anchors, parse_anchors, Anchor, AnchorCheck};
pub use chain::{BodyError, Delivery, SealError, Sealer, EVENT_TYPE, GENESIS_TAG, RESERVED_FIELDS, SCHEMA};
pub use checkpoint::{
    signed_message, CheckpointAnchor, CheckpointClaim, CheckpointPublicKey, CheckpointSigningKey, Covered, Decided, Gap, Pushed, SigningKeyError, WindowReason,
    WindowVerifier, CHECKPOINT_DOMAIN, CHECKPOINT_FIELDS, CHECKPOINT_TYPE, GENESIS_DIGEST,
};
pub use community_id::community_id;
pub use event::{build_event, cic_field_name, event_fields, json_schema, EventContext, EventField, Verdict, EVENT_SCHEMA_VERSION};
pub use key::{KeyError, LogKey};
pub use search::{newest_authenticated, Search};
pub use verify::{
    verify_paths, verify_paths_signed, ChainPosition, ChainVerifier, CheckedRecord, Failure, FailureReason, RecordHead, SignedSummary, VerifySummary,
};
pub use writer::{file_name, local_day, local_utc_offset_secs, LogWriter, WriterConfig, WriterError};
