//! PID 1 in a VM, booted directly (no firmware): the minimal image (Debian's kernel, an
//! initramfs whose /init is mldefender) boots under QEMU with software emulation. The
//! UEFI boot of the full appliance disk (XDP on both NICs, the orderly power-off) is
//! tests/image.rs; what stays here is what it does not cover: the cgroup memory kill in
//! the guest, and saved blocks that keep their remaining time across a reboot. It is also
//! the anchor of the boot-time benchmark (bench/image.sh boots the same way).
//!
//! Needs root (the image has device nodes), qemu-system-x86_64 and Debian's kernel
//! package (apt-get download); scripts/setup installs what is needed. CI requires it
//! (MLD_REQUIRE_LAB=1).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Builds the image once per test binary run.
fn image() -> Option<&'static std::path::Path> {
    static IMAGE: std::sync::OnceLock<Option<tempfile::TempDir>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if !is_root() {
                assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
                eprintln!("skipped: building the image needs root");
                return None;
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let build = run(Command::new("bash")
                .arg(repo().join("image/build-initramfs.sh"))
                .arg(dir.path())
                .env("MLD_IMAGE_BINARY", env!("CARGO_BIN_EXE_mldefender"))
                .env("MLD_IMAGE_CACHE", repo().join("target/image-cache")));
            assert!(build.status.success(), "image build failed: {}", stderr(&build));
            Some(dir)
        })
        .as_ref()
        .map(|dir| dir.path())
}

struct Vm {
    qemu: std::process::Child,
    lines: mpsc::Receiver<String>,
    console: Vec<String>,
    monitor: std::path::PathBuf,
    booted: Instant,
    _dir: tempfile::TempDir,
}

impl Vm {
    fn boot(image: &std::path::Path, config: &str) -> Vm {
        Vm::boot_with_disk(image, config, None)
    }

    /// Boots with `disk` (a raw image) as the guest's /dev/vda.
    fn boot_with_disk(image: &std::path::Path, config: &str, disk: Option<&std::path::Path>) -> Vm {
        let dir = tempfile::tempdir().expect("temp dir");
        let monitor = dir.path().join("monitor.sock");
        let booted = Instant::now();
        let mut qemu = Command::new("timeout")
            .args(["180", "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initramfs.img"))
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 quiet -- supervise --config {config}"))
            .args(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"])
            .args(disk.map(|disk| vec!["-drive".to_string(), format!("file={},format=raw,if=virtio", disk.display())]).unwrap_or_default())
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64 (Debian: qemu-system-x86)");
        let (lines_tx, lines) = mpsc::channel::<String>();
        let serial = qemu.stdout.take().expect("serial");
        std::thread::spawn(move || {
            for line in BufReader::new(serial).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Vm { qemu, lines, console: Vec::new(), monitor, booted, _dir: dir }
    }

    /// Waits for a console line containing `needle`; the time since boot when it came.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                self.console.push(line);
                if found {
                    return Some(self.booted.elapsed());
                }
            }
        }
        None
    }

    fn text(&self) -> String {
        self.console.join("\n")
    }

    /// Ctrl-Alt-Del through the monitor; waits for the orderly stop and the power-off.
    fn shut_down(mut self) -> String {
        let mut monitor = UnixStream::connect(&self.monitor).expect("QEMU monitor");
        monitor.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut banner = [0u8; 4096];
        let _ = monitor.read(&mut banner);
        monitor.write_all(b"sendkey ctrl-alt-delete\n").expect("send ctrl-alt-delete");
        let stopped = self.wait_for("mldefender: stopped", Duration::from_secs(60));
        assert!(stopped.is_some(), "no orderly stop:\n{}", self.text());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.qemu.try_wait().expect("wait for qemu") {
                break status;
            }
            assert!(Instant::now() < deadline, "the VM did not power off:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "QEMU exited with {status} (124: timeout):\n{}", self.text());
        self.text()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        stop_vm(&mut self.qemu);
    }
}

/// The cgroup v2 memory path: PID 1 mounts cgroup v2, the detect task outgrows memory.max, the
/// kernel kills it, the supervisor names the reason, restarts it, then holds it.
#[test]
fn in_the_vm_the_cgroup_limit_kills_a_task_over_budget() {
    let Some(image) = image() else { return };
    let mut vm = Vm::boot(image, "/etc/mldefender/memory-test.toml");
    let killed = vm.wait_for("killed by the kernel at memory.max (64 MiB, cgroup)", Duration::from_secs(120));
    assert!(killed.is_some(), "no cgroup kill:\n{}", vm.text());
    let held = vm.wait_for("task held", Duration::from_secs(60));
    assert!(held.is_some(), "the detect task is held after its restarts:\n{}", vm.text());
    let text = vm.shut_down();
    assert!(!text.contains("task exited task=\"capture\""), "the capture task was not affected:\n{text}");
}

/// The number after `key=` in the console line that contains `needle`.
fn console_number(text: &str, needle: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.contains(needle))?;
    let rest = line.split(&format!("{key}=")).nth(1)?;
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

#[test]
fn blocks_and_the_log_persist_on_the_image_disk_across_a_reboot() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    // A data disk whose saved blocks hold one block with 10 minutes left (as a running
    // appliance leaves it).
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("capture")).expect("seed dir");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let blocks = serde_json::json!({
        "format": 1,
        "saved_unix_ms": now_ms,
        "blocks": [{ "prefix": "203.0.113.7/32", "reason": "scan", "expires_unix_ms": now_ms + 600_000 }],
    });
    std::fs::write(seed.join("capture/blocks.json"), blocks.to_string()).expect("write blocks.json");
    let disk = dir.path().join("data.img");
    assert!(run(Command::new("truncate").args(["-s", "64M"]).arg(&disk)).status.success());
    let mkfs = run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&seed).arg(&disk));
    assert!(mkfs.status.success(), "mkfs.ext4: {}", stderr(&mkfs));

    let mut ttls = Vec::new();
    for boot in 1..=2 {
        let mut vm = Vm::boot_with_disk(image, "/etc/mldefender/mldefender.toml", Some(&disk));
        let ready = vm.wait_for("mldefender: ready", Duration::from_secs(120));
        assert!(ready.is_some(), "boot {boot}: no `mldefender: ready`:\n{}", vm.text());
        let text = vm.text();
        assert!(text.contains("persistent storage mounted"), "boot {boot}:\n{text}");
        let ttl = console_number(&text, "restored a saved block prefix=203.0.113.7/32", "ttl_secs")
            .unwrap_or_else(|| panic!("boot {boot}: the block was not restored from the disk:\n{text}"));
        ttls.push(ttl);
        vm.shut_down();
    }
    // The second boot restored what the first one saved at its shutdown, with the time
    // that had passed taken off (two boots take well under two minutes).
    assert!(ttls[0] <= 600 && ttls[0] > 480, "first boot: {ttls:?}");
    assert!(ttls[1] <= ttls[0] && ttls[1] + 120 > ttls[0], "TTL not carried across the reboot: {ttls:?}");
    // The signed log of both boots is on the disk, not in RAM.
    let listing = run(Command::new("debugfs").args(["-R", "ls -p /log"]).arg(&disk));
    assert!(stdout(&listing).contains("events-vm-"), "no log on the disk: {}", stdout(&listing));
}
