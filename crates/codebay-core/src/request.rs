//! Checking a `runCode` call before any session is touched (DESIGN §1.1).

use serde_json::{json, Value};

/// `timeoutS` when the caller gives none.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;

/// How long a session may take beyond the run's own timeout before `Code` stops
/// waiting for it: the session's answer is late, not lost, but the caller must not hang.
pub const SESSION_GRACE_S: f64 = 30.0;

/// The languages a session can run. The canonical name is what goes over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// Matches after trim + lower-case, with the SDK's aliases.
    pub fn parse(given: &str) -> Result<Language, RequestError> {
        match given.trim().to_lowercase().as_str() {
            "python" | "py" | "python3" => Ok(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(Language::JavaScript),
            _ => Err(RequestError::UnsupportedLanguage(given.to_owned())),
        }
    }

    pub fn canonical(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.canonical())
    }
}

/// Why a `runCode` call was refused before reaching the session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The message is the SDK's, word for word.
    #[error("Unsupported language: {0}. Supported languages are 'python' and 'javascript'")]
    UnsupportedLanguage(String),
    /// Surfaces to JavaScript as a `RangeError`.
    #[error("timeoutS must be a finite number greater than 0, got {0}")]
    InvalidTimeout(String),
    /// Surfaces to JavaScript as a `TypeError`.
    #[error("code must be a string, got {0}")]
    CodeNotString(String),
}

/// A checked `runCode` call.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    pub code: String,
    pub language: Language,
    pub timeout_s: f64,
}

impl RunRequest {
    /// Language is checked first, as the SDK does, so an unsupported language is
    /// reported even when the timeout is also wrong.
    pub fn new(code: String, language: &str, timeout_s: Option<f64>) -> Result<Self, RequestError> {
        let language = Language::parse(language)?;
        let timeout_s = check_timeout(timeout_s)?;
        Ok(RunRequest {
            code,
            language,
            timeout_s,
        })
    }

    /// The `run_code` tool arguments: exactly `code`, `language`, `timeout_s`.
    pub fn tool_args(&self) -> Value {
        json!({ "code": self.code, "language": self.language.canonical(), "timeout_s": self.timeout_s })
    }

    /// How long `Code` waits for the session before giving up on it.
    pub fn session_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_s + SESSION_GRACE_S)
    }
}

/// `None` means the caller left it out; anything given must be finite and > 0.
pub fn check_timeout(timeout_s: Option<f64>) -> Result<f64, RequestError> {
    match timeout_s {
        None => Ok(DEFAULT_TIMEOUT_S),
        // Duration::from_secs_f64 panics past ~5.8e11 years; such a value is a bug, not a wish.
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S => Ok(t),
        Some(t) => Err(RequestError::InvalidTimeout(t.to_string())),
    }
}

/// About 31 years: far past any real run, far below what a Duration can hold.
pub const MAX_TIMEOUT_S: f64 = 1.0e9;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_case_map_to_canonical_names() {
        for (given, want) in [
            ("python", Language::Python),
            ("  PY ", Language::Python),
            ("Python3", Language::Python),
            ("javascript", Language::JavaScript),
            ("JS", Language::JavaScript),
            ("node", Language::JavaScript),
            (" NodeJS\n", Language::JavaScript),
        ] {
            assert_eq!(Language::parse(given), Ok(want), "{given:?}");
        }
    }

    #[test]
    fn unsupported_language_keeps_the_text_as_given() {
        let err = Language::parse(" Ruby ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unsupported language:  Ruby . Supported languages are 'python' and 'javascript'"
        );
    }

    #[test]
    fn timeout_must_be_finite_and_positive() {
        assert_eq!(check_timeout(None), Ok(60.0));
        assert_eq!(check_timeout(Some(0.5)), Ok(0.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert!(
                matches!(
                    check_timeout(Some(bad)),
                    Err(RequestError::InvalidTimeout(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn language_is_checked_before_timeout() {
        let err = RunRequest::new("1".into(), "cobol", Some(-1.0)).unwrap_err();
        assert!(matches!(err, RequestError::UnsupportedLanguage(_)));
    }

    #[test]
    fn tool_args_have_exactly_three_keys_with_the_canonical_language() {
        let req = RunRequest::new("print(1)".into(), "py", Some(5.0)).unwrap();
        assert_eq!(
            req.tool_args(),
            json!({"code": "print(1)", "language": "python", "timeout_s": 5.0})
        );
        assert_eq!(req.session_deadline(), std::time::Duration::from_secs(35));
    }
}
