//! Shape check: every key of the file must exist in the schema and hold the right kind
//! of value. The schema is the default configuration serialized, so it cannot drift
//! from the Rust types. Runs before serde so that all such errors are reported at once.

use toml::{Table, Value};

use crate::error::ConfigError;
use crate::raw::RawConfig;

pub(crate) fn check_shape(input: &Table) -> Vec<ConfigError> {
    let schema = Table::try_from(RawConfig::shape_example()).expect("the default configuration serializes to TOML");
    let mut errors = Vec::new();
    check_table(input, &schema, "", &mut errors);
    errors
}

fn check_table(input: &Table, schema: &Table, prefix: &str, errors: &mut Vec<ConfigError>) {
    for (key, value) in input {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match schema.get(key) {
            None => {
                let hint = closest(key, schema.keys().map(String::as_str)).map(|known| format!(" (did you mean `{known}`?)")).unwrap_or_default();
                let known: Vec<&str> = schema.keys().map(String::as_str).collect();
                errors.push(ConfigError::new(path, format!("unknown key{hint}; known keys here: {}", known.join(", "))));
            }
            Some(Value::Table(inner_schema)) => match value {
                Value::Table(inner) => check_table(inner, inner_schema, &path, errors),
                other => errors.push(kind_error(path, "a table", other)),
            },
            Some(Value::Array(items_schema)) => match value {
                Value::Array(items) => {
                    if let Some(item_schema) = items_schema.first() {
                        for (index, item) in items.iter().enumerate() {
                            let item_path = format!("{path}[{index}]");
                            match (item, item_schema) {
                                (Value::Table(item), Value::Table(item_schema)) => check_table(item, item_schema, &item_path, errors),
                                _ if !same_kind(item, item_schema) => errors.push(kind_error(item_path, kind_name(item_schema), item)),
                                _ => {}
                            }
                        }
                    }
                }
                other => errors.push(kind_error(path, "an array", other)),
            },
            Some(expected) => {
                if !same_kind(value, expected) {
                    errors.push(kind_error(path, kind_name(expected), value));
                }
            }
        }
    }
}

/// The same kind of value; a whole number is also a number where a float is expected
/// (`200` for `200.0`, as a person writes it and as JSON renders it).
fn same_kind(value: &Value, expected: &Value) -> bool {
    matches!((value, expected), (Value::Integer(_), Value::Float(_))) || std::mem::discriminant(value) == std::mem::discriminant(expected)
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn kind_error(path: String, expected: &str, found: &Value) -> ConfigError {
    ConfigError::new(path, format!("expected {expected}, found {} ({found})", kind_name(found)))
}

/// The known key nearest to `key` by edit distance, if it is plausibly a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
