//! Length-delimited JSON frames.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroize;

/// The largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("frame is not a valid message")]
    Decode(#[source] serde_json::Error),
    #[error("failed to read or write a frame")]
    Io(#[from] io::Error),
}

/// One message as a frame: its 4-byte big-endian length, then its JSON.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message).map_err(FrameError::Decode)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one message as a frame to a blocking stream.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FrameError> {
    out.write_all(&encode_frame(message)?)?;
    Ok(())
}

/// Reads one message from a blocking stream; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body).map(Some).map_err(FrameError::Decode)
}

/// Decodes frames from bytes as they arrive on a non-blocking socket.
///
/// The decoder holds what was pushed and not yet decoded; a reader that must stay
/// bounded checks [`buffered_bytes`](FrameDecoder::buffered_bytes) before pushing more
/// (a complete frame is at most `4 + MAX_FRAME_BYTES`). Decoding many small frames costs
/// time linear in their bytes: consumed bytes are dropped at the next push, not per frame.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already decoded.
    consumed: usize,
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        self.buffer.zeroize();
    }
}

impl FrameDecoder {
    /// Appends received bytes. The bytes of decoded frames are wiped before they are let
    /// go (a control frame may carry a key: [`crate::SupervisorMessage::FleetIdentity`]),
    /// and so is the stale tail the shift leaves in the buffer's spare capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            let old_len = self.buffer.len();
            self.buffer[..self.consumed].zeroize();
            self.buffer.drain(..self.consumed);
            let len = self.buffer.len();
            self.buffer.resize(old_len, 0);
            self.buffer.truncate(len);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes pushed and not yet decoded.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// The next complete message, if one has arrived.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let pending = &self.buffer[self.consumed..];
        if pending.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
        if length > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(length));
        }
        if pending.len() < 4 + length {
            return Ok(None);
        }
        let message = serde_json::from_slice(&pending[4..4 + length]).map_err(FrameError::Decode);
        self.consumed += 4 + length;
        message.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskMessage;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &TaskMessage::Ready).expect("write");
        write_frame(&mut bytes, &TaskMessage::Stopping { reason: "shutdown".to_string() }).expect("write");
        let mut cursor = std::io::Cursor::new(bytes.clone());
        assert_eq!(read_frame::<TaskMessage>(&mut cursor).expect("read"), Some(TaskMessage::Ready));
        assert!(matches!(read_frame::<TaskMessage>(&mut cursor).expect("read"), Some(TaskMessage::Stopping { .. })));
        assert_eq!(read_frame::<TaskMessage>(&mut cursor).expect("end"), None);

        let mut decoder = FrameDecoder::default();
        let mut decoded = Vec::new();
        for byte in bytes {
            decoder.push(&[byte]);
            while let Some(message) = decoder.next_message::<TaskMessage>().expect("decode") {
                decoded.push(message);
            }
        }
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn buffered_bytes_count_what_is_not_yet_decoded() {
        let mut one = Vec::new();
        write_frame(&mut one, &TaskMessage::Ready).expect("write");
        let mut decoder = FrameDecoder::default();
        for _ in 0..3 {
            decoder.push(&one);
        }
        decoder.push(&one[..2]);
        assert_eq!(decoder.buffered_bytes(), 3 * one.len() + 2);
        assert_eq!(decoder.next_message::<TaskMessage>().expect("decode"), Some(TaskMessage::Ready));
        assert_eq!(decoder.buffered_bytes(), 2 * one.len() + 2);
        while decoder.next_message::<TaskMessage>().expect("decode").is_some() {}
        assert_eq!(decoder.buffered_bytes(), 2);
        decoder.push(&one[2..]);
        assert_eq!(decoder.next_message::<TaskMessage>().expect("decode"), Some(TaskMessage::Ready));
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(decoder.next_message::<TaskMessage>(), Err(FrameError::TooLarge(_))));
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 3, b'x', b'y', b'z']);
        assert!(matches!(decoder.next_message::<TaskMessage>(), Err(FrameError::Decode(_))));
    }
}
