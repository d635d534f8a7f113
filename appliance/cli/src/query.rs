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

/// `query ask`: a question in words, answered from the text index.
pub fn ask_words(target: &Target, question: &str, k: usize, ip: Option<&str>, filters: &FilterArgs, json: bool) -> anyhow::Result<Exit> {
    let ip = match ip.map(str::parse::<IpAddr>).transpose() {
        Ok(ip) => ip,
        Err(_) => return Ok(usage(&format!("--ip `{}` is not an IPv4 or IPv6 address", ip.unwrap_or_default()))),
    };
    let filter = match parse_filter(filters) {
        Ok(filter) => filter,
        Err(message) => return Ok(usage(&message)),
    };
    if let Err(message) = mld_query::check_question(question) {
        return Ok(usage(&message));
    }
    let query = Query::Ask { question: question.to_string(), k, filter, ip };
    let reply = match reply(target, &query)? {
        Ok(reply) => reply,
        Err(exit) => return Ok(exit),
    };
    let answer = match reply {
        Reply::Answer(answer) => answer,
        Reply::Error(message) => {
            eprintln!("mldefender: {message}");
            return Ok(Exit::Failure);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer).context("failed to format the answer")?);
        return Ok(Exit::Success);
    }
    print!("{}", render_answer(question, &answer));
    Ok(Exit::Success)
}

/// An answer to a question in words, for a terminal: what was applied, the events (time,
/// action, category, addresses, description), then the summary.
fn render_answer(question: &str, answer: &mld_history::Answer) -> String {
    let mut out = format!("question: {}\n", question.trim());
    let applied: Vec<String> =
        [answer.time_filter.as_ref().map(|words| format!("time {words}")), answer.address_filter.clone()].into_iter().flatten().collect();
    if !applied.is_empty() {
        out.push_str(&format!("filters from the question: {}\n", applied.join("; ")));
    }
    for (rank, hit) in answer.hits.iter().enumerate() {
        let fields = &hit.fields;
        out.push_str(&format!(
            "{:>3}. {}  {:<8} {:<12} {} -> {}:{}  seq {}\n     {}\n",
            rank + 1,
            mld_history::text::rfc3339(fields.ts_us),
            fields.action,
            fields.category,
            fields.src_ip,
            fields.dst_ip,
            fields.dst_port,
            fields.seq,
            fields.description.as_deref().unwrap_or("")
        ));
    }
    if let Some(summary) = &answer.summary {
        out.push_str(&format!("summary: {summary}\n"));
    }
    out.push_str(&format!("({} described decisions indexed", answer.indexed));
    if answer.caught_up == Some(false) {
        out.push_str("; the ingest task is still reading the log: newer decisions may be missing");
    }
    out.push_str(")\n");
    out
}

fn usage(message: &str) -> Exit {
    eprintln!("mldefender: {message}");
    Exit::Config
}

/// The reply to `query`, from the index directory or the running task; `Err` is the exit
/// for a configuration that does not load.
fn reply(target: &Target, query: &Query) -> anyhow::Result<Result<Reply, Exit>> {
    Ok(Ok(match &target.index {
        Some(dir) => {
            // The embedder or the text model (and so the configuration) is needed only to
            // embed an object or a question.
            let config = match query {
                Query::SimilarToObject { .. } | Query::Ask { .. } => match crate::load::config(target.config.as_deref()) {
                    Ok(config) => Some(config),
                    Err(exit) => return Ok(Err(exit)),
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
                    Err(exit) => return Ok(Err(exit)),
                },
            };
            mld_runtime::query_server::ask_online(&socket, query)?
        }
    }))
}

fn ask(target: &Target, query: &Query) -> anyhow::Result<Exit> {
    let reply = match reply(target, query)? {
        Ok(reply) => reply,
        Err(exit) => return Ok(exit),
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
