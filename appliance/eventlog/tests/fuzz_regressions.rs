//! Inputs of the fuzz target `event_line` (fuzz/) that crashed the verifier, kept as
//! regressions. The input format is the target's: a flags byte, then lines (a line that
//! starts with `\x01` starts the next file); flag bit 0 signs every line again under the
//! test key, bit 1 tells the verifier the node (`golden`) in advance.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use mld_eventlog::{ChainVerifier, FailureReason, LogKey, RecordHead};
use sha2::Sha256;

const TEST_KEY: [u8; 32] = [9; 32];
const HMAC_FIELD: &str = ",\"hmac\":\"";

/// What the verifier made of each line, driven as the ingest task drives it.
fn verify_fuzz_input(name: &str) -> Vec<Result<(), FailureReason>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/event_line").join(name);
    let input = std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let (flags, text) = (input[0], String::from_utf8_lossy(&input[1..]).into_owned());
    let node = (flags & 2 != 0).then(|| "golden".to_string());
    let mut verifier = ChainVerifier::new(vec![LogKey::from_bytes(TEST_KEY)], node);
    let mut file_index = 0;
    let mut outcomes = Vec::new();
    for line in text.split('\n').filter(|line| !line.is_empty()) {
        let line = match line.strip_prefix('\u{1}') {
            Some(rest) => {
                file_index += 1;
                rest
            }
            None => line,
        };
        let line = if flags & 1 != 0 { sign_again(&verifier, line) } else { line.to_string() };
        let outcome = verifier.authenticate(&line).and_then(|record| {
            verifier.continue_chain(file_index, &record).or_else(|reason| if record.is_header { verifier.reanchor(file_index, &record) } else { Err(reason) })
        });
        outcomes.push(outcome);
    }
    outcomes
}

/// `line` with the right tag under the test key (as the fuzz target signs it).
fn sign_again(verifier: &ChainVerifier, line: &str) -> String {
    let at = line.rfind(HMAC_FIELD).expect("a record");
    let node = match verifier.node() {
        Some(node) => node.to_string(),
        None => serde_json::from_str::<RecordHead>(line).ok().and_then(|head| head.node).unwrap_or_default(),
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&TEST_KEY).expect("any key length");
    mac.update(node.as_bytes());
    mac.update(&[0]);
    mac.update(&line.as_bytes()[..at]);
    format!("{}{HMAC_FIELD}{}\"}}", &line[..at], hex::encode(mac.finalize().into_bytes()))
}

/// An authentic header with seq u64::MAX, then any record: computing the expected next
/// seq overflowed (a panic in debug builds; in release the error named seq 0).
#[test]
fn a_record_after_seq_u64_max_is_refused_without_overflow() {
    let outcomes = verify_fuzz_input("header-with-seq-u64-max-then-a-record");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].is_ok(), "the header starts the chain: {:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Err(FailureReason::SequenceBack { expected: u64::MAX, found: 5 })), "{:?}", outcomes[1]);
}

/// The same through re-anchoring: after the u64::MAX header, the header of a later file
/// with a lower seq is neither the chain's continuation nor a new starting point.
#[test]
fn a_later_header_after_seq_u64_max_is_refused_without_overflow() {
    let outcomes = verify_fuzz_input("header-with-seq-u64-max-then-a-later-header");
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].is_ok(), "the header starts the chain: {:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Err(FailureReason::SequenceBack { expected: u64::MAX, found: 5 })), "{:?}", outcomes[1]);
}
