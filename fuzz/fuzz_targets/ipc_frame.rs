//! The IPC frame decoders (`mld_ipc::FrameDecoder` for non-blocking sockets, `read_frame`
//! for blocking streams), for every message type that crosses a process boundary.
//!
//! Input: one selector byte (low 3 bits: the message type; the rest: how the bytes are
//! cut into reads, 1 to 31 bytes, or whole), then the byte stream as it arrives.
//!
//! Checks beyond "never panics":
//! - both decoders agree on the stream: the same messages in the same order, and an
//!   oversized frame refused by both;
//! - every decoded message encodes, and decodes back to the same message (compared as
//!   bytes): what one side accepts, the other can send, and values (floats) survive.

#![no_main]

use std::fmt::Debug;
use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use mld_ipc::{
    read_frame, write_frame, ControlRequest, EventAck, EventMessage, FlowMessage, FrameDecoder, FrameError, ResponseMessage, StatusReport, SupervisorMessage,
    TaskMessage,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|input: &[u8]| {
    let [selector, stream @ ..] = input else {
        return;
    };
    let chunk = match usize::from(selector >> 3) {
        0 => stream.len().max(1),
        size => size,
    };
    match selector & 7 {
        0 => check::<TaskMessage>(stream, chunk),
        1 => check::<SupervisorMessage>(stream, chunk),
        2 => check::<ControlRequest>(stream, chunk),
        3 => check::<FlowMessage>(stream, chunk),
        4 => check::<ResponseMessage>(stream, chunk),
        5 => check::<EventMessage>(stream, chunk),
        6 => check::<EventAck>(stream, chunk),
        _ => check::<StatusReport>(stream, chunk),
    }
});

/// What a decoder made of one frame.
#[derive(Debug, PartialEq)]
enum Decoded<T> {
    Message(T),
    NotAMessage,
    TooLarge(usize),
}

fn check<T: Serialize + DeserializeOwned + Debug>(stream: &[u8], chunk: usize) {
    // The non-blocking decoder, fed as the bytes arrive.
    let mut decoder = FrameDecoder::default();
    let mut from_decoder = Vec::new();
    'reads: for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_message::<T>() {
                Ok(Some(message)) => from_decoder.push(Decoded::Message(message)),
                Ok(None) => break,
                Err(FrameError::Decode(_)) => from_decoder.push(Decoded::NotAMessage),
                // The connection is dropped: nothing after it is read.
                Err(FrameError::TooLarge(length)) => {
                    from_decoder.push(Decoded::TooLarge(length));
                    break 'reads;
                }
                Err(FrameError::Io(error)) => panic!("the decoder does no IO: {error}"),
            }
        }
    }
    // The blocking reader, on the same bytes.
    let mut cursor = Cursor::new(stream);
    let mut from_reader = Vec::new();
    loop {
        match read_frame::<T>(&mut cursor) {
            Ok(Some(message)) => from_reader.push(Decoded::Message(message)),
            Ok(None) => break,
            Err(FrameError::Decode(_)) => from_reader.push(Decoded::NotAMessage),
            Err(FrameError::TooLarge(length)) => {
                from_reader.push(Decoded::TooLarge(length));
                break;
            }
            // A frame cut short at the end of the stream.
            Err(FrameError::Io(_)) => break,
        }
    }
    assert_eq!(comparable(&from_decoder), comparable(&from_reader), "the two decoders disagree");
    for decoded in &from_decoder {
        if let Decoded::Message(message) = decoded {
            // Compared as encoded bytes: a non-finite feature travels as `null` and comes
            // back as NaN, which is not equal to itself.
            let mut first = Vec::new();
            match write_frame(&mut first, message) {
                Ok(()) => {}
                // Re-encoding may be longer than the input (numbers are written out).
                Err(FrameError::TooLarge(_)) => continue,
                Err(error) => panic!("a decoded message does not encode: {error}"),
            }
            let again = read_frame::<T>(&mut Cursor::new(&first)).expect("a message we encoded decodes").expect("one frame");
            let mut second = Vec::new();
            write_frame(&mut second, &again).expect("encodes again");
            assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second), "a message changes when sent again");
        }
    }
}

/// Messages as their JSON text, to compare (NaN is not equal to itself).
fn comparable<T: Serialize>(decoded: &[Decoded<T>]) -> Vec<Decoded<String>> {
    decoded
        .iter()
        .map(|decoded| match decoded {
            Decoded::Message(message) => Decoded::Message(serde_json::to_string(message).expect("a decoded message encodes")),
            Decoded::NotAMessage => Decoded::NotAMessage,
            Decoded::TooLarge(length) => Decoded::TooLarge(*length),
        })
        .collect()
}
