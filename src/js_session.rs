//! A JavaScript object with `callMcpTool` (an AgentBay session, a RemoteSession, one
//! written by hand) as a `codebay_core::Session`: its method is called on the
//! JavaScript thread, bound to the object, and its answer comes back through a channel.

use std::cell::Cell;
use std::rc::Rc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use codebay_core::{BoxFuture, McpToolResult, Session};

use crate::errors::is;

type Answer = std::result::Result<McpToolResult, String>;

pub struct ToolCall {
    name: String,
    args: Value,
    answer: oneshot::Sender<Answer>,
}

type CallMcpTool = ThreadsafeFunction<ToolCall, (), (), Status, false, true>;

pub struct JsSession {
    call: CallMcpTool,
    id: String,
    api_key: String,
}

/// What napi reports when the answer's promise was garbage-collected before it settled:
/// nothing can resolve it any more, so waiting for the deadline would only waste time.
const DROPPED: &str =
    "the session's promise was garbage-collected without settling, so it can never answer";

impl JsSession {
    /// `method` is the object's `callMcpTool`; `id` and `api_key` are read once, now.
    pub fn new(
        env: &Env,
        object: Object,
        method: Function<FnArgs<(String, Value, bool)>, Unknown<'static>>,
        id: String,
        api_key: String,
    ) -> Result<JsSession> {
        // Bound, because sessions keep their state on `this`.
        let bound: FunctionRef<FnArgs<(String, Value, bool)>, Unknown<'static>> =
            method.bind(object)?.create_ref()?;
        let target =
            env.create_function_from_closure::<(), (), _>("codebayCallMcpTool", |_| Ok(()))?;
        let call = target
            .build_threadsafe_function::<ToolCall>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |ctx| {
                dispatch(&ctx.env, &bound, ctx.value);
                Ok(())
            })?;
        Ok(JsSession { call, id, api_key })
    }
}

/// On the JavaScript thread: calls the method, and sends its answer — a value, a
/// settled promise, or the string form of what it threw (`String(error)`, as the
/// SDK's `${error}` gives it) — to the waiting run. Never fails: a failure is an answer.
fn dispatch(
    env: &Env,
    method: &FunctionRef<FnArgs<(String, Value, bool)>, Unknown<'static>>,
    call: ToolCall,
) {
    let ToolCall { name, args, answer } = call;
    let answer = Rc::new(Cell::new(Some(answer)));
    let send = |answer: &Rc<Cell<Option<oneshot::Sender<Answer>>>>, value: Answer| {
        if let Some(tx) = answer.take() {
            let _ = tx.send(value);
        }
    };
    let returned = method
        .borrow_back(env)
        .and_then(|f| f.call(FnArgs::from((name, args, false))));
    let value = match returned {
        Ok(value) => value,
        Err(thrown) => return send(&answer, Err(reason(thrown.reason))),
    };
    if !is_promise(env, &value) {
        return send(&answer, read_tool_result(env, &value));
    }
    // SAFETY: just checked to be a promise of this env.
    let promise = match unsafe { PromiseRaw::<Unknown>::from_napi_value(env.raw(), value.raw()) } {
        Ok(p) => p,
        Err(e) => return send(&answer, Err(e.reason)),
    };
    let (on_value, on_error) = (answer.clone(), answer.clone());
    let settled = promise
        .then(move |ctx| {
            send(&on_value, read_tool_result(&ctx.env, &ctx.value));
            Ok(())
        })
        .and_then(|p| {
            p.catch(move |ctx: CallbackContext<Unknown>| {
                send(&on_error, Err(string_of(&ctx.value)));
                Ok(())
            })
        });
    if let Err(e) = settled {
        send(&answer, Err(e.reason));
    }
}

fn reason(text: String) -> String {
    if text.is_empty() {
        "the session threw without a reason".into()
    } else {
        text
    }
}

/// `String(value)`, or a description when the value has no string form (a Symbol).
pub fn string_of(value: &Unknown) -> String {
    crate::errors::js_string(value)
        .map(reason)
        .unwrap_or_else(|| "the session threw a value that has no string form".into())
}

pub fn is_promise(env: &Env, value: &Unknown) -> bool {
    let mut is = false;
    // SAFETY: a live value of this env; the out-pointer is a live bool.
    unsafe { napi::sys::napi_is_promise(env.raw(), value.raw(), &mut is) };
    is
}

/// A tool result read field by field, so that an extra property that JSON cannot hold
/// (a function, a BigInt) does not make a good answer unreadable.
fn read_tool_result(env: &Env, value: &Unknown) -> Answer {
    const KEYS: [&str; 4] = ["success", "data", "errorMessage", "requestId"];
    let plain = |v: &Unknown| {
        // SAFETY: a live value of this env.
        unsafe { Value::from_napi_value(env.raw(), v.raw()) }.unwrap_or(Value::Null)
    };
    if !is(value, ValueType::Object) {
        return McpToolResult::from_value(&plain(value));
    }
    // SAFETY: checked above that value is an object.
    let object = match unsafe { Object::from_napi_value(env.raw(), value.raw()) } {
        Ok(o) => o,
        Err(e) => return Err(e.reason),
    };
    let mut fields = Map::new();
    for key in KEYS {
        let field = object
            .get_named_property::<Unknown>(key)
            .map(|f| plain(&f))
            .unwrap_or(Value::Null);
        fields.insert(key.to_owned(), field);
    }
    McpToolResult::from_value(&Value::Object(fields))
}

impl Session for JsSession {
    fn session_id(&self) -> String {
        self.id.clone()
    }

    fn api_key(&self) -> String {
        self.api_key.clone()
    }

    fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Answer> {
        let (answer, rx) = oneshot::channel();
        let call = ToolCall {
            name: name.to_owned(),
            args,
            answer,
        };
        let status = self
            .call
            .call(call, ThreadsafeFunctionCallMode::NonBlocking);
        Box::pin(async move {
            if status != Status::Ok {
                return Err(format!(
                    "the session's JavaScript thread cannot be reached ({status})"
                ));
            }
            rx.await.unwrap_or_else(|_| Err(DROPPED.into()))
        })
    }
}
