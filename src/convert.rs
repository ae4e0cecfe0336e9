//! JavaScript values read the same way by every session class: an options object as
//! JSON, and a tool call's name and arguments.

use napi::bindgen_prelude::*;
use serde_json::Value;

use codebay_core::options::{range_error, type_error};
use codebay_core::CodebayError;

use crate::errors;

/// An options object (or `undefined`/`null`) as JSON, or the `TypeError`/`RangeError`
/// that names what is wrong with it. `what` is the method, e.g. `LocalSession.create`.
pub fn options_value(
    env: &Env,
    options: &Unknown,
    what: &str,
) -> std::result::Result<Value, CodebayError> {
    match options.get_type() {
        Ok(ValueType::Undefined | ValueType::Null) => Ok(Value::Null),
        Ok(ValueType::Object) if errors::is_array(options) => Err(type_error(format!(
            "{what} takes an options object, got an array"
        ))),
        Ok(ValueType::Object) => {
            if let Some(e) = non_finite_option(env, options) {
                return Err(e);
            }
            // SAFETY: a live object of this env.
            unsafe { Value::from_napi_value(env.raw(), options.raw()) }
                .map_err(|e| type_error(format!("{what} options must be plain data: {}", e.reason)))
        }
        Ok(other) => Err(type_error(format!(
            "{what} takes an options object, got {}",
            crate::code::type_name(other)
        ))),
        Err(e) => Err(type_error(format!(
            "{what} options cannot be read: {}",
            e.reason
        ))),
    }
}

/// JSON has no NaN or Infinity, so a number option that is one is named here, before
/// the conversion would fail with a message that names nothing.
fn non_finite_option(env: &Env, options: &Unknown) -> Option<CodebayError> {
    // SAFETY: a live object of this env.
    let object = unsafe { Object::from_napi_value(env.raw(), options.raw()) }.ok()?;
    for key in Object::keys(&object).ok()? {
        let value: Unknown = object.get_named_property(&key).ok()?;
        if !errors::is(&value, ValueType::Number) {
            continue;
        }
        // SAFETY: checked to be a number of this env.
        let n = unsafe { f64::from_napi_value(env.raw(), value.raw()) }.ok()?;
        if !n.is_finite() {
            return Some(range_error(format!(
                "{key} must be a finite number, got {n}"
            )));
        }
    }
    None
}

/// `callMcpTool(toolName, args)` of every session class: bad input resolves with
/// `refuse`'s failed result (never a throw), good input with what `call` answers.
pub fn call_mcp_tool<'env>(
    env: &'env Env,
    tool_name: &Unknown,
    args: &Unknown,
    refuse: impl FnOnce(String) -> codebay_core::McpToolResult,
    call: impl FnOnce(&str, Value) -> codebay_core::BoxFuture<codebay_core::McpToolResult>,
) -> Result<PromiseRaw<'env, crate::types::McpToolResult>> {
    match tool_call(env, tool_name, args)? {
        Ok((tool_name, args)) => {
            let call = call(&tool_name, args);
            env.spawn_future(async move { Ok(call.await.into()) })
        }
        Err(refusal) => PromiseRaw::resolve(env, refuse(refusal).into()),
    }
}

/// `callMcpTool(toolName, args)` read by hand: a tool server answers bad input with a
/// failed result, never a throw, so what is wrong is the `Err` text.
fn tool_call(
    env: &Env,
    tool_name: &Unknown,
    args: &Unknown,
) -> Result<std::result::Result<(String, Value), String>> {
    let tool_name = match tool_name.get_type()? {
        // SAFETY: just checked to be a string of this env.
        ValueType::String => unsafe { String::from_napi_value(env.raw(), tool_name.raw())? },
        _ => return Ok(Err("The tool name must be a string.".into())),
    };
    let args = match args.get_type()? {
        ValueType::Undefined => Value::Object(Default::default()),
        // SAFETY: converting a live value of this env; a failure is handled below.
        _ => match unsafe { Value::from_napi_value(env.raw(), args.raw()) } {
            Ok(args) => args,
            Err(e) => {
                return Ok(Err(format!(
                    "The arguments of '{tool_name}' must be JSON data: {}.",
                    e.reason
                )))
            }
        },
    };
    Ok(Ok((tool_name, args)))
}
