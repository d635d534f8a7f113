//! The pcap/pcapng reader (`mld_packet::PcapReader`), as `mldefender replay` and `flows`
//! use it: the whole file, then every frame through the decoder. Input: the file's bytes.
//!
//! The reader reads files (a path is what errors name), so each input is written to a
//! per-process file on tmpfs first; that costs a few microseconds an input.
//!
//! Checks beyond "never panics": the count returned is the number of frames handed on,
//! frames come in file order (strictly increasing offsets inside the file), and every
//! error names the file.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mld_packet::{decode_frame, PcapReader};

fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() { shm } else { std::env::temp_dir() };
        dir.join(format!("mld-fuzz-pcap-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|input: &[u8]| {
    let path = scratch_path();
    std::fs::write(path, input).expect("write the scratch capture file");
    let mut handed_on = 0u64;
    let mut last_offset = None;
    let result = PcapReader::read_file(path, |frame| {
        handed_on += 1;
        assert!(last_offset.is_none_or(|last| frame.offset > last), "frames out of file order");
        assert!(frame.offset < input.len() as u64 && frame.data.len() <= input.len());
        last_offset = Some(frame.offset);
        let _ = decode_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns);
    });
    match result {
        Ok(frames) => assert_eq!(frames, handed_on),
        Err(error) => assert!(error.to_string().contains(&path.display().to_string()), "the error names the file: {error}"),
    }
});
