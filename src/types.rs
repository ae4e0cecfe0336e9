//! The JavaScript shapes of DESIGN §1, mirrored from `codebay_core` so that
//! `napi build` writes them into `index.d.ts`.

use napi_derive::napi;

/// What every session returns from a tool call (AgentBay's McpToolResult).
#[napi(object)]
#[derive(Clone)]
pub struct McpToolResult {
    pub success: bool,
    pub data: String,
    pub error_message: String,
    pub request_id: String,
}

/// The outcome of one `runCode` call.
#[napi(object)]
pub struct CodeExecutionResult {
    pub request_id: String,
    pub success: bool,
    /// The main result's text, else the first result's text, else stdout joined.
    pub result: String,
    pub error_message: Option<String>,
    pub logs: Option<CodeExecutionLogs>,
    pub results: Option<Vec<CodeExecutionResultItem>>,
    pub error: Option<CodeExecutionError>,
    /// Seconds.
    pub execution_time: Option<f64>,
    pub execution_count: Option<u32>,
}

/// The run's output chunks, in the order they were written.
#[napi(object)]
pub struct CodeExecutionLogs {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// The structured error of a run that raised, timed out or was killed.
#[napi(object)]
pub struct CodeExecutionError {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// One output of a run, by MIME type.
#[napi(object)]
pub struct CodeExecutionResultItem {
    pub text: Option<String>,
    pub html: Option<String>,
    pub markdown: Option<String>,
    /// Base64.
    pub png: Option<String>,
    /// Base64.
    pub jpeg: Option<String>,
    pub svg: Option<String>,
    pub latex: Option<String>,
    pub json: Option<serde_json::Value>,
    /// A chart's data in E2B's shape (a matplotlib figure's, from `e2b/chart`), or a
    /// Vega-Lite (v4/v5) or Vega (v5) spec.
    #[napi(ts_type = "Chart | VegaSpec")]
    pub chart: Option<serde_json::Value>,
    /// True for the value of the cell's last expression.
    pub is_main_result: Option<bool>,
}

impl From<codebay_core::McpToolResult> for McpToolResult {
    fn from(r: codebay_core::McpToolResult) -> Self {
        McpToolResult {
            success: r.success,
            data: r.data,
            error_message: r.error_message,
            request_id: r.request_id,
        }
    }
}

/// A code context: its own interpreter in the session's sandbox (E2B's shape).
#[napi(object)]
#[derive(Clone)]
pub struct CodeContext {
    pub id: String,
    pub language: String,
    /// The working directory of its interpreter.
    pub cwd: String,
}

impl From<codebay_core::CodeContext> for CodeContext {
    fn from(c: codebay_core::CodeContext) -> Self {
        CodeContext {
            id: c.id,
            language: c.language,
            cwd: c.cwd,
        }
    }
}

/// One chunk of a run's stdout or stderr, as it was written (E2B's `OutputMessage`).
#[napi]
pub struct OutputMessage {
    /// The chunk's text.
    pub line: String,
    /// When it was read, in nanoseconds since the Unix epoch.
    pub timestamp: f64,
    /// True for stderr.
    pub error: bool,
}

#[napi]
impl OutputMessage {
    #[napi(constructor)]
    pub fn new(line: String, timestamp: f64, error: bool) -> Self {
        OutputMessage {
            line,
            timestamp,
            error,
        }
    }

    /// The chunk's text.
    #[napi]
    #[allow(clippy::inherent_to_string)]
    pub fn to_string(&self) -> String {
        self.line.clone()
    }
}

impl From<codebay_core::CodeExecutionResult> for CodeExecutionResult {
    fn from(r: codebay_core::CodeExecutionResult) -> Self {
        CodeExecutionResult {
            request_id: r.request_id,
            success: r.success,
            result: r.result,
            error_message: r.error_message,
            logs: r.logs.map(|l| CodeExecutionLogs {
                stdout: l.stdout,
                stderr: l.stderr,
            }),
            results: r
                .results
                .map(|items| items.into_iter().map(Into::into).collect()),
            error: r.error.map(|e| CodeExecutionError {
                name: e.name,
                value: e.value,
                traceback: e.traceback,
            }),
            execution_time: r.execution_time,
            // A count past u32 would take centuries of runs; saturate rather than wrap.
            execution_count: r
                .execution_count
                .map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
        }
    }
}

impl From<codebay_core::CodeExecutionResultItem> for CodeExecutionResultItem {
    fn from(i: codebay_core::CodeExecutionResultItem) -> Self {
        CodeExecutionResultItem {
            text: i.text,
            html: i.html,
            markdown: i.markdown,
            png: i.png,
            jpeg: i.jpeg,
            svg: i.svg,
            latex: i.latex,
            json: i.json,
            chart: i.chart,
            is_main_result: i.is_main_result,
        }
    }
}
