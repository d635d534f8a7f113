//! Finding records in a node's log, newest first, trusting only records that
//! authenticate with the log key (`mldefender block explain`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::verify::{ChainVerifier, FailureReason};
use crate::LogKey;

/// What [`newest_authenticated`] found.
#[derive(Debug, Default)]
pub struct Search {
    /// The newest matching record that authenticates, and its file.
    pub found: Option<(PathBuf, Map<String, Value>)>,
    /// Newer matching records that did not authenticate (forged or damaged), skipped.
    pub rejected: Vec<(PathBuf, FailureReason)>,
    /// Bytes read.
    pub bytes_read: u64,
    /// The byte bound stopped the search before the oldest file.
    pub cut_short: bool,
}

/// Reads `node`'s log files in `dir` newest first (at most `max_bytes`, then stops and
/// says so) for the newest record that `wanted` accepts and that authenticates with
/// `key` (its HMAC; the chain around it is `verify`'s job). `needle`: a string every
/// wanted line contains, to skip the others without parsing them.
pub fn newest_authenticated(
    dir: &Path,
    node: &str,
    key: LogKey,
    max_bytes: u64,
    needle: &str,
    wanted: impl Fn(&Map<String, Value>) -> bool,
) -> std::io::Result<Search> {
    let verifier = ChainVerifier::new(vec![key], Some(node.to_string()));
    let prefix = format!("events-{node}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".jsonl")))
        .collect();
    // The index is zero-padded: names sort as the files were written.
    files.sort();
    let mut search = Search::default();
    for path in files.into_iter().rev() {
        if search.bytes_read >= max_bytes {
            search.cut_short = true;
            break;
        }
        let text = std::fs::read_to_string(&path)?;
        search.bytes_read += text.len() as u64;
        for line in text.lines().rev().filter(|line| line.contains(needle)) {
            let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else { continue };
            if !wanted(&record) {
                continue;
            }
            match verifier.authenticate(line) {
                Ok(_) => {
                    search.found = Some((path, record));
                    return Ok(search);
                }
                Err(reason) => search.rejected.push((path.clone(), reason)),
            }
        }
    }
    Ok(search)
}
