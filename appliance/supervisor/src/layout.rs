//! What each task is handed, one type per task kind, used by both sides: the supervisor
//! builds a [`TaskFds`] of borrowed fds and hands them over in [`TaskFds::into_list`]
//! order (fd 3, 4, ...); the task takes the same type back with [`TaskFds::take_handed`].
//! The order is written once, here. Everything else a task needs travels in the first
//! control message (`mld_ipc::TaskSettings`), not in the environment.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use mld_config::TaskKind;

use crate::spawn::FIRST_TASK_FD;

/// The capture task: the XDP program's ring buffer and maps.
#[derive(Debug)]
pub struct CaptureFds<F> {
    pub control: F,
    pub ring: F,
    /// Read-only (BPF_F_RDONLY): the capture task reads the allowlist, never writes it:
    /// its two tries and the selector of the one in force.
    pub allow: F,
    pub allow_next: F,
    pub allow_selector: F,
    pub deny: F,
    /// Read-only, like the allowlist.
    pub counters: F,
    /// The per-destination guard (random-source floods) and the known-good sources.
    pub guard: F,
    pub good: F,
    /// How many services are guarded (lets the XDP program skip the guard lookup).
    pub guard_on: F,
}

/// The detect task: the listening socket the capture task's flows arrive on.
#[derive(Debug)]
pub struct DetectFds<F> {
    pub control: F,
    pub flows: F,
}

/// The log task: the listening socket for events, the log's HMAC key and its
/// checkpoint signing key (opened and checked by the supervisor).
#[derive(Debug)]
pub struct LogFds<F> {
    pub control: F,
    pub events: F,
    pub key: F,
    pub signing_key: F,
}

/// The ingest task: the listening query socket. No key: it verifies with the public key
/// in its settings.
#[derive(Debug)]
pub struct IngestFds<F> {
    pub control: F,
    pub query: F,
}

/// The fleet task: the listening socket the detect task trades blocks on, and its etcd
/// identity, each file opened by the supervisor (the task cannot read `pki.dir`): the
/// client certificate, its key, the trust bundle.
#[derive(Debug)]
pub struct FleetFds<F> {
    pub control: F,
    pub link: F,
    pub cert: F,
    pub key: F,
    pub ca: F,
}

/// The fds of one task, by kind.
#[derive(Debug)]
pub enum TaskFds<F> {
    Capture(CaptureFds<F>),
    Detect(DetectFds<F>),
    Log(LogFds<F>),
    Ingest(IngestFds<F>),
    Fleet(FleetFds<F>),
}

impl<F> TaskFds<F> {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskFds::Capture(_) => TaskKind::Capture,
            TaskFds::Detect(_) => TaskKind::Detect,
            TaskFds::Log(_) => TaskKind::Log,
            TaskFds::Ingest(_) => TaskKind::Ingest,
            TaskFds::Fleet(_) => TaskKind::Fleet,
        }
    }

    /// The fds in the order they are handed over (the control channel first).
    pub fn into_list(self) -> Vec<F> {
        match self {
            TaskFds::Capture(CaptureFds { control, ring, allow, allow_next, allow_selector, deny, counters, guard, good, guard_on }) => {
                vec![control, ring, allow, allow_next, allow_selector, deny, counters, guard, good, guard_on]
            }
            TaskFds::Detect(DetectFds { control, flows }) => vec![control, flows],
            TaskFds::Log(LogFds { control, events, key, signing_key }) => vec![control, events, key, signing_key],
            TaskFds::Ingest(IngestFds { control, query }) => vec![control, query],
            TaskFds::Fleet(FleetFds { control, link, cert, key, ca }) => vec![control, link, cert, key, ca],
        }
    }

    /// The fds of a task of `kind` from a list in [`into_list`](TaskFds::into_list)
    /// order; `None` when the list is too short.
    pub fn from_list(kind: TaskKind, list: impl IntoIterator<Item = F>) -> Option<TaskFds<F>> {
        let mut list = list.into_iter();
        let mut next = || list.next();
        Some(match kind {
            TaskKind::Capture => TaskFds::Capture(CaptureFds {
                control: next()?,
                ring: next()?,
                allow: next()?,
                allow_next: next()?,
                allow_selector: next()?,
                deny: next()?,
                counters: next()?,
                guard: next()?,
                good: next()?,
                guard_on: next()?,
            }),
            TaskKind::Detect => TaskFds::Detect(DetectFds { control: next()?, flows: next()? }),
            TaskKind::Log => TaskFds::Log(LogFds { control: next()?, events: next()?, key: next()?, signing_key: next()? }),
            TaskKind::Ingest => TaskFds::Ingest(IngestFds { control: next()?, query: next()? }),
            TaskKind::Fleet => TaskFds::Fleet(FleetFds { control: next()?, link: next()?, cert: next()?, key: next()?, ca: next()? }),
        })
    }

    /// How many fds a task of `kind` is handed.
    pub fn count(kind: TaskKind) -> usize {
        match kind {
            TaskKind::Capture => 10,
            TaskKind::Detect | TaskKind::Ingest => 2,
            TaskKind::Log => 4,
            TaskKind::Fleet => 5,
        }
    }
}

impl TaskFds<OwnedFd> {
    /// In a task process: takes ownership of the fds the supervisor placed at 3, 4, ...
    /// for a task of `kind`. Call once, first thing: nothing else in the process may own
    /// those numbers. Fails when one of them is not open (the process was not started by
    /// the supervisor).
    pub fn take_handed(kind: TaskKind) -> std::io::Result<TaskFds<OwnedFd>> {
        let count = TaskFds::<OwnedFd>::count(kind);
        let numbers: Vec<RawFd> = (0..count).map(|index| FIRST_TASK_FD + index as RawFd).collect();
        let mut owned = Vec::with_capacity(count);
        for fd in numbers {
            #[allow(unsafe_code)]
            // SAFETY: F_GETFD only reads the fd's flags; it fails on a closed number.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                let error = std::io::Error::last_os_error();
                return Err(std::io::Error::other(format!(
                    "fd {fd} of task {} is not open ({error}): tasks are started by `mldefender supervise`",
                    kind.name()
                )));
            }
            #[allow(unsafe_code)]
            // SAFETY: the supervisor placed this open fd at this number for this process,
            // and this is called once, before anything else in the process could own it.
            owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(TaskFds::from_list(kind, owned).expect("count(kind) fds were listed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_list_in_the_same_order() {
        for kind in TaskKind::ALL {
            let count = TaskFds::<usize>::count(kind);
            let fds = TaskFds::from_list(kind, 0..count).expect("enough");
            assert_eq!(fds.kind(), kind);
            assert_eq!(fds.into_list(), (0..count).collect::<Vec<_>>(), "{}", kind.name());
            assert!(TaskFds::from_list(kind, 0..count - 1).is_none(), "{}: a short list is refused", kind.name());
        }
    }

    #[test]
    fn the_control_channel_is_always_the_first_fd() {
        let fds = TaskFds::from_list(TaskKind::Log, ["control", "events", "key", "signing-key"]).expect("enough");
        let TaskFds::Log(log) = fds else { panic!("log") };
        assert_eq!((log.control, log.events, log.key, log.signing_key), ("control", "events", "key", "signing-key"));
    }
}
