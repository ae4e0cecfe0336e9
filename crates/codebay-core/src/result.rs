//! From a session's tool result to the `CodeExecutionResult` a caller sees
//! (DESIGN §1.1 and §2).

use serde::Serialize;
use serde_json::Value;

use codebay_protocol::{BackendOutput, ErrorInfo, McpToolResult, MimeBundle};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeExecutionResult {
    pub request_id: String,
    pub success: bool,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<CodeExecutionResultItem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    /// Set, with `result` left empty, when `result` is stdout joined and the caller
    /// said it would join it itself (the addon does it in JavaScript, where the
    /// string can share its memory with `logs.stdout` instead of copying it).
    #[serde(skip)]
    pub result_is_stdout: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Logs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeExecutionResultItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_main_result: Option<bool>,
}

/// Where in an item a text MIME type goes.
type TextField = fn(&mut CodeExecutionResultItem) -> &mut Option<String>;

/// MIME keys whose content is text, and the item field each fills.
const TEXT_MIME: [(&str, TextField); 7] = [
    ("text/plain", |i| &mut i.text),
    ("text/html", |i| &mut i.html),
    ("text/markdown", |i| &mut i.markdown),
    ("image/png", |i| &mut i.png),
    ("image/jpeg", |i| &mut i.jpeg),
    ("image/svg+xml", |i| &mut i.svg),
    ("text/latex", |i| &mut i.latex),
];

/// Charts: a figure's data in E2B's shape (`e2b/chart`, the key E2B's kernels use and
/// the drivers write for a matplotlib figure), then Vega-Lite and Vega specs, newest
/// first. The first that is a non-empty JSON object wins.
const CHART_MIME: [&str; 4] = [
    "e2b/chart",
    "application/vnd.vegalite.v5+json",
    "application/vnd.vegalite.v4+json",
    "application/vnd.vega.v5+json",
];

impl CodeExecutionResult {
    /// `callMcpTool` threw or rejected: the session never answered. `reason` is the
    /// error's string form, as the SDK's `${error}` gives it (`APIError: ...`).
    pub fn call_failed(reason: &str) -> Self {
        CodeExecutionResult {
            error_message: Some(format!("Failed to run code: {reason}")),
            ..Default::default()
        }
    }

    /// The session did not settle before the client-side deadline.
    pub fn session_timed_out(waited_s: f64) -> Self {
        CodeExecutionResult {
            error_message: Some(format!(
                "Failed to run code: the session did not answer within {waited_s} seconds"
            )),
            ..Default::default()
        }
    }

    /// A run that was aborted (an AbortSignal) before the session answered, or before
    /// it started: nothing ran, or what ran was stopped.
    pub fn aborted(request_id: String, started: bool) -> Self {
        let value = if started {
            "The run was aborted."
        } else {
            "The run was aborted before it started."
        };
        CodeExecutionResult::failed(request_id, ErrorInfo::new("AbortError", value))
    }

    /// A run that failed with `error` before any output: empty logs and results.
    pub fn failed(request_id: String, error: ErrorInfo) -> Self {
        CodeExecutionResult {
            request_id,
            error_message: Some(error.summary()),
            logs: Some(Logs::default()),
            results: Some(Vec::new()),
            error: Some(error),
            ..Default::default()
        }
    }

    /// Applies every branch of DESIGN §1.1 to a tool result.
    pub fn from_tool_result(tool: McpToolResult) -> Self {
        let McpToolResult {
            success,
            data,
            error_message,
            request_id,
        } = tool;
        if success {
            return match BackendOutput::parse(&data) {
                Some(out) => from_backend(out, request_id, true, StdoutJoin::Here),
                None => plain_text(data, request_id),
            };
        }
        if error_message.starts_with('{') {
            if let Some(out) = BackendOutput::parse(&error_message) {
                return from_backend(out, request_id, false, StdoutJoin::Here);
            }
        }
        CodeExecutionResult {
            request_id,
            error_message: Some(error_message),
            ..Default::default()
        }
    }
}

impl CodeExecutionResult {
    /// The backend output of a run in this process, mapped as its JSON would be,
    /// except that a `result` that is stdout joined is left for the caller to join
    /// (see `result_is_stdout`).
    pub fn from_backend_output(out: BackendOutput, request_id: String, success: bool) -> Self {
        from_backend(out, request_id, success, StdoutJoin::ByCaller)
    }
}

