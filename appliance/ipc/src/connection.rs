//! The transport every task uses: a non-blocking framed [`Connection`] over a Unix stream
//! socket with bounded buffers, and an [`accept`] that admits only the expected peer.
//!
//! A connection never blocks its caller's loop. Sending queues the frame in a bounded
//! output buffer (refused when it would not fit: the caller decides what waits or is
//! dropped) and [`Connection::flush`] writes what the peer takes now. Receiving reads
//! what has arrived, at most one frame's worth beyond what is still undecoded, so a peer
//! cannot grow the reader's memory. A frame over [`MAX_FRAME_BYTES`], a frame that is not
//! a message, or an IO error ends the connection ([`Connection::is_open`] turns false).

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{encode_frame, FrameDecoder, FrameError, MAX_FRAME_BYTES};

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The output buffer holds `pending` bytes and the frame needs `frame` more than the
    /// `limit` allows: try again after a flush.
    #[error("the connection's output buffer is full ({pending} of {limit} bytes pending, the frame needs {frame})")]
    Full { pending: usize, frame: usize, limit: usize },
    /// The message cannot be encoded or is larger than a frame may be.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A non-blocking, framed, bounded connection. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// Encoded frames not yet completely written, and how many of their bytes are.
    out: Vec<u8>,
    written: usize,
    max_out_bytes: usize,
    open: bool,
    /// Why the connection ended, once it did.
    ended: Option<String>,
}

/// What one [`Connection::receive`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes read.
    pub bytes: usize,
    /// False once the peer closed or the connection failed.
    pub open: bool,
}

/// The frames a connection had not started to write when it ended, to send on the next
/// connection, and whether a frame was cut in the middle (lost: its head went to a peer
/// that is gone).
#[derive(Debug, Default)]
pub struct Unsent {
    pub frames: Vec<u8>,
    pub cut_frame: bool,
}

impl Connection {
    /// Wraps a connected stream (made non-blocking); at most `max_out_bytes` wait to be
    /// written (one frame is always admitted into an empty buffer).
    pub fn new(stream: UnixStream, max_out_bytes: usize) -> io::Result<Connection> {
        stream.set_nonblocking(true)?;
        Ok(Connection { stream, decoder: FrameDecoder::default(), out: Vec::new(), written: 0, max_out_bytes, open: true, ended: None })
    }

    /// Connects to the socket at `path`.
    pub fn connect(path: &Path, max_out_bytes: usize) -> io::Result<Connection> {
        Connection::new(UnixStream::connect(path)?, max_out_bytes)
    }

