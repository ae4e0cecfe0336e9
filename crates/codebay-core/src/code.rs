//! `Code`: AgentBay's class over any [`Session`] (DESIGN §1.1). The checks happen when
//! `runCode` is called, before the session is touched; the run is then the session's.

use std::collections::BTreeMap;
use std::sync::Arc;

use codebay_protocol::helper::{valid_cwd, HOME};
use codebay_protocol::CodeContext;

use crate::error::{CodebayError, ErrorCode, ErrorKind};
use crate::request::RunRequest;
use crate::result::CodeExecutionResult;
use crate::session::{BoxFuture, Cancel, RunControl, Session};

/// `runCode`'s fourth argument, as far as the core sees it.
#[derive(Clone, Default)]
pub struct RunOptions {
    pub envs: BTreeMap<String, String>,
    /// A context id; with the context's language when the caller gave a context object.
    pub context: Option<(String, Option<String>)>,
    pub control: RunControl,
}

impl RunOptions {
    /// Options that only carry a cancel token.
    pub fn cancelled_by(cancel: Cancel) -> Self {
        RunOptions {
            control: RunControl { cancel, sink: None },
            ..Default::default()
        }
    }
}

#[derive(Clone)]
pub struct Code {
    session: Arc<dyn Session>,
}

impl Code {
    pub fn new(session: Arc<dyn Session>) -> Code {
        Code { session }
    }

    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }

    /// Checks the call and hands the run to the session, now (so runs queue in call
    /// order). An already-cancelled run never reaches the session.
    pub fn run_code(
        &self,
        code: String,
        language: &str,
        timeout_s: Option<f64>,
        options: RunOptions,
    ) -> Result<BoxFuture<CodeExecutionResult>, CodebayError> {
        let registry = self.session.registry();
        let mut request =
            RunRequest::new(registry, code, language, timeout_s)?.with_envs(options.envs)?;
        if let Some((id, context_language)) = options.context {
            if let Some(given) = context_language {
                let of_context = registry.resolve(&given)?.name.clone();
                if of_context != request.language {
                    return Err(CodebayError::new(
                        ErrorCode::InvalidArgument,
                        ErrorKind::TypeError,
                        format!(
                            "The context {id} runs {of_context}, not {}",
                            request.language
                        ),
                    ));
                }
            }
            request = request.in_context(Some(id));
        }
        self.session.check_run(&request)?;
        if options.control.cancel.is_cancelled() {
            return Ok(Box::pin(async {
                CodeExecutionResult::aborted(String::new(), false)
            }));
        }
        Ok(self.session.run(request, options.control))
    }

    /// A new context: its own interpreter. `cwd` defaults to `/home/user`; a relative
    /// one is taken from there.
    pub fn create_context(
        &self,
        language: &str,
        cwd: Option<&str>,
    ) -> Result<BoxFuture<Result<CodeContext, CodebayError>>, CodebayError> {
        let language = self.session.registry().resolve(language)?.name.clone();
        let cwd = cwd.map(absolute_cwd).transpose()?;
        Ok(self.session.create_context(language, cwd))
    }

    pub fn list_contexts(&self) -> BoxFuture<Result<Vec<CodeContext>, CodebayError>> {
        self.session.list_contexts()
    }

    pub fn restart_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        self.session.restart_context(id)
    }

    pub fn remove_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        self.session.remove_context(id)
    }
}

