//! `Code`: AgentBay's class over any session. The rules are `codebay_core::Code`'s;
//! this file converts JavaScript values to them and results back.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::{Map, Value};

use codebay_core::{Cancel, CodebayError, ErrorCode, ErrorKind, RunControl, RunOptions, Session};

use crate::errors::{self, is};
use crate::js_session::JsSession;
use crate::sink::{Callbacks, JsSink};
use crate::types::{self, CodeContext};

/// Runs code in a session: `new Code(session).runCode(code, language, timeoutS?, options?)`.
#[napi]
pub struct Code {
    inner: codebay_core::Code,
}

impl Code {
    pub(crate) fn wrap(session: Arc<dyn Session>) -> Code {
        Code {
            inner: codebay_core::Code::new(session),
        }
    }
}

/// The keys of `runCode`'s fourth argument.
const RUN_OPTION_NAMES: [&str; 7] = [
    "onStdout", "onStderr", "onResult", "onError", "signal", "envs", "context",
];

#[napi]
impl Code {
    /// Wraps any object with a `callMcpTool` method (a LocalSession, a RemoteSession, or
    /// a session of AgentBay's own SDK). Throws a `TypeError` if there is none.
    #[napi(constructor, ts_args_type = "session: SessionLike")]
    pub fn new(env: &Env, session: Unknown) -> Result<Self> {
        Ok(Code::wrap(session_of(env, session, "Code")?))
    }

    /// Runs `code` and resolves with its result. Rejects (without calling the session)
    /// for an unsupported language (`Error`), a bad `timeoutS` (`RangeError`), code that
    /// is not a string or a bad option (`TypeError`); each error has a `code`. Every
    /// other failure resolves with `success: false`.
    #[napi(
        ts_args_type = "code: string, language: string, timeoutS?: number, options?: RunCodeOptions",
        ts_return_type = "Promise<CodeExecutionResult>"
    )]
    pub fn run_code<'env>(
        &self,
        env: &'env Env,
        code: Unknown,
        language: Unknown,
        timeout_s: Unknown,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, ResultObject>> {
        match self.start(env, code, language, timeout_s, options) {
            Ok(promise) => Ok(promise),
            Err(e) => errors::reject(env, &e),
        }
    }

    /// AgentBay's alias of `runCode`.
    #[napi(
        ts_args_type = "code: string, language: string, timeoutS?: number, options?: RunCodeOptions",
        ts_return_type = "Promise<CodeExecutionResult>"
    )]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        code: Unknown,
        language: Unknown,
        timeout_s: Unknown,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, ResultObject>> {
        self.run_code(env, code, language, timeout_s, options)
    }

    /// AgentBay's alias of `runCode`.
    #[napi(
        ts_args_type = "code: string, language: string, timeoutS?: number, options?: RunCodeOptions",
        ts_return_type = "Promise<CodeExecutionResult>"
    )]
    pub fn execute<'env>(
        &self,
        env: &'env Env,
        code: Unknown,
        language: Unknown,
        timeout_s: Unknown,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, ResultObject>> {
        self.run_code(env, code, language, timeout_s, options)
    }

    /// A new code context: its own interpreter, with its own state, in the session's
    /// sandbox. Rejects for an unsupported language, a bad `cwd`, or past `maxContexts`.
    #[napi(
        ts_args_type = "options: { language: string, cwd?: string }",
        ts_return_type = "Promise<CodeContext>"
    )]
    pub fn create_code_context<'env>(
        &self,
        env: &'env Env,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, CodeContext>> {
        let read = || -> std::result::Result<_, CodebayError> {
            let map = json_object(&options, "createCodeContext")?;
            codebay_core::options::check_keys("createCodeContext", &map, &["language", "cwd"])?;
            let text = |key: &str| match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(format!(
                    "{key} must be a string, got {}",
                    codebay_core::options::json_kind(other)
                ))),
            };
            let language = text("language")?
                .ok_or_else(|| invalid("createCodeContext needs a language".into()))?;
            let cwd = text("cwd")?;
            self.inner.create_context(&language, cwd.as_deref())
        };
        let made = read().map(|made| async move { made.await.map(CodeContext::from) });
        errors::settle_started(env, made)
    }

    /// The session's contexts: each language's default one and those created.
    #[napi(ts_return_type = "Promise<Array<CodeContext>>")]
    pub fn list_code_contexts<'env>(
        &self,
        env: &'env Env,
    ) -> Result<PromiseRaw<'env, Vec<CodeContext>>> {
        let list = self.inner.list_contexts();
        errors::settle(env, async move {
            list.await
                .map(|l| l.into_iter().map(CodeContext::from).collect())
        })
    }

    /// Replaces the context's interpreter: its state is cleared. Runs queued before
    /// this finish first.
    #[napi(
        ts_args_type = "context: CodeContext | string",
        ts_return_type = "Promise<void>"
    )]
    pub fn restart_code_context<'env>(
        &self,
        env: &'env Env,
        context: Unknown,
    ) -> Result<PromiseRaw<'env, ()>> {
        errors::settle_started(
            env,
            context_id(&context).map(|id| self.inner.restart_context(id)),
        )
    }

    /// Ends the context after the runs queued before this; later runs in it fail.
    #[napi(
        ts_args_type = "context: CodeContext | string",
        ts_return_type = "Promise<void>"
    )]
    pub fn remove_code_context<'env>(
        &self,
        env: &'env Env,
        context: Unknown,
    ) -> Result<PromiseRaw<'env, ()>> {
        errors::settle_started(
            env,
            context_id(&context).map(|id| self.inner.remove_context(id)),
        )
    }
}

