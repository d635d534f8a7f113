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

/// Sessions on the port, one after the other. A session ends when the host leaves (a read
/// of 0 bytes: virtio-serial's EOF), or when its request is complete and more bytes come:
/// a host that left and a new one that connected before this side read the EOF. Those
/// bytes begin the next session (they were once written to the old, closed connection and
/// lost, and the new command waited for an answer that never came).
fn serve(port: &Path, control_socket: &Path) -> std::io::Result<()> {
    let mut reader = std::fs::OpenOptions::new().read(true).write(true).open(port)?;
    let mut buffer = vec![0u8; 64 * 1024];
    // Bytes read that begin the next session.
    let mut carried: Vec<u8> = Vec::new();
    loop {
        let mut data = if carried.is_empty() {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            buffer[..read].to_vec()
        } else {
            std::mem::take(&mut carried)
        };
        let mut control = UnixStream::connect(control_socket)?;
        // The answers go back to the host on their own thread until the supervisor closes.
        let (mut answers, mut writer) = (control.try_clone()?, reader.try_clone()?);
        let back = std::thread::spawn(move || std::io::copy(&mut answers, &mut writer));
        let mut request = Request::default();
        let host_left = loop {
            let used = request.take(&data);
            // A write fails once the supervisor has closed (a refusal before the whole
            // request came): the rest of this request is dropped.
            let _ = control.write_all(&data[..used]);
            if used < data.len() {
                carried = data[used..].to_vec();
                break false;
            }
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break true,
                Ok(read) => data = buffer[..read].to_vec(),
            }
        };
        if host_left {
            // Nobody waits for the answer: stop it.
            let _ = control.shutdown(std::net::Shutdown::Both);
            let _ = back.join();
        } else {
            // The supervisor has the whole request: its answer goes out before the next
            // session's starts.
            let _ = back.join();
            let _ = control.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// How far a session's request has come, from the bytes the host sent: the control
/// protocol is one request per connection, a frame (a 4-byte big-endian length, then
/// JSON), and an `UpdateApply` frame is followed by the `bytes` of the image it announces.
#[derive(Default)]
struct Request {
    /// The frame as received so far (at most 4 + `MAX_FRAME_BYTES`).
    frame: Vec<u8>,
    /// The frame is whole.
    framed: bool,
    /// Raw bytes still to come after the frame; `u64::MAX`: the frame is too large to be
    /// delimited, and everything until the host leaves belongs to this session.
    tail: u64,
}

impl Request {
    /// How many bytes at the start of `data` belong to this request; the rest belong to
    /// the next session.
    fn take(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            if self.framed {
                if self.tail == 0 {
                    break;
                }
                let take = usize::try_from(self.tail).unwrap_or(usize::MAX).min(data.len() - used);
                used += take;
                if self.tail != u64::MAX {
                    self.tail -= take as u64;
                }
                continue;
            }
            if self.frame.len() < 4 {
                let take = (4 - self.frame.len()).min(data.len() - used);
                self.frame.extend_from_slice(&data[used..used + take]);
                used += take;
                if self.frame.len() < 4 {
                    break;
                }
            }
            let length = u32::from_be_bytes([self.frame[0], self.frame[1], self.frame[2], self.frame[3]]) as usize;
            if length > mld_ipc::MAX_FRAME_BYTES {
                // The supervisor refuses it and closes.
                self.framed = true;
                self.tail = u64::MAX;
                continue;
            }
            let take = (4 + length - self.frame.len()).min(data.len() - used);
            self.frame.extend_from_slice(&data[used..used + take]);
            used += take;
            if self.frame.len() == 4 + length {
                self.framed = true;
                self.tail = match serde_json::from_slice::<mld_ipc::ControlRequest>(&self.frame[4..]) {
                    Ok(mld_ipc::ControlRequest::UpdateApply { bytes, .. }) => bytes,
                    _ => 0,
                };
                self.frame = Vec::new();
            }
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_ipc::{encode_frame, ControlRequest};

    #[test]
    fn a_request_ends_where_its_frame_and_announced_image_end() {
        let status = encode_frame(&ControlRequest::Status).expect("frame");
        let update = encode_frame(&ControlRequest::UpdateApply { bytes: 10, sha256: None, signature: "s".into(), reboot: false }).expect("frame");

        // A status request, then the next session's: split after the first.
        let mut both = status.clone();
        both.extend_from_slice(&status);
        assert_eq!(Request::default().take(&both), status.len());

        // An update: its frame and 10 image bytes, whatever they hold, then the next request.
        let mut stream = update.clone();
        stream.extend_from_slice(&[0xff; 10]);
        stream.extend_from_slice(&status);
        assert_eq!(Request::default().take(&stream), update.len() + 10);

        // The same a byte at a time.
        let mut request = Request::default();
        let used: usize = stream.chunks(1).map(|byte| request.take(byte)).sum();
        assert_eq!(used, update.len() + 10);

        // A frame too large to delimit: everything until the host leaves is this session's.
        let mut large = ((mld_ipc::MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        large.extend_from_slice(&status);
        assert_eq!(Request::default().take(&large), large.len());
    }
}
