//! The configuration parser (`mld_config::Config::from_toml`): TOML text → the validated
//! configuration, the code path of `mldefender config check` and of every task.
//! Input: the file's text (bytes that are not UTF-8 are refused before the parser, as
//! `Config::from_file` does).
//!
//! Checks beyond "never panics": every error report formats (it quotes the file's text
//! around the error), and a configuration that validates is accepted again when parsed
//! a second time (the parser is deterministic).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mld_config::Config;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match Config::from_toml(text, "fuzz.toml") {
        Ok(_) => assert!(Config::from_toml(text, "fuzz.toml").is_ok(), "the parser is deterministic"),
        Err(errors) => {
            let report = errors.to_string();
            assert!(report.contains("fuzz.toml"), "the report names the file: {report}");
        }
    }
});
