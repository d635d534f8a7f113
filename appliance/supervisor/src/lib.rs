//! The supervisor's building blocks: how a task process is started with exactly its
//! privileges ([`spawn`]), how files are made and given to tasks without following links
//! ([`files`]), how much of a task's control channel one loop turn reads and when a task
//! floods it ([`control`]), how its memory is watched ([`memory`]), when it is restarted
//! ([`policy`]), what PID 1 must do ([`init`]), and how readiness is announced
//! ([`notify`]); and the state machine that ties them together ([`machine`]): the task
//! table, reaping, restarts, the memory watchdog, kill escalation, readiness, the ordered
//! shutdown and the status report. The machine starts, signals and reaps processes
//! through a [`machine::Spawner`] and reads time from its caller, so it is tested without
//! processes or sleeps.
//!
//! The real spawner and the loop that drives the machine live in `mld-runtime`
//! (`mldefender supervise`), because they also own the XDP data plane, the sockets and
//! keys handed to the tasks, and the signal handling.
//!
//! Invariant: only this crate spawns task processes. A task never runs as root, never
//! gains privileges (`no_new_privs`), inherits no fd it was not given, and holds no
//! capability except CAP_BPF on kernels before 6.5, where map operations through an
//! open fd still need it.

pub mod control;
pub mod files;
pub mod init;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod notify;
pub mod policy;
pub mod spawn;
