//! `Code`: AgentBay's class, over any session that answers `callMcpTool`.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::{RequestError, RunRequest};

use crate::local_session::LocalSession;
use crate::session_like::CallMcpTool;
use crate::types::CodeExecutionResult;

/// Runs code in a session: `new Code(session).runCode(code, language, timeoutS?)`.
#[napi]
pub struct Code {
    session: Backend,
}

/// Where runs go: a local session is called in Rust directly; any other session
/// through its JavaScript `callMcpTool`.
#[derive(Clone)]
enum Backend {
    Local(std::sync::Arc<codebay_core::LocalSession>),
    JavaScript(std::sync::Arc<CallMcpTool>),
}

impl Code {
    pub(crate) fn local(session: std::sync::Arc<codebay_core::LocalSession>) -> Code {
        Code {
            session: Backend::Local(session),
        }
    }
}

#[napi]
impl Code {
    /// Wraps any object with a `callMcpTool` method (a LocalSession, a RemoteSession, or
    /// a session of AgentBay's own SDK). Throws a `TypeError` if there is none.
    #[napi(constructor, ts_args_type = "session: SessionLike")]
    pub fn new(env: &Env, session: Unknown) -> Result<Self> {
        if LocalSession::instance_of(env, &session)? {
            // SAFETY: instance_of just confirmed the value wraps a LocalSession.
            let local = unsafe {
                ClassInstance::<LocalSession>::from_napi_value(env.raw(), session.raw())?
            };
            return Ok(Code::local(local.inner.clone()));
        }
        let kind = session.get_type()?;
        if kind != ValueType::Object && kind != ValueType::Function {
            return throw_type_error(
                env,
                &format!(
                    "Code needs a session object with a callMcpTool method, got {}",
                    type_name(kind)
                ),
            );
        }
        // SAFETY: the value was just checked to be an object (or function) of this env.
        let object = unsafe { Object::from_napi_value(env.raw(), session.raw())? };
        let method: Unknown = object.get_named_property("callMcpTool")?;
        if method.get_type()? != ValueType::Function {
            return throw_type_error(
                env,
                "Code needs a session with a callMcpTool(toolName, args) method; this session has none",
            );
        }
        // SAFETY: the property was just checked to be a function of this env.
        let method: Function<
            FnArgs<(String, serde_json::Value, bool)>,
            crate::session_like::ToolReply,
        > = unsafe { Function::from_napi_value(env.raw(), method.raw())? };
        // Bound, because a method called through a threadsafe function would see
        // `this === globalThis` and sessions keep their state on `this`.
        let call_mcp_tool = method
            .bind(object)?
            .build_threadsafe_function()
            .weak::<true>()
            .build()?;
        Ok(Code {
            session: Backend::JavaScript(std::sync::Arc::new(call_mcp_tool)),
        })
    }

    /// Runs `code` and resolves with its result. Rejects (without calling the session)
    /// for an unsupported language (`Error`), a bad `timeoutS` (`RangeError`) or
    /// code that is not a string (`TypeError`). Every other failure resolves with
    /// `success: false`.
    #[napi(
        ts_args_type = "code: string, language: string, timeoutS?: number",
        ts_return_type = "Promise<CodeExecutionResult>"
    )]
    pub fn run_code<'env>(
        &self,
        env: &'env Env,
        code: Unknown,
        language: Unknown,
        timeout_s: Unknown,
    ) -> Result<PromiseRaw<'env, Object<'env>>> {
        let request = match read_request(code, language, timeout_s) {
            Ok(request) => request,
            Err(err) => return reject(env, err),
        };
        let call_mcp_tool = match &self.session {
            Backend::Local(local) => {
                // The run's place in its context's queue is taken here, in call order.
                // The engine enforces the timeout itself, so no client deadline.
                let run = local.run_code(request);
                return env.spawn_future_with_callback(
                    async move { Ok(run.await.into_code_result()) },
                    to_js_result,
                );
            }
            Backend::JavaScript(call_mcp_tool) => call_mcp_tool.clone(),
        };
        env.spawn_future_with_callback(
            async move {
                let deadline = request.session_deadline();
                let call = async {
                    let args = FnArgs::from(("run_code".to_owned(), request.tool_args(), false));
                    let reply = call_mcp_tool.call_async_catch(args).await?;
                    reply.settle().await
                };
                let result = match tokio::time::timeout(deadline, call).await {
                    Err(_) => {
                        codebay_core::CodeExecutionResult::session_timed_out(deadline.as_secs_f64())
                    }
                    Ok(Err(call_error)) => {
                        codebay_core::CodeExecutionResult::call_failed(&reason(&call_error))
                    }
                    Ok(Ok(Err(not_a_result))) => {
                        codebay_core::CodeExecutionResult::call_failed(&not_a_result)
                    }
                    Ok(Ok(Ok(tool))) => codebay_core::CodeExecutionResult::from_tool_result(tool),
                };
                Ok(result)
            },
            to_js_result,
        )
    }
}

