//! The event-line verifier (`mld_eventlog::ChainVerifier`), as the ingest task drives it
//! on every line it tails from a node's log: authenticate, continue the chain, and on a
//! failure re-anchor on an authentic header.
//!
//! Input: one flags byte, then log lines (`\n`-separated; a line that starts with `\x01`
//! starts the next file). Flags:
//! - bit 0: sign every line again with the test key (the key of
//!   `appliance/eventlog/tests/golden`), so that the fuzzer gets past the HMAC and reaches
//!   the chain rules (sequence, `prev_tag`, headers, files, re-anchoring);
//! - bit 1: the verifier knows the node in advance (`golden`) instead of learning it from
//!   the first header.
//!
//! Checks beyond "never panics": the documented invariant that a rejected line leaves the
//! verifier exactly as it was, and that an accepted line becomes its position.

#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use mld_eventlog::{ChainPosition, ChainVerifier, LogKey, RecordHead};
use sha2::Sha256;

/// The key of the eventlog crate's golden file (`tests/tamper.rs`).
const TEST_KEY: [u8; 32] = [9; 32];
const HMAC_FIELD: &str = ",\"hmac\":\"";

fuzz_target!(|input: &[u8]| {
    let [flags, text @ ..] = input else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let resign = flags & 1 != 0;
    let node = (flags & 2 != 0).then(|| "golden".to_string());
    let mut verifier = ChainVerifier::new(vec![LogKey::from_bytes(TEST_KEY)], node);
    let mut file_index = 0u64;
    for line in text.split('\n') {
        let line = match line.strip_prefix('\u{1}') {
            Some(rest) => {
                file_index += 1;
                rest
            }
            None => line,
        };
        let line = if resign { sign_again(&verifier, line) } else { line.to_string() };
        let before = (verifier.position().cloned(), verifier.node().map(str::to_string));
        let record = match verifier.authenticate(&line) {
            Ok(record) => record,
            Err(_) => {
                assert_eq!(before, (verifier.position().cloned(), verifier.node().map(str::to_string)), "authenticate changes nothing");
                continue;
            }
        };
        match verifier.continue_chain(file_index, &record) {
            Ok(()) => {
                let expected = ChainPosition { file_index, seq: record.seq, tag: record.tag.clone() };
                assert_eq!(verifier.position(), Some(&expected), "an accepted record is the new position");
            }
            Err(_) => {
                assert_eq!(before, (verifier.position().cloned(), verifier.node().map(str::to_string)), "a rejected line leaves the verifier as it was");
                if record.is_header {
                    let _ = verifier.reanchor(file_index, &record);
                }
            }
        }
    }
});

/// `line` with its tag replaced by the right one under the test key, for the node the
/// verifier will use (its own, or before the first header the one the line names).
fn sign_again(verifier: &ChainVerifier, line: &str) -> String {
    let Some(at) = line.rfind(HMAC_FIELD) else {
        return line.to_string();
    };
    let node = match verifier.node() {
        Some(node) => node.to_string(),
        None => serde_json::from_str::<RecordHead>(line).ok().and_then(|head| head.node).unwrap_or_default(),
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&TEST_KEY).expect("HMAC takes keys of any length");
    mac.update(node.as_bytes());
    mac.update(&[0]);
    mac.update(&line.as_bytes()[..at]);
    format!("{}{HMAC_FIELD}{}\"}}", &line[..at], hex::encode(mac.finalize().into_bytes()))
}
