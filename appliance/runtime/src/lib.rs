//! The appliance at run time, as a library the binary only starts.
//!
//! - [`supervise`]: the supervisor process: system set-up as PID 1, the XDP data plane,
//!   the sockets and keys the tasks are handed, and the loop that runs them.
//! - [`task`]: the task processes in pipeline order (capture, detect, log, ingest), and the
//!   fleet task; [`fleet_doc`]: the fleet's signed configuration documents.
//! - [`pipeline`], [`detection`], [`neighbours`]: what the capture and detect tasks (and
//!   the offline `replay`) share: when sources are reported, how a decision becomes an
//!   event record, the nearest past events attached to it.
//! - [`enforcement`]: the data plane with what keeps it true over time (source checks
//!   refreshed, blocks saved), shared by the supervisor and `mldefender capture`.
//! - [`benign`]: `block del --benign`: the operator's exemptions, their file, and the
//!   request's path (CLI → supervisor → detect task).
//! - [`query_server`]: the ingest task's answers to `mldefender query`.
//! - [`flow_pump`]: the ring buffer → flow table loop of the capture task and
//!   `mldefender capture`; [`flow_output`] and [`flow_summary`]: flow records as JSONL or
//!   CSV, and the summary of a run, for `mldefender capture` and `mldefender flows`.

pub mod benign;
pub mod detection;
pub mod enforcement;
pub mod exit;
pub mod fleet_doc;
pub mod flow_output;
pub mod flow_pump;
pub mod flow_summary;
pub mod generations;
pub mod keys;
pub mod logging;
pub mod management_port;
pub mod neighbours;
pub mod pipeline;
pub mod pki;
pub mod query_server;
pub mod reconfigure;
pub mod replay;
pub mod slots;
pub mod supervise;
pub mod task;
pub mod web;

pub use exit::Exit;
pub use mld_types::error_chain;