/// `timeout_s` is read by hand because only `undefined` means "the default":
/// `null` is a wrong value, as it is for a JavaScript default parameter.
/// The result as a JavaScript object. When `result` is stdout joined, it is joined
/// here, in JavaScript: joining the one chunk of a large output gives back that same
/// string, so the text is held once instead of twice (in `logs.stdout` and `result`).
fn to_js_result<'env>(
    env: &'env Env,
    result: codebay_core::CodeExecutionResult,
) -> Result<Object<'env>> {
    let join_stdout = result.result_is_stdout;
    let value = CodeExecutionResult::from(result);
    // SAFETY: converting an owned value on the env this callback runs on.
    let raw = unsafe { CodeExecutionResult::to_napi_value(env.raw(), value)? };
    // SAFETY: the conversion of a #[napi(object)] struct is an object of this env.
    let mut object = unsafe { Object::from_napi_value(env.raw(), raw)? };
    if join_stdout {
        let logs: Object = object.get_named_property("logs")?;
        let stdout: Object = logs.get_named_property("stdout")?;
        let join: Function<&str, Unknown> = stdout.get_named_property("join")?;
        let joined = join.apply(stdout, "")?;
        object.set_named_property("result", joined)?;
    }
    Ok(object)
}

fn read_request(
    code: Unknown,
    language: Unknown,
    timeout_s: Unknown,
) -> std::result::Result<RunRequest, RequestError> {
    let language = match language.get_type() {
        Ok(ValueType::String) => string_of(&language),
        _ => display_of(&language),
    };
    let code = match code.get_type() {
        Ok(ValueType::String) => string_of(&code),
        Ok(other) => return Err(RequestError::CodeNotString(type_name(other).into())),
        Err(_) => return Err(RequestError::CodeNotString("an unreadable value".into())),
    };
    let timeout_s = match timeout_s.get_type() {
        Ok(ValueType::Undefined) => None,
        // SAFETY: the value was just checked to be a number of this env.
        Ok(ValueType::Number) => Some(
            unsafe { f64::from_napi_value(timeout_s.env(), timeout_s.raw()) }.unwrap_or(f64::NAN),
        ),
        _ => {
            // Check the language first so its error wins, as the SDK's order has it.
            codebay_core::Language::parse(&language)?;
            return Err(RequestError::InvalidTimeout(display_of(&timeout_s)));
        }
    };
    RunRequest::new(code, &language, timeout_s)
}

fn string_of(value: &Unknown) -> String {
    // SAFETY: callers check the value is a string of this env.
    unsafe { String::from_napi_value(value.env(), value.raw()) }.unwrap_or_default()
}

/// `String(value)` as JavaScript would print it, for messages.
fn display_of(value: &Unknown) -> String {
    // SAFETY: coercion of a live value of its own env; a throwing toString is caught below.
    let coerced = value.coerce_to_string();
    match coerced
        .and_then(|s| s.into_utf8())
        .and_then(|s| s.into_owned())
    {
        Ok(s) => s,
        Err(_) => match value.get_type() {
            Ok(kind) => type_name(kind).to_owned(),
            Err(_) => "an unreadable value".to_owned(),
        },
    }
}

fn reject<'env>(env: &'env Env, err: RequestError) -> Result<PromiseRaw<'env, Object<'env>>> {
    let error = Error::new(Status::InvalidArg, err.to_string());
    match err {
        RequestError::UnsupportedLanguage(_) => PromiseRaw::reject(env, JsError::from(error)),
        RequestError::InvalidTimeout(_) => PromiseRaw::reject(env, JsRangeError::from(error)),
        RequestError::CodeNotString(_) => PromiseRaw::reject(env, JsTypeError::from(error)),
    }
}

fn throw_type_error<T>(env: &Env, message: &str) -> Result<T> {
    env.throw_type_error(message, None)?;
    Err(Error::new(Status::PendingException, message.to_owned()))
}

/// The text a session's throw or rejection carries, as `${error.message}` would give.
fn reason(err: &Error) -> String {
    if err.reason.is_empty() {
        "the session threw without a reason".to_owned()
    } else {
        err.reason.clone()
    }
}

fn type_name(kind: ValueType) -> &'static str {
    match kind {
        ValueType::Undefined => "undefined",
        ValueType::Null => "null",
        ValueType::Boolean => "a boolean",
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::Symbol => "a symbol",
        ValueType::Object => "an object",
        ValueType::Function => "a function",
        ValueType::External => "an external",
        ValueType::BigInt => "a bigint",
        _ => "an unknown value",
    }
}
