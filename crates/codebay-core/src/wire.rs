//! The backend JSON a session puts in a successful `run_code` tool result's `data`
//! (DESIGN §2). The local engine writes it; [`crate::result`] reads it from any backend.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One output of a run: MIME type → content, plus `isMainResult`.
pub type MimeBundle = Map<String, Value>;

/// Every field defaults, because remote backends omit what they do not have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendOutput {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// Each item a [`MimeBundle`]: a JSON-encoded string on the wire (kept as a raw value
    /// when reading, since a backend may send one that is not valid JSON; it is then
    /// dropped), an object while the local engine holds it (`to_json` encodes it).
    pub result: Vec<Value>,
    pub execution_error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    /// Our extension: the structured error. AgentBay's parser ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireError {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

impl BackendOutput {
    /// Reads `data` when it is a JSON object; anything else is plain text, not backend JSON.
    pub fn parse(data: &str) -> Option<BackendOutput> {
        let value: Value = serde_json::from_str(data).ok()?;
        if !value.is_object() {
            return None;
        }
        serde_json::from_value(value).ok()
    }

    /// The wire text. Bundles held as objects (as the local engine keeps them) go out
    /// as JSON strings, as DESIGN §2 has it; nothing else is copied on the way.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            stdout: &'a [String],
            stderr: &'a [String],
            result: Vec<Value>,
            execution_error: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            execution_time: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            execution_count: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a WireError>,
        }
        let result = self
            .result
            .iter()
            .map(|item| match item {
                Value::Object(_) => Value::String(item.to_string()),
                other => other.clone(),
            })
            .collect();
        let wire = Wire {
            stdout: &self.stdout,
            stderr: &self.stderr,
            result,
            execution_error: &self.execution_error,
            execution_time: self.execution_time,
            execution_count: self.execution_count,
            error: self.error.as_ref(),
        };
        serde_json::to_string(&wire).expect("a BackendOutput is always serialisable")
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
        assert_eq!(out.execution_error, "");
        assert_eq!(out.error, None);
    }

    #[test]
    fn non_objects_are_not_backend_json() {
        for data in ["42", "\"text\"", "[1]", "not json", ""] {
            assert_eq!(BackendOutput::parse(data), None, "{data:?}");
        }
    }

    #[test]
    fn bundles_held_as_objects_go_out_as_strings() {
        let out = BackendOutput {
            result: vec![json!({"text/plain": "1"})],
            ..Default::default()
        };
        let raw: Value = serde_json::from_str(&out.to_json()).unwrap();
        assert_eq!(raw["result"], json!([r#"{"text/plain":"1"}"#]));
    }

    #[test]
    fn round_trips_with_the_wire_key_names() {
        let mut bundle = MimeBundle::new();
        bundle.insert("text/plain".into(), json!("2"));
        bundle.insert("isMainResult".into(), json!(true));
        let out = BackendOutput {
            stdout: vec!["hi\n".into()],
            result: vec![Value::String(Value::Object(bundle).to_string())],
            execution_time: Some(0.5),
            execution_count: Some(3),
            ..Default::default()
        };
        let text = out.to_json();
        let raw: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["executionError"], json!(""));
        assert_eq!(raw["executionCount"], json!(3));
        assert!(raw["result"][0].is_string());
        assert_eq!(BackendOutput::parse(&text), Some(out));
    }
}