/// The session behind a JavaScript value: a session of this addon (it carries its
/// engine in its `code`) directly, any other object with `callMcpTool` through it.
/// Throws a `TypeError` naming `class` for anything else.
pub(crate) fn session_of(env: &Env, session: Unknown, class: &str) -> Result<Arc<dyn Session>> {
    let kind = session.get_type()?;
    if kind != ValueType::Object && kind != ValueType::Function {
        return errors::throw(
            env,
            &invalid(format!(
                "{class} needs a session object with a callMcpTool method, got {}",
                type_name(kind)
            )),
        );
    }
    // SAFETY: the value was just checked to be an object (or function) of this env.
    let object = unsafe { Object::from_napi_value(env.raw(), session.raw())? };
    if let Ok(code) = object.get_named_property::<Unknown>("code") {
        if Code::instance_of(env, &code).unwrap_or(false) {
            // SAFETY: instance_of just confirmed the value wraps a Code.
            let code = unsafe { ClassInstance::<Code>::from_napi_value(env.raw(), code.raw())? };
            return Ok(code.inner.session().clone());
        }
    }
    let method: Unknown = object.get_named_property("callMcpTool")?;
    if method.get_type()? != ValueType::Function {
        return errors::throw(env, &invalid(format!(
            "{class} needs a session with a callMcpTool(toolName, args) method; this session has none"
        )));
    }
    // SAFETY: the property was just checked to be a function of this env.
    let method = unsafe { Function::from_napi_value(env.raw(), method.raw())? };
    let id = call_string_method(&object, "getSessionId");
    let api_key = call_string_method(&object, "getAPIKey");
    Ok(Arc::new(JsSession::new(env, object, method, id, api_key)?))
}

impl Code {
    fn start<'env>(
        &self,
        env: &'env Env,
        code: Unknown,
        language: Unknown,
        timeout_s: Unknown,
        options: Unknown,
    ) -> std::result::Result<PromiseRaw<'env, ResultObject>, CodebayError> {
        let language = match language.get_type() {
            Ok(ValueType::String) => string_of(&language),
            _ => display_of(&language),
        };
        let code = match code.get_type() {
            Ok(ValueType::String) => string_of(&code),
            Ok(other) => {
                return Err(invalid(format!(
                    "code must be a string, got {}",
                    type_name(other)
                )))
            }
            Err(_) => {
                return Err(invalid(
                    "code must be a string, got an unreadable value".into(),
                ))
            }
        };
        // Only `undefined` means the default: `null` is a wrong value, as it is for a
        // JavaScript default parameter.
        let timeout_s = match timeout_s.get_type() {
            Ok(ValueType::Undefined) => None,
            // SAFETY: the value was just checked to be a number of this env.
            Ok(ValueType::Number) => Some(
                unsafe { f64::from_napi_value(timeout_s.env(), timeout_s.raw()) }
                    .unwrap_or(f64::NAN),
            ),
            _ => {
                // The language's error wins, as the SDK's order has it.
                self.inner.session().registry().resolve(&language)?;
                return Err(codebay_core::request::invalid_timeout(&display_of(
                    &timeout_s,
                )));
            }
        };
        let (options, callbacks, signal) = read_run_options(env, &options)?;
        if callbacks.is_empty() {
            let mut options = options;
            options.control.sink = None;
            let run = self.inner.run_code(code, &language, timeout_s, options)?;
            // Listened to only once the run is accepted: a refused call leaves nothing on it.
            let cleanup = signal.map(|s| s.listen(env)).transpose()?.flatten();
            return env
                .spawn_future(async move {
                    Ok(ResultObject {
                        result: run.await,
                        cleanup,
                    })
                })
                .map_err(errors::from_napi);
        }
        // The promise is made only once the run is accepted: a deferred dropped unsettled
        // would keep its threadsafe function, and Node, alive. Nothing can settle it before
        // this returns, since settling happens on this thread.
        type Settle = Box<dyn FnOnce(Env) -> Result<ResultObject>>;
        let slot: Rc<Cell<Option<napi::JsDeferred<ResultObject, Settle>>>> =
            Rc::new(Cell::new(None));
        let cleanup_slot: Rc<Cell<Option<SignalCleanup>>> = Rc::new(Cell::new(None));
        let (settle_slot, settle_cleanup) = (slot.clone(), cleanup_slot.clone());
        let sink = JsSink::new(env, callbacks, move |_, result| {
            if let Some(deferred) = settle_slot.take() {
                let cleanup = settle_cleanup.take();
                deferred.resolve(Box::new(move |_| Ok(ResultObject { result, cleanup })));
            }
        })
        .map_err(errors::from_napi)?;
        let mut options = options;
        options.control.sink = Some(sink.clone());
        let run = self.inner.run_code(code, &language, timeout_s, options)?;
        cleanup_slot.set(signal.map(|s| s.listen(env)).transpose()?.flatten());
        let (deferred, promise) = env
            .create_deferred::<ResultObject, Settle>()
            .map_err(errors::from_napi)?;
        slot.set(Some(deferred));
        napi::bindgen_prelude::spawn(async move {
            let result = run.await;
            sink.done(result);
        });
        // SAFETY: the deferred's promise is an object of this env.
        unsafe { PromiseRaw::from_napi_value(env.raw(), promise.raw()) }.map_err(errors::from_napi)
    }
}