/// A context's working directory inside the sandbox: absolute, under `/home/user` or
/// `/tmp`, no `..`.
pub fn absolute_cwd(cwd: &str) -> Result<String, CodebayError> {
    let path = if cwd.starts_with('/') {
        cwd.trim_end_matches('/').to_owned()
    } else {
        format!("{HOME}/{}", cwd.trim_end_matches('/'))
    };
    // The kernel's limits on a path and on one of its names.
    let fits = path.len() < 4096 && path.split('/').all(|name| name.len() <= 255);
    if fits && valid_cwd(&path) {
        return Ok(path);
    }
    Err(CodebayError::new(
        ErrorCode::InvalidArgument,
        ErrorKind::RangeError,
        format!("cwd must be a directory under /home/user or /tmp (no '..'), got {cwd:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::CodeExecutionResultItem;
    use crate::session::OutputSink;
    use codebay_protocol::{ErrorInfo, McpToolResult};
    use serde_json::{json, Value};
    use std::sync::Mutex;
    use std::time::Duration;

    type Answer = Box<dyn Fn(&str, &Value) -> AnswerKind + Send + Sync>;

    enum AnswerKind {
        Now(Result<McpToolResult, String>),
        Never,
    }

    /// A session that records its calls and answers with `answer`.
    struct FakeSession {
        calls: Mutex<Vec<(String, Value)>>,
        answer: Answer,
    }

    impl FakeSession {
        fn new(answer: impl Fn(&str, &Value) -> AnswerKind + Send + Sync + 'static) -> Arc<Self> {
            Arc::new(FakeSession {
                calls: Mutex::new(Vec::new()),
                answer: Box::new(answer),
            })
        }
        fn data(data: &'static str) -> Arc<Self> {
            Self::new(move |_, _| {
                AnswerKind::Now(Ok(McpToolResult::ok(data.into(), "req-1".into())))
            })
        }
        fn calls(&self) -> Vec<(String, Value)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Session for FakeSession {
        fn session_id(&self) -> String {
            "fake-1".into()
        }
        fn api_key(&self) -> String {
            "key".into()
        }
        fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>> {
            self.calls.lock().unwrap().push((name.into(), args.clone()));
            match (self.answer)(name, &args) {
                AnswerKind::Now(a) => Box::pin(async move { a }),
                AnswerKind::Never => Box::pin(std::future::pending()),
            }
        }
    }

    fn code(session: &Arc<FakeSession>) -> Code {
        Code::new(session.clone())
    }

    #[tokio::test]
    async fn runs_go_to_run_code_with_exactly_the_sdk_arguments() {
        let session = FakeSession::data("hello");
        let r = code(&session)
            .run_code("print(1)".into(), " PY ", None, RunOptions::default())
            .unwrap()
            .await;
        assert_eq!(
            session.calls(),
            vec![(
                "run_code".into(),
                json!({"code": "print(1)", "language": "python", "timeout_s": 60.0})
            )]
        );
        assert_eq!(
            (r.success, r.result.as_str(), r.request_id.as_str()),
            (true, "hello", "req-1")
        );
    }

    #[tokio::test]
    async fn bad_calls_are_refused_before_the_session_is_called() {
        let session = FakeSession::data("x");
        let c = code(&session);
        let err = c
            .run_code("1".into(), "ruby", Some(1.0), RunOptions::default())
            .err()
            .unwrap();
        assert_eq!(
            err.message,
            "Unsupported language: ruby. Supported languages are 'python' and 'javascript'"
        );
        assert_eq!(err.kind, ErrorKind::Error);
        let err = c
            .run_code("1".into(), "js", Some(0.0), RunOptions::default())
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::RangeError);
        let bad_env = RunOptions {
            envs: [("A=B".into(), "1".into())].into(),
            ..Default::default()
        };
        let err = c.run_code("1".into(), "js", None, bad_env).err().unwrap();
        assert_eq!(
            (err.kind, err.code),
            (ErrorKind::TypeError, ErrorCode::InvalidOption)
        );
        let wrong_context = RunOptions {
            context: Some(("ctx-1".into(), Some("javascript".into()))),
            ..Default::default()
        };
        assert!(c
            .run_code("1".into(), "python", None, wrong_context)
            .is_err());
        assert!(session.calls().is_empty());
    }

    #[tokio::test]
    async fn options_travel_in_the_tool_arguments() {
        let session = FakeSession::data("x");
        let options = RunOptions {
            envs: [("A".into(), "1".into())].into(),
            context: Some(("ctx-7".into(), Some("py".into()))),
            ..Default::default()
        };
        code(&session)
            .run_code("1".into(), "python", Some(2.0), options)
            .unwrap()
            .await;
        assert_eq!(
            session.calls()[0].1,
            json!({"code": "1", "language": "python", "timeout_s": 2.0, "envs": {"A": "1"}, "context": "ctx-7"})
        );
    }

    #[tokio::test]
    async fn a_failed_call_is_reported_in_the_sdk_words() {
        let session =
            FakeSession::new(|_, _| AnswerKind::Now(Err("APIError: Code execution failed".into())));
        let r = code(&session)
            .run_code("1".into(), "py", None, RunOptions::default())
            .unwrap()
            .await;
        assert_eq!(
            r.error_message.as_deref(),
            Some("Failed to run code: APIError: Code execution failed")
        );
        assert_eq!((r.success, r.request_id.as_str()), (false, ""));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_never_answers_fails_at_the_deadline() {
        let session = FakeSession::new(|_, _| AnswerKind::Never);
        let started = tokio::time::Instant::now();
        let r = code(&session)
            .run_code("1".into(), "py", Some(0.5), RunOptions::default())
            .unwrap()
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs_f64(30.5));
        assert!(r
            .error_message
            .unwrap()
            .contains("did not answer within 30.5 seconds"));
    }

    #[tokio::test]
    async fn abort_before_and_during_a_run() {
        let session = FakeSession::new(|_, _| AnswerKind::Never);
        let c = code(&session);
        let cancel = Cancel::default();
        cancel.cancel();
        let options = RunOptions::cancelled_by(cancel);
        let r = c.run_code("1".into(), "py", None, options).unwrap().await;
        assert_eq!(r.error.unwrap().name, "AbortError");
        assert!(session.calls().is_empty(), "an aborted run never starts");
        let cancel = Cancel::default();
        let options = RunOptions::cancelled_by(cancel.clone());
        let run = tokio::spawn(c.run_code("1".into(), "py", None, options).unwrap());
        tokio::task::yield_now().await;
        cancel.cancel();
        let r = run.await.unwrap();
        assert_eq!(r.error.unwrap().value, "The run was aborted.");
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl OutputSink for Recorder {
        fn stdout(&self, chunk: &str, _: u64) {
            self.0.lock().unwrap().push(format!("out:{chunk}"))
        }
        fn stderr(&self, chunk: &str, _: u64) {
            self.0.lock().unwrap().push(format!("err:{chunk}"))
        }
        fn result(&self, item: &CodeExecutionResultItem) {
            self.0
                .lock()
                .unwrap()
                .push(format!("result:{}", item.text.clone().unwrap_or_default()))
        }
        fn error(&self, error: &ErrorInfo) {
            self.0.lock().unwrap().push(format!("error:{}", error.name))
        }
    }

    #[tokio::test]
    async fn a_session_that_cannot_stream_replays_its_output_at_the_end() {
        let data = json!({"stdout": ["a\n", "b\n"], "stderr": ["e\n"], "result": [json!({"text/plain": "2", "isMainResult": true}).to_string()],
                          "executionError": "", "error": {"name": "ValueError", "value": "v", "traceback": ""}}).to_string();
        let session = FakeSession::new(move |_, _| {
            AnswerKind::Now(Ok(McpToolResult::ok(data.clone(), "r".into())))
        });
        let recorder = Arc::new(Recorder::default());
        let options = RunOptions {
            control: RunControl {
                sink: Some(recorder.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        code(&session)
            .run_code("1".into(), "py", None, options)
            .unwrap()
            .await;
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                "out:a\n",
                "out:b\n",
                "err:e\n",
                "result:2",
                "error:ValueError"
            ]
        );
    }

    #[tokio::test]
    async fn context_operations_go_through_the_context_tools() {
        let session = FakeSession::new(|name, args| {
            AnswerKind::Now(Ok(match name {
                "create_code_context" => McpToolResult::ok(json!({"id": "ctx-1", "language": args["language"], "cwd": args.get("cwd").cloned().unwrap_or(json!("/home/user"))}).to_string(), "r".into()),
                "list_code_contexts" => McpToolResult::ok("[]".into(), "r".into()),
                _ => McpToolResult::failed("[ERR_CODEBAY_UNKNOWN_CONTEXT] No code context has the id ctx-9.".into(), "r".into()),
            }))
        });
        let c = code(&session);
        let ctx = c.create_context("PY", Some("proj")).unwrap().await.unwrap();
        assert_eq!(
            ctx,
            CodeContext {
                id: "ctx-1".into(),
                language: "python".into(),
                cwd: "/home/user/proj".into()
            }
        );
        assert_eq!(c.list_contexts().await.unwrap(), vec![]);
        let err = c.remove_context("ctx-9".into()).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                ErrorCode::UnknownContext,
                "No code context has the id ctx-9."
            )
        );
        assert!(c.create_context("cobol", None).is_err());
        assert_eq!(
            c.create_context("py", Some("../etc")).err().unwrap().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(session.calls().len(), 3);
    }

    #[test]
    fn context_directories() {
        assert_eq!(absolute_cwd("proj/a").unwrap(), "/home/user/proj/a");
        assert_eq!(absolute_cwd("/tmp/").unwrap(), "/tmp");
        assert_eq!(absolute_cwd("/home/user").unwrap(), "/home/user");
        let long = "x".repeat(256);
        for bad in [
            "/etc",
            "../x",
            "/home/user/../../etc",
            "/home",
            long.as_str(),
        ] {
            assert!(absolute_cwd(bad).is_err(), "{bad}");
        }
    }
}
