//! A hypervisor's management port: when the appliance image runs in a VM that offers a
//! virtio-serial port named [`PORT_NAME`], PID 1 bridges it to the control socket, so
//! that `mldefender status`, `update status` and `update apply` on the host reach the
//! guest's supervisor (`--runtime-dir` pointing at the directory of QEMU's socket).
//! Each host connection is one session with one fresh connection to the control socket.
//! The port is the hypervisor's: only the VM's host can open it. Real hardware has none,
//! and nothing is bridged there.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

/// The virtio-serial port's name (QEMU: `-device virtserialport,name=...`).
pub const PORT_NAME: &str = "org.mldefender.control";

/// Starts the bridge when the port exists; otherwise does nothing.
pub fn start(control_socket: PathBuf) {
    let Some(port) = find_port() else { return };
    info!(port = %port.display(), "management port bridged to the control socket");
    std::thread::spawn(move || loop {
        if let Err(error) = serve(&port, &control_socket) {
            warn!(error = %error, port = %port.display(), "management port");
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

fn find_port() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (name.trim() == PORT_NAME).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

/// Sessions on the port, one after the other. A read of 0 bytes means the host side is
/// not connected (virtio-serial's EOF): the session, if any, ends.
fn serve(port: &Path, control_socket: &Path) -> std::io::Result<()> {
    let mut reader = std::fs::OpenOptions::new().read(true).write(true).open(port)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut control = UnixStream::connect(control_socket)?;
        control.write_all(&buffer[..read])?;
        // The answers go back to the host on their own thread until the supervisor closes.
        let (mut answers, mut writer) = (control.try_clone()?, reader.try_clone()?);
        let back = std::thread::spawn(move || std::io::copy(&mut answers, &mut writer));
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if control.write_all(&buffer[..read]).is_err() {
                        // The supervisor closed: drain the rest of this session.
                        continue;
                    }
                }
            }
        }
        let _ = control.shutdown(std::net::Shutdown::Both);
        let _ = back.join();
    }
}
