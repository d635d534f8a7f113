//! The appliance image (image/build.sh, qemu/boot.sh, docs/image.md): built from one TOML,
//! bit for bit reproducible, flashed with dd, booted the way a gateway boots (UEFI
//! firmware, systemd-boot, a slot on the GPT disk's ESP) under QEMU with software
//! emulation, with real traffic routed through it; updated A/B with a signed image, rolled
//! back by the boot loader from a broken one, and cut off from power mid-attack.
//!
//! Needs root (the image has device nodes; taps and namespaces), qemu-system-x86_64,
//! Debian's ovmf and the image tools; scripts/setup installs them. CI requires it
//! (MLD_REQUIRE_LAB=1). The images are built once per run and shared by the tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Every build of the run uses this time (reproducibility does not depend on the clock).
const SOURCE_DATE_EPOCH: &str = "1764806400";

struct Images {
    dir: tempfile::TempDir,
    /// The release key pair the images' [image] trusts.
    key: PathBuf,
}

impl Images {
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The UKI of build `name` (`out/mldefender-VERSION.efi`).
    fn uki(&self, name: &str) -> PathBuf {
        std::fs::read_dir(self.out(name))
            .expect("build dir")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|extension| extension == "efi"))
            .expect("a UKI")
    }
}

fn build(config: &Path, out: &Path, version: &str) -> Duration {
    let started = Instant::now();
    let output = run(Command::new("bash")
        .arg(repo().join("image/build.sh"))
        .args(["--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(["--version", version])
        .env("MLD_IMAGE_BINARY", env!("CARGO_BIN_EXE_mldefender"))
        .env("MLD_IMAGE_CACHE", repo().join("target/image-cache"))
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH));
    assert!(output.status.success(), "image build failed: {}", stderr(&output));
    let progress = stderr(&output);
    assert!(progress.contains("[1/8") && progress.contains("[8/8"), "the build shows its progress:\n{progress}");
    started.elapsed()
}

/// The images: `a` (0.1.0), `a-again` (the same inputs again), `b` (0.1.1, a good update),
/// `broken` (0.1.2: its configuration names an interface the machine lacks, so its
/// supervisor exits at start). Updates are signed with the run's release key.
fn images() -> Option<&'static Images> {
    static IMAGES: std::sync::OnceLock<Option<Images>> = std::sync::OnceLock::new();
    IMAGES
        .get_or_init(|| {
            if !is_root() {
                assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
                eprintln!("skipped: building the image needs root");
                return None;
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let key = dir.path().join("release.key");
            let public = dir.path().join("release.pub");
            let made = run(mldefender().args(["model", "keygen"]).arg(&key).arg(&public));
            assert!(made.status.success(), "{}", stderr(&made));
            let public = std::fs::read_to_string(&public).expect("public key");
            let base = std::fs::read_to_string(repo().join("image/appliance.toml")).expect("image/appliance.toml");
            let config = base.replace("release-public-key = \"\"", &format!("release-public-key = \"{}\"", public.trim()));
            assert_ne!(config, base, "image/appliance.toml declares a release key");
            let good = dir.path().join("appliance.toml");
            std::fs::write(&good, &config).expect("config");
            let broken = dir.path().join("broken.toml");
            std::fs::write(&broken, config.replace("addresses = [", "addresses = [\"eth7=10.77.7.1/24\", ")).expect("config");
            let cold = build(&good, &dir.path().join("a"), "0.1.0");
            let warm = build(&good, &dir.path().join("a-again"), "0.1.0");
            eprintln!("image build: {:.1} s, again from the same inputs {:.1} s", cold.as_secs_f64(), warm.as_secs_f64());
            build(&good, &dir.path().join("b"), "0.1.1");
            build(&broken, &dir.path().join("broken"), "0.1.2");
            let images = Images { dir, key };
            for name in ["b", "broken"] {
                let signed = run(mldefender().args(["update", "sign", "--key"]).arg(&images.key).arg(images.uki(name)));
                assert!(signed.status.success(), "{}", stderr(&signed));
            }
            Some(images)
        })
        .as_ref()
}

fn manifest(images: &Images, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(images.out(name).join("manifest.json")).expect("manifest")).expect("manifest is JSON")
}

