//! `mldefender query`: past events like this one, or with this address. Asked of the
//! running ingest task over its socket (`<runtime-dir>/query.sock`; root and the detect
//! task only, by peer credentials), or offline
//! of an index directory (`--index DIR`, opened read-only: safe beside a running task).
//!
//! The server half is here too: the ingest task answers one query per connection, between
//! its reads of the log, with a deadline on the connection so a stuck client cannot stall it.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mld_history::{EventRef, Filter, Query, Reply};
use mld_query::parse_time_us;
use serde_json::{Map, Value};

use mld_runtime::Exit;

/// A `--flow-json` file larger than this is refused (a flow record is a few KiB).
const MAX_OBJECT_FILE_BYTES: u64 = 1 << 20;

/// Where a query goes.
#[derive(Debug)]
pub struct Target {
    pub index: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

/// Filters as given on the command line.
#[derive(Debug, Default)]
pub struct FilterArgs {
    pub from: Option<String>,
    pub to: Option<String>,
    pub actions: Vec<String>,
    pub categories: Vec<String>,
}

/// `query similar`.
pub fn similar(target: &Target, event: Option<&str>, flow_json: Option<&Path>, k: usize, filters: &FilterArgs) -> anyhow::Result<Exit> {
    let filter = match parse_filter(filters) {
        Ok(filter) => filter,
        Err(message) => return Ok(usage(&message)),
    };
    let query = match (event, flow_json) {
        (Some(event), None) => Query::SimilarToEvent { event: EventRef::parse(event), k, filter },
        (None, Some(path)) => match read_object(path) {
            Ok(object) => Query::SimilarToObject { object, k, filter },
            Err(message) => {
                eprintln!("mldefender: {message}");
                return Ok(Exit::Data);
            }
        },
        _ => return Ok(usage("give --event ID or --flow-json FILE")),
    };
    ask(target, &query)
}

/// `query ip`.
pub fn ip(target: &Target, address: &str, limit: usize, filters: &FilterArgs) -> anyhow::Result<Exit> {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return Ok(usage(&format!("`{address}` is not an IPv4 or IPv6 address")));
    };
    let filter = match parse_filter(filters) {
        Ok(filter) => filter,
        Err(message) => return Ok(usage(&message)),
    };
    ask(target, &Query::Ip { ip, limit, filter })
}

fn usage(message: &str) -> Exit {
    eprintln!("mldefender: {message}");
    Exit::Config
}

fn ask(target: &Target, query: &Query) -> anyhow::Result<Exit> {
    let reply = match &target.index {
        Some(dir) => {
            // The embedder (and so the configuration) is needed only to embed an object.
            let config = match query {
                Query::SimilarToObject { .. } => match crate::load::config(target.config.as_deref()) {
                    Ok(config) => Some(config),
                    Err(exit) => return Ok(exit),
                },
                _ => None,
            };
            mld_runtime::query_server::ask_offline(dir, config.as_ref(), query)?
        }
        None => {
            let socket = match &target.socket {
                Some(socket) => socket.clone(),
                None => match crate::load::config(target.config.as_deref()) {
                    Ok(config) => config.capture.runtime_dir.join(mld_runtime::query_server::QUERY_SOCKET),
                    Err(exit) => return Ok(exit),
                },
            };
            mld_runtime::query_server::ask_online(&socket, query)?
        }
    };
    match reply {
        Reply::Answer(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer).context("failed to format the answer")?);
            Ok(Exit::Success)
        }
        Reply::Error(message) => {
            eprintln!("mldefender: {message}");
            Ok(Exit::Failure)
        }
    }
}

/// One JSON object from a file (or `-`: stdin): a flow as `mldefender flows` writes it, or
/// a record of the signed log. A JSONL file must hold exactly one object.
fn read_object(path: &Path) -> Result<Map<String, Value>, String> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().take(MAX_OBJECT_FILE_BYTES + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(MAX_OBJECT_FILE_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|error| format!("failed to read `{}`: {error}", path.display()))?;
    if text.len() as u64 > MAX_OBJECT_FILE_BYTES {
        return Err(format!("`{}` is larger than {MAX_OBJECT_FILE_BYTES} bytes; give one flow", path.display()));
    }
    let objects: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(_) if objects.len() > 1 => {
            return Err(format!("`{}` holds {} lines; give one flow (for example `sed -n 5p`)", path.display(), objects.len()));
        }
        Err(error) => return Err(format!("`{}` is not JSON: {error}", path.display())),
    };
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(format!("`{}` holds JSON but not an object", path.display())),
    }
}

fn parse_filter(args: &FilterArgs) -> Result<Filter, String> {
    let time = |text: &Option<String>, name: &str| -> Result<Option<i64>, String> {
        text.as_deref()
            .map(|text| parse_time_us(text).ok_or_else(|| format!("--{name} `{text}`: give RFC 3339 UTC (2026-11-25T10:00:00Z) or µs since the epoch")))
            .transpose()
    };
    Ok(Filter { from_ts_us: time(&args.from, "from")?, to_ts_us: time(&args.to, "to")?, actions: args.actions.clone(), categories: args.categories.clone() })
}
