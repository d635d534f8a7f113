//! Memory budgets: a cgroup v2 group per task where cgroup v2 with the memory controller
//! is writable, and always an RSS watchdog reading /proc/PID/statm.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Resident set size of a process, bytes; `None` when it is gone.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64)
}

/// A task's cgroup.
#[derive(Debug, Clone)]
pub struct TaskCgroup {
    pub path: PathBuf,
}

impl TaskCgroup {
    /// Creates (or reuses) `root/name` with the memory limits, if `root`'s parent is a
    /// cgroup v2 hierarchy with the memory controller available. `Ok(None)` when it is
    /// not (cgroup v1, or not delegated): the RSS watchdog alone enforces the budget.
    pub fn create(root: &Path, name: &str, high_bytes: u64, max_bytes: u64) -> io::Result<Option<TaskCgroup>> {
        let Some(parent) = root.parent() else { return Ok(None) };
        let controllers = match fs::read_to_string(parent.join("cgroup.controllers")) {
            Ok(controllers) => controllers,
            Err(_) => return Ok(None),
        };
        if !controllers.split_whitespace().any(|controller| controller == "memory") {
            return Ok(None);
        }
        if !root.exists() {
            fs::create_dir(root)?;
        }
        // Children of the root get the memory controller.
        let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
        fs::write(root.join("cgroup.subtree_control"), "+memory")?;
        let path = root.join(name);
        if !path.exists() {
            fs::create_dir(&path)?;
        }
        fs::write(path.join("memory.high"), high_bytes.to_string())?;
        fs::write(path.join("memory.max"), max_bytes.to_string())?;
        Ok(Some(TaskCgroup { path }))
    }

    /// New limits (a configuration applied while running): the kernel applies them to the
    /// group at once.
    pub fn set_limits(&self, high_bytes: u64, max_bytes: u64) -> io::Result<()> {
        fs::write(self.path.join("memory.high"), high_bytes.to_string())?;
        fs::write(self.path.join("memory.max"), max_bytes.to_string())
    }

    /// The `cgroup.procs` file a starting task writes itself into.
    pub fn procs_path(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// How many times the kernel has OOM-killed in this group.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|events| events.lines().find_map(|line| line.strip_prefix("oom_kill ").and_then(|count| count.trim().parse().ok())))
            .unwrap_or(0)
    }

    /// Current memory use of the group, bytes.
    pub fn current_bytes(&self) -> Option<u64> {
        fs::read_to_string(self.path.join("memory.current")).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_resident_set() {
        let rss = resident_bytes(std::process::id()).expect("own statm");
        assert!(rss > 100_000, "{rss}");
        assert_eq!(resident_bytes(u32::MAX), None);
    }

    #[test]
    fn no_cgroup_where_there_is_no_v2_memory_controller() {
        let dir = tempfile_dir();
        assert!(TaskCgroup::create(&dir.join("mld"), "x", 1, 2).expect("no error").is_none());
        let _ = fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mld-memory-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
