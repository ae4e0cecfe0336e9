//! Every golden fixture parses into its type and serialises back to the same bytes.

use codebay_protocol::{
    BackendOutput, CodeContext, ContextIdArgs, CreateContextArgs, DriverMessage, DriverRequest,
    FileEntry, FilePathArgs, FileReply, FileRequest, HelperReply, HelperRequest, McpToolResult,
    OutputNotice, ReadFileArgs, RunCodeArgs, SandboxConfig, WriteFileArgs,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

fn lines(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `raw` as `T` and checks it serialises to exactly the same text.
fn round_trip<T: DeserializeOwned + Serialize>(raw: &RawValue, what: &str) {
    let value: T =
        serde_json::from_str(raw.get()).unwrap_or_else(|e| panic!("{what}: {e}\n  {}", raw.get()));
    let again = serde_json::to_string(&value).unwrap();
    assert_eq!(
        again,
        raw.get(),
        "{what} does not round-trip to the same bytes"
    );
}

#[derive(Deserialize)]
struct Tagged<'a> {
    kind: String,
    #[serde(borrow)]
    message: &'a RawValue,
}

/// Calls `check` with each line's kind and message, after checking there are `at_least`.
fn each_tagged(file: &str, at_least: usize, check: impl Fn(&str, &RawValue)) {
    let lines = lines(file);
    assert!(lines.len() >= at_least, "{file} has {} lines", lines.len());
    for line in &lines {
        let t: Tagged = serde_json::from_str(line).unwrap();
        check(&t.kind, t.message);
    }
}

#[test]
fn helper_messages_round_trip() {
    each_tagged("helper.jsonl", 8, |kind, message| match kind {
        "config" => round_trip::<SandboxConfig>(message, "config"),
        "request" => round_trip::<HelperRequest>(message, "request"),
        "reply" => round_trip::<HelperReply>(message, "reply"),
        other => panic!("unknown kind {other}"),
    });
}

#[test]
fn mcp_notices_round_trip() {
    each_tagged("mcp.jsonl", 5, |kind, message| match kind {
        "output_notice" => round_trip::<OutputNotice>(message, "output notice"),
        other => panic!("unknown kind {other}"),
    });
}

#[test]
fn tool_messages_round_trip() {
    each_tagged("tool.jsonl", 1, |kind, message| match kind {
        "run_code" => round_trip::<RunCodeArgs>(message, "run_code"),
        "create_code_context" => round_trip::<CreateContextArgs>(message, "create"),
        "context_id" => round_trip::<ContextIdArgs>(message, "context id"),
        "code_context" => round_trip::<CodeContext>(message, "code context"),
        "tool_result" => round_trip::<McpToolResult>(message, "tool result"),
        "backend" => round_trip::<BackendOutput>(message, "backend"),
        "write_file" => round_trip::<WriteFileArgs>(message, "write_file"),
        "read_file" => round_trip::<ReadFileArgs>(message, "read_file"),
        "file_path" => round_trip::<FilePathArgs>(message, "file path"),
        "file_entries" => round_trip::<Vec<FileEntry>>(message, "file entries"),
        other => panic!("unknown kind {other}"),
    });
}

#[test]
fn file_agent_messages_round_trip() {
    each_tagged("files.jsonl", 10, |kind, message| match kind {
        "request" => round_trip::<FileRequest>(message, "file request"),
        "reply" => round_trip::<FileReply>(message, "file reply"),
        other => panic!("unknown kind {other}"),
    });
}

#[derive(Deserialize)]
struct Case<'a> {
    name: String,
    languages: Vec<String>,
    #[serde(borrow)]
    exchanges: Vec<Exchange<'a>>,
}

#[derive(Deserialize)]
struct Exchange<'a> {
    #[serde(borrow)]
    request: &'a RawValue,
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

#[test]
fn driver_exchanges_round_trip() {
    let lines = lines("driver.jsonl");
    assert!(lines.len() >= 4);
    for line in &lines {
        let case: Case = serde_json::from_str(line).unwrap();
        assert!(!case.languages.is_empty(), "{}", case.name);
        for exchange in &case.exchanges {
            // A request given as a JSON string is sent as that raw text (a bad line).
            if !exchange.request.get().starts_with('"') {
                round_trip::<DriverRequest>(exchange.request, &case.name);
            }
            for (i, message) in exchange.messages.iter().enumerate() {
                round_trip::<DriverMessage>(message, &case.name);
                let parsed: DriverMessage = serde_json::from_str(message.get()).unwrap();
                let last = i + 1 == exchange.messages.len();
                assert_eq!(
                    matches!(parsed, DriverMessage::Reply(_)),
                    last,
                    "{}: exactly the last message is the reply",
                    case.name
                );
            }
        }
    }
}

#[derive(Deserialize)]
struct Encoded<'a> {
    kind: String,
    #[serde(borrow)]
    message: &'a RawValue,
    encoded: Option<String>,
}

/// Round-trips `raw` as `T` and checks that it form-encodes to `encoded`, the bytes
/// the remote session sends.
fn form_round_trip<T: DeserializeOwned + Serialize>(raw: &RawValue, encoded: &Option<String>) {
    round_trip::<T>(raw, "agentbay form");
    let value: T = serde_json::from_str(raw.get()).unwrap();
    let expected = encoded
        .as_deref()
        .expect("a form line has its encoded bytes");
    assert_eq!(serde_urlencoded::to_string(&value).unwrap(), expected);
}

#[test]
fn agentbay_messages_round_trip_and_encode_as_the_sdk_sends_them() {
    use codebay_protocol::agentbay::*;
    let lines = lines("agentbay.jsonl");
    assert!(lines.len() >= 8);
    for line in &lines {
        let l: Encoded = serde_json::from_str(line).unwrap();
        match l.kind.as_str() {
            "query" => form_round_trip::<CommonQuery>(l.message, &l.encoded),
            "create_form" => form_round_trip::<CreateMcpSessionForm>(l.message, &l.encoded),
            "call_form" => form_round_trip::<CallMcpToolForm>(l.message, &l.encoded),
            "release_form" => form_round_trip::<ReleaseMcpSessionForm>(l.message, &l.encoded),
            "envelope" => round_trip::<ApiEnvelope>(l.message, "envelope"),
            "create_data" => round_trip::<CreateMcpSessionData>(l.message, "create data"),
            "call_data" => round_trip::<McpCallData>(l.message, "call data"),
            other => panic!("unknown kind {other}"),
        }
    }
}
