//! A checked `runCode` call (DESIGN §1.1), and its `run_code` tool arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use codebay_protocol::RunCodeArgs;
use serde_json::Value;

use crate::error::{CodebayError, ErrorCode, ErrorKind};
use crate::runtime::Registry;

/// `timeoutS` when the caller gives none.
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;

/// How long a session may take beyond the run's own timeout before `Code` stops
/// waiting for it: the session's answer is late, not lost, but the caller must not hang.
pub const SESSION_GRACE_S: f64 = 30.0;

/// About 31 years: far past any real run, far below what a Duration can hold.
pub const MAX_TIMEOUT_S: f64 = 1.0e9;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    pub code: String,
    /// The canonical name.
    pub language: String,
    pub timeout_s: f64,
    /// Environment for this run only.
    pub envs: BTreeMap<String, String>,
    /// The code context to run in; none means the language's default context.
    pub context: Option<String>,
}

impl RunRequest {
    /// Language is checked first, as the SDK does, so an unsupported language is
    /// reported even when the timeout is also wrong.
    pub fn new(
        registry: &Registry,
        code: String,
        language: &str,
        timeout_s: Option<f64>,
    ) -> Result<Self, CodebayError> {
        let language = registry.resolve(language)?.name.clone();
        let timeout_s = check_timeout(timeout_s)?;
        Ok(RunRequest {
            code,
            language,
            timeout_s,
            envs: BTreeMap::new(),
            context: None,
        })
    }

    pub fn with_envs(mut self, envs: BTreeMap<String, String>) -> Result<Self, CodebayError> {
        check_env("envs", &envs)?;
        self.envs = envs;
        Ok(self)
    }

    pub fn in_context(mut self, context: Option<String>) -> Self {
        self.context = context;
        self
    }

    /// The `run_code` tool arguments: exactly `code`, `language`, `timeout_s` unless
    /// options were given.
    pub fn tool_args(&self) -> Value {
        let args = RunCodeArgs {
            code: self.code.clone(),
            language: self.language.clone(),
            timeout_s: Some(self.timeout_s),
            envs: (!self.envs.is_empty()).then(|| self.envs.clone()),
            context: self.context.clone(),
        };
        serde_json::to_value(args).expect("tool arguments serialise")
    }

    /// Reads `run_code` arguments as a tool server receives them (a session may be
    /// called directly, without `Code`), with the same checks.
    pub fn from_tool_args(registry: &Registry, args: &Value) -> Result<Self, CodebayError> {
        let bad = |message: String| {
            CodebayError::new(ErrorCode::InvalidArgument, ErrorKind::TypeError, message)
        };
        let Value::Object(map) = args else {
            return Err(bad(
                "run_code arguments must be an object with code, language and timeout_s".into(),
            ));
        };
        // Each argument checked by name first, so the message says which one is wrong.
        for (key, want, fits) in [
            (
                "code",
                "a string",
                map.get("code").is_some_and(Value::is_string),
            ),
            (
                "language",
                "a string",
                map.get("language").is_some_and(Value::is_string),
            ),
        ] {
            if !fits {
                return Err(bad(format!("run_code needs {key}, {want}")));
            }
        }
        if let Some(t) = map
            .get("timeout_s")
            .filter(|t| !t.is_null() && !t.is_number())
        {
            // The language's error wins, as the SDK's order has it.
            registry.resolve(map["language"].as_str().unwrap_or_default())?;
            return Err(invalid_timeout(&t.to_string()));
        }
        let args: RunCodeArgs = serde_json::from_value(args.clone())
            .map_err(|e| bad(format!("run_code arguments: {e}")))?;
        RunRequest::new(registry, args.code, &args.language, args.timeout_s)?
            .with_envs(args.envs.unwrap_or_default())
            .map(|r| r.in_context(args.context))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// How long `Code` waits for a session before giving up on it.
    pub fn session_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s + SESSION_GRACE_S)
    }
}

