//! pcap and pcapng files → frames, with `pcap-parser` doing the file format.
//!
//! Errors name the file and, where it applies, the byte offset of the block that
//! could not be read, so an operator can find the damage with a hex editor.

use std::fs::File;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError as ParserError};

use crate::decode::LinkType;

const INITIAL_BUFFER_BYTES: usize = 1 << 20;
const MAX_BUFFER_BYTES: usize = 64 << 20;

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("failed to open capture file `{path}`")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a pcap or pcapng file (unrecognised header)")]
    NotACapture { path: PathBuf },
    #[error("`{path}` is truncated: the block at byte offset {offset} is incomplete")]
    Truncated { path: PathBuf, offset: u64 },
    #[error("`{path}` is corrupt at byte offset {offset}: {detail}")]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    #[error("`{path}` uses link type {linktype}, which ml-defender does not decode (supported: Ethernet, raw IP, Linux cooked v1/v2, BSD loopback)")]
    UnsupportedLinkType { path: PathBuf, linktype: i32 },
    #[error("`{path}` has a packet for interface {interface} at byte offset {offset}, but no such interface was described")]
    UnknownInterface { path: PathBuf, interface: u32, offset: u64 },
    #[error("failed to read capture file `{path}` at byte offset {offset}")]
    Read { path: PathBuf, offset: u64 },
}

/// One captured frame, valid for the duration of the callback.
#[derive(Debug, Clone, Copy)]
pub struct PcapFrame<'a> {
    pub link: LinkType,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire (at least `data.len()`).
    pub wire_len: u32,
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Byte offset of the frame's block in the file.
    pub offset: u64,
}

/// Reads pcap or pcapng files, frame by frame.
#[derive(Debug)]
pub struct PcapReader;

#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second (pcapng `if_tsresol`: 10^n or 2^n, so anything from 1
    /// to 2^63; 10^6 or 10^9 in legacy pcap).
    ts_units_per_second: u64,
    /// Seconds added to every timestamp (pcapng `if_tsoffset`, signed; 0 in legacy pcap).
    ts_offset_secs: i64,
}

/// A timestamp of `secs` whole seconds and `units` fractional units (of the interface's
/// resolution), plus the interface's offset, in ns since the Unix epoch; `None` when it
/// falls outside 0..=u64::MAX ns (about 1970 to 2554). Computed in i128, where none of the
/// inputs can overflow (secs ≤ 2^64, offset ≤ 2^63 s): a crafted `if_tsresol = 0` or a huge
/// `if_tsoffset` is an error, never a panic or a silent wrap.
fn timestamp_ns(secs: u64, units: u64, interface: &Interface) -> Option<u64> {
    const NS: i128 = 1_000_000_000;
    let per_second = i128::from(interface.ts_units_per_second.max(1));
    let subsec_ns = i128::from(units) * NS / per_second;
    let secs = i128::from(secs).checked_add(i128::from(interface.ts_offset_secs))?;
    let ns = secs.checked_mul(NS)?.checked_add(subsec_ns)?;
    u64::try_from(ns).ok()
}

fn timestamp_error(path: &Path, offset: u64, interface: &Interface) -> PcapError {
    PcapError::Corrupt {
        path: path.to_path_buf(),
        offset,
        detail: format!(
            "packet timestamp out of range (before 1970 or after 2554; {} units per second, offset {} s)",
            interface.ts_units_per_second, interface.ts_offset_secs
        ),
    }
}