fn plain_text(data: String, request_id: String) -> CodeExecutionResult {
    CodeExecutionResult {
        request_id,
        success: true,
        result: data.clone(),
        logs: Some(Logs {
            stdout: vec![data.clone()],
            stderr: vec![],
        }),
        results: Some(vec![CodeExecutionResultItem {
            text: Some(data),
            is_main_result: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Who joins stdout when it is the result.
#[derive(Clone, Copy, PartialEq)]
enum StdoutJoin {
    Here,
    ByCaller,
}

fn from_backend(
    out: BackendOutput,
    request_id: String,
    tool_success: bool,
    join: StdoutJoin,
) -> CodeExecutionResult {
    let results: Vec<CodeExecutionResultItem> = out.result.iter().filter_map(parse_item).collect();
    let error = match out.error {
        Some(e) => Some(e),
        None if !out.execution_error.is_empty() => Some(ErrorInfo::new(
            "ExecutionError",
            out.execution_error.clone(),
        )),
        None => None,
    };
    let success = tool_success && error.is_none();
    let error_message = (!success).then(|| match &error {
        _ if !out.execution_error.is_empty() => out.execution_error.clone(),
        Some(e) => e.summary(),
        None => "the code did not run successfully".into(),
    });
    let text = results
        .iter()
        .find(|i| i.is_main_result == Some(true) && i.text.is_some())
        .or_else(|| results.iter().find(|i| i.text.is_some()))
        .and_then(|i| i.text.clone());
    let result_is_stdout = text.is_none() && join == StdoutJoin::ByCaller;
    let result = match text {
        Some(text) => text,
        None if result_is_stdout => String::new(),
        None => out.stdout.concat(),
    };
    CodeExecutionResult {
        request_id,
        success,
        result,
        error_message,
        logs: Some(Logs {
            stdout: out.stdout,
            stderr: out.stderr,
        }),
        results: Some(results),
        error,
        execution_time: out.execution_time,
        execution_count: out.execution_count,
        result_is_stdout,
    }
}

/// An item is a JSON-encoded bundle; an item that is not valid JSON is dropped.
fn parse_item(raw: &Value) -> Option<CodeExecutionResultItem> {
    match raw {
        Value::String(s) => serde_json::from_str(s).ok().map(|b| item_from_bundle(&b)),
        Value::Object(map) => Some(item_from_bundle(map)),
        _ => None,
    }
}

/// The item fields of one MIME bundle: only non-empty values are copied.
pub fn item_from_bundle(bundle: &MimeBundle) -> CodeExecutionResultItem {
    let mut item = CodeExecutionResultItem::default();
    for (mime, field) in TEXT_MIME {
        if let Some(Value::String(s)) = bundle.get(mime) {
            if !s.is_empty() {
                *field(&mut item) = Some(s.clone());
            }
        }
    }
    item.json = bundle
        .get("application/json")
        .filter(|v| !is_empty(v))
        .cloned();
    item.chart = CHART_MIME
        .iter()
        .filter_map(|m| bundle.get(*m))
        .find(|v| v.is_object() && !is_empty(v))
        .cloned();
    // AgentBay's parser also reads the snake_case spelling.
    if let Some(Value::Bool(main)) = bundle
        .get("isMainResult")
        .or_else(|| bundle.get("is_main_result"))
    {
        item.is_main_result = Some(*main);
    }
    item
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(success: bool, data: &str, error_message: &str) -> McpToolResult {
        McpToolResult {
            success,
            data: data.into(),
            error_message: error_message.into(),
            request_id: "req-1".into(),
        }
    }

    fn backend(v: Value) -> String {
        v.to_string()
    }

    #[test]
    fn plain_text_data_becomes_one_main_text_result() {
        let r = CodeExecutionResult::from_tool_result(tool(true, "hello", ""));
        assert_eq!(r.request_id, "req-1");
        assert!(r.success);
        assert_eq!(r.result, "hello");
        assert_eq!(r.error_message, None);
        assert_eq!(
            r.logs,
            Some(Logs {
                stdout: vec!["hello".into()],
                stderr: vec![]
            })
        );
        let items = r.results.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].text.as_deref(), Some("hello"));
        assert_eq!(items[0].is_main_result, Some(true));
        let wire = serde_json::to_value(CodeExecutionResult::from_tool_result(tool(true, "x", "")))
            .unwrap();
        assert!(
            wire.get("errorMessage").is_none(),
            "no errorMessage key on success: {wire}"
        );
    }

    #[test]
    fn every_mime_type_maps_to_its_field() {
        let bundle = json!({
            "text/plain": "t", "text/html": "<b>h</b>", "text/markdown": "# m", "image/png": "UE5H",
            "image/jpeg": "SlBH", "image/svg+xml": "<svg/>", "text/latex": "$x$",
            "application/json": {"a": 1}, "application/vnd.vegalite.v4+json": {"mark": "bar"},
            "isMainResult": true
        });
        let data = backend(json!({ "result": [bundle.to_string()] }));
        let r = CodeExecutionResult::from_tool_result(tool(true, &data, ""));
        let item = &r.results.unwrap()[0];
        assert_eq!(item.text.as_deref(), Some("t"));
        assert_eq!(item.html.as_deref(), Some("<b>h</b>"));
        assert_eq!(item.markdown.as_deref(), Some("# m"));
        assert_eq!(item.png.as_deref(), Some("UE5H"));
        assert_eq!(item.jpeg.as_deref(), Some("SlBH"));
        assert_eq!(item.svg.as_deref(), Some("<svg/>"));
        assert_eq!(item.latex.as_deref(), Some("$x$"));
        assert_eq!(item.json, Some(json!({"a": 1})));
        assert_eq!(item.chart, Some(json!({"mark": "bar"})));
        assert_eq!(item.is_main_result, Some(true));
    }

    #[test]
    fn vegalite_v5_and_vega_v5_are_charts_too() {
        for key in [
            "application/vnd.vegalite.v5+json",
            "application/vnd.vega.v5+json",
        ] {
            let data = backend(json!({ "result": [json!({ key: {"k": key} }).to_string()] }));
            let r = CodeExecutionResult::from_tool_result(tool(true, &data, ""));
            assert_eq!(
                r.results.unwrap()[0].chart,
                Some(json!({"k": key})),
                "{key}"
            );
        }
    }

    #[test]
    fn e2b_chart_data_is_the_chart() {
        let chart = json!({
            "type": "bar", "title": "t", "x_label": null, "x_unit": null, "y_label": null,
            "y_unit": null, "elements": [{"label": "a", "group": "g", "value": 1.0}]
        });
        let bundle = json!({
            "text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": "UE5H",
            "e2b/chart": chart, "isMainResult": false
        });
        let data = backend(json!({ "result": [bundle.to_string()] }));
        let item = &CodeExecutionResult::from_tool_result(tool(true, &data, ""))
            .results
            .unwrap()[0];
        assert_eq!(item.chart, Some(chart));
        assert_eq!(item.png.as_deref(), Some("UE5H"));
        // Only an object is a chart: a note left by a cut value is not.
        for not_chart in [json!("<result of 9 bytes dropped>"), json!([1]), json!({})] {
            let bundle = json!({
                "e2b/chart": not_chart, "application/vnd.vegalite.v5+json": {"mark": "bar"}
            });
            let data = backend(json!({ "result": [bundle.to_string()] }));
            let item = &CodeExecutionResult::from_tool_result(tool(true, &data, ""))
                .results
                .unwrap()[0];
            assert_eq!(item.chart, Some(json!({"mark": "bar"})), "{not_chart}");
        }
    }

    #[test]
    fn empty_values_are_not_copied() {
        let bundle =
            json!({ "text/plain": "", "text/html": "", "application/json": null, "image/png": "" });
        let data = backend(json!({ "result": [bundle.to_string()] }));
        let item = CodeExecutionResult::from_tool_result(tool(true, &data, ""))
            .results
            .unwrap()[0]
            .clone();
        assert_eq!(item, CodeExecutionResultItem::default());
    }

    #[test]
    fn invalid_items_are_dropped() {
        let data = backend(json!({
            "result": ["{not json", json!({"text/plain": "kept"}).to_string(), 5]
        }));
        let items = CodeExecutionResult::from_tool_result(tool(true, &data, ""))
            .results
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].text.as_deref(), Some("kept"));
    }

    #[test]
    fn result_text_prefers_main_then_first_then_stdout() {
        let main = backend(json!({ "stdout": ["s"], "result": [
            json!({"text/plain": "first"}).to_string(),
            json!({"text/plain": "main", "isMainResult": true}).to_string(),
        ]}));
        assert_eq!(
            CodeExecutionResult::from_tool_result(tool(true, &main, "")).result,
            "main"
        );
        let first = backend(json!({ "stdout": ["s"], "result": [
            json!({"text/html": "<p/>"}).to_string(), json!({"text/plain": "first"}).to_string(),
        ]}));
        assert_eq!(
            CodeExecutionResult::from_tool_result(tool(true, &first, "")).result,
            "first"
        );
        let stdout = backend(json!({ "stdout": ["a\n", "b\n"], "stderr": ["e"], "result": [] }));
        let r = CodeExecutionResult::from_tool_result(tool(true, &stdout, ""));
        assert_eq!(r.result, "a\nb\n");
        assert_eq!(
            r.logs,
            Some(Logs {
                stdout: vec!["a\n".into(), "b\n".into()],
                stderr: vec!["e".into()]
            })
        );
    }

    #[test]
    fn structured_error_is_mapped() {
        let data = backend(json!({
            "executionError": "NameError: name 'x' is not defined",
            "error": {"name": "NameError", "value": "name 'x' is not defined", "traceback": "tb"},
            "executionTime": 0.25, "executionCount": 4
        }));
        let r = CodeExecutionResult::from_tool_result(tool(false, "", &data));
        assert!(!r.success);
        assert_eq!(
            r.error_message.as_deref(),
            Some("NameError: name 'x' is not defined")
        );
        assert_eq!(
            r.error,
            Some(ErrorInfo {
                name: "NameError".into(),
                value: "name 'x' is not defined".into(),
                traceback: "tb".into()
            })
        );
        assert_eq!(r.execution_time, Some(0.25));
        assert_eq!(r.execution_count, Some(4));
    }

    #[test]
    fn execution_error_without_structure_becomes_execution_error() {
        let data = backend(json!({ "executionError": "boom" }));
        let r = CodeExecutionResult::from_tool_result(tool(false, "", &data));
        assert_eq!(r.error, Some(ErrorInfo::new("ExecutionError", "boom")));
        assert_eq!(r.error_message.as_deref(), Some("boom"));
    }

    #[test]
    fn json_error_message_forces_failure_even_without_an_error() {
        let data = backend(json!({ "stdout": ["partial"] }));
        let r = CodeExecutionResult::from_tool_result(tool(false, "", &data));
        assert!(!r.success);
        assert_eq!(r.result, "partial");
        assert!(r.error_message.is_some());
    }

    #[test]
    fn success_with_an_execution_error_is_a_failure() {
        let data = backend(json!({ "executionError": "bad" }));
        let r = CodeExecutionResult::from_tool_result(tool(true, &data, ""));
        assert!(!r.success);
    }

    #[test]
    fn plain_failure_keeps_the_message() {
        let r = CodeExecutionResult::from_tool_result(tool(false, "ignored", "quota exceeded"));
        assert_eq!(
            r,
            CodeExecutionResult {
                request_id: "req-1".into(),
                success: false,
                result: String::new(),
                error_message: Some("quota exceeded".into()),
                ..Default::default()
            }
        );
        // A '{' that is not JSON stays a plain message.
        let r = CodeExecutionResult::from_tool_result(tool(false, "", "{oops"));
        assert_eq!(r.error_message.as_deref(), Some("{oops"));
        assert_eq!(r.logs, None);
    }

    #[test]
    fn the_sdk_spellings_are_read() {
        let bundle = json!({"text/plain": "1", "is_main_result": true}).to_string();
        let inner =
            json!({"result": [bundle], "execution_time": 0.5, "execution_count": 2}).to_string();
        // data that is a JSON string holding the backend JSON (double-encoded)
        let data = serde_json::to_string(&inner).unwrap();
        let r = CodeExecutionResult::from_tool_result(tool(true, &data, ""));
        assert_eq!((r.execution_time, r.execution_count), (Some(0.5), Some(2)));
        assert_eq!(r.results.unwrap()[0].is_main_result, Some(true));
        assert_eq!(r.result, "1");
    }

    #[test]
    fn an_aborted_run_is_a_failure_named_abort_error() {
        let r = CodeExecutionResult::aborted("r".into(), false);
        assert!(!r.success);
        assert_eq!(r.error.as_ref().unwrap().name, "AbortError");
        assert_eq!(
            r.error_message.as_deref(),
            Some("AbortError: The run was aborted before it started.")
        );
    }

    #[test]
    fn call_failure_and_deadline_have_empty_request_ids() {
        let r = CodeExecutionResult::call_failed("network down");
        assert_eq!(
            r.error_message.as_deref(),
            Some("Failed to run code: network down")
        );
        assert_eq!(r.request_id, "");
        assert!(!r.success);
        let r = CodeExecutionResult::session_timed_out(31.0);
        assert!(r
            .error_message
            .unwrap()
            .contains("did not answer within 31 seconds"));
    }
}