/// The entries of a manifest list (`inputs`, `initramfs`, `outputs`) by name or path.
fn entries(manifest: &Value, list: &str) -> std::collections::BTreeMap<String, String> {
    manifest[list]
        .as_array()
        .expect("list")
        .iter()
        .map(|entry| (entry["name"].as_str().or(entry["path"].as_str()).expect("named").to_string(), entry["sha256"].as_str().expect("hash").to_string()))
        .collect()
}

fn differing(a: &std::collections::BTreeMap<String, String>, b: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|key| a.get(*key) != b.get(*key)).cloned().collect()
}

#[test]
fn two_builds_from_the_same_inputs_are_bit_identical_and_the_manifest_shows_what_a_change_touched() {
    let Some(images) = images() else { return };
    let started = Instant::now();
    for file in ["disk.img", "mldefender-0.1.0.efi", "initramfs.img", "manifest.json"] {
        let (first, second) = (std::fs::read(images.out("a").join(file)).expect("a"), std::fs::read(images.out("a-again").join(file)).expect("again"));
        assert!(first == second, "{file} differs between two builds from the same inputs");
    }
    eprintln!("reproducibility check (compare two builds): {:.2} s", started.elapsed().as_secs_f64());
    let (a, broken) = (manifest(images, "a"), manifest(images, "broken"));
    // Every input is pinned by hash and named with its version.
    let inputs = entries(&a, "inputs");
    for name in ["linux-image-6.1.0-57-amd64", "systemd-boot-efi", "mldefender", "onnxruntime", "models"] {
        assert!(inputs.contains_key(name), "the manifest names input {name}: {inputs:?}");
    }
    // Only the TOML changed (and the version): the inputs differ by the config alone, the
    // initramfs by the files that carry the config and the version, every output after it.
    assert_eq!(differing(&inputs, &entries(&broken, "inputs")), ["config:appliance.toml", "config:broken.toml"]);
    assert_eq!(differing(&entries(&a, "initramfs"), &entries(&broken, "initramfs")), ["etc/mldefender/mldefender.toml", "etc/os-release"]);
    assert_eq!(differing(&entries(&a, "initramfs"), &entries(&manifest(images, "b"), "initramfs")), ["etc/os-release"], "a version changes os-release only");
    let outputs = differing(&entries(&a, "outputs"), &entries(&broken, "outputs"));
    assert_eq!(outputs, ["disk.img", "initramfs.img", "mldefender-0.1.0.efi", "mldefender-0.1.2.efi"], "initramfs, UKI and disk change; the kernel does not");
}

/// One VM: qemu/boot.sh in a directory of its own (console, management port, monitor).
struct Vm {
    qemu: Child,
    dir: PathBuf,
    started: Instant,
    /// Console bytes already searched (markers are waited for after this point).
    seen: usize,
}

