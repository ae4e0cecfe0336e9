//! `Files`: a session's files, E2B's `sandbox.files` over any [`Session`]. A path is
//! placed here (relative paths under `/home/user`; absolute ones must stay under
//! `/home/user` or `/tmp`) before the session sees it; the session resolves it again
//! where the files are, where symlinks can be seen.

use std::sync::Arc;

use codebay_protocol::files::place;
use codebay_protocol::{FileEntry, FileErrorCode};

use crate::error::{CodebayError, ErrorCode};
use crate::session::{BoxFuture, Session};

#[derive(Clone)]
pub struct Files {
    session: Arc<dyn Session>,
}

impl Files {
    pub fn new(session: Arc<dyn Session>) -> Files {
        Files { session }
    }

    pub fn write(
        &self,
        path: &str,
        data: Vec<u8>,
    ) -> Result<BoxFuture<Result<(), CodebayError>>, CodebayError> {
        Ok(self.session.write_file(placed(path)?, data))
    }

    pub fn read(
        &self,
        path: &str,
    ) -> Result<BoxFuture<Result<Vec<u8>, CodebayError>>, CodebayError> {
        Ok(self.session.read_file(placed(path)?))
    }

    pub fn list(
        &self,
        path: &str,
    ) -> Result<BoxFuture<Result<Vec<FileEntry>, CodebayError>>, CodebayError> {
        Ok(self.session.list_files(placed(path)?))
    }

    pub fn remove(&self, path: &str) -> Result<BoxFuture<Result<(), CodebayError>>, CodebayError> {
        Ok(self.session.remove_file(placed(path)?))
    }

    pub fn exists(
        &self,
        path: &str,
    ) -> Result<BoxFuture<Result<bool, CodebayError>>, CodebayError> {
        Ok(self.session.file_exists(placed(path)?))
    }
}

/// The absolute, normalised path a file operation sends, or why it is refused.
pub fn placed(path: &str) -> Result<String, CodebayError> {
    let (root, rest) = place(path).map_err(|(code, message)| file_error(code, message))?;
    Ok(if rest.is_empty() {
        root.to_owned()
    } else {
        format!("{root}/{rest}")
    })
}

/// The error a refused file operation throws.
pub fn file_error(code: FileErrorCode, message: String) -> CodebayError {
    let code = match code {
        FileErrorCode::PathOutside => ErrorCode::PathOutside,
        FileErrorCode::NotFound => ErrorCode::NotFound,
        FileErrorCode::NotAFile => ErrorCode::NotAFile,
        FileErrorCode::NoSpace => ErrorCode::NoSpace,
        FileErrorCode::Failed => ErrorCode::FileFailed,
    };
    CodebayError::error(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::BoxFuture;
    use codebay_protocol::tool::{LIST_FILES, READ_FILE, WRITE_FILE};
    use codebay_protocol::McpToolResult;
    use serde_json::{json, Value};
    use std::sync::Mutex;

    /// A session that only has the tool call, answering from a map of files.
    struct ToolOnly {
        calls: Mutex<Vec<(String, Value)>>,
    }

    impl Session for ToolOnly {
        fn session_id(&self) -> String {
            "tools".into()
        }
        fn api_key(&self) -> String {
            String::new()
        }
        fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>> {
            self.calls.lock().unwrap().push((name.into(), args.clone()));
            let answer = match name {
                WRITE_FILE => McpToolResult::ok("{}".into(), "r1".into()),
                READ_FILE => McpToolResult::ok("AAEC/w==".into(), "r2".into()),
                LIST_FILES if args["path"] == "/home/user" => McpToolResult::ok(
                    r#"[{"name":"a.csv","path":"/home/user/a.csv","type":"file","size":3}]"#.into(),
                    "r3".into(),
                ),
                _ => McpToolResult::failed(
                    "[ERR_CODEBAY_NOT_FOUND] no such directory".into(),
                    "r4".into(),
                ),
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn a_tool_only_session_gets_files_through_its_tools_in_base64() {
        let session = Arc::new(ToolOnly {
            calls: Mutex::new(Vec::new()),
        });
        let files = Files::new(session.clone());
        files
            .write("out/x.bin", vec![0, 1, 2, 255])
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            files.read("/tmp/y").unwrap().await.unwrap(),
            vec![0, 1, 2, 255]
        );
        assert_eq!(files.list(".").unwrap().await.unwrap()[0].name, "a.csv");
        assert!(files.exists("a.csv").unwrap().await.unwrap());
        assert!(!files.exists("b.csv").unwrap().await.unwrap());
        assert!(!files.exists("nowhere/c").unwrap().await.unwrap());
        let calls = session.calls.lock().unwrap();
        assert_eq!(
            calls[0],
            (
                WRITE_FILE.into(),
                json!({"path": "/home/user/out/x.bin", "data": "AAEC/w==", "encoding": "base64"})
            )
        );
        assert_eq!(calls[1].1, json!({"path": "/tmp/y", "encoding": "base64"}));
    }

    #[test]
    fn paths_outside_are_refused_before_the_session_is_called() {
        let session = Arc::new(ToolOnly {
            calls: Mutex::new(Vec::new()),
        });
        let files = Files::new(session.clone());
        for bad in ["../../etc/passwd", "/etc/passwd", "a/../../x"] {
            let e = files.read(bad).err().expect(bad);
            assert_eq!(e.code, ErrorCode::PathOutside, "{bad}");
        }
        assert!(session.calls.lock().unwrap().is_empty());
    }
}
