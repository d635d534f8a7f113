use proptest::prelude::*;

use super::*;

#[test]
fn times_parse_as_utc_microseconds() {
    assert_eq!(parse_time_us("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time_us("2026-11-25T10:00:00Z"), Some(1_795_600_800_000_000));
    assert_eq!(parse_time_us("2026-11-25T10:00:00.25Z"), Some(1_795_600_800_250_000));
    assert_eq!(parse_time_us("2026-11-25"), Some(1_795_564_800_000_000));
    assert_eq!(parse_time_us("2000-03-01T00:00:00+00:00"), Some(951_868_800_000_000));
    assert_eq!(parse_time_us("1795600800000000"), Some(1_795_600_800_000_000));
    for bad in ["2026-13-01", "2026-11-25T25:00:00Z", "2026-11-25T10:00:00+02:00", "yesterday", "2026-11-25T10:00Z", "300000-01-01"] {
        assert_eq!(parse_time_us(bad), None, "{bad}");
    }
}

#[test]
fn signed_fields_and_days_a_month_does_not_have_are_refused() {
    // `str::parse` takes a sign: these were an hour before the date, and 2 March.
    for bad in ["2026-11-25T-1:00:00Z", "2026-11-25T10:-5:00Z", "2026-11-25T10:00:+7Z", "+2026-11-25", "2026-+11-25", "2026-02-30", "2026-04-31", "2100-02-29"]
    {
        assert_eq!(parse_time_us(bad), None, "{bad}");
    }
    assert_eq!(parse_time_us("2024-02-29"), Some(1_709_164_800_000_000));
    assert_eq!(parse_time_us("2000-02-29T00:00:00Z"), Some(951_782_400_000_000));
}

#[test]
fn questions_parse_and_are_bounded() {
    let query: Query = serde_json::from_str(r#"{"query":"ask","question":"who scanned the server","k":10,"filter":{}}"#).expect("ask");
    assert_eq!(query, Query::Ask { question: "who scanned the server".to_string(), k: 10, filter: Filter::default(), ip: None });
    assert_eq!(check_question("  who?  "), Ok("who?"));
    assert!(check_question(" ").expect_err("empty").contains("empty"));
    assert!(check_question(&"a".repeat(MAX_QUESTION_BYTES + 1)).expect_err("long").contains("at most 1000"));
}

#[test]
fn queries_parse_from_the_json_the_cli_sends() {
    let query: Query = serde_json::from_str(r#"{"query":"ip","ip":"10.0.0.1","limit":5,"filter":{"actions":["block"]}}"#).expect("ip query");
    assert_eq!(query, Query::Ip { ip: "10.0.0.1".parse().expect("ip"), limit: 5, filter: Filter { actions: vec!["block".to_string()], ..Filter::default() } });
    let query: Query = serde_json::from_str(r#"{"query":"similar-to-event","event":{"seq":7},"k":3,"filter":{}}"#).expect("event query");
    assert_eq!(query, Query::SimilarToEvent { event: EventRef::Seq(7), k: 3, filter: Filter::default() });
    // Unknown fields are refused, in the query and in the filter.
    assert!(serde_json::from_str::<Query>(r#"{"query":"ip","ip":"10.0.0.1","limit":5,"filter":{},"extra":1}"#).is_err());
    assert!(serde_json::from_str::<Query>(r#"{"query":"ip","ip":"10.0.0.1","limit":5,"filter":{"from":1}}"#).is_err());
    assert_eq!(EventRef::parse("42"), EventRef::Seq(42));
    assert_eq!(EventRef::parse("ev-42"), EventRef::EventId("ev-42".to_string()));
}

#[test]
fn counts_are_bounded() {
    assert_eq!(check_count(1, "k"), Ok(1));
    assert_eq!(check_count(MAX_RESULTS, "k"), Ok(MAX_RESULTS));
    assert!(check_count(0, "k").expect_err("zero").contains("k must be between 1 and 1000, got 0"));
    assert!(check_count(MAX_RESULTS + 1, "limit").is_err());
}

/// Days since 1970-01-01 counted the slow way (whole years, then whole months): an
/// independent check of the arithmetic in [`days_from_civil`].
fn days_since_epoch_by_counting(year: i64, month: i64, day: i64) -> i64 {
    let leap = |year: i64| (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let mut days = 0;
    for y in 1970..year {
        days += if leap(y) { 366 } else { 365 };
    }
    let month_days = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    days += month_days[..(month - 1) as usize].iter().sum::<i64>();
    days + day - 1
}

proptest! {
    /// Every valid RFC 3339 UTC time the CLI accepts parses to the microseconds counted
    /// independently; the date alone is its midnight, and the `+00:00` form is the same as
    /// `Z`. A day the month does not have is refused.
    #[test]
    fn rfc3339_times_parse_to_the_counted_microseconds(
        year in 1970i64..=9999, month in 1i64..=12, day in 1i64..=31,
        hours in 0i64..24, minutes in 0i64..60, seconds in 0i64..60, micros in 0i64..1_000_000,
    ) {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(month - 1) as usize];
        if day > month_days {
            prop_assert_eq!(parse_time_us(&format!("{year:04}-{month:02}-{day:02}")), None);
            return Ok(());
        }
        let midnight = days_since_epoch_by_counting(year, month, day) * 86_400_000_000;
        let expected = midnight + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
        let clock = format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{micros:06}");
        prop_assert_eq!(parse_time_us(&format!("{clock}Z")), Some(expected));
        prop_assert_eq!(parse_time_us(&format!("{clock}+00:00")), Some(expected));
        prop_assert_eq!(parse_time_us(&format!("{year:04}-{month:02}-{day:02}")), Some(midnight));
    }

    /// Whatever the text, parsing returns (never panics), and a number is taken as µs.
    #[test]
    fn any_text_parses_or_is_refused(text in "\\PC{0,40}", number in any::<i64>()) {
        let _ = parse_time_us(&text);
        prop_assert_eq!(parse_time_us(&number.to_string()), Some(number));
    }
}

/// Found by the `query` fuzz target (fuzz/regressions/query/): minutes and seconds with a
/// sign made a time before 1970 out of a 2026 date.
#[test]
fn fuzz_regression_negative_time_fields() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/query/negative-minutes-and-seconds");
    let text = std::fs::read_to_string(&path).expect("the regression input");
    assert_eq!(text, "2026-05-26T9:-33333339:-333333Z");
    assert_eq!(parse_time_us(&text), None);
}
