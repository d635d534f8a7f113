//! Readiness for systemd (`Type=notify`): `READY=1` to `$NOTIFY_SOCKET`, when set.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the notify socket; does nothing without one.
pub fn sd_notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let socket = UnixDatagram::unbound()?;
    let path = path.to_string_lossy().into_owned();
    if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &address)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}
