//! The network-namespace lab (tests/lab/lab.sh) and a running capture, for the
//! privileged tests. Everything made is removed on drop, also when a test fails.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{env_flag, is_root, mldefender, repo, run, stderr};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub id: String,
    script: PathBuf,
}

impl Lab {
    /// A fresh lab, or `None` (test skipped) when not root. With MLD_REQUIRE_LAB=1 a
    /// missing lab fails the test instead.
    pub fn up() -> Option<Lab> {
        if !is_root() {
            assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
            eprintln!("skipped: the lab needs root");
            return None;
        }
        let id = format!("{}{}", (b'a' + NEXT_LAB.fetch_add(1, Ordering::SeqCst) as u8) as char, std::process::id() % 100_000);
        let lab = Lab { id, script: repo().join("tests/lab/lab.sh") };
        let output = run(Command::new("bash").arg(&lab.script).args(["up", &lab.id]));
        assert!(output.status.success(), "lab up failed: {}", stderr(&output));
        Some(lab)
    }

    /// `[capture]` with the source check off on the attacker's link, so that forged
    /// sources reach detection (what an outsider's forged outside addresses do on a WAN).
    pub fn no_source_check_on_the_attacker(&self) -> String {
        format!(
            "[capture]\ninterfaces = [\
             {{ name = \"mld{id}gc\", role = \"lan\" }}, \
             {{ name = \"mld{id}ga\", role = \"lan\", source-check = \"off\" }}, \
             {{ name = \"mld{id}gs\", role = \"wan\" }}]\n",
            id = self.id
        )
    }

    /// Runs a command in node a (attacker), c (client), g (gateway) or s (server).
    pub fn exec(&self, node: &str, args: &[&str]) -> Output {
        run(Command::new("bash").arg(&self.script).args(["exec", &self.id, node]).args(args))
    }

    /// True when `count` pings from `node` to `target` all get an answer within 1 s each.
    pub fn ping(&self, node: &str, target: &str) -> bool {
        self.exec(node, &["ping", "-c", "1", "-W", "1", target]).status.success()
    }

    /// The MAC address of the gateway's interface `suffix` (a, c or s), for crafted frames.
    pub fn gateway_mac(&self, suffix: &str) -> String {
        // /sys is the host's in a network-namespace-only exec: ask ip.
        let link = super::stdout(&self.exec("g", &["ip", "-o", "link", "show", &self.gateway_interface(suffix)]));
        link.split("link/ether ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("the gateway's MAC address").to_string()
    }

    pub fn gateway_interface(&self, suffix: &str) -> String {
        format!("mld{}g{suffix}", self.id)
    }

    /// The lab's capture configuration with `extra` TOML merged in (a key in a table
    /// the lab also sets replaces the lab's).
    pub fn config(&self, extra: &str) -> tempfile::NamedTempFile {
        let output = run(Command::new("bash").arg(&self.script).args(["config", &self.id]));
        assert!(output.status.success(), "lab config failed: {}", stderr(&output));
        let file = tempfile::NamedTempFile::new().expect("temp config");
        let text = merge_toml(&String::from_utf8_lossy(&output.stdout), extra);
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    /// The directory of the lab's signed log.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/mldefender-lab-{}/log", self.id))
    }

    /// The event records of the lab's signed log, in file order (other record types
    /// and unreadable lines left out).
    pub fn events(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.log_dir()).expect("log dir").flatten().map(|entry| entry.path()).collect();
        files.sort();
        files
            .iter()
            .filter(|file| file.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")))
            .flat_map(|file| {
                std::fs::read_to_string(file)
                    .expect("read log")
                    .lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .collect::<Vec<_>>()
            })
            .filter(|record| record["type"] == "event")
            .collect()
    }

    pub fn bpffs_dir(&self) -> String {
        format!("/sys/fs/bpf/mld-lab-{}", self.id)
    }

    /// `mldefender ARGS --bpffs-dir <lab's>`, run on the host.
    pub fn mldefender(&self, args: &[&str]) -> Output {
        run(mldefender().args(args).args(["--bpffs-dir", &self.bpffs_dir()]))
    }

    /// Starts `mldefender capture` in the gateway's network namespace and waits until it
    /// has attached.
    pub fn capture(&self, config: &tempfile::NamedTempFile) -> Capture {
        let netns = format!("--net=/var/run/netns/mld{}g", self.id);
        let mut child = Command::new("nsenter")
            .arg(netns)
            .arg(env!("CARGO_BIN_EXE_mldefender"))
            .args(["capture", "--config"])
            .arg(config.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mldefender capture");
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let lines = Arc::clone(&stderr_lines);
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                lines.lock().expect("lock").push(line.trim_end().to_string());
                line.clear();
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let text = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 65536];
            while let Ok(n) = out.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                text.lock().expect("lock").push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let mut capture = Capture { child: Some(child), stderr_lines, stdout };
        capture.wait_for_stderr("attached to", Duration::from_secs(30));
        capture
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).args(["down", &self.id]).output();
    }
}

