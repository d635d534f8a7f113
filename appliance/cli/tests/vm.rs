//! PID 1 in a VM: the minimal image (Debian's kernel, an initramfs whose /init is
//! mldefender) boots under QEMU with software emulation; the supervisor loads the virtio
//! modules, attaches XDP to the guest's NIC, starts its tasks and reports ready on the
//! serial console; Ctrl-Alt-Del (sent through the QEMU monitor) makes it stop everything
//! in order and power the VM off cleanly.
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

#[test]
fn the_supervisor_boots_as_pid1_attaches_xdp_and_powers_off_cleanly() {
    if !is_root() {
        assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
        eprintln!("skipped: building the image needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let build = run(Command::new("bash")
        .arg(repo().join("image/build-initramfs.sh"))
        .arg(dir.path())
        .env("MLD_IMAGE_BINARY", env!("CARGO_BIN_EXE_mldefender"))
        .env("MLD_IMAGE_CACHE", repo().join("target/image-cache")));
    assert!(build.status.success(), "image build failed: {}", stderr(&build));

    let monitor = dir.path().join("monitor.sock");
    let booted = Instant::now();
    let mut qemu = Command::new("timeout")
        .args(["180", "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(dir.path().join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.path().join("initramfs.img"))
        .args(["-append", "console=ttyS0 panic=-1 quiet -- supervise --config /etc/mldefender/mldefender.toml"])
        .args(["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"])
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let mut console = Vec::new();
    let wait_for = |needle: &str, timeout: Duration, console: &mut Vec<String>| -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                console.push(line);
                if found {
                    return Some(booted.elapsed());
                }
            }
        }
        None
    };
    let ready = wait_for("mldefender: ready", Duration::from_secs(120), &mut console);
    assert!(ready.is_some(), "no `mldefender: ready` on the serial console:\n{}", console.join("\n"));
    eprintln!("boot to ready under TCG: {:.2} s", ready.expect("ready").as_secs_f64());
    let text = console.join("\n");
    assert!(text.contains("kernel modules loaded"), "{text}");
    assert!(text.contains("XDP program attached interface=eth0"), "XDP on the guest's virtio NIC:\n{text}");
    assert!(text.contains("task ready task=\"capture\"") && text.contains("task ready task=\"sink\""), "{text}");

    // The shutdown trigger: Ctrl-Alt-Del reaches PID 1 as SIGINT.
    let mut monitor = UnixStream::connect(&monitor).expect("QEMU monitor");
    monitor.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let mut banner = [0u8; 4096];
    let _ = monitor.read(&mut banner);
    monitor.write_all(b"sendkey ctrl-alt-delete\n").expect("send ctrl-alt-delete");
    let stopped = wait_for("mldefender: stopped", Duration::from_secs(60), &mut console);
    assert!(stopped.is_some(), "no orderly stop:\n{}", console.join("\n"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = qemu.try_wait().expect("wait for qemu") {
            break status;
        }
        assert!(Instant::now() < deadline, "the VM did not power off:\n{}", console.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "QEMU exited with {status} (124: timeout):\n{}", console.join("\n"));
    let text = console.join("\n");
    assert!(text.contains("XDP program detached"), "{text}");
    assert!(!text.contains("Kernel panic"), "{text}");
}