    /// A connection that starts with `unsent` frames of an earlier one to write first.
    pub fn resume(stream: UnixStream, max_out_bytes: usize, unsent: Unsent) -> io::Result<Connection> {
        let mut connection = Connection::new(stream, max_out_bytes)?;
        connection.out = unsent.frames;
        Ok(connection)
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Why the connection ended (`None` while open, or when the peer closed cleanly).
    pub fn end_reason(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.out.len() - self.written
    }

    /// True when nothing waits to be written.
    pub fn is_flushed(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Queues `message` as one frame if it fits in the output buffer (an empty buffer
    /// takes any frame). Nothing is written until [`flush`](Connection::flush).
    pub fn queue<T: Serialize>(&mut self, message: &T) -> Result<(), SendError> {
        let frame = encode_frame(message)?;
        let pending = self.pending_bytes();
        if pending > 0 && pending + frame.len() > self.max_out_bytes {
            return Err(SendError::Full { pending, frame: frame.len(), limit: self.max_out_bytes });
        }
        self.compact();
        self.out.extend_from_slice(&frame);
        Ok(())
    }

    /// True when a frame of `bytes` would be queued now.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        let pending = self.pending_bytes();
        pending == 0 || pending + bytes <= self.max_out_bytes
    }

    /// Queues `message` and writes what the peer takes now.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), SendError> {
        self.queue(message)?;
        self.flush();
        Ok(())
    }

    /// Writes what the peer takes now; never waits. Returns the bytes written. An error
    /// other than "would block" ends the connection.
    pub fn flush(&mut self) -> usize {
        let mut total = 0;
        while self.open && self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => {
                    self.end("the peer takes no more bytes");
                    break;
                }
                Ok(n) => {
                    self.written += n;
                    total += n;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => self.end(&format!("write failed: {error}")),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        total
    }

    /// Reads what has arrived, without waiting, and keeps it for [`next_message`](Connection::next_message).
    /// Stops reading while a whole frame's worth is undecoded.
    pub fn receive(&mut self) -> Received {
        let mut bytes = 0;
        let mut chunk = [0u8; READ_CHUNK];
        while self.open && self.decoder.buffered_bytes() < 4 + MAX_FRAME_BYTES {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.open = false;
                    break;
                }
                Ok(n) => {
                    bytes += n;
                    self.decoder.push(&chunk[..n]);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => self.end(&format!("read failed: {error}")),
            }
        }
        Received { bytes, open: self.open }
    }

    /// The next message received, if a whole one has arrived. A frame that is too large
    /// or not a `T` ends the connection (the framing of what follows is lost) and is
    /// returned as the error.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.decoder.next_message() {
            Ok(message) => Ok(message),
            Err(error) => {
                self.end(&format!("bad frame: {error}"));
                Err(error)
            }
        }
    }

    /// Ends the connection: the frames not started, for the next one.
    pub fn unsent(mut self) -> Unsent {
        // Skip every frame written whole, then the one cut in the middle, if any.
        let mut start = 0;
        while start < self.out.len() && start + frame_length(&self.out[start..]) <= self.written {
            start += frame_length(&self.out[start..]);
        }
        let cut_frame = start < self.written;
        if cut_frame {
            start += frame_length(&self.out[start..]);
        }
        Unsent { frames: self.out.split_off(start.min(self.out.len())), cut_frame }
    }

    /// The stream itself, for a caller that takes over (what was queued is dropped).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// The socket, to wait on with poll.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    fn end(&mut self, reason: &str) {
        if self.open {
            self.open = false;
            self.ended = Some(reason.to_string());
        }
    }

    /// Drops the written bytes at the front, so the buffer never holds them for long.
    fn compact(&mut self) {
        if self.written > 0 {
            self.out.drain(..self.written);
            self.written = 0;
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The length of the frame at the start of `bytes` (its 4-byte length prefix and body).
fn frame_length(bytes: &[u8]) -> usize {
    match bytes {
        [a, b, c, d, ..] => 4 + u32::from_be_bytes([*a, *b, *c, *d]) as usize,
        _ => bytes.len(),
    }
}

/// A peer admitted by [`accept`].
#[derive(Debug)]
pub struct Peer {
    pub stream: UnixStream,
    pub uid: u32,
    pub pid: i32,
}

/// Why [`accept`] turned a peer away. The stream of a peer with the wrong uid comes
/// back, so that a server may tell it why before closing it; no frame of the peer is read.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("refused a connection from uid {uid} (pid {pid}): only uid {expected:?} may connect")]
    Uid { uid: u32, pid: i32, expected: Vec<u32>, stream: UnixStream },
    #[error("refused a connection without peer credentials: {0}")]
    NoCredentials(io::Error),
}

/// Accepts the next waiting connection on a non-blocking listener if its peer runs as one
/// of `uids` (the kernel's peer credentials, taken at connect time); `None` when nobody
/// waits.
pub fn accept(listener: &UnixListener, uids: &[u32]) -> Option<Result<Peer, Refused>> {
    let (stream, _) = listener.accept().ok()?;
    Some(match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(credentials) if uids.contains(&credentials.uid()) => Ok(Peer { stream, uid: credentials.uid(), pid: credentials.pid() }),
        Ok(credentials) => Err(Refused::Uid { uid: credentials.uid(), pid: credentials.pid(), expected: uids.to_vec(), stream }),
        Err(error) => Err(Refused::NoCredentials(error.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventAck, TaskMessage};

    fn pair(max_out: usize) -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        (Connection::new(ours, max_out).expect("connection"), theirs)
    }

    fn drain(peer: &mut UnixStream) -> Vec<u8> {
        peer.set_nonblocking(true).expect("nonblocking");
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            match peer.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        bytes
    }

    fn decode_all(bytes: &[u8]) -> Vec<EventAck> {
        let mut decoder = FrameDecoder::default();
        decoder.push(bytes);
        std::iter::from_fn(|| decoder.next_message::<EventAck>().expect("frame")).collect()
    }

    #[test]
    fn a_full_peer_never_blocks_the_sender_and_what_did_not_fit_is_written_later() {
        let (mut connection, mut peer) = pair(1 << 20);
        // The peer reads nothing: the socket buffer fills, the rest waits in ours.
        let mut queued = 0u64;
        while connection.queue(&EventAck { seq: queued }).is_ok() {
            queued += 1;
            connection.flush();
        }
        assert!(connection.pending_bytes() > 0, "the socket took everything: the test did not fill it");
        assert!(matches!(connection.queue(&EventAck { seq: queued }), Err(SendError::Full { .. })));
        // Now the peer reads; every queued frame arrives whole and in order.
        let mut bytes = Vec::new();
        while !connection.is_flushed() {
            bytes.extend(drain(&mut peer));
            connection.flush();
        }
        bytes.extend(drain(&mut peer));
        let seqs: Vec<u64> = decode_all(&bytes).iter().map(|ack| ack.seq).collect();
        assert_eq!(seqs, (0..queued).collect::<Vec<_>>());
    }

    #[test]
    fn after_a_partial_write_only_whole_frames_not_started_go_to_the_next_connection() {
        let frame = encode_frame(&EventAck { seq: 1 }).expect("frame").len();
        for (written, frames_kept, cut) in [(0, 3, false), (frame, 2, false), (frame + 2, 1, true), (3 * frame - 1, 0, true)] {
            let (mut connection, _peer) = pair(1 << 20);
            for seq in 1..=3 {
                connection.out.extend(encode_frame(&EventAck { seq }).expect("frame"));
            }
            connection.written = written;
            let unsent = connection.unsent();
            assert_eq!((unsent.frames.len() / frame, unsent.frames.len() % frame, unsent.cut_frame), (frames_kept, 0, cut), "written {written}");
            let seqs: Vec<u64> = decode_all(&unsent.frames).iter().map(|ack| ack.seq).collect();
            assert_eq!(seqs, ((4 - frames_kept as u64)..=3).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_peer_sending_a_frame_over_the_limit_ends_the_connection() {
        let (mut connection, mut peer) = pair(1 << 20);
        peer.write_all(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes()).expect("write");
        peer.write_all(&[0u8; 64]).expect("write");
        connection.receive();
        assert!(matches!(connection.next_message::<TaskMessage>(), Err(FrameError::TooLarge(_))));
        assert!(!connection.is_open());
        assert!(connection.end_reason().is_some_and(|reason| reason.contains("bad frame")));
    }

    #[test]
    fn the_reader_holds_at_most_one_frame_of_undecoded_bytes() {
        let (mut connection, peer) = pair(1 << 20);
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            // A declared maximum-size frame, then far more bytes than one frame.
            let _ = peer.write_all(&(MAX_FRAME_BYTES as u32).to_be_bytes());
            let chunk = vec![b' '; 1 << 16];
            for _ in 0..64 {
                if peer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while connection.decoder.buffered_bytes() < 4 + MAX_FRAME_BYTES && std::time::Instant::now() < deadline {
            connection.receive();
        }
        connection.receive();
        assert!(connection.decoder.buffered_bytes() < 4 + MAX_FRAME_BYTES + READ_CHUNK, "{} bytes buffered", connection.decoder.buffered_bytes());
        drop(connection);
        let _ = writer.join();
    }

    #[test]
    fn a_peer_with_the_wrong_uid_is_refused_and_the_right_one_admitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("socket");
        let listener = UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        assert!(accept(&listener, &[0]).is_none(), "nobody waits yet");
        let me = nix::unistd::getuid().as_raw();
        let _client = UnixStream::connect(&path).expect("connect");
        match accept(&listener, &[me.wrapping_add(1)]) {
            Some(Err(Refused::Uid { uid, .. })) => assert_eq!(uid, me),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let _client = UnixStream::connect(&path).expect("connect");
        match accept(&listener, &[me]) {
            Some(Ok(peer)) => assert_eq!((peer.uid, peer.pid), (me, std::process::id() as i32)),
            other => panic!("expected the peer, got {other:?}"),
        }
    }
}
