//! The tools the server lists, with their JSON schemas, and the checks that turn a
//! call's arguments into what the session takes. The names and argument shapes are
//! `codebay_protocol::tool`'s: the server is a session's tool server over MCP.

use std::sync::Arc;

use codebay_protocol::tool::{
    CREATE_CODE_CONTEXT, LIST_CODE_CONTEXTS, LIST_FILES, READ_FILE, REMOVE_CODE_CONTEXT,
    REMOVE_FILE, RESTART_CODE_CONTEXT, RUN_CODE, TOOLS, WRITE_FILE,
};
use codebay_protocol::{
    ContextIdArgs, CreateContextArgs, FilePathArgs, ReadFileArgs, WriteFileArgs,
};
use rmcp::model::{JsonObject, Tool};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("every schema here is an object"),
    }
}

fn object(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    schema(json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }))
}

fn path_property(what: &str) -> Value {
    json!({ "type": "string", "description": format!("{what}: an absolute path under /home/user or /tmp, or one relative to /home/user") })
}

fn encoding_property(what: &str) -> Value {
    json!({ "type": "string", "enum": ["utf8", "base64"], "description": what })
}

/// Every tool, in `TOOLS` order.
pub fn all() -> Vec<Tool> {
    let tools = vec![
        Tool::new(
            RUN_CODE,
            "Runs Python or JavaScript in this session's sandbox. Each language keeps its state between runs (as a Jupyter kernel does) unless `context` names another code context. The text content is the run's JSON: stdout, stderr, result (MIME bundles), executionError, executionTime, executionCount, error. Output chunks stream as progress notifications while the code runs.",
            object(
                json!({
                    "code": { "type": "string", "description": "The code to run" },
                    "language": { "type": "string", "description": "python (py, python3) or javascript (js, node, nodejs)" },
                    "timeout_s": { "type": "number", "exclusiveMinimum": 0, "description": "Seconds before the run is stopped (default 60)" },
                    "envs": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Environment variables for this run only" },
                    "context": { "type": "string", "description": "The id of a code context made with create_code_context" },
                }),
                &["code", "language"],
            ),
        ),
        Tool::new(
            CREATE_CODE_CONTEXT,
            "Makes a code context: an interpreter of its own, with its own state, in this session's sandbox. Answers the context as JSON ({id, language, cwd}).",
            object(
                json!({
                    "language": { "type": "string", "description": "python or javascript" },
                    "cwd": { "type": "string", "description": "The context's working directory (default /home/user)" },
                }),
                &["language"],
            ),
        ),
        Tool::new(
            LIST_CODE_CONTEXTS,
            "Lists the session's code contexts as a JSON array of {id, language, cwd}.",
            object(json!({}), &[]),
        ),
        Tool::new(
            RESTART_CODE_CONTEXT,
            "Restarts a code context: its state is lost, its id stays.",
            object(json!({ "id": { "type": "string" } }), &["id"]),
        ),
        Tool::new(
            REMOVE_CODE_CONTEXT,
            "Removes a code context and stops its interpreter.",
            object(json!({ "id": { "type": "string" } }), &["id"]),
        ),
        Tool::new(
            WRITE_FILE,
            "Writes (replaces or creates) a file in the sandbox, making missing directories.",
            object(
                json!({
                    "path": path_property("The file"),
                    "data": { "type": "string", "description": "The content, as text or base64 (see encoding)" },
                    "encoding": encoding_property("How data is carried (default utf8)"),
                }),
                &["path", "data"],
            ),
        ),
        Tool::new(
            READ_FILE,
            "Reads a file of the sandbox; the text content is the file, as text or base64.",
            object(
                json!({
                    "path": path_property("The file"),
                    "encoding": encoding_property("utf8 (default; the file must be UTF-8) or base64"),
                }),
                &["path"],
            ),
        ),
        Tool::new(
            LIST_FILES,
            "Lists a directory of the sandbox as a JSON array of entries.",
            object(json!({ "path": path_property("The directory") }), &["path"]),
        ),
        Tool::new(
            REMOVE_FILE,
            "Removes a file or a directory (with what it holds) from the sandbox.",
            object(json!({ "path": path_property("The file or directory") }), &["path"]),
        ),
    ];
    debug_assert!(tools.iter().map(|t| &*t.name).eq(TOOLS));
    tools
}

/// Checks a non-run tool's arguments against its protocol type, so that a wrong type
/// is the caller's error (JSON-RPC invalid params) rather than a tool failure.
pub fn check_args(name: &str, args: &Value) -> Result<(), String> {
    fn fits<T: DeserializeOwned>(name: &str, args: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(args.clone())
            .map(drop)
            .map_err(|e| format!("{name} arguments: {e}"))
    }
    match name {
        CREATE_CODE_CONTEXT => fits::<CreateContextArgs>(name, args),
        LIST_CODE_CONTEXTS => match args {
            Value::Object(map) if map.is_empty() => Ok(()),
            _ => Err(format!("{name} takes no arguments")),
        },
        RESTART_CODE_CONTEXT | REMOVE_CODE_CONTEXT => fits::<ContextIdArgs>(name, args),
        WRITE_FILE => fits::<WriteFileArgs>(name, args),
        READ_FILE => fits::<ReadFileArgs>(name, args),
        LIST_FILES | REMOVE_FILE => fits::<FilePathArgs>(name, args),
        _ => Err(unknown_tool(name)),
    }
}

pub fn unknown_tool(name: &str) -> String {
    format!(
        "Unknown tool: {name}. This server's tools are {}",
        TOOLS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_with_an_object_schema() {
        let tools = all();
        assert_eq!(tools.len(), TOOLS.len());
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn wrong_types_and_unknown_tools_are_refused() {
        assert!(check_args(READ_FILE, &json!({"path": 3}))
            .unwrap_err()
            .contains("read_file"));
        assert!(check_args(LIST_CODE_CONTEXTS, &json!({})).is_ok());
        assert!(check_args("nope", &json!({}))
            .unwrap_err()
            .starts_with("Unknown tool: nope"));
        assert!(check_args(WRITE_FILE, &json!({"path": "/tmp/a", "data": "x"})).is_ok());
    }
}
