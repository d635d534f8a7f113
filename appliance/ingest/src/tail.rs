//! Following a node's log files: complete lines only, in file-index order, reads bounded.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::IngestError;

/// One unit the tailer hands on: a complete line, or a piece of the file that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub file_index: u64,
    pub path: PathBuf,
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
    pub content: LineContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineContent {
    /// A complete line, without its newline.
    Text(String),
    /// A complete line that is not UTF-8 (its bytes, lossily decoded, for the quarantine).
    NotUtf8(String),
    /// More than the line cap without a newline: the first bytes; the rest of the line
    /// is skipped.
    TooLong(String),
    /// Bytes after the last newline of a file that the writer has left (a later file
    /// exists): the line was cut and will never be completed.
    Truncated(String),
    /// The file being read was removed, or shrank below the reading position, and a
    /// later file exists: what it held past the position is gone; reading goes on at the
    /// next file (whose header then re-anchors the chain). The text says what happened.
    Gone(String),
}

/// Reads complete lines of `events-<node>-<index>.jsonl` files from a position.
///
/// Invariant: `offset` only moves past bytes that were handed on as a [`Line`]; a partial
/// last line of the newest file is never consumed (it is read again at the next call),
/// and the tailer moves to a later file only after reading the current one to its end.
#[derive(Debug)]
pub(crate) struct Tail {
    dir: PathBuf,
    node: String,
    prefix: String,
    /// The file being read (`None` before the first file appears).
    file_index: Option<u64>,
    offset: u64,
    /// Inside a line longer than the cap: its bytes are skipped up to the next newline.
    skipping: bool,
    max_line_bytes: usize,
    read_bytes: usize,
}

impl Tail {
    pub fn new(dir: PathBuf, node: &str, position: Option<(u64, u64)>, max_line_bytes: usize) -> Tail {
        Tail {
            dir,
            node: node.to_string(),
            prefix: format!("events-{node}-"),
            file_index: position.map(|(index, _)| index),
            offset: position.map_or(0, |(_, offset)| offset),
            skipping: false,
            max_line_bytes,
            // A read holds at least one whole line of the maximum length.
            read_bytes: (256 * 1024).max(max_line_bytes + 1),
        }
    }

    /// The reading position: file index and offset.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.file_index.map(|index| (index, self.offset))
    }

    /// Hands on up to `max_lines` lines from the current position; returns how many.
    pub fn read(&mut self, max_lines: usize, on_line: &mut impl FnMut(Line)) -> Result<usize, IngestError> {
        let mut count = 0;
        let mut buffer = Vec::new();
        while count < max_lines {
            let current = match self.file_index {
                Some(index) => Some(index),
                None => self.next_file(None)?,
            };
            let Some(index) = current else {
                break;
            };
            self.file_index = Some(index);
            let path = self.dir.join(mld_eventlog::file_name(&self.node, index));
            if let Some(what) = self.gone(&path)? {
                // Removed (retention, by hand) or cut short under us: move on if the log
                // has, otherwise wait (it may be being replaced).
                let Some(next) = self.next_file(Some(index))? else {
                    break;
                };
                on_line(Line { file_index: index, path: path.clone(), offset: self.offset, content: LineContent::Gone(what) });
                count += 1;
                self.file_index = Some(next);
                self.offset = 0;
                self.skipping = false;
                continue;
            }
            // Whether a later file exists is asked before reading: once the writer has
            // started it, the current file is complete.
            let mut next = None;
            let mut got = self.read_chunk(index, &path, max_lines - count, &mut buffer, on_line)?;
            if got == 0 {
                next = self.next_file(Some(index))?;
                if next.is_some() {
                    got = self.read_chunk(index, &path, max_lines - count, &mut buffer, on_line)?;
                }
            }
            count += got;
            if got > 0 {
                continue;
            }
            let Some(next) = next else {
                break;
            };
            // The current file is finished: what is left after its last newline was cut.
            let rest = self.read_rest(&path, &mut buffer)?;
            if !rest.is_empty() && !self.skipping {
                on_line(Line {
                    file_index: index,
                    path: path.clone(),
                    offset: self.offset,
                    content: LineContent::Truncated(lossy_prefix(&rest, self.max_line_bytes)),
                });
                count += 1;
            }
            self.file_index = Some(next);
            self.offset = 0;
            self.skipping = false;
        }
        Ok(count)
    }

    /// Reads one bounded chunk at the offset and hands on the complete lines in it.
    fn read_chunk(&mut self, index: u64, path: &Path, max_lines: usize, buffer: &mut Vec<u8>, on_line: &mut impl FnMut(Line)) -> Result<usize, IngestError> {
        self.read_at(path, buffer)?;
        let mut count = 0;
        let mut start = 0;
        while count < max_lines {
            let Some(end) = buffer[start..].iter().position(|byte| *byte == b'\n').map(|at| start + at) else {
                break;
            };
            let line_offset = self.offset + start as u64;
            let bytes = &buffer[start..end];
            start = end + 1;
            if self.skipping {
                // The end of a line that was too long, already reported.
                self.skipping = false;
                continue;
            }
            let content = if bytes.len() > self.max_line_bytes {
                LineContent::TooLong(lossy_prefix(bytes, self.max_line_bytes))
            } else {
                match std::str::from_utf8(bytes) {
                    Ok(text) => LineContent::Text(text.to_string()),
                    Err(_) => LineContent::NotUtf8(lossy_prefix(bytes, self.max_line_bytes)),
                }
            };
            on_line(Line { file_index: index, path: path.to_path_buf(), offset: line_offset, content });
            count += 1;
        }
        let unterminated = buffer.len() - start;
        if count < max_lines && unterminated > self.max_line_bytes {
            // No newline within the cap: report the line once and skip to its end.
            if !self.skipping {
                on_line(Line {
                    file_index: index,
                    path: path.to_path_buf(),
                    offset: self.offset + start as u64,
                    content: LineContent::TooLong(lossy_prefix(&buffer[start..], self.max_line_bytes)),
                });
                count += 1;
            }
            self.skipping = true;
            start = buffer.len();
        }
        self.offset += start as u64;
        Ok(count)
    }

    /// The bytes from the offset to the end of the file (bounded by the read size; more
    /// than that after the last newline is a line too long, reported already).
    fn read_rest(&mut self, path: &Path, buffer: &mut Vec<u8>) -> Result<Vec<u8>, IngestError> {
        self.read_at(path, buffer)?;
        Ok(std::mem::take(buffer))
    }

    /// Why the file at the reading position can no longer be read from there, if so.
    fn gone(&self, path: &Path) -> Result<Option<String>, IngestError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() < self.offset => Ok(Some(format!("the file shrank to {} bytes, below the reading position {}", meta.len(), self.offset))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Some(format!("the file was removed at reading position {}", self.offset))),
            Err(source) => Err(IngestError::Io { operation: "stat log file", path: path.to_path_buf(), source }),
        }
    }

    fn read_at(&self, path: &Path, buffer: &mut Vec<u8>) -> Result<(), IngestError> {
        let io = |operation, source| IngestError::Io { operation, path: path.to_path_buf(), source };
        buffer.clear();
        let mut file = File::open(path).map_err(|error| io("open log file", error))?;
        file.seek(SeekFrom::Start(self.offset)).map_err(|error| io("seek in log file", error))?;
        file.take(self.read_bytes as u64).read_to_end(buffer).map_err(|error| io("read log file", error))?;
        Ok(())
    }

    /// The smallest file index above `after` (any index when `None`).
    fn next_file(&self, after: Option<u64>) -> Result<Option<u64>, IngestError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // The log task creates the directory; until it has, there is nothing to read.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IngestError::Io { operation: "list log directory", path: self.dir.clone(), source }),
        };
        let mut next: Option<u64> = None;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(index) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&self.prefix))
                .and_then(|rest| rest.strip_suffix(".jsonl"))
                .and_then(|index| index.parse::<u64>().ok())
            else {
                continue;
            };
            if after.is_none_or(|after| index > after) && next.is_none_or(|next| index < next) {
                next = Some(index);
            }
        }
        Ok(next)
    }
}