/// `runCode`'s options: the callbacks, the signal, `envs`, `context`.
fn read_run_options<'env>(
    env: &'env Env,
    options: &Unknown,
) -> std::result::Result<(RunOptions, Callbacks, Option<PendingSignal<'env>>), CodebayError> {
    let mut run = RunOptions::default();
    let mut callbacks = Callbacks::default();
    match options.get_type() {
        Ok(ValueType::Undefined) | Ok(ValueType::Null) => return Ok((run, callbacks, None)),
        Ok(ValueType::Object) if !errors::is_array(options) => {}
        Ok(ValueType::Object) => {
            return Err(invalid_option(
                "runCode options must be an object, got an array".into(),
            ))
        }
        Ok(other) => {
            return Err(invalid_option(format!(
                "runCode options must be an object, got {}",
                type_name(other)
            )))
        }
        Err(e) => return Err(errors::from_napi(e)),
    }
    // SAFETY: checked to be an object of this env.
    let object =
        unsafe { Object::from_napi_value(env.raw(), options.raw()) }.map_err(errors::from_napi)?;
    let keys: Vec<String> = Object::keys(&object).map_err(errors::from_napi)?;
    let key_map: Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
    codebay_core::options::check_keys("runCode", &key_map, &RUN_OPTION_NAMES)?;
    let property = |key: &str| -> std::result::Result<Option<Unknown>, CodebayError> {
        let value: Unknown = object.get_named_property(key).map_err(errors::from_napi)?;
        Ok(match value.get_type() {
            Ok(ValueType::Undefined) => None,
            _ => Some(value),
        })
    };
    macro_rules! callback {
        ($key:literal) => {
            match property($key)? {
                None => None,
                Some(f) if is(&f, ValueType::Function) => {
                    // SAFETY: checked to be a function of this env.
                    let f: Function<Unknown, Unknown> =
                        unsafe { Function::from_napi_value(env.raw(), f.raw()) }
                            .map_err(errors::from_napi)?;
                    // SAFETY: the same function, with the argument type the sink passes.
                    let typed = unsafe { Function::from_napi_value(env.raw(), f.raw()) }
                        .map_err(errors::from_napi)?;
                    let _ = f;
                    Some(Function::create_ref(&typed).map_err(errors::from_napi)?)
                }
                Some(other) => {
                    return Err(invalid_option(format!(
                        "{} must be a function, got {}",
                        $key,
                        type_name(other.get_type().unwrap_or(ValueType::Unknown))
                    )))
                }
            }
        };
    }
    callbacks.on_stdout = callback!("onStdout");
    callbacks.on_stderr = callback!("onStderr");
    callbacks.on_result = callback!("onResult");
    callbacks.on_error = callback!("onError");
    if let Some(envs) = property("envs")? {
        // SAFETY: a live value of this env.
        let value = unsafe { Value::from_napi_value(env.raw(), envs.raw()) }.map_err(|e| {
            invalid_option(format!("envs must be an object of strings: {}", e.reason))
        })?;
        run.envs = codebay_core::options::string_map("envs", &value)?;
    }
    if let Some(context) = property("context")? {
        run.context = Some(context_of(&context)?);
    }
    let mut pending = None;
    if let Some(signal) = property("signal")? {
        let cancel = Cancel::default();
        pending = check_signal(env, &signal, &cancel)?;
        run.control = RunControl { sink: None, cancel };
    }
    Ok((run, callbacks, pending))
}