impl Vm {
    fn boot(dir: &Path, disk: &Path, taps: Option<(&str, &str)>) -> Vm {
        let mut command = Command::new("bash");
        command.arg(repo().join("qemu/boot.sh")).arg(dir).arg(disk).args(["--timeout", "900"]);
        if let Some((lan, wan)) = taps {
            command.args(["--lan", lan, "--wan", wan]);
        }
        let _ = std::fs::remove_file(dir.join("console.log"));
        let qemu = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start qemu/boot.sh");
        Vm { qemu, dir: dir.to_path_buf(), started: Instant::now(), seen: 0 }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("console.log")).unwrap_or_default()).into_owned()
    }

    /// Waits for `needle` on the console after what was already seen; the time since the
    /// VM started.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let text = self.console();
            if let Some(at) = text.get(self.seen..).and_then(|rest| rest.find(needle)) {
                self.seen += at + needle.len();
                return Some(self.started.elapsed());
            }
            if let Ok(Some(status)) = self.qemu.try_wait() {
                panic!("QEMU exited ({status}) before `{needle}`:\n{}", tail(&text));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn expect(&mut self, needle: &str, timeout: Duration) -> Duration {
        match self.wait_for(needle, timeout) {
            Some(at) => at,
            None => panic!("no `{needle}` on the console within {timeout:?}:\n{}", tail(&self.console())),
        }
    }

    fn monitor(&self, command: &str) {
        use std::io::{Read, Write};
        let mut monitor = std::os::unix::net::UnixStream::connect(self.dir.join("monitor.sock")).expect("QEMU monitor");
        monitor.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut banner = [0u8; 4096];
        let _ = monitor.read(&mut banner);
        monitor.write_all(format!("{command}\n").as_bytes()).expect("monitor command");
        let _ = monitor.read(&mut banner);
    }

    /// `mldefender ARGS --runtime-dir DIR`: the CLI through the management port.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        run(mldefender().args(args).arg("--runtime-dir").arg(&self.dir))
    }

    fn status(&self) -> Value {
        let output = self.cli(&["status", "--json"]);
        assert!(output.status.success(), "status through the management port: {}", stderr(&output));
        serde_json::from_str(&stdout(&output)).expect("status JSON")
    }

    /// `mldefender stop` through the management port: the orderly stop and the
    /// power-off. The console.
    fn shut_down(mut self) -> String {
        let stop = self.cli(&["stop"]);
        assert!(stop.status.success(), "mldefender stop: {}{}", stdout(&stop), stderr(&stop));
        assert!(stdout(&stop).contains("then powering off"), "{}", stdout(&stop));
        self.expect("mldefender: stopped", Duration::from_secs(90));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.qemu.try_wait().expect("wait for qemu") {
                assert!(status.success(), "QEMU exited with {status} after the power-off");
                return self.console();
            }
            assert!(Instant::now() < deadline, "the VM did not power off:\n{}", tail(&self.console()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A power cut: QEMU stops at once; what the guest had not written is lost.
    fn pull_the_plug(mut self) {
        self.monitor("quit");
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.qemu.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        stop_vm(&mut self.qemu);
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The data partition of `disk` (a test copy), mounted on the host while `work` runs
/// (read-write: after a power cut the journal is replayed, as the appliance would).
fn with_data_partition<T>(disk: &Path, work: impl FnOnce(&Path) -> T) -> T {
    let mount = tempfile::tempdir().expect("mount point");
    let esp_mib: u64 = 256;
    let output = run(Command::new("mount").args(["-o", &format!("loop,offset={}", (1 + esp_mib) << 20), "-t", "ext4"]).arg(disk).arg(mount.path()));
    assert!(output.status.success(), "mount the data partition: {}", stderr(&output));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(mount.path())));
    let _ = run(Command::new("umount").arg(mount.path()));
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `mldefender log verify` of the log on the data partition; the records.
fn verified_log(data: &Path) -> Vec<Value> {
    let log = data.join("log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&log)
        .expect("log dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("events-") && name.ends_with(".jsonl")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no log files in {}", log.display());
    let output = run(mldefender().args(["log", "verify"]).args(&files).arg("--key").arg(data.join("keys/log.key")));
    assert!(output.status.success(), "the signed log verifies: {}{}", stdout(&output), stderr(&output));
    files
        .iter()
        .flat_map(|file| std::fs::read_to_string(file).expect("log file").lines().map(String::from).collect::<Vec<_>>())
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .collect()
}

fn image_notes(records: &[Value]) -> Vec<String> {
    records.iter().filter(|record| record["action"] == "image").filter_map(|record| record["provenance"].as_str().map(String::from)).collect()
}

fn copy_disk(from: &Path, to: &Path) {
    let output = run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn updates_are_verified_written_to_the_other_slot_blessed_and_a_broken_one_falls_back_by_itself() {
    let Some(images) = images() else { return };
    let work = tempfile::tempdir().expect("temp dir");
    let disk = work.path().join("disk.img");
    copy_disk(&images.out("a").join("disk.img"), &disk);
    let mut vm = Vm::boot(&work.path().join("vm"), &disk, None);
    let ready = vm.expect("mldefender: ready", Duration::from_secs(240));
    eprintln!("boot to ready (UEFI, TCG, first boot): {:.1} s", ready.as_secs_f64());

    // (c) A bad signature: refused before anything is written.
    let other_key = work.path().join("other.key");
    let made = run(mldefender().args(["model", "keygen"]).arg(&other_key).arg(work.path().join("other.pub")));
    assert!(made.status.success(), "{}", stderr(&made));
    let forged = work.path().join("forged.efi");
    std::fs::copy(images.uki("b"), &forged).expect("copy");
    let signed = run(mldefender().args(["update", "sign", "--key"]).arg(&other_key).arg(&forged));
    assert!(signed.status.success(), "{}", stderr(&signed));
    let refused = vm.cli(&["update", "apply", forged.to_str().expect("path")]);
    assert_eq!(refused.status.code(), Some(1), "a forged update is refused: {}", stdout(&refused));
    assert!(stderr(&refused).contains("not the release key"), "{}", stderr(&refused));
    let status = vm.cli(&["update", "status"]);
    assert!(
        stdout(&status).contains("slot b: empty"),
        "nothing was written:\n{}{} ({})\nconsole:\n{}",
        stdout(&status),
        stderr(&status),
        status.status,
        tail(&vm.console())
    );

    // A good update: written to slot b on trial, booted, blessed once healthy.
    let applied_at = Instant::now();
    let applied = vm.cli(&["update", "apply", "--reboot", images.uki("b").to_str().expect("path")]);
    assert!(applied.status.success(), "{}{}", stdout(&applied), stderr(&applied));
    assert!(stdout(&applied).contains("written to slot b"), "{}", stdout(&applied));
    vm.expect("mldefender: rebooting", Duration::from_secs(60));
    vm.expect("image slot booted slot=b version=0.1.1 state=on trial: 2 tries left, 1 done", Duration::from_secs(120));
    vm.expect("mldefender: ready", Duration::from_secs(120));
    eprintln!("update applied, rebooted and ready: {:.1} s", applied_at.elapsed().as_secs_f64());
    vm.expect("mldefender: image slot blessed (mldefender-000002-b.efi)", Duration::from_secs(60));
    let status = stdout(&vm.cli(&["update", "status"]));
    assert!(status.contains("running: slot b") && status.contains("slot b: 0.1.1 (running), blessed"), "{status}");
    assert!(status.contains("slot a: 0.1.0, blessed"), "the previous slot is kept:\n{status}");

    // A broken update (its supervisor exits at start): tried boot-tries times, then the
    // boot loader falls back to slot b on its own, and the appliance says so.
    let applied = vm.cli(&["update", "apply", "--reboot", images.uki("broken").to_str().expect("path")]);
    assert!(applied.status.success(), "{}{}", stdout(&applied), stderr(&applied));
    let fallback_at = Instant::now();
    for _ in 0..3 {
        vm.expect("failed to set an interface address", Duration::from_secs(180));
        vm.expect("mldefender: rebooting", Duration::from_secs(60));
    }
    vm.expect("image slot booted slot=b version=0.1.1 state=blessed", Duration::from_secs(180));
    vm.expect("mldefender: ready", Duration::from_secs(120));
    eprintln!("fallback from a broken slot (3 tries) to ready: {:.1} s", fallback_at.elapsed().as_secs_f64());
    assert!(vm.console().contains("fell back: slot a (0.1.2) failed 3 boots"), "{}", tail(&vm.console()));
    let status = stdout(&vm.cli(&["update", "status"]));
    assert!(status.contains("running: slot b") && status.contains("slot a: 0.1.2, failed: no tries left"), "{status}");
    assert!(status.contains("note: fell back: slot a (0.1.2)"), "{status}");
    vm.shut_down();

    // The data partition survived every update, and the signed log's chain runs across all
    // five boots and verifies, with each boot's slot on record.
    let notes = with_data_partition(&disk, |data| image_notes(&verified_log(data)));
    let expected = [
        "image slot a booted (0.1.0, blessed)",
        "image slot b booted (0.1.1, on trial",
        "image slot blessed: mldefender-000002-b.efi",
        "fell back: slot a (0.1.2) failed 3 boots",
    ];
    for note in expected {
        assert!(notes.iter().any(|text| text.contains(note)), "the signed log records `{note}`: {notes:#?}");
    }
}

/// The gateway's two networks: a LAN namespace (a client and an attacker, two addresses on
/// one tap) and a WAN namespace (a web server), each on one of the VM's NICs.
struct Networks {
    lan: String,
    wan: String,
}

const CLIENT: &str = "10.77.1.2";
const ATTACKER: &str = "10.77.1.66";
const SERVER: &str = "10.77.2.2";

impl Networks {
    fn create(tag: &str) -> Networks {
        let networks = Networks { lan: format!("mldimg{tag}l"), wan: format!("mldimg{tag}w") };
        networks.remove();
        for name in [&networks.lan, &networks.wan] {
            ip(&["netns", "add", name]);
        }
        networks
    }

    /// Once QEMU has made its taps (named after the namespaces): each into its namespace,
    /// addressed, routed via the VM.
    fn wire(&self) {
        let made = eventually(Duration::from_secs(60), || [&self.lan, &self.wan].iter().all(|name| Path::new("/sys/class/net").join(name).exists()));
        assert!(made, "QEMU made its taps {} and {}", self.lan, self.wan);
        for (name, addresses, route) in [(&self.lan, vec![CLIENT, ATTACKER], "10.77.1.1"), (&self.wan, vec![SERVER], "10.77.2.1")] {
            ip(&["link", "set", name, "netns", name]);
            for address in addresses {
                ip(&["-n", name, "addr", "add", &format!("{address}/24"), "dev", name]);
            }
            ip(&["-n", name, "link", "set", "lo", "up"]);
            ip(&["-n", name, "link", "set", name, "up"]);
            ip(&["-n", name, "route", "add", "default", "via", route]);
        }
    }

    fn exec(&self, namespace: &str, command: &[&str]) -> Command {
        let mut process = Command::new("ip");
        process.args(["netns", "exec", namespace]).args(command);
        process
    }

    /// One HTTP fetch of the server from `source`, within 5 s.
    fn fetch(&self, source: &str) -> bool {
        let url = format!("http://{SERVER}:8080/");
        run(&mut self.exec(&self.lan, &["curl", "-s", "-o", "/dev/null", "-m", "5", "--interface", source, &url])).status.success()
    }

    fn remove(&self) {
        for name in [&self.lan, &self.wan] {
            let _ = Command::new("ip").args(["netns", "pids", name]).output().map(|output| {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = Command::new("kill").arg(pid).status();
                }
            });
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) {
    let output = run(Command::new("ip").args(args));
    assert!(output.status.success(), "ip {}: {}", args.join(" "), stderr(&output));
}

fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

fn blocks_in_force(status: &Value) -> u64 {
    status["pipeline"]["active_blocks"].as_u64().unwrap_or(0)
}

#[test]
fn a_flashed_disk_boots_as_the_gateway_blocks_a_scan_and_survives_a_power_cut() {
    let Some(images) = images() else { return };
    let work = tempfile::tempdir().expect("temp dir");
    // (e) Flashing: the image written with dd to another "disk", which is what boots.
    let disk = work.path().join("flashed.img");
    let flashed = run(Command::new("dd").arg(format!("if={}", images.out("a").join("disk.img").display())).arg(format!("of={}", disk.display())).args([
        "bs=4M",
        "conv=sparse,fsync",
        "status=none",
    ]));
    assert!(flashed.status.success(), "dd: {}", stderr(&flashed));
    assert_eq!(std::fs::read(&disk).expect("flashed"), std::fs::read(images.out("a").join("disk.img")).expect("image"), "dd wrote the image as it is");

    let networks = Networks::create(&format!("{}", std::process::id() % 1000));
    let mut vm = Vm::boot(&work.path().join("vm"), &disk, Some((&networks.lan, &networks.wan)));
    networks.wire();
    let server = networks
        .exec(&networks.wan, &["python3", "-m", "http.server", "8080", "--bind", SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("web server");
    let _server = ChildGuard(server);

    // (a) UEFI boot to ready; the first boot formats the blank data partition.
    let ready = vm.expect("mldefender: ready", Duration::from_secs(240));
    eprintln!("boot to ready (UEFI, TCG, first boot, flashed disk): {:.1} s", ready.as_secs_f64());
    let console = vm.console();
    assert!(console.contains("first boot: the blank data partition was formatted and mounted device=/dev/vda2"), "{}", tail(&console));
    assert!(console.contains("image slot booted slot=a version=0.1.0 state=blessed"), "{}", tail(&console));
    for interface in ["eth0", "eth1"] {
        assert!(console.contains(&format!("XDP program attached interface={interface}")), "XDP on the guest's {interface}:\n{}", tail(&console));
    }
    // Each task as the kernel in the guest sees it, against the TOML.
    let config = images.out("a").join("../appliance.toml");
    for (task, uid, cap_eff) in [
        ("capture", "1000", "0000008000000000"),
        ("detect", "1001", "0000000000000000"),
        ("log", "1002", "0000000000000000"),
        ("ingest", "1003", "0000000000000000"),
    ] {
        let get = |key: &str| {
            stdout(&run(mldefender().args(["config", "get"]).arg(&config).arg(format!("tasks.{task}.{key}")))).trim().parse::<u64>().expect("a number")
        };
        let line = console
            .lines()
            .find(|line| line.contains("task identity") && line.contains(&format!("task={task} ")))
            .unwrap_or_else(|| panic!("no identity line for {task}"));
        assert_eq!(get_field(line, "uid"), stdout(&run(mldefender().args(["config", "get"]).arg(&config).arg(format!("tasks.{task}.user")))).trim(), "{line}");
        assert_eq!(get_field(line, "uid"), uid, "{line}");
        assert_eq!(get_field(line, "cap_eff"), cap_eff, "only the capture task keeps CAP_BPF: {line}");
        assert_eq!(get_field(line, "no_new_privs"), "1", "{line}");
        assert_eq!(get_field(line, "memory_max"), (get("memory-max-mib") << 20).to_string(), "{line}");
        assert_eq!(get_field(line, "memory_high"), (get("memory-high-mib") << 20).to_string(), "{line}");
    }

    // (b) Traffic through the gateway: the client's HTTP passes; the attacker's scan is
    // blocked by the VM's XDP; `status` through the management port shows it.
    assert!(eventually(Duration::from_secs(30), || networks.fetch(CLIENT)), "the client reaches the server through the gateway");
    assert!(networks.fetch(ATTACKER), "before its scan the attacker is an ordinary host");
    let scan = run(&mut networks
        .exec(&networks.lan, &["nmap", "-n", "-Pn", "-sS", "-e", &networks.lan, "-S", ATTACKER, "-p", "1-3000", "--max-retries", "0", "-T4", SERVER]));
    assert!(scan.status.success(), "nmap: {}", stderr(&scan));
    assert!(eventually(Duration::from_secs(60), || blocks_in_force(&vm.status()) >= 1), "the scan is blocked: {}", vm.status());
    let status = vm.status();
    assert!(status["pipeline"]["xdp_dropped"].as_u64().unwrap_or(0) > 0 || !networks.fetch(ATTACKER), "the VM's XDP drops the attacker: {status}");
    assert!(!networks.fetch(ATTACKER), "the blocked attacker's fetch fails");
    assert!(networks.fetch(CLIENT), "the client is still served");

    // (d) A power cut during attack traffic.
    let mut flood = networks
        .exec(&networks.lan, &["hping3", "-q", "-S", "-p", "80", "-i", "u2000", "-a", ATTACKER, SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hping3");
    std::thread::sleep(Duration::from_secs(3));
    vm.pull_the_plug();
    let _ = flood.kill();
    let _ = flood.wait();
    drop(networks);

    // The next boot: no format; the log recovers to its last full line and verifies; the
    // ingest task resumes; the blocks in force come back.
    let networks = Networks::create(&format!("{}", std::process::id() % 1000));
    let mut vm = Vm::boot(&work.path().join("vm"), &disk, Some((&networks.lan, &networks.wan)));
    vm.expect("persistent storage mounted device=/dev/vda2", Duration::from_secs(240));
    let ready = vm.expect("mldefender: ready", Duration::from_secs(240));
    eprintln!("boot to ready after a power cut: {:.1} s", ready.as_secs_f64());
    assert!(!vm.console().contains("first boot"), "the data partition is not formatted again");
    assert!(
        vm.console().contains(&format!("restored a saved block prefix={ATTACKER}/32")),
        "the attacker's block came back from the data partition:\n{}",
        tail(&vm.console())
    );
    networks.wire();
    assert!(!networks.fetch(ATTACKER), "the attacker is still dropped after the power cut");
    assert!(
        eventually(Duration::from_secs(60), || {
            let status = vm.status();
            status["pipeline"]["events_verified"].as_u64().unwrap_or(0) > 0
        }),
        "the ingest task resumes verifying: {}",
        vm.status()
    );
    assert_eq!(vm.status()["pipeline"]["events_quarantined"].as_u64(), Some(0), "nothing quarantined after the cut");
    let console = vm.shut_down();
    assert!(console.contains("XDP program left enforcing") && console.contains("supervisor stopped"), "the orderly stop:\n{}", tail(&console));
    assert!(!console.contains("Kernel panic"), "{}", tail(&console));
    drop(networks);
    let records = with_data_partition(&disk, verified_log);
    assert!(records.iter().any(|record| record["action"] == "block" && record["src_ip"] == ATTACKER), "the block is in the verified log");
}

fn get_field(line: &str, key: &str) -> String {
    line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{key}="))).unwrap_or("").to_string()
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
