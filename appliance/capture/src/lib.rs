//! The XDP data plane.
//!
//! This crate owns the kernel side of the appliance at run time: it loads the XDP
//! program built from `ebpf/`, attaches it to the configured interfaces (native mode,
//! falling back to generic), pins its maps under the configured bpffs directory so that
//! other commands can act on them, reads packet records from the ring buffer, and
//! removes expired deny entries.
//!
//! Invariant: this is the only crate that uses aya. Map layouts are the `#[repr(C)]`
//! mirrors in [`maps`] of `ebpf/include/mld_shared.h`, checked by a test.
//! It never handles signals and never prints: the binary does.

mod blocks_state;
mod clock;
mod command;
mod dataplane;
mod error;
pub mod guard;
pub mod maps;
mod sources;

pub use blocks_state::{load_blocks, save_blocks, SavedEntry, BLOCKS_FILE};
pub use clock::{boot_time_ns, boot_to_realtime_offset_ns};
pub use command::{check_block_command, CheckedBlock, MIN_BLOCK_PREFIX_V4, MIN_BLOCK_PREFIX_V6};
pub use dataplane::{AttachedInterface, Dataplane, RingReader, SourcePlan, StartReport, TaskFds};
pub use error::CaptureError;
pub use guard::{GuardAction, GuardChange, GuardSettings, GuardTracker};
pub use maps::{Counters, DenyEntry, GuardKey, GuardMaps, GuardValue, PinnedMaps};
pub use sources::{plan_sources, source_plan};

/// The compiled XDP program.
pub(crate) const XDP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mld_xdp.bpf.o"));

/// Name of the XDP program in the object.
pub(crate) const PROGRAM_NAME: &str = "mld_xdp";