/// `None` means the caller left it out; anything given must be finite and > 0.
pub fn check_timeout(timeout_s: Option<f64>) -> Result<f64, CodebayError> {
    match timeout_s {
        None => Ok(DEFAULT_TIMEOUT_S),
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S => Ok(t),
        Some(t) => Err(invalid_timeout(&t.to_string())),
    }
}

pub fn invalid_timeout(given: &str) -> CodebayError {
    CodebayError::new(
        ErrorCode::InvalidArgument,
        ErrorKind::RangeError,
        format!("timeoutS must be a finite number greater than 0, got {given}"),
    )
}

/// Environment variables as a process can hold them.
pub fn check_env(option: &str, env: &BTreeMap<String, String>) -> Result<(), CodebayError> {
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(CodebayError::new(
                ErrorCode::InvalidOption,
                ErrorKind::TypeError,
                format!("{option}: {name:?} is not a valid environment variable name"),
            ));
        }
        if value.contains('\0') {
            return Err(CodebayError::new(
                ErrorCode::InvalidOption,
                ErrorKind::TypeError,
                format!("{option}: the value of {name} contains a NUL character"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timeout_must_be_finite_and_positive() {
        assert_eq!(check_timeout(None), Ok(60.0));
        assert_eq!(check_timeout(Some(0.5)), Ok(0.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            let err = check_timeout(Some(bad)).unwrap_err();
            assert_eq!(
                (err.kind, err.code),
                (ErrorKind::RangeError, ErrorCode::InvalidArgument)
            );
        }
    }

    #[test]
    fn language_is_checked_before_timeout() {
        let err =
            RunRequest::new(&Registry::default(), "1".into(), "cobol", Some(-1.0)).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedLanguage);
    }

    #[test]
    fn tool_args_have_exactly_three_keys_without_options() {
        let req =
            RunRequest::new(&Registry::default(), "print(1)".into(), "py", Some(5.0)).unwrap();
        assert_eq!(
            req.tool_args(),
            json!({"code": "print(1)", "language": "python", "timeout_s": 5.0})
        );
        assert_eq!(req.session_deadline(), Duration::from_secs(35));
        let with = req
            .with_envs([("A".to_string(), "1".to_string())].into())
            .unwrap()
            .in_context(Some("ctx-1".into()));
        assert_eq!(
            with.tool_args(),
            json!({"code": "print(1)", "language": "python", "timeout_s": 5.0, "envs": {"A": "1"}, "context": "ctx-1"})
        );
    }

    #[test]
    fn tool_args_are_checked_like_calls() {
        let registry = Registry::default();
        let ok = RunRequest::from_tool_args(
            &registry,
            &json!({"code": "1", "language": "PY", "timeout_s": 2}),
        )
        .unwrap();
        assert_eq!((ok.language.as_str(), ok.timeout_s), ("python", 2.0));
        let default =
            RunRequest::from_tool_args(&registry, &json!({"code": "1", "language": "js"})).unwrap();
        assert_eq!(default.timeout_s, 60.0);
        for (args, code) in [
            (json!({"language": "py"}), ErrorCode::InvalidArgument),
            (
                json!({"code": "1", "language": "ruby"}),
                ErrorCode::UnsupportedLanguage,
            ),
            (
                json!({"code": "1", "language": "py", "timeout_s": -1}),
                ErrorCode::InvalidArgument,
            ),
            (
                json!({"code": "1", "language": "py", "timeout_s": "5"}),
                ErrorCode::InvalidArgument,
            ),
            (
                json!({"code": "1", "language": "py", "envs": {"A=B": "1"}}),
                ErrorCode::InvalidOption,
            ),
            (
                json!({"code": "1", "language": "py", "envs": "A=1"}),
                ErrorCode::InvalidArgument,
            ),
        ] {
            assert_eq!(
                RunRequest::from_tool_args(&registry, &args)
                    .unwrap_err()
                    .code,
                code,
                "{args}"
            );
        }
    }
}
