//! `session.files` through the cloud session's filesystem tools, with the names and
//! arguments the SDK's `FileSystem` sends (`typescript/src/filesystem/filesystem.ts`):
//! `write_file {path, content, mode}` in 60 KB chunks (the first `overwrite`, the rest
//! `append`), `read_file {path, offset, length}`, `list_directory {path}` (lines
//! `[DIR] name` / `[FILE] name`), `get_file_info {path}` (lines `key: value`) and
//! `delete_file {path}`. The tools carry text, so binary data is refused.

use codebay_core::{BoxFuture, CodebayError, ErrorCode, FileEntry, FileKind, McpToolResult};
use serde_json::json;

use super::session::AgentBaySession;

/// The SDK's chunk size for `write_file`.
const CHUNK_BYTES: usize = 60 * 1024;

pub fn write(
    session: AgentBaySession,
    path: String,
    data: Vec<u8>,
) -> BoxFuture<Result<(), CodebayError>> {
    Box::pin(async move {
        let text = String::from_utf8(data).map_err(|_| {
            CodebayError::error(
                ErrorCode::NotSupported,
                "Binary data is not supported by this session: AgentBay's write_file takes text \
                 (UTF-8); write a base64 string and decode it in the code",
            )
        })?;
        let mut mode = "overwrite";
        for chunk in chunks(&text, CHUNK_BYTES) {
            let args = json!({ "path": path, "content": chunk, "mode": mode });
            answer(&session, "write_file", args, &path).await?;
            mode = "append";
        }
        Ok(())
    })
}

pub fn read(session: AgentBaySession, path: String) -> BoxFuture<Result<Vec<u8>, CodebayError>> {
    Box::pin(async move {
        // Length 0 is the whole file.
        let args = json!({ "path": path, "offset": 0, "length": 0 });
        Ok(answer(&session, "read_file", args, &path)
            .await?
            .into_bytes())
    })
}

pub fn list(
    session: AgentBaySession,
    path: String,
) -> BoxFuture<Result<Vec<FileEntry>, CodebayError>> {
    Box::pin(async move {
        let listing = answer(&session, "list_directory", json!({ "path": path }), &path).await?;
        let mut entries = Vec::new();
        for (name, kind) in parse_listing(&listing) {
            let child = format!("{}/{name}", path.trim_end_matches('/'));
            let info = answer(&session, "get_file_info", json!({ "path": child }), &child).await?;
            entries.push(FileEntry {
                name: name.to_owned(),
                path: child,
                kind,
                size: info_size(&info),
            });
        }
        Ok(entries)
    })
}

pub fn remove(session: AgentBaySession, path: String) -> BoxFuture<Result<(), CodebayError>> {
    Box::pin(async move {
        answer(&session, "delete_file", json!({ "path": path }), &path)
            .await
            .map(drop)
    })
}

pub fn exists(session: AgentBaySession, path: String) -> BoxFuture<Result<bool, CodebayError>> {
    Box::pin(async move {
        match answer(&session, "get_file_info", json!({ "path": path }), &path).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// A file tool's text, or its failure as a file error: `ERR_CODEBAY_NOT_FOUND` when the
/// cloud's message says so, else `ERR_CODEBAY_FILE_FAILED` with its words.
async fn answer(
    session: &AgentBaySession,
    tool: &str,
    args: serde_json::Value,
    path: &str,
) -> Result<String, CodebayError> {
    let McpToolResult {
        success,
        data,
        error_message,
        ..
    } = session.call(tool, &args, false).await;
    if success {
        return Ok(data);
    }
    let code = if says_not_found(&error_message) {
        ErrorCode::NotFound
    } else {
        ErrorCode::FileFailed
    };
    Err(CodebayError::error(
        code,
        format!("AgentBay's {tool} failed for {path}: {error_message}"),
    ))
}

fn says_not_found(message: &str) -> bool {
    let m = message.to_lowercase();
    [
        "no such file",
        "not found",
        "does not exist",
        "not exist",
        "enoent",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// Pieces of at most `max` bytes, cut between characters.
fn chunks(text: &str, max: usize) -> Vec<&str> {
    if text.is_empty() {
        return vec![""];
    }
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

/// `[DIR] name` and `[FILE] name` lines.
fn parse_listing(text: &str) -> Vec<(&str, FileKind)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if let Some(name) = line.strip_prefix("[DIR] ") {
                Some((name, FileKind::Dir))
            } else {
                line.strip_prefix("[FILE] ")
                    .map(|name| (name, FileKind::File))
            }
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

/// The `size: N` line of `get_file_info`.
fn info_size(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "size")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_between_characters() {
        assert_eq!(chunks("", 4), vec![""]);
        assert_eq!(chunks("abcdef", 4), vec!["abcd", "ef"]);
        assert_eq!(chunks("aé€", 3), vec!["aé", "€"]);
    }

    #[test]
    fn listings_and_infos_are_read_as_the_sdk_reads_them() {
        let listing = "[DIR] data\n[FILE] a b.txt\r\nnoise\n[FILE] \n";
        assert_eq!(
            parse_listing(listing),
            vec![("data", FileKind::Dir), ("a b.txt", FileKind::File)]
        );
        assert_eq!(info_size("name: a\nsize: 42\nisDirectory: false"), 42);
        assert_eq!(info_size("name: a"), 0);
    }

    #[test]
    fn not_found_is_read_from_the_message() {
        assert!(says_not_found("open /x: no such file or directory"));
        assert!(says_not_found("File Not Found"));
        assert!(!says_not_found("permission denied"));
    }
}
