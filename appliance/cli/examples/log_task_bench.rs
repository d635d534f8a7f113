//! The log task's memory over millions of events, measured through the task itself:
//! this program plays the supervisor (control channel, handed fds) and the detect task (events
//! over the events socket with acknowledgement, as `task.rs` sends them), and samples
//! the log task's resident memory as events are acknowledged.
//!
//!   log_task_bench MLDEFENDER RECORD_JSON EVENTS [SAMPLES]
//!
//! RECORD_JSON holds one event record (a JSON object without integrity fields). Rotated
//! log files are deleted behind the task so the disk stays bounded. Prints CSV:
//! events acknowledged, log task resident MiB, events/s since the last sample.

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mld_ipc::{AckWindow, EventAck, EventMessage, FrameDecoder, SupervisorMessage, TaskMessage, TaskSettings};
use mld_supervisor::layout::{LogFds, TaskFds};

fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Removes every log file of the node but the newest (the one being written).
fn delete_rotated(dir: &Path) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list the log directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")))
        .collect();
    files.sort();
    files.pop();
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, exe, record_file, events, rest @ ..] = args.as_slice() else {
        eprintln!("usage: log_task_bench MLDEFENDER RECORD_JSON EVENTS [SAMPLES]");
        std::process::exit(2);
    };
    let exe = mld_supervisor::spawn::Executable::open(Path::new(exe)).expect("open the mldefender binary");
    let events: u64 = events.parse().expect("EVENTS is a number");
    let samples: u64 = rest.first().and_then(|n| n.parse().ok()).unwrap_or(20);
    let record = std::fs::read_to_string(record_file).expect("read RECORD_JSON").trim().to_string();

    let work = tempfile::tempdir().expect("temp dir");
    let log_dir = work.path().join("log");
    let key_path = work.path().join("log.key");
    drop(mld_eventlog::LogKey::create(&key_path).expect("create the log key"));
    let signing_key_path = work.path().join("signing.key");
    drop(mld_eventlog::CheckpointSigningKey::create(&signing_key_path).expect("create the signing key"));
    let config_toml = format!(
        "[log]\ndir = \"{}\"\nnode = \"bench\"\nkey-file = \"{}\"\nsigning-key-file = \"{}\"\n",
        log_dir.display(),
        key_path.display(),
        signing_key_path.display()
    );
    let socket = work.path().join("events.sock");
    let listener = UnixListener::bind(&socket).expect("bind the events socket");
    let key = std::fs::File::open(&key_path).expect("open the key");
    let signing_key = std::fs::File::open(&signing_key_path).expect("open the signing key");
    let (mut control, task_control) = UnixStream::pair().expect("control socket pair");
    let uid = nix::unistd::getuid().as_raw();
    let mut child = mld_supervisor::spawn::spawn(mld_supervisor::spawn::TaskSpawn {
        exe: &exe,
        args: vec!["task".into(), "log".into()],
        env: Vec::new(),
        uid,
        gid: nix::unistd::getgid().as_raw(),
        keep_cap_bpf: false,
        fds: TaskFds::Log(LogFds { control: task_control.as_fd(), events: listener.as_fd(), key: key.as_fd(), signing_key: signing_key.as_fd() }).into_list(),
        cgroup_procs: None,
        working_dir: work.path().to_path_buf(),
    })
    .expect("start the log task");
    drop(task_control);
    let settings = TaskSettings {
        flows_socket: work.path().join("flows.sock"),
        events_socket: socket.clone(),
        query_socket: work.path().join("query.sock"),
        fleet_socket: None,
        fleet_base_toml: None,
        fleet_generation: 0,
        config_note: None,
        capture_uid: uid,
        detect_uid: uid,
        log_public_key: None,
        test: Default::default(),
    };
    mld_ipc::write_frame(&mut control, &SupervisorMessage::Configure { config_toml, settings }).expect("configure the log task");
    match mld_ipc::read_frame::<TaskMessage>(&mut control).expect("read from the log task") {
        Some(TaskMessage::Ready) => {}
        other => panic!("the log task did not become ready: {other:?}"),
    }
    control.set_nonblocking(true).expect("non-blocking control");

    let mut stream = UnixStream::connect(&socket).expect("connect to the log task");
    mld_ipc::write_frame(&mut stream, &EventMessage::Hello { stream: 0x0bec }).expect("say hello");
    stream.set_nonblocking(true).expect("non-blocking events");
    let mut window: AckWindow<()> = AckWindow::new(4096);
    let mut decoder = FrameDecoder::default();
    let mut out = Vec::with_capacity(1 << 20);
    let mut buffer = vec![0u8; 65536];
    let mut control_buffer = [0u8; 4096];
    let (mut sent, mut acked) = (0u64, 0u64);
    let step = (events / samples).max(1);
    let mut next_sample = step;
    let started = Instant::now();
    let mut last_sample = (Instant::now(), 0u64);
    println!("events_acknowledged,log_task_rss_mib,events_per_s");
    println!("0,{:.2},0", resident_mib(child.id()));
    while acked < events {
        // Keep the window full.
        out.clear();
        while sent < events && window.can_send() {
            let (seq, ()) = window.send(()).expect("room in the window");
            mld_ipc::write_frame(&mut out, &EventMessage::Event { seq, record: record.clone() }).expect("encode");
            sent += 1;
            if out.len() >= 1 << 20 {
                break;
            }
        }
        let mut written = 0;
        while written < out.len() {
            match std::io::Write::write(&mut stream, &out[written..]) {
                Ok(n) => written += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    // Read acknowledgements meanwhile, so neither side waits on the other.
                    std::thread::sleep(Duration::from_micros(200));
                    if let Ok(n) = stream.read(&mut buffer) {
                        decoder.push(&buffer[..n]);
                    }
                }
                Err(error) => panic!("the log task closed the events socket: {error}"),
            }
        }
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the log task closed the events socket"),
            Ok(n) => decoder.push(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(200)),
            Err(error) => panic!("events socket: {error}"),
        }
        while let Some(EventAck { seq }) = decoder.next_message::<EventAck>().expect("acknowledgement frame") {
            window.ack(seq);
            acked = seq;
        }
        // Counters the task sends on the control channel are read and dropped.
        while let Ok(n) = control.read(&mut control_buffer) {
            if n == 0 {
                panic!("the log task exited: {:?}", child.try_wait());
            }
        }
        if acked >= next_sample {
            let now = Instant::now();
            let rate = (acked - last_sample.1) as f64 / now.duration_since(last_sample.0).as_secs_f64();
            println!("{acked},{:.2},{rate:.0}", resident_mib(child.id()));
            last_sample = (now, acked);
            next_sample += step;
            delete_rotated(&log_dir);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    control.set_nonblocking(false).expect("blocking control");
    mld_ipc::write_frame(&mut control, &SupervisorMessage::Shutdown).expect("ask the log task to stop");
    let status = child.wait().expect("wait for the log task");
    eprintln!("{events} events through the log task in {elapsed:.1} s ({:.0} events/s); task exit {status}", events as f64 / elapsed);
}