pub struct Capture {
    child: Option<Child>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<String>>,
}

impl Capture {
    /// Waits until a stderr line contains `needle`; panics with what was printed after
    /// `timeout`, or when the capture exited.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr_lines.lock().expect("lock").iter().find(|line| line.contains(needle)) {
                return line.clone();
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(200));
                    panic!("capture exited ({status}) before printing `{needle}`:\n{}", self.stderr());
                }
            }
            assert!(Instant::now() < deadline, "no `{needle}` from the capture after {timeout:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().expect("lock").join("\n")
    }

    /// Sends SIGTERM and waits for a clean exit; returns (stdout, stderr).
    pub fn stop(mut self) -> (String, String) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "capture did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Let the reader threads see end of file.
        let settle = Instant::now() + Duration::from_secs(5);
        while Instant::now() < settle && !self.stderr_lines.lock().expect("lock").iter().any(|line| line.contains("stopped after")) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(status.success(), "capture exited with {status}:\n{}", self.stderr());
        std::thread::sleep(Duration::from_millis(100));
        let stdout = self.stdout.lock().expect("lock").clone();
        (stdout, self.stderr())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Merges simple TOML (tables of `key = value` lines): tables of `extra` that `base` has
/// get their keys replaced or added; other tables are appended.
pub fn merge_toml(base: &str, extra: &str) -> String {
    fn sections(text: &str) -> Vec<(String, Vec<String>)> {
        let mut sections = vec![(String::new(), Vec::new())];
        for line in text.lines() {
            if line.trim_start().starts_with('[') {
                sections.push((line.trim().to_string(), Vec::new()));
            } else if let Some((_, lines)) = sections.last_mut() {
                lines.push(line.to_string());
            }
        }
        sections
    }
    let key = |line: &str| line.split_once('=').map(|(key, _)| key.trim().to_string()).filter(|key| !key.starts_with('#'));
    let mut merged = sections(base);
    for (header, lines) in sections(extra) {
        // Arrays of tables are always appended.
        match merged.iter_mut().find(|(existing, _)| *existing == header && !header.starts_with("[[")) {
            Some((_, existing)) => {
                let mut replaced_arrays = Vec::new();
                for line in lines {
                    if let Some(name) = key(&line) {
                        existing.retain(|old| key(old).as_deref() != Some(name.as_str()));
                        // `key = [...]` replaces the base's `[[table.key]]` entries too.
                        replaced_arrays.push(format!("[[{}.{name}]]", header.trim_matches(['[', ']'])));
                    }
                    existing.push(line);
                }
                merged.retain(|(existing_header, _)| !replaced_arrays.contains(existing_header));
            }
            None => merged.push((header, lines)),
        }
    }
    let mut text = String::new();
    for (header, lines) in merged {
        if !header.is_empty() {
            text.push_str(&header);
            text.push('\n');
        }
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}