/// At most the first `max_bytes` of `bytes`, as text (invalid UTF-8, including a
/// character cut at the bound, becomes U+FFFD).
pub(crate) fn lossy_prefix(bytes: &[u8], max_bytes: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max_bytes)]).into_owned()
}

/// `text` cut to at most `max_bytes` bytes at a character boundary.
pub(crate) fn truncate_text(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(tail: &mut Tail) -> Vec<(u64, u64, LineContent)> {
        let mut out = Vec::new();
        tail.read(100, &mut |line| out.push((line.file_index, line.offset, line.content))).expect("read");
        out
    }

    #[test]
    fn partial_lines_wait_and_files_are_followed_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = dir.path().join(mld_eventlog::file_name("n", 0));
        std::fs::write(&first, b"a\nb\npart").expect("write");
        let mut tail = Tail::new(dir.path().to_path_buf(), "n", None, 16);
        assert_eq!(lines(&mut tail), vec![(0, 0, LineContent::Text("a".into())), (0, 2, LineContent::Text("b".into()))]);
        assert_eq!(lines(&mut tail), vec![], "a partial line is waited on");
        assert_eq!(tail.position(), Some((0, 4)));
        std::fs::write(&first, b"a\nb\npartial\n").expect("write");
        assert_eq!(lines(&mut tail), vec![(0, 4, LineContent::Text("partial".into()))]);
        std::fs::write(&first, b"a\nb\npartial\ncut").expect("write");
        std::fs::write(dir.path().join(mld_eventlog::file_name("n", 1)), b"c\n").expect("write");
        assert_eq!(lines(&mut tail), vec![(0, 12, LineContent::Truncated("cut".into())), (1, 0, LineContent::Text("c".into()))]);
    }

    #[test]
    fn a_line_over_the_cap_is_reported_once_and_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let long = "x".repeat(40);
        std::fs::write(dir.path().join(mld_eventlog::file_name("n", 0)), format!("{long}\nok\n")).expect("write");
        let mut tail = Tail::new(dir.path().to_path_buf(), "n", None, 16);
        let got = lines(&mut tail);
        assert_eq!(got, vec![(0, 0, LineContent::TooLong("x".repeat(16))), (0, 41, LineContent::Text("ok".into()))]);
    }
}
