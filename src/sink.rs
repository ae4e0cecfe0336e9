//! Streaming a run to JavaScript: `onStdout`, `onStderr`, `onResult`, `onError`, and
//! the run's end, all through one threadsafe function, so the callbacks are called in
//! the order the output was written and the promise settles after the last of them.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

use codebay_core::{CodeExecutionResultItem, ErrorInfo, OutputSink};

use crate::types::{CodeExecutionError, OutputMessage};

/// The user's callbacks, each optional.
#[derive(Default)]
pub struct Callbacks {
    pub on_stdout: Option<FunctionRef<OutputMessage, Unknown<'static>>>,
    pub on_stderr: Option<FunctionRef<OutputMessage, Unknown<'static>>>,
    pub on_result: Option<FunctionRef<crate::types::CodeExecutionResultItem, Unknown<'static>>>,
    pub on_error: Option<FunctionRef<CodeExecutionError, Unknown<'static>>>,
}

impl Callbacks {
    pub fn is_empty(&self) -> bool {
        self.on_stdout.is_none()
            && self.on_stderr.is_none()
            && self.on_result.is_none()
            && self.on_error.is_none()
    }
}

pub enum Event {
    Stdout(String, u64),
    Stderr(String, u64),
    Result(Box<CodeExecutionResultItem>),
    Error(ErrorInfo),
    /// The run's end: settles the promise, after every event before it.
    Done(Box<codebay_core::CodeExecutionResult>),
}

type Dispatch = ThreadsafeFunction<Event, (), (), Status, false, true>;

/// Where a streaming run's events go. Weak, so a pending run does not keep Node alive
/// by itself (the sandbox's pipes keep the process busy while it runs).
pub struct JsSink {
    dispatch: Dispatch,
    /// Which events have a callback: the others are not sent to the JavaScript thread.
    wants: [bool; 4],
}

impl JsSink {
    /// `settle` builds the result object and resolves the run's promise; it is called
    /// on the JavaScript thread after every callback before it.
    pub fn new(
        env: &Env,
        callbacks: Callbacks,
        settle: impl FnOnce(&Env, codebay_core::CodeExecutionResult) + 'static,
    ) -> Result<Arc<JsSink>> {
        let wants = [
            callbacks.on_stdout.is_some(),
            callbacks.on_stderr.is_some(),
            callbacks.on_result.is_some(),
            callbacks.on_error.is_some(),
        ];
        let target =
            env.create_function_from_closure::<(), (), _>("codebayDispatch", |_| Ok(()))?;
        let mut settle = Some(settle);
        // A callback that throws, or whose promise rejects, is reported once per run
        // and changes nothing else.
        let reported = Rc::new(Cell::new(false));
        let report = move |reported: &Rc<Cell<bool>>, reason: String| {
            if !reported.replace(true) {
                eprintln!("codebay: a runCode output callback threw, and was ignored: {reason}");
            }
        };
        let dispatch = target
            .build_threadsafe_function::<Event>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |ctx| {
                let env = &ctx.env;
                let outcome = match ctx.value {
                    Event::Stdout(line, at) => call(env, &callbacks.on_stdout, || {
                        OutputMessage::new(line, at as f64, false)
                    }),
                    Event::Stderr(line, at) => call(env, &callbacks.on_stderr, || {
                        OutputMessage::new(line, at as f64, true)
                    }),
                    Event::Result(item) => call(env, &callbacks.on_result, || (*item).into()),
                    Event::Error(e) => call(env, &callbacks.on_error, || CodeExecutionError {
                        name: e.name,
                        value: e.value,
                        traceback: e.traceback,
                    }),
                    Event::Done(result) => {
                        if let Some(settle) = settle.take() {
                            settle(env, *result);
                        }
                        Ok(None)
                    }
                };
                match outcome {
                    Err(thrown) => report(&reported, thrown.reason),
                    Ok(Some(returned)) if crate::js_session::is_promise(env, &returned) => {
                        let reported = reported.clone();
                        // SAFETY: just checked to be a promise of this env.
                        let promise = unsafe { PromiseRaw::<Unknown>::from_napi_value(env.raw(), returned.raw()) };
                        let caught = promise.and_then(|p| {
                            p.catch(move |ctx: CallbackContext<Unknown>| {
                                report(&reported, crate::js_session::string_of(&ctx.value));
                                Ok(())
                            })
                        });
                        if let Err(e) = caught {
                            eprintln!("codebay: a runCode output callback's promise could not be watched: {}", e.reason);
                        }
                    }
                    Ok(_) => {}
                }
                Ok(())
            })?;
        Ok(Arc::new(JsSink { dispatch, wants }))
    }

    fn send(&self, event: Event) {
        self.dispatch
            .call(event, ThreadsafeFunctionCallMode::NonBlocking);
    }

    pub fn done(&self, result: codebay_core::CodeExecutionResult) {
        self.send(Event::Done(Box::new(result)));
    }
}

/// Calls `callback` with what `make` builds; what it returned (a promise, maybe).
fn call<'env, T: ToNapiValue + JsValuesTupleIntoVec>(
    env: &'env Env,
    callback: &Option<FunctionRef<T, Unknown<'static>>>,
    make: impl FnOnce() -> T,
) -> Result<Option<Unknown<'env>>> {
    match callback {
        Some(callback) => {
            let returned = callback.borrow_back(env)?.call(make())?;
            // SAFETY: the value was just returned on this env.
            Ok(Some(unsafe {
                Unknown::from_raw_unchecked(env.raw(), returned.raw())
            }))
        }
        None => Ok(None),
    }
}

impl OutputSink for JsSink {
    fn stdout(&self, chunk: &str, timestamp_ns: u64) {
        if self.wants[0] {
            self.send(Event::Stdout(chunk.to_owned(), timestamp_ns));
        }
    }

    fn stderr(&self, chunk: &str, timestamp_ns: u64) {
        if self.wants[1] {
            self.send(Event::Stderr(chunk.to_owned(), timestamp_ns));
        }
    }

    fn result(&self, item: &CodeExecutionResultItem) {
        if self.wants[2] {
            self.send(Event::Result(Box::new(item.clone())));
        }
    }

    fn error(&self, error: &ErrorInfo) {
        if self.wants[3] {
            self.send(Event::Error(error.clone()));
        }
    }
}
