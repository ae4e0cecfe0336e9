//! The errors codebay throws, each with a stable `code` that callers can match on.

/// The JavaScript class an error surfaces as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Error,
    TypeError,
    RangeError,
}

/// Stable error codes: the `code` property of every error codebay throws. The README
/// lists them; `index.d.ts` declares them as `CodebayErrorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// An option of `LocalSession.create()` or `runCode` has the wrong type, is out of
    /// range, or is not an option at all.
    InvalidOption,
    /// An argument of a method (code, timeoutS, a context) is not what it must be.
    InvalidArgument,
    /// The language is not one the session runs.
    UnsupportedLanguage,
    /// The kernel lacks what the sandbox needs (user namespaces, seccomp, Landlock).
    KernelUnsupported,
    /// The sandbox could not be built for another reason (cgroups, mounts, ...).
    SandboxFailed,
    /// Not root, and no cgroup is delegated to the user (the message says how to get
    /// one, or to opt in to `resourceLimits: 'rlimits'`).
    NoCgroup,
    /// An interpreter the session needs is not installed or does not start.
    InterpreterNotFound,
    /// A module of the `preload` option could not be imported (`create()`).
    PreloadFailed,
    /// The session was closed.
    SessionClosed,
    /// No code context has that id in this session (never had, or removed).
    UnknownContext,
    /// The session already has `maxContexts` code contexts.
    ContextLimit,
    /// A session tool answered with a failure.
    ToolFailed,
    /// A file path outside `/home/user` and `/tmp` (`..`, a symlink that leads out).
    PathOutside,
    /// No file or directory at that path.
    NotFound,
    /// A directory, fifo, device or symlink where a file was needed (or the reverse).
    NotAFile,
    /// A file larger than the room its file system has.
    NoSpace,
    /// A file operation failed for another reason (named in the message).
    FileFailed,
    /// A remote session needs an API key and none was given or set in the environment.
    NoApiKey,
    /// The session cannot do this (a cloud session has no code contexts).
    NotSupported,
    /// A remote service refused or failed a request that is not a run (creating a
    /// cloud session); the message names what happened.
    RemoteFailed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidOption,
        ErrorCode::InvalidArgument,
        ErrorCode::UnsupportedLanguage,
        ErrorCode::KernelUnsupported,
        ErrorCode::SandboxFailed,
        ErrorCode::NoCgroup,
        ErrorCode::InterpreterNotFound,
        ErrorCode::PreloadFailed,
        ErrorCode::SessionClosed,
        ErrorCode::UnknownContext,
        ErrorCode::ContextLimit,
        ErrorCode::ToolFailed,
        ErrorCode::PathOutside,
        ErrorCode::NotFound,
        ErrorCode::NotAFile,
        ErrorCode::NoSpace,
        ErrorCode::FileFailed,
        ErrorCode::NoApiKey,
        ErrorCode::NotSupported,
        ErrorCode::RemoteFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidOption => "ERR_CODEBAY_INVALID_OPTION",
            ErrorCode::InvalidArgument => "ERR_CODEBAY_INVALID_ARGUMENT",
            ErrorCode::UnsupportedLanguage => "ERR_CODEBAY_UNSUPPORTED_LANGUAGE",
            ErrorCode::KernelUnsupported => "ERR_CODEBAY_KERNEL_UNSUPPORTED",
            ErrorCode::SandboxFailed => "ERR_CODEBAY_SANDBOX_FAILED",
            ErrorCode::NoCgroup => "ERR_CODEBAY_NO_CGROUP",
            ErrorCode::InterpreterNotFound => "ERR_CODEBAY_INTERPRETER_NOT_FOUND",
            ErrorCode::PreloadFailed => "ERR_CODEBAY_PRELOAD_FAILED",
            ErrorCode::SessionClosed => "ERR_CODEBAY_SESSION_CLOSED",
            ErrorCode::UnknownContext => "ERR_CODEBAY_UNKNOWN_CONTEXT",
            ErrorCode::ContextLimit => "ERR_CODEBAY_CONTEXT_LIMIT",
            ErrorCode::ToolFailed => "ERR_CODEBAY_TOOL_FAILED",
            ErrorCode::PathOutside => "ERR_CODEBAY_PATH_OUTSIDE",
            ErrorCode::NotFound => "ERR_CODEBAY_NOT_FOUND",
            ErrorCode::NotAFile => "ERR_CODEBAY_NOT_A_FILE",
            ErrorCode::NoSpace => "ERR_CODEBAY_NO_SPACE",
            ErrorCode::FileFailed => "ERR_CODEBAY_FILE_FAILED",
            ErrorCode::NoApiKey => "ERR_CODEBAY_NO_API_KEY",
            ErrorCode::NotSupported => "ERR_CODEBAY_NOT_SUPPORTED",
            ErrorCode::RemoteFailed => "ERR_CODEBAY_REMOTE_FAILED",
        }
    }

    /// The code a message carries on the wire (`[ERR_...] message`), if any.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// An error thrown to the caller (a rejected promise): never a run's failure, which
/// is a resolved `CodeExecutionResult` with `success: false`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CodebayError {
    pub code: ErrorCode,
    pub kind: ErrorKind,
    pub message: String,
}

impl CodebayError {
    pub fn new(code: ErrorCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        CodebayError {
            code,
            kind,
            message: message.into(),
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, ErrorKind::Error, message)
    }

    /// How a tool server says it: the code in brackets, so that a remote client can
    /// throw the same error.
    pub fn to_tool_message(&self) -> String {
        format!("[{}] {}", self.code.as_str(), self.message)
    }

    /// Reads a tool failure back: a `[ERR_...]` prefix gives the code, otherwise it is
    /// a plain tool failure.
    pub fn from_tool_message(text: &str) -> Self {
        if let Some(rest) = text.strip_prefix('[') {
            if let Some((code, message)) = rest.split_once("] ") {
                if let Some(code) = ErrorCode::parse(code) {
                    let kind = match code {
                        ErrorCode::InvalidOption | ErrorCode::InvalidArgument => {
                            ErrorKind::TypeError
                        }
                        _ => ErrorKind::Error,
                    };
                    return CodebayError::new(code, kind, message);
                }
            }
        }
        CodebayError::error(ErrorCode::ToolFailed, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} repeats");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn every_code_is_declared_and_documented() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for file in ["src/header.d.ts", "README.md"] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            for code in ErrorCode::ALL {
                assert!(text.contains(code.as_str()), "{file} lacks {code:?}");
            }
        }
    }

    #[test]
    fn tool_messages_carry_the_code() {
        let e = CodebayError::error(ErrorCode::UnknownContext, "no context ctx-1");
        let back = CodebayError::from_tool_message(&e.to_tool_message());
        assert_eq!(
            (back.code, back.message.as_str()),
            (ErrorCode::UnknownContext, "no context ctx-1")
        );
        let plain = CodebayError::from_tool_message("quota exceeded");
        assert_eq!(plain.code, ErrorCode::ToolFailed);
    }
}
