//! The query language of `mldefender query` (`mld-query`): a query as the ingest task
//! reads it from its socket (one frame of JSON, `mld_ipc::read_frame`), and the
//! command line's event and time syntax.
//!
//! Input: the frame body (JSON), which is also given as text to the command-line parsers.
//!
//! Checks beyond "never panics": a query that parses encodes and parses back to itself,
//! counts are checked without overflow, and a time that parses is in range.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use mld_query::{check_count, check_question, parse_time_us, EventRef, Query};

fuzz_target!(|input: &[u8]| {
    // As the query socket reads it: a length, then the body.
    let mut frame = (input.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(input);
    if let Ok(Some(query)) = mld_ipc::read_frame::<Query>(&mut Cursor::new(&frame)) {
        let (Query::SimilarToEvent { k: count, .. } | Query::SimilarToObject { k: count, .. } | Query::Ip { limit: count, .. } | Query::Ask { k: count, .. }) =
            &query;
        if let Query::Ask { question, .. } = &query {
            let _ = check_question(question);
        }
        let _ = check_count(*count, "k");
        let text = serde_json::to_string(&query).expect("a query encodes");
        let again: Query = serde_json::from_str(&text).expect("an encoded query parses");
        assert_eq!(again, query, "a query changes when sent again");
    }
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let EventRef::EventId(id) = EventRef::parse(text) {
        assert_eq!(id, text);
    }
    if let Some(micros) = parse_time_us(text) {
        // A date (not a plain number) is within 1970-01-01 and 9999-12-31T23:59:60.999999.
        if text.parse::<i64>().is_err() {
            assert!((0..253_402_300_801_000_000).contains(&micros), "{text} → {micros}");
        }
    }
});
