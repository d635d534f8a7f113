//! A real etcd cluster for the fleet tests (tests/fleet/etcd.sh), removed on drop.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{env_flag, is_root, repo, run};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    pub id: String,
    pub state: PathBuf,
}

impl Cluster {
    pub fn up(nodes: &[&str]) -> Option<Cluster> {
        if !is_root() {
            assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
            eprintln!("skipped: the etcd cluster needs root");
            return None;
        }
        let id = format!("f{}{}", NEXT.fetch_add(1, Ordering::SeqCst), std::process::id() % 100_000);
        let output = run(Command::new("bash").arg(script()).args(["up", &id]).args(nodes).env("MLD_BIN", env!("CARGO_BIN_EXE_mldefender")));
        assert!(output.status.success(), "etcd up failed: {}", text(&output));
        let state = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Some(Cluster { id, state })
    }

    /// etcdctl in the hub namespace as USER (a bundle in the cluster's state).
    pub fn ctl(&self, user: &str, args: &[&str]) -> Output {
        run(Command::new("bash").arg(script()).args(["ctl", &self.id, user]).args(args))
    }

    /// etcdctl with explicit TLS files (or none), against member 1.
    pub fn ctl_with(&self, tls: &[String], args: &[&str]) -> Output {
        let mut command = Command::new("bash");
        command.arg(script()).args(["exec", &self.id, "env", "ETCDCTL_API=3", "etcdctl", "--endpoints", "https://10.77.0.1:2379", "--dial-timeout", "3s"]);
        command.args(tls).args(args);
        run(&mut command)
    }

    pub fn bundle(&self, user: &str, file: &str) -> String {
        self.state.join("bundles").join(user).join(file).display().to_string()
    }

    pub fn member_log(&self, n: u32) -> String {
        std::fs::read_to_string(self.state.join("logs").join(format!("etcd-{n}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["down", &self.id]).output();
    }
}

pub fn script() -> PathBuf {
    repo().join("tests/fleet/etcd.sh")
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

impl Cluster {
    /// Links network namespace `netns` (a lab's gateway) to the cluster's bridge as
    /// `fleet0`, address 10.77.0.(10+n).
    pub fn attach(&self, netns: &str, n: u32) {
        let output = run(Command::new("bash").arg(script()).args(["attach", &self.id, netns, &n.to_string()]));
        assert!(output.status.success(), "etcd attach failed: {}", text(&output));
    }

    /// The client URLs of the three members.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=3).map(|n| format!("https://10.77.0.{n}:2379")).collect()
    }
}

impl Cluster {
    /// SIGKILLs member `n` (1-3).
    pub fn kill(&self, n: u32) {
        let output = run(Command::new("bash").arg(script()).args(["kill", &self.id, &n.to_string()]));
        assert!(output.status.success(), "etcd kill {n}: {}", text(&output));
    }

    /// Starts member `n` again on its data directory.
    pub fn start(&self, n: u32) {
        let output = run(Command::new("bash").arg(script()).args(["start", &self.id, &n.to_string()]));
        assert!(output.status.success(), "etcd start {n}: {}", text(&output));
    }
}
