//! The side store: an append-only file of the fields of every indexed event.
//!
//! Record: `u32 LE payload length | u32 LE CRC-32 of the payload | payload`, where the
//! payload is `u64 LE id | u32 LE n | n f32 LE (the event's vector) | the fields as JSON`.
//! The vector is kept so that "events like event N" can be asked without re-reading the log
//! (FAISS's ID map cannot give a vector back by id). A record is written with one
//! `write_all`; a crash can leave a torn last record (short, or with a wrong CRC), which
//! the scan detects and stops before, so the file's valid prefix is always known.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IndexError, Result};
use crate::fields::{HitFields, MAX_FIELDS_BYTES};

/// The side store's file name inside an index directory.
pub const FIELDS_FILE: &str = "fields.log";

const HEADER_BYTES: usize = 8;
const ID_BYTES: usize = 8;
const COUNT_BYTES: usize = 4;
/// The most values a stored vector may have (embeddings are tens of dimensions).
pub const MAX_STORED_DIMS: usize = 4096;
const MAX_PAYLOAD_BYTES: usize = ID_BYTES + COUNT_BYTES + 4 * MAX_STORED_DIMS + MAX_FIELDS_BYTES;
const MIN_PAYLOAD_BYTES: usize = ID_BYTES + COUNT_BYTES;
/// The smallest record on disk (header and an empty payload).
pub(crate) const MIN_RECORD_BYTES: u64 = (HEADER_BYTES + MIN_PAYLOAD_BYTES) as u64;

/// One record read back: the fields and the vector.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub fields: HitFields,
    pub vector: Vec<f32>,
}

/// One record found by a scan: its id, the offset of its header, and its fields.
#[derive(Debug)]
pub(crate) struct ScannedRecord {
    pub id: u64,
    pub offset: u64,
    pub fields: HitFields,
}

/// The result of scanning a side store from the start.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Length of the valid prefix read (every byte after it, up to the limit, is torn).
    pub valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// The open side store, appended to by `add` and read by `search`.
#[derive(Debug)]
pub(crate) struct SideStore {
    path: PathBuf,
    file: File,
    len_bytes: u64,
}

impl SideStore {
    /// Creates an empty side store (the file must not exist).
    pub fn create(dir: &Path) -> Result<SideStore> {
        let path = dir.join(FIELDS_FILE);
        let file = OpenOptions::new().read(true).append(true).create_new(true).open(&path).map_err(|err| IndexError::io("create", &path, err))?;
        Ok(SideStore { path, file, len_bytes: 0 })
    }

    /// Opens an existing side store and cuts it back to `committed_bytes`, the length the
    /// last snapshot recorded: records after it belong to vectors that were never saved
    /// (and may include a torn one). Returns the store and the committed records.
    /// With `read_only`, nothing is cut: records after the snapshot are only ignored (a
    /// reader beside the running writer must not touch its file).
    pub fn open(dir: &Path, committed_bytes: u64, read_only: bool, on_record: &mut dyn FnMut(ScannedRecord) -> Result<()>) -> Result<SideStore> {
        let path = dir.join(FIELDS_FILE);
        let file = OpenOptions::new().read(true).append(!read_only).open(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => IndexError::Missing { path: path.clone() },
            _ => IndexError::io("open", &path, err),
        })?;
        // Only the committed prefix is read (a record at a time): what follows belongs to
        // vectors that were never saved.
        let scan = scan(&path, &file, committed_bytes, on_record)?;
        if scan.valid_bytes < committed_bytes {
            let reason = match scan.stopped {
                Some(why) => format!("valid records end at byte {} but the manifest commits {committed_bytes} bytes ({why})", scan.valid_bytes),
                None => format!("the file has {} bytes but the manifest commits {committed_bytes}", scan.valid_bytes),
            };
            return Err(IndexError::corrupt(&path, reason));
        }
        let file_len = file.metadata().map_err(|err| IndexError::io("stat", &path, err))?.len();
        if file_len != committed_bytes && !read_only {
            // Drop what came after the snapshot (unsaved entries, a torn record).
            file.set_len(committed_bytes).map_err(|err| IndexError::io("truncate", &path, err))?;
            file.sync_all().map_err(|err| IndexError::io("fsync", &path, err))?;
        }
        Ok(SideStore { path, file, len_bytes: committed_bytes })
    }

    /// Opens the side store of `dir` to read records by offset only (no scan, no changes).
    pub fn open_for_reading(dir: &Path) -> Result<SideStore> {
        let path = dir.join(FIELDS_FILE);
        let file = File::open(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => IndexError::Missing { path: path.clone() },
            _ => IndexError::io("open", &path, err),
        })?;
        let len_bytes = file.metadata().map_err(|err| IndexError::io("stat", &path, err))?.len();
        Ok(SideStore { path, file, len_bytes })
    }

    /// The directory was renamed to `dir` while the file was open.
    pub fn moved_to(&mut self, dir: &Path) {
        self.path = dir.join(FIELDS_FILE);
    }

    /// Encodes one record; refuses fields larger than [`MAX_FIELDS_BYTES`] and vectors
    /// longer than [`MAX_STORED_DIMS`].
    pub fn encode(id: u64, vector: &[f32], fields: &HitFields, out: &mut Vec<u8>) -> Result<()> {
        let json = serde_json::to_vec(fields).map_err(|err| IndexError::invalid(format!("fields of event {id}: {err}")))?;
        if json.len() > MAX_FIELDS_BYTES {
            return Err(IndexError::FieldsTooLarge { id, bytes: json.len(), max: MAX_FIELDS_BYTES });
        }
        if vector.len() > MAX_STORED_DIMS {
            return Err(IndexError::invalid(format!("vector of event {id} has {} values (at most {MAX_STORED_DIMS})", vector.len())));
        }
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_BYTES]);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
        for value in vector {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&json);
        let payload = &out[start + HEADER_BYTES..];
        let payload_len = payload.len() as u32;
        let mut crc = Crc32::new();
        crc.update(payload);
        let crc = crc.finish();
        out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Appends already-encoded records (one write); returns the offset they start at.
    pub fn append(&mut self, encoded: &[u8]) -> Result<u64> {
        let start = self.len_bytes;
        self.file.write_all(encoded).map_err(|err| IndexError::io("append to", &self.path, err))?;
        self.len_bytes += encoded.len() as u64;
        Ok(start)
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|err| IndexError::io("fsync", &self.path, err))
    }

    /// Reads and checks the record at `offset`: its fields.
    pub fn read(&self, offset: u64) -> Result<HitFields> {
        self.read_event(offset).map(|event| event.fields)
    }

    /// Reads and checks the record at `offset`: its fields and vector.
    pub fn read_event(&self, offset: u64) -> Result<StoredEvent> {
        let mut header = [0u8; HEADER_BYTES];
        self.file.read_exact_at(&mut header, offset).map_err(|err| IndexError::io("read", &self.path, err))?;
        let (payload_len, crc) = parse_header(&header);
        if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_len) {
            return Err(IndexError::corrupt(&self.path, format!("bad record length at byte {offset}")));
        }
        let mut payload = vec![0u8; payload_len];
        self.file.read_exact_at(&mut payload, offset + HEADER_BYTES as u64).map_err(|err| IndexError::io("read", &self.path, err))?;
        decode_payload(&payload, crc).map(|(_, event)| event).map_err(|why| IndexError::corrupt(&self.path, format!("record at byte {offset}: {why}")))
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
}