/// An AbortSignal: already aborted cancels now; otherwise an `abort` listener cancels
/// later, and is removed when the run settles.
fn check_signal<'env>(
    env: &'env Env,
    signal: &Unknown,
    cancel: &Cancel,
) -> std::result::Result<Option<PendingSignal<'env>>, CodebayError> {
    let not_a_signal = || invalid_option("signal must be an AbortSignal".into());
    if !is(signal, ValueType::Object) {
        return Err(not_a_signal());
    }
    // SAFETY: checked to be an object of this env.
    let object =
        unsafe { Object::from_napi_value(env.raw(), signal.raw()) }.map_err(errors::from_napi)?;
    let aborted: Unknown = object
        .get_named_property("aborted")
        .map_err(errors::from_napi)?;
    let add: Unknown = object
        .get_named_property("addEventListener")
        .map_err(errors::from_napi)?;
    let remove: Unknown = object
        .get_named_property("removeEventListener")
        .map_err(errors::from_napi)?;
    if !is(&aborted, ValueType::Boolean)
        || !is(&add, ValueType::Function)
        || !is(&remove, ValueType::Function)
    {
        return Err(not_a_signal());
    }
    // SAFETY: checked to be a boolean.
    if unsafe { bool::from_napi_value(env.raw(), aborted.raw()) }.unwrap_or(false) {
        cancel.cancel();
        return Ok(None);
    }
    // SAFETY: checked to be functions of this env.
    let add =
        unsafe { Function::from_napi_value(env.raw(), add.raw()) }.map_err(errors::from_napi)?;
    // SAFETY: as above. Typed 'static only so that the reference made from it in
    // `listen` can be kept; the function itself is used during this call only.
    let remove: Function<'static, ListenerArgs<'static>, Unknown<'static>> =
        unsafe { Function::from_napi_value(env.raw(), remove.raw()) }.map_err(errors::from_napi)?;
    Ok(Some(PendingSignal {
        object,
        add,
        remove,
        cancel: cancel.clone(),
    }))
}

/// A signal that is not aborted yet, checked, and not listened to until its run is
/// accepted: a refused call leaves no listener behind.
struct PendingSignal<'env> {
    object: Object<'env>,
    add: Function<'env, ListenerArgs<'env>, Unknown<'env>>,
    remove: Function<'static, ListenerArgs<'static>, Unknown<'static>>,
    cancel: Cancel,
}

impl PendingSignal<'_> {
    /// `signal.addEventListener('abort', ...)`; the cleanup takes it off again.
    fn listen(self, env: &Env) -> std::result::Result<Option<SignalCleanup>, CodebayError> {
        let on_abort = self.cancel;
        let listener = env
            .create_function_from_closure("codebayOnAbort", move |_| {
                on_abort.cancel();
                Ok(())
            })
            .map_err(errors::from_napi)?;
        self.add
            .apply(self.object, FnArgs::from(("abort", listener)))
            .map_err(errors::from_napi)?;
        let remove = self.remove.bind(self.object).map_err(errors::from_napi)?;
        let remove = remove.create_ref().map_err(errors::from_napi)?;
        let listener = listener.create_ref().map_err(errors::from_napi)?;
        Ok(Some(SignalCleanup { remove, listener }))
    }
}

/// `addEventListener` / `removeEventListener`'s arguments: the event and the listener.
type ListenerArgs<'a> = FnArgs<(&'a str, Function<'a, (), ()>)>;

/// Takes the run's abort listener off its signal, so a long-lived signal does not
/// collect one listener per run.
pub struct SignalCleanup {
    remove: FunctionRef<ListenerArgs<'static>, Unknown<'static>>,
    listener: FunctionRef<(), ()>,
}

impl SignalCleanup {
    fn run(self, env: &Env) {
        if let (Ok(remove), Ok(listener)) =
            (self.remove.borrow_back(env), self.listener.borrow_back(env))
        {
            // SAFETY: the listener is a live function of this env; the lifetime is only
            // the shape of the stored reference's argument type.
            let listener: Function<'static, (), ()> = unsafe { std::mem::transmute(listener) };
            let _ = remove.call(FnArgs::from(("abort", listener)));
        }
    }
}

