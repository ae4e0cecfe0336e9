//! Files of a session (docs/internals.md §6): the paths a file operation may name, and
//! the pipes between the engine and the sandbox's file agent — the helper binary run
//! inside the sandbox as the code's user, with the code's confinement. One JSON line
//! per request on the agent's fd 3 (a `write` is followed by `size` raw bytes); one
//! JSON line per reply on its fd 4 (a `data` reply is followed by `size` raw bytes).

use serde::{Deserialize, Serialize};

use crate::helper::{is_under, HOME, WRITABLE_ROOTS};

/// Where the helper binary is shown inside the sandbox, to run as the file agent.
pub const FILE_AGENT_INSIDE: &str = "/opt/codebay/bin/codebay-sandbox";
/// The argument that makes the helper binary the file agent.
pub const FILE_AGENT_ARG: &str = "file-agent";
/// The longest request or reply line (a listing of many entries is one line).
pub const MAX_FILE_LINE_BYTES: usize = 32 << 20;
/// The most entries a listing returns.
pub const MAX_LIST_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum FileRequest {
    /// Replaces (or creates, with missing parent directories) the file; `size` bytes follow.
    Write {
        id: u64,
        path: String,
        size: u64,
    },
    Read {
        id: u64,
        path: String,
    },
    List {
        id: u64,
        path: String,
    },
    /// A file, or a directory with everything in it.
    Remove {
        id: u64,
        path: String,
    },
    Exists {
        id: u64,
        path: String,
    },
}

impl FileRequest {
    pub fn id(&self) -> u64 {
        match self {
            FileRequest::Write { id, .. }
            | FileRequest::Read { id, .. }
            | FileRequest::List { id, .. }
            | FileRequest::Remove { id, .. }
            | FileRequest::Exists { id, .. } => *id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum FileReply {
    Done {
        id: u64,
    },
    /// The file's content follows: `size` bytes.
    Data {
        id: u64,
        size: u64,
    },
    Entries {
        id: u64,
        entries: Vec<FileEntry>,
    },
    Exists {
        id: u64,
        exists: bool,
    },
    Error {
        id: u64,
        code: FileErrorCode,
        message: String,
    },
}

impl FileReply {
    pub fn id(&self) -> u64 {
        match self {
            FileReply::Done { id }
            | FileReply::Data { id, .. }
            | FileReply::Entries { id, .. }
            | FileReply::Exists { id, .. }
            | FileReply::Error { id, .. } => *id,
        }
    }
}

/// Why a file operation was refused; each has an `ERR_CODEBAY_*` code on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileErrorCode {
    /// Outside `/home/user` and `/tmp`: `..`, an absolute path elsewhere, a symlink
    /// that leads out.
    PathOutside,
    NotFound,
    /// A directory, a fifo, a device, a symlink where a file was needed.
    NotAFile,
    /// Larger than the file system's room.
    NoSpace,
    Failed,
}

/// One entry of a listing, as `list_files` answers and `files.list()` resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    File,
    Dir,
}

/// A path as a file operation names it, checked without touching the file system:
/// relative paths are under [`HOME`]; the result is absolute, normalised, and under
/// one of the [`WRITABLE_ROOTS`] (symlinks are the agent's to refuse, as it resolves).
/// Returns (the root, the rest below it, `""` for the root itself).
pub fn place(path: &str) -> Result<(&'static str, String), (FileErrorCode, String)> {
    if path.is_empty() {
        return Err((FileErrorCode::NotFound, "the path is empty".into()));
    }
    if path.contains('\0') {
        return Err((
            FileErrorCode::NotFound,
            "the path contains a NUL byte".into(),
        ));
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{HOME}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(outside(path));
                }
            }
            p => parts.push(p),
        }
    }
    let normal = format!("/{}", parts.join("/"));
    for root in WRITABLE_ROOTS {
        if is_under(&normal, root) {
            let rest = normal[root.len()..].trim_start_matches('/').to_owned();
            return Ok((root, rest));
        }
    }
    Err(outside(path))
}

fn outside(path: &str) -> (FileErrorCode, String) {
    (
        FileErrorCode::PathOutside,
        format!("{path:?} is outside {HOME} and /tmp"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_placed_under_a_writable_root_or_refused() {
        assert_eq!(place("data.csv").unwrap(), (HOME, "data.csv".into()));
        assert_eq!(place("a/./b//c").unwrap(), (HOME, "a/b/c".into()));
        assert_eq!(place("a/../b").unwrap(), (HOME, "b".into()));
        assert_eq!(place("/home/user").unwrap(), (HOME, "".into()));
        assert_eq!(place("/tmp/x/y").unwrap(), ("/tmp", "x/y".into()));
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../x",
            "/home/username/x",
            "/",
            "/tmpx",
            "/../tmp/../etc",
        ] {
            assert_eq!(
                place(bad).unwrap_err().0,
                FileErrorCode::PathOutside,
                "{bad}"
            );
        }
        assert_eq!(place("").unwrap_err().0, FileErrorCode::NotFound);
        assert_eq!(place("a\0b").unwrap_err().0, FileErrorCode::NotFound);
    }
}
