//! The pcap/pcapng reader (`mld_packet::PcapReader`), as `mldefender replay` and `flows`
//! use it: the whole file, then every frame through the decoder. Input: the file's bytes.
//!
//! The reader reads files (a path is what errors name), so each input is written to a
//! per-process scratch file on tmpfs first (unlinked, reached through `/proc/self/fd`).
//!
//! Checks beyond "never panics": the count returned is the number of frames handed on,
//! frames come in file order (strictly increasing offsets inside the file), and every
//! error names the file.

#![no_main]

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mld_packet::{decode_frame, PcapReader};

/// The scratch file: created on tmpfs and unlinked at once (nothing is left behind,
/// however the process ends), reached again through `/proc/self/fd`.
fn scratch() -> &'static (Mutex<File>, PathBuf) {
    static SCRATCH: OnceLock<(Mutex<File>, PathBuf)> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() { shm } else { std::env::temp_dir() };
        let named = dir.join(format!("mld-fuzz-pcap-{}.pcap", std::process::id()));
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&named).expect("create the scratch file");
        std::fs::remove_file(&named).expect("unlink the scratch file");
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (Mutex::new(file), path)
    })
}

fuzz_target!(|input: &[u8]| {
    let (file, path) = scratch();
    {
        let mut file = file.lock().expect("one input at a time");
        file.set_len(0).expect("truncate the scratch file");
        file.rewind().expect("rewind the scratch file");
        file.write_all(input).expect("write the scratch file");
    }
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
