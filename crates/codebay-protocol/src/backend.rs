//! The backend JSON a session puts in a `run_code` tool result (DESIGN §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One output of a run: MIME type → content, plus `isMainResult`.
pub type MimeBundle = Map<String, Value>;

/// The structured error of a run: the exception's class name, its message, and a
/// traceback of the user's lines. Drivers, the engine, the wire and `Code` all use this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorInfo {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

impl ErrorInfo {
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        ErrorInfo {
            name: name.into(),
            value: value.into(),
            traceback: String::new(),
        }
    }

    /// `Name: value`, or the name alone when there is no message.
    pub fn summary(&self) -> String {
        if self.value.is_empty() {
            self.name.clone()
        } else {
            format!("{}: {}", self.name, self.value)
        }
    }
}

/// Every field defaults when reading, because remote backends omit what they do not have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendOutput {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// Each item a JSON-encoded [`MimeBundle`] on the wire. Kept as raw values when
    /// reading, since a backend may send one that is not valid JSON (it is then dropped).
    pub result: Vec<Value>,
    #[serde(alias = "execution_error")]
    pub execution_error: String,
    /// Seconds. AgentBay's backends also spell it `execution_time`.
    #[serde(alias = "execution_time", skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<f64>,
    #[serde(alias = "execution_count", skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    /// Our extension: the structured error. AgentBay's parser ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl BackendOutput {
    /// Reads `data` when it is a JSON object; anything else is not backend JSON.
    /// AgentBay's parser also takes a JSON string that holds the object (double-encoded).
    pub fn parse(data: &str) -> Option<BackendOutput> {
        let value: Value = serde_json::from_str(data).ok()?;
        match value {
            Value::Object(_) => serde_json::from_value(value).ok(),
            Value::String(inner) if inner.trim_start().starts_with('{') => {
                let value: Value = serde_json::from_str(&inner).ok()?;
                value
                    .is_object()
                    .then(|| serde_json::from_value(value).ok())
                    .flatten()
            }
            _ => None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a BackendOutput is always serialisable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_fields_default() {
        let out = BackendOutput::parse(r#"{"stdout":["a"]}"#).unwrap();
        assert_eq!(out.stdout, vec!["a"]);
        assert!(out.result.is_empty());
        assert_eq!(out.error, None);
    }

    #[test]
    fn non_objects_are_not_backend_json() {
        for data in ["42", "\"text\"", "[1]", "not json", "", "\"{oops\""] {
            assert_eq!(BackendOutput::parse(data), None, "{data:?}");
        }
    }

    #[test]
    fn double_encoded_json_is_read() {
        let inner = json!({"stdout": ["hi\n"], "executionCount": 2}).to_string();
        let outer = serde_json::to_string(&inner).unwrap();
        let out = BackendOutput::parse(&outer).unwrap();
        assert_eq!(out.stdout, vec!["hi\n"]);
        assert_eq!(out.execution_count, Some(2));
    }

    #[test]
    fn snake_case_spellings_are_read() {
        let out = BackendOutput::parse(r#"{"execution_time":0.5,"execution_count":3}"#).unwrap();
        assert_eq!(
            (out.execution_time, out.execution_count),
            (Some(0.5), Some(3))
        );
    }

    #[test]
    fn error_summary() {
        assert_eq!(ErrorInfo::new("E", "v").summary(), "E: v");
        assert_eq!(ErrorInfo::new("E", "").summary(), "E");
    }
}