impl PcapReader {
    /// Calls `on_frame` for every frame of `path` in file order; returns the number of frames.
    pub fn read_file(path: &Path, mut on_frame: impl FnMut(PcapFrame<'_>)) -> Result<u64, PcapError> {
        let path_buf = || path.to_path_buf();
        let file = File::open(path).map_err(|source| PcapError::Open { path: path_buf(), source })?;
        let mut reader = match pcap_parser::create_reader(INITIAL_BUFFER_BYTES, file) {
            Ok(reader) => reader,
            Err(ParserError::HeaderNotRecognized) => return Err(PcapError::NotACapture { path: path_buf() }),
            Err(ParserError::Eof | ParserError::UnexpectedEof | ParserError::Incomplete(_)) => {
                return Err(PcapError::Truncated { path: path_buf(), offset: 0 })
            }
            Err(other) => return Err(PcapError::Corrupt { path: path_buf(), offset: 0, detail: describe(&other) }),
        };
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut legacy: Option<Interface> = None;
        let mut last_ts_ns = 0u64;
        let mut frames = 0u64;
        loop {
            let offset = reader.consumed() as u64;
            let step = match reader.next() {
                Ok((length, block)) => {
                    let frame = match block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            let link = link_type(path, header.network.0)?;
                            let units = if header.is_nanosecond_precision() { 1_000_000_000 } else { 1_000_000 };
                            legacy = Some(Interface { link, ts_units_per_second: units, ts_offset_secs: 0 });
                            None
                        }
                        PcapBlockOwned::Legacy(packet) => {
                            let interface =
                                legacy.ok_or_else(|| PcapError::Corrupt { path: path_buf(), offset, detail: "packet before the file header".to_string() })?;
                            let ts_ns = timestamp_ns(u64::from(packet.ts_sec), u64::from(packet.ts_usec), &interface)
                                .ok_or_else(|| timestamp_error(path, offset, &interface))?;
                            let captured = (packet.caplen as usize).min(packet.data.len());
                            Some(PcapFrame { link: interface.link, data: &packet.data[..captured], wire_len: packet.origlen, ts_ns, offset })
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(description)) => {
                            let link = link_type(path, description.linktype.0)?;
                            let units = description.ts_resolution().ok_or_else(|| PcapError::Corrupt {
                                path: path_buf(),
                                offset,
                                detail: format!("invalid timestamp resolution {:#04x}", description.if_tsresol),
                            })?;
                            interfaces.push(Interface { link, ts_units_per_second: units, ts_offset_secs: description.ts_offset() });
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(packet)) => {
                            let interface = *interfaces.get(packet.if_id as usize).ok_or(PcapError::UnknownInterface {
                                path: path_buf(),
                                interface: packet.if_id,
                                offset,
                            })?;
                            let raw = (u64::from(packet.ts_high) << 32) | u64::from(packet.ts_low);
                            let units = interface.ts_units_per_second;
                            let ts_ns = timestamp_ns(raw / units, raw % units, &interface).ok_or_else(|| timestamp_error(path, offset, &interface))?;
                            let captured = (packet.caplen as usize).min(packet.data.len());
                            Some(PcapFrame { link: interface.link, data: &packet.data[..captured], wire_len: packet.origlen, ts_ns, offset })
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(packet)) => {
                            let interface = *interfaces.first().ok_or(PcapError::UnknownInterface { path: path_buf(), interface: 0, offset })?;
                            let captured = (packet.origlen as usize).min(packet.data.len());
                            // Simple packet blocks carry no timestamp: keep the previous one.
                            Some(PcapFrame { link: interface.link, data: &packet.data[..captured], wire_len: packet.origlen, ts_ns: last_ts_ns, offset })
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    if let Some(frame) = frame {
                        last_ts_ns = frame.ts_ns;
                        frames += 1;
                        on_frame(frame);
                    }
                    Step::Consume(length)
                }
                Err(ParserError::Eof) => break,
                Err(ParserError::Incomplete(_) | ParserError::UnexpectedEof) => {
                    if reader.reader_exhausted() {
                        Step::Truncated
                    } else {
                        Step::Refill
                    }
                }
                Err(ParserError::BufferTooSmall) => Step::Grow,
                Err(ParserError::ReadError) => return Err(PcapError::Read { path: path_buf(), offset }),
                Err(other) => return Err(PcapError::Corrupt { path: path_buf(), offset, detail: describe(&other) }),
            };
            match step {
                Step::Consume(length) => reader.consume(length),
                Step::Refill => reader.refill().map_err(|_| PcapError::Read { path: path_buf(), offset })?,
                Step::Grow => {
                    let grown = reader.data().len().max(INITIAL_BUFFER_BYTES) * 2;
                    if grown > MAX_BUFFER_BYTES || !reader.grow(grown) {
                        return Err(PcapError::Corrupt { path: path_buf(), offset, detail: format!("block larger than {MAX_BUFFER_BYTES} bytes") });
                    }
                    reader.refill().map_err(|_| PcapError::Read { path: path_buf(), offset })?;
                }
                Step::Truncated => {
                    if reader.data().is_empty() {
                        break;
                    }
                    return Err(PcapError::Truncated { path: path_buf(), offset });
                }
            }
        }
        Ok(frames)
    }
}

enum Step {
    Consume(usize),
    Refill,
    Grow,
    Truncated,
}

fn link_type(path: &Path, linktype: i32) -> Result<LinkType, PcapError> {
    LinkType::from_pcap(linktype).ok_or(PcapError::UnsupportedLinkType { path: path.to_path_buf(), linktype })
}

fn describe(error: &ParserError<&[u8]>) -> String {
    match error {
        ParserError::NomError(_, kind) => format!("unparseable block ({kind:?})"),
        ParserError::OwnedNomError(_, kind) => format!("unparseable block ({kind:?})"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn legacy_pcap(nanos: bool, linktype: u32, packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&magic.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&65535u32.to_le_bytes());
        bytes.extend_from_slice(&linktype.to_le_bytes());
        for (sec, frac, data) in packets {
            bytes.extend_from_slice(&sec.to_le_bytes());
            bytes.extend_from_slice(&frac.to_le_bytes());
            bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&(data.len() as u32 + 10).to_le_bytes());
            bytes.extend_from_slice(data);
        }
        bytes
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    fn read(path: &Path) -> Result<Vec<(u64, usize, u32, u64)>, PcapError> {
        let mut frames = Vec::new();
        PcapReader::read_file(path, |frame| frames.push((frame.ts_ns, frame.data.len(), frame.wire_len, frame.offset)))?;
        Ok(frames)
    }

    #[test]
    fn legacy_micro_and_nano_timestamps() {
        let micro = write_temp(&legacy_pcap(false, 1, &[(10, 5, &[1, 2, 3]), (11, 0, &[4])]));
        assert_eq!(read(micro.path()).expect("read"), vec![(10_000_005_000, 3, 13, 24), (11_000_000_000, 1, 11, 43)]);
        let nano = write_temp(&legacy_pcap(true, 1, &[(10, 5, &[1, 2, 3])]));
        assert_eq!(read(nano.path()).expect("read")[0].0, 10_000_000_005);
    }

    #[test]
    fn truncated_file_names_the_offset() {
        let bytes = legacy_pcap(false, 1, &[(1, 0, &[0; 40]), (2, 0, &[0; 40])]);
        let file = write_temp(&bytes[..bytes.len() - 7]);
        let error = read(file.path()).expect_err("truncated");
        assert!(matches!(error, PcapError::Truncated { offset: 80, .. }), "{error:?}");
        assert!(error.to_string().contains(&file.path().display().to_string()));
        assert!(error.to_string().contains("offset 80"));
    }

    #[test]
    fn garbage_is_not_a_capture() {
        let file = write_temp(b"this is not a packet capture, just some text that is long enough");
        assert!(matches!(read(file.path()), Err(PcapError::NotACapture { .. })));
        let empty = write_temp(b"");
        assert!(read(empty.path()).is_err());
    }

    #[test]
    fn unsupported_link_type_is_named() {
        let file = write_temp(&legacy_pcap(false, 105, &[(1, 0, &[0; 20])]));
        let error = read(file.path()).expect_err("802.11");
        assert!(error.to_string().contains("link type 105"), "{error}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = read(Path::new("/nonexistent/capture.pcap")).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/capture.pcap"));
    }

    #[test]
    fn pcapng_with_nanosecond_resolution() {
        let mut bytes = Vec::new();
        // Section header block.
        block(&mut bytes, 0x0a0d0d0a, &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        // Interface description: Ethernet, snaplen 0, option if_tsresol = 9, end of options.
        let mut idb = vec![1, 0, 0, 0, 0, 0, 0, 0];
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut bytes, 1, &idb);
        // Enhanced packet: interface 0, ts = 1_500_000_000_123 ns.
        let ts: u64 = 1_500_000_000_123;
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&5u32.to_le_bytes());
        epb.extend_from_slice(&60u32.to_le_bytes());
        epb.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        block(&mut bytes, 6, &epb);
        let file = write_temp(&bytes);
        let frames = read(file.path()).expect("read pcapng");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, ts);
        assert_eq!((frames[0].1, frames[0].2), (5, 60));
    }

    /// A pcapng file: one Ethernet interface with the given options (code, value), then
    /// one enhanced packet block per raw timestamp (in the interface's units).
    fn pcapng(options: &[(u16, &[u8])], timestamps: &[u64]) -> Vec<u8> {
        let mut bytes = Vec::new();
        block(&mut bytes, 0x0a0d0d0a, &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let mut idb = vec![1, 0, 0, 0, 0, 0, 0, 0];
        for (code, value) in options {
            idb.extend_from_slice(&code.to_le_bytes());
            idb.extend_from_slice(&(value.len() as u16).to_le_bytes());
            idb.extend_from_slice(value);
            idb.resize(idb.len().next_multiple_of(4), 0);
        }
        idb.extend_from_slice(&[0, 0, 0, 0]);
        block(&mut bytes, 1, &idb);
        for ts in timestamps {
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(*ts as u32).to_le_bytes());
            epb.extend_from_slice(&4u32.to_le_bytes());
            epb.extend_from_slice(&4u32.to_le_bytes());
            epb.extend_from_slice(&[1, 2, 3, 4]);
            block(&mut bytes, 6, &epb);
        }
        bytes
    }

    const IF_TSRESOL: u16 = 9;
    const IF_TSOFFSET: u16 = 14;
    /// Offset of the first enhanced packet block in [`pcapng`]'s files with one option.
    const FIRST_PACKET_OFFSET: u64 = 28 + 32;
    /// Size of one enhanced packet block in [`pcapng`]'s files.
    const PACKET_BLOCK_BYTES: u64 = 36;

    #[test]
    fn pcapng_timestamps_in_whole_seconds_that_overflow_are_an_error_naming_the_block() {
        // if_tsresol = 0: one unit per second. The first packet is fine (after the
        // frames before it were handed on); the second would be 2^63 s.
        let file = write_temp(&pcapng(&[(IF_TSRESOL, &[0])], &[1_500_000_000, 1 << 63]));
        let mut frames = Vec::new();
        let error = PcapReader::read_file(file.path(), |frame| frames.push(frame.ts_ns)).expect_err("overflowing timestamp");
        assert_eq!(frames, vec![1_500_000_000_000_000_000], "the readable frame before the damage was processed");
        let offset = FIRST_PACKET_OFFSET + PACKET_BLOCK_BYTES;
        assert!(matches!(error, PcapError::Corrupt { offset: at, .. } if at == offset), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&file.path().display().to_string()) && message.contains(&format!("byte offset {offset}")), "{message}");
        assert!(message.contains("timestamp out of range"), "{message}");
        // Binary resolution 2^0 is one unit per second too.
        let binary = write_temp(&pcapng(&[(IF_TSRESOL, &[0x80])], &[u64::MAX]));
        assert!(matches!(read(binary.path()), Err(PcapError::Corrupt { .. })));
    }

    #[test]
    fn pcapng_timestamp_offsets_are_applied_with_checked_arithmetic() {
        let ts_us = 1_500_000_000_000_001u64;
        // A small offset, positive and negative, moves the time.
        let later = write_temp(&pcapng(&[(IF_TSOFFSET, &100i64.to_le_bytes())], &[ts_us]));
        assert_eq!(read(later.path()).expect("read")[0].0, (ts_us + 100_000_000) * 1000);
        let earlier = write_temp(&pcapng(&[(IF_TSOFFSET, &(-100i64).to_le_bytes())], &[ts_us]));
        assert_eq!(read(earlier.path()).expect("read")[0].0, (ts_us - 100_000_000) * 1000);
        // An offset past the year 2554, or before 1970, is an error naming the block.
        for offset in [i64::MAX, 1 << 40, -2_000_000_000] {
            let file = write_temp(&pcapng(&[(IF_TSOFFSET, &offset.to_le_bytes())], &[ts_us]));
            let error = read(file.path()).expect_err("out of range");
            assert!(matches!(error, PcapError::Corrupt { offset: at, .. } if at == FIRST_PACKET_OFFSET + 4), "{offset}: {error:?}");
            assert!(error.to_string().contains(&format!("offset {offset} s")), "{error}");
        }
    }

    fn block(bytes: &mut Vec<u8>, block_type: u32, body: &[u8]) {
        let total = (12 + body.len()) as u32;
        bytes.extend_from_slice(&block_type.to_le_bytes());
        bytes.extend_from_slice(&total.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&total.to_le_bytes());
    }
}
