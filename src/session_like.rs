//! Calling a JavaScript session's `callMcpTool` from Rust.

use napi::bindgen_prelude::*;
use napi::sys;
use napi::threadsafe_function::ThreadsafeFunction;
use serde_json::{Map, Value};

/// `callMcpTool(toolName, args, autoGenSession)`, bound to its session, callable from
/// any thread. Weak, so a `Code` kept alive does not keep Node alive.
pub type CallMcpTool = ThreadsafeFunction<
    FnArgs<(String, Value, bool)>,
    ToolReply,
    FnArgs<(String, Value, bool)>,
    Status,
    false,
    true,
>;

/// What `callMcpTool` returned: usually a promise, but a plain value is accepted the
/// way `await` accepts it.
pub enum ToolReply {
    Pending(Promise<LooseToolResult>),
    Ready(LooseToolResult),
}

/// What napi reports when a promise was garbage-collected before it settled: nothing
/// can resolve it any more, so waiting for the deadline would only waste the caller's time.
const DROPPED_PROMISE: &str = "oneshot canceled";

impl ToolReply {
    /// The inner `Err(String)` is a session answer that is not a tool result.
    pub async fn settle(self) -> Result<std::result::Result<codebay_core::McpToolResult, String>> {
        match self {
            ToolReply::Pending(p) => match p.await {
                Ok(v) => Ok(v.0),
                Err(e) if e.reason == DROPPED_PROMISE => Ok(Err(
                    "the session's promise was garbage-collected without settling, so it can never answer".into(),
                )),
                Err(e) => Err(e),
            },
            ToolReply::Ready(v) => Ok(v.0),
        }
    }
}

impl FromNapiValue for ToolReply {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let mut is_promise = false;
        // SAFETY: env and value come from napi for this call; the out-pointer is a live bool.
        check_status!(unsafe { sys::napi_is_promise(env, value, &mut is_promise) })?;
        if is_promise {
            // SAFETY: just checked that value is a promise, on the env it belongs to.
            Ok(ToolReply::Pending(unsafe {
                Promise::from_napi_value(env, value)?
            }))
        } else {
            // SAFETY: same env and value as above.
            Ok(ToolReply::Ready(unsafe {
                LooseToolResult::from_napi_value(env, value)?
            }))
        }
    }
}

/// A tool result read field by field, so that an extra property that JSON cannot
/// hold (a function, a BigInt) does not make a good answer unreadable.
pub struct LooseToolResult(pub std::result::Result<codebay_core::McpToolResult, String>);

const TOOL_RESULT_KEYS: [&str; 4] = ["success", "data", "errorMessage", "requestId"];

impl FromNapiValue for LooseToolResult {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        // SAFETY: env and value come from napi for this call.
        let unknown = unsafe { Unknown::from_napi_value(env, value)? };
        if unknown.get_type()? != ValueType::Object {
            // SAFETY: same env and value; a primitive converts to JSON without failing.
            let plain = unsafe { Value::from_napi_value(env, value) }.unwrap_or(Value::Null);
            return Ok(LooseToolResult(codebay_core::McpToolResult::from_value(
                &plain,
            )));
        }
        // SAFETY: checked above that value is an object.
        let object = unsafe { Object::from_napi_value(env, value)? };
        let mut fields = Map::new();
        for key in TOOL_RESULT_KEYS {
            let field: Unknown = object.get_named_property(key)?;
            // SAFETY: field was just read from a live object on this env.
            let json = unsafe { Value::from_napi_value(env, field.raw()) }.unwrap_or(Value::Null);
            fields.insert(key.to_owned(), json);
        }
        Ok(LooseToolResult(codebay_core::McpToolResult::from_value(
            &Value::Object(fields),
        )))
    }
}