/// Reads the file's first `limit` bytes a record at a time, handing each valid record to
/// `on_record`, and stops at the first torn one. Memory: one record at a time.
pub(crate) fn scan(path: &Path, file: &File, limit: u64, on_record: &mut dyn FnMut(ScannedRecord) -> Result<()>) -> Result<Scan> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(limit));
    let mut at = 0u64;
    let mut stopped = None;
    let mut payload = Vec::new();
    while at < limit {
        let mut header = [0u8; HEADER_BYTES];
        if let Err(err) = reader.read_exact(&mut header) {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                stopped = Some(format!("short record header at byte {at}"));
                break;
            }
            return Err(IndexError::io("read", path, err));
        }
        let (payload_len, crc) = parse_header(&header);
        if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_len) {
            stopped = Some(format!("bad record length {payload_len} at byte {at}"));
            break;
        }
        payload.resize(payload_len, 0);
        if let Err(err) = reader.read_exact(&mut payload) {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                stopped = Some(format!("short record at byte {at}"));
                break;
            }
            return Err(IndexError::io("read", path, err));
        }
        match decode_payload(&payload, crc) {
            Ok((id, event)) => on_record(ScannedRecord { id, offset: at, fields: event.fields })?,
            Err(why) => {
                stopped = Some(format!("record at byte {at}: {why}"));
                break;
            }
        }
        at += (HEADER_BYTES + payload_len) as u64;
    }
    Ok(Scan { valid_bytes: at, stopped })
}

fn parse_header(header: &[u8]) -> (usize, u32) {
    let mut len = [0u8; 4];
    let mut crc = [0u8; 4];
    len.copy_from_slice(&header[0..4]);
    crc.copy_from_slice(&header[4..8]);
    (u32::from_le_bytes(len) as usize, u32::from_le_bytes(crc))
}

fn decode_payload(payload: &[u8], expected_crc: u32) -> std::result::Result<(u64, StoredEvent), String> {
    let mut crc = Crc32::new();
    crc.update(payload);
    if crc.finish() != expected_crc {
        return Err("CRC mismatch".to_owned());
    }
    let mut id = [0u8; ID_BYTES];
    id.copy_from_slice(&payload[..ID_BYTES]);
    let mut count = [0u8; COUNT_BYTES];
    count.copy_from_slice(&payload[ID_BYTES..MIN_PAYLOAD_BYTES]);
    let count = u32::from_le_bytes(count) as usize;
    let vector_end = MIN_PAYLOAD_BYTES + 4 * count.min(MAX_STORED_DIMS);
    if count > MAX_STORED_DIMS || vector_end > payload.len() {
        return Err(format!("vector of {count} values does not fit the record"));
    }
    let vector = payload[MIN_PAYLOAD_BYTES..vector_end].chunks_exact(4).map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])).collect();
    let fields = serde_json::from_slice(&payload[vector_end..]).map_err(|err| format!("bad fields JSON: {err}"))?;
    Ok((u64::from_le_bytes(id), StoredEvent { fields, vector }))
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table-driven. A torn-write
/// detector, not an integrity guarantee against an attacker: the directory is written only
/// by the ingest task, and every indexed event was verified against the signed log first.
struct Crc32 {
    state: u32,
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut value = i as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 { (value >> 1) ^ 0xEDB8_8320 } else { value >> 1 };
            bit += 1;
        }
        table[i] = value;
        i += 1;
    }
    table
}

impl Crc32 {
    fn new() -> Crc32 {
        Crc32 { state: 0xFFFF_FFFF }
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state = CRC_TABLE[((self.state ^ u32::from(byte)) & 0xFF) as usize] ^ (self.state >> 8);
        }
    }

    fn finish(&self) -> u32 {
        !self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        let mut crc = Crc32::new();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xCBF4_3926);
    }
}