/// A run's result on its way to JavaScript.
pub struct ResultObject {
    result: codebay_core::CodeExecutionResult,
    cleanup: Option<SignalCleanup>,
}

impl ToNapiValue for ResultObject {
    /// When `result` is stdout joined, it is joined here, in JavaScript: joining the one
    /// chunk of a large output gives back that same string, so the text is held once
    /// instead of twice (in `logs.stdout` and `result`).
    unsafe fn to_napi_value(
        raw_env: napi::sys::napi_env,
        value: Self,
    ) -> Result<napi::sys::napi_value> {
        let env = Env::from_raw(raw_env);
        if let Some(cleanup) = value.cleanup {
            cleanup.run(&env);
        }
        let join_stdout = value.result.result_is_stdout;
        // SAFETY: converting an owned value on the env this runs on.
        let raw =
            unsafe { types::CodeExecutionResult::to_napi_value(raw_env, value.result.into())? };
        if join_stdout {
            // SAFETY: the conversion of a #[napi(object)] struct is an object of this env.
            let mut object = unsafe { Object::from_napi_value(raw_env, raw)? };
            let logs: Object = object.get_named_property("logs")?;
            let stdout: Object = logs.get_named_property("stdout")?;
            let join: Function<&str, Unknown> = stdout.get_named_property("join")?;
            let joined = join.apply(stdout, "")?;
            object.set_named_property("result", joined)?;
        }
        Ok(raw)
    }
}

impl TypeName for ResultObject {
    fn type_name() -> &'static str {
        "CodeExecutionResult"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

/// A context given as an object (`{ id, language }`) or as its id.
fn context_of(value: &Unknown) -> std::result::Result<(String, Option<String>), CodebayError> {
    match value.get_type() {
        Ok(ValueType::String) => Ok((string_of(value), None)),
        Ok(ValueType::Object) => {
            // SAFETY: a live value of this env.
            let json = unsafe { Value::from_napi_value(value.env(), value.raw()) }
                .map_err(errors::from_napi)?;
            let id = json
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a context must have a string id".into()))?;
            let language = json
                .get("language")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok((id.to_owned(), language))
        }
        _ => Err(invalid("a context must be a CodeContext or its id".into())),
    }
}

fn context_id(value: &Unknown) -> std::result::Result<String, CodebayError> {
    context_of(value).map(|(id, _)| id)
}

fn json_object(
    value: &Unknown,
    what: &str,
) -> std::result::Result<Map<String, Value>, CodebayError> {
    if !is(value, ValueType::Object) {
        return Err(invalid_option(format!("{what} takes an options object")));
    }
    // SAFETY: a live object of this env.
    match unsafe { Value::from_napi_value(value.env(), value.raw()) } {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid_option(format!("{what} takes an options object"))),
        Err(e) => Err(invalid_option(format!("{what}: {}", e.reason))),
    }
}

/// `object[name]()` as a string, or `''` when there is no such method or it throws.
fn call_string_method(object: &Object, name: &str) -> String {
    let Ok(method) = object.get_named_property::<Unknown>(name) else {
        return String::new();
    };
    if !is(&method, ValueType::Function) {
        return String::new();
    }
    // SAFETY: checked to be a function of this env.
    let Ok(method) =
        (unsafe { Function::<(), Unknown>::from_napi_value(method.env(), method.raw()) })
    else {
        return String::new();
    };
    match method.apply(object, ()) {
        Ok(value) if is(&value, ValueType::String) => string_of(&value),
        _ => String::new(),
    }
}

fn invalid(message: String) -> CodebayError {
    CodebayError::new(ErrorCode::InvalidArgument, ErrorKind::TypeError, message)
}

fn invalid_option(message: String) -> CodebayError {
    CodebayError::new(ErrorCode::InvalidOption, ErrorKind::TypeError, message)
}

fn string_of(value: &Unknown) -> String {
    // SAFETY: callers check the value is a string of this env.
    unsafe { String::from_napi_value(value.env(), value.raw()) }.unwrap_or_default()
}

/// `String(value)` as JavaScript would print it, for messages.
fn display_of(value: &Unknown) -> String {
    errors::js_string(value).unwrap_or_else(|| match value.get_type() {
        Ok(kind) => type_name(kind).to_owned(),
        Err(_) => "an unreadable value".to_owned(),
    })
}

pub fn type_name(kind: ValueType) -> &'static str {
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
