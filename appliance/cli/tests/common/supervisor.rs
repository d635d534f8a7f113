//! The supervisor under test: started in a lab's gateway namespace, its output collected.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::lab::{eventually, Lab};
use super::{mldefender, run, stderr, stdout};

pub struct Supervisor {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub runtime_dir: String,
    /// The configuration file it was started with.
    pub config_path: std::path::PathBuf,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

impl Supervisor {
    pub fn start(lab: &Lab, extra: &str) -> Supervisor {
        Supervisor::start_with_env(lab, extra, &[])
    }

    pub fn start_with_env(lab: &Lab, extra: &str, env: &[(&str, &str)]) -> Supervisor {
        Supervisor::start_binary(lab, std::path::Path::new(env!("CARGO_BIN_EXE_mldefender")), extra, env)
    }

    /// The supervisor from the `mldefender` binary at `binary` (a copy somewhere else).
    pub fn start_binary(lab: &Lab, binary: &std::path::Path, extra: &str, env: &[(&str, &str)]) -> Supervisor {
        let config = lab.config(extra);
        let path = config.into_temp_path().keep().expect("keep config");
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/mld{}g", lab.id))
            .arg(binary)
            .args(["supervise", "--config"])
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the supervisor");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let supervisor =
            Supervisor { child: Some(child), stdout, stderr, runtime_dir: format!("/run/mldefender-lab-{}", lab.id), config_path: path.to_path_buf() };
        let socket = format!("{}/supervisor.sock", supervisor.runtime_dir);
        let up = eventually(Duration::from_secs(20), || std::path::Path::new(&socket).exists());
        assert!(up, "the supervisor did not open its status socket:\n{}", supervisor.log());
        supervisor
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        self.wait_ready_times(1, timeout);
    }

    /// Waits for the `times`-th `mldefender: ready` (a supervisor that restarted in place
    /// says it again, on the same stdout).
    pub fn wait_ready_times(&mut self, times: usize, timeout: Duration) {
        let ready = eventually(timeout, || self.stdout.lock().expect("lock").iter().filter(|line| *line == "mldefender: ready").count() >= times);
        assert!(ready, "no `mldefender: ready` (number {times}) within {timeout:?}:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    pub fn status(&self) -> Value {
        let output = run(mldefender().args(["status", "--json", "--runtime-dir", &self.runtime_dir]));
        assert!(output.status.success(), "status failed: {}", stderr(&output));
        serde_json::from_str(stdout(&output).trim()).expect("status JSON")
    }

    pub fn task(&self, name: &str) -> Value {
        self.status()["tasks"].as_array().expect("tasks").iter().find(|task| task["name"] == name).cloned().expect("task")
    }

    /// SIGKILL, as an OOM kill or a crash would; returns its pid.
    pub fn kill(mut self) -> u32 {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        child.kill().expect("SIGKILL the supervisor");
        child.wait().expect("reap the supervisor");
        pid
    }

    /// SIGTERM; returns how long the supervisor took to exit.
    pub fn stop(self) -> Duration {
        self.stop_with_log().0
    }

    /// SIGTERM; returns how long the supervisor took to exit, and its whole log.
    pub fn stop_with_log(mut self) -> (Duration, String) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let took = started.elapsed();
                assert!(status.success(), "supervisor exited with {status}:\n{}", self.log());
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return (took, self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "supervisor did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
