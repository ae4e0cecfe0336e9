//! `LocalSession`: one sandbox on this machine, with its code contexts, as a
//! [`Session`]: runs go to the contexts directly; the same operations are served as
//! session tools (`run_code`, the code-context tools) for `callMcpTool`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use codebay_protocol::helper::HOME;
use codebay_protocol::tool::{
    CREATE_CODE_CONTEXT, LIST_CODE_CONTEXTS, LIST_FILES, READ_FILE, REMOVE_CODE_CONTEXT,
    REMOVE_FILE, RESTART_CODE_CONTEXT, RUN_CODE, TOOLS, WRITE_FILE,
};
use codebay_protocol::{
    CodeContext, ContextIdArgs, CreateContextArgs, ErrorInfo, FileEncoding, FileEntry,
    FilePathArgs, McpToolResult, ReadFileArgs, ReadOnlyBind, SandboxConfig, WriteFileArgs,
};
use serde_json::Value;

use super::context::{ContextHandle, Launch, RunJob, RunReport, Shared};
use super::files::FileAgent;
use super::interpreters;
use super::sandbox::Sandbox;
use crate::code::absolute_cwd;
use crate::error::{CodebayError, ErrorCode, ErrorKind};
use crate::files::placed;
use crate::options::{cgroup_parent, SessionOptions, MIB};
use crate::request::RunRequest;
use crate::result::CodeExecutionResult;
use crate::runtime::{Interpreters, Registry};
use crate::session::{BoxFuture, RunControl, Session};

/// Where the engine's own parts are: set by the embedding (the addon), not by users.
#[derive(Debug, Clone)]
pub struct Placement {
    pub sandbox_binary: PathBuf,
    /// Bound read-only at `/opt/codebay/runtimes`.
    pub runtimes_dir: PathBuf,
    /// The Node to put in the sandbox (the addon passes the running one).
    pub node: Option<PathBuf>,
    pub registry: Registry,
}

/// Open files a process of the sandbox may have.
const MAX_OPEN_FILES: u64 = 1024;

/// A session: cheap to clone, every clone the same sandbox.
#[derive(Clone)]
pub struct LocalSession(Arc<Engine>);

struct Engine {
    id: String,
    shared: Arc<Shared>,
    registry: Registry,
    /// Each runtime's driver command line, or why it has none, by canonical language name.
    launches: Launches,
    contexts: Mutex<Contexts>,
    requests: AtomicU64,
    max_contexts: usize,
    files: FileAgent,
}

#[derive(Default)]
struct Contexts {
    /// Every live context by id; a language's default context has the language's name.
    by_id: HashMap<String, Arc<ContextHandle>>,
    /// Contexts made with `create_code_context`, in creation order.
    created: Vec<String>,
}

impl LocalSession {
    /// Builds the sandbox. Fails closed: a kernel without what isolation needs is an
    /// error naming it, never a run without isolation.
    pub async fn create(
        options: &SessionOptions,
        placement: &Placement,
    ) -> Result<LocalSession, CodebayError> {
        sweep_stale_cgroups_once().await;
        let found = find_interpreters(options, placement).await;
        let (launches, driver_binds) =
            launch_table(&placement.registry, &found, &started_by_create(options))?;
        let Found {
            binds: mut read_only_binds,
            env: interpreter_env,
            ..
        } = found;
        read_only_binds.extend(driver_binds);
        read_only_binds.sort();
        read_only_binds.dedup();
        let id = format!("cb-{:012x}", super::random_u64() & 0xffff_ffff_ffff);
        let config = SandboxConfig {
            session_id: id.clone(),
            memory_bytes: options.memory_bytes,
            max_processes: options.max_processes,
            cpu_cores: options.cpu_cores,
            network: options.network,
            workspace_bytes: options.workspace_bytes,
            tmp_bytes: options.tmp_bytes,
            read_only_binds,
            runtimes_dir: placement.runtimes_dir.to_string_lossy().into_owned(),
            // The user's env wins over what the interpreters need.
            env: interpreter_env
                .into_iter()
                .chain(options.env.clone())
                .collect(),
            max_open_files: MAX_OPEN_FILES,
            // Above the largest file system: a full one is ENOSPC, not EFBIG (whose
            // SIGXFSZ would kill a Node interpreter).
            max_file_bytes: options.workspace_bytes.max(options.tmp_bytes) + MIB,
            cgroup_parent: configured_cgroup_parent(options)?,
            resource_limits: options.resource_limits,
        };
        let sandbox = Sandbox::start(&placement.sandbox_binary, &config)
            .await
            .map_err(|e| {
                let code = if e.is_kernel_unsupported() {
                    ErrorCode::KernelUnsupported
                } else if e.is_no_cgroup() {
                    ErrorCode::NoCgroup
                } else {
                    ErrorCode::SandboxFailed
                };
                CodebayError::error(code, e.to_string())
            })?;
        let shared = Arc::new(Shared {
            sandbox,
            closed: AtomicBool::new(false),
            spawns: AtomicU64::new(0),
            output_cap: usize::try_from(options.output_limit_bytes).unwrap_or(usize::MAX),
            memory_bytes: config.memory_bytes,
            file_space_bytes: config.file_space_bytes(),
            max_processes: options.max_processes,
            runtime: tokio::runtime::Handle::current(),
        });
        Ok(LocalSession(Arc::new(Engine {
            id,
            shared,
            registry: placement.registry.clone(),
            launches,
            contexts: Mutex::new(Contexts::default()),
            requests: AtomicU64::new(0),
            max_contexts: options.max_contexts,
            files: FileAgent::default(),
        })))
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn is_closed(&self) -> bool {
        self.0.shared.is_closed()
    }

    /// Whether the sandbox died (its helper or init was killed): nothing can run in it.
    pub fn is_gone(&self) -> bool {
        self.0.shared.sandbox.is_gone()
    }

    fn next_request_id(&self) -> String {
        format!(
            "{}-{}",
            self.0.id,
            self.0.requests.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Starts the default interpreters of `languages` now rather than at their first run.
    pub async fn prewarm(&self, languages: &[String]) -> Result<(), CodebayError> {
        for language in languages {
            let context = self.default_context(language)?;
            context.start().await.map_err(|why| {
                CodebayError::error(
                    ErrorCode::InterpreterNotFound,
                    format!("could not start {language}: {why}"),
                )
            })?;
        }
        Ok(())
    }

    /// Imports `modules` (by canonical language name) in each language's default
    /// interpreter, one run per module, in order. These runs are not the user's: they
    /// bind no name, leave `_` alone and take back the execution count they used, so
    /// the user's first run is still execution count 1 in `<cell-1>`. Their output is
    /// dropped. A module that fails to import is an `ERR_CODEBAY_PRELOAD_FAILED` naming
    /// it and the exception.
    pub async fn preload(
        &self,
        modules: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), CodebayError> {
        for (language, names) in modules {
            for name in names {
                let code = preload_code(language, name).ok_or_else(|| {
                    CodebayError::error(
                        ErrorCode::PreloadFailed,
                        format!("preload: {language} modules cannot be preloaded"),
                    )
                })?;
                let request = RunRequest {
                    code,
                    language: language.clone(),
                    timeout_s: PRELOAD_TIMEOUT_S,
                    envs: BTreeMap::new(),
                    context: None,
                };
                let failed = |why: String| {
                    CodebayError::error(
                        ErrorCode::PreloadFailed,
                        format!(
                            "preload: the {language} module '{name}' could not be imported: {why}"
                        ),
                    )
                };
                let reply = self.start_run(request, RunControl::default()).await;
                let report = reply.report.map_err(|e| failed(e.message))?;
                if !report.success {
                    let why = report
                        .output
                        .error
                        .as_ref()
                        .map(ErrorInfo::summary)
                        .unwrap_or(report.output.execution_error);
                    return Err(failed(why));
                }
            }
        }
        Ok(())
    }

    /// The language's default context, made on first use.
    fn default_context(&self, language: &str) -> Result<Arc<ContextHandle>, CodebayError> {
        let mut contexts = self.0.contexts.lock().expect("contexts lock");
        if let Some(c) = contexts.by_id.get(language) {
            return Ok(c.clone());
        }
        let info = CodeContext {
            id: language.to_owned(),
            language: language.to_owned(),
            cwd: HOME.to_owned(),
        };
        let context = self.spawn_context(info)?;
        contexts.by_id.insert(language.to_owned(), context.clone());
        Ok(context)
    }

    fn spawn_context(&self, info: CodeContext) -> Result<Arc<ContextHandle>, CodebayError> {
        let launch = match self.0.launches.get(&info.language) {
            Some(Ok(launch)) => launch.clone(),
            // Its interpreter was not found when the session was built.
            Some(Err(unavailable)) => return Err(unavailable.clone()),
            None => {
                return Err(self
                    .0
                    .registry
                    .resolve(&info.language)
                    .err()
                    .unwrap_or_else(|| {
                        CodebayError::error(
                            ErrorCode::UnsupportedLanguage,
                            format!("no driver for {}", info.language),
                        )
                    }))
            }
        };
        Ok(Arc::new(ContextHandle::spawn(
            info,
            launch,
            self.0.shared.clone(),
        )))
    }

    fn ensure_open(&self) -> Result<(), CodebayError> {
        match self.is_closed() {
            true => Err(closed_error()),
            false => Ok(()),
        }
    }

    /// A language's default context has the language's name as its id.
    fn is_default_context(&self, id: &str) -> bool {
        self.0.registry.find(id).is_some_and(|r| r.name == id)
    }

    fn context(&self, id: &str) -> Result<Arc<ContextHandle>, CodebayError> {
        if self.is_default_context(id) {
            return self.default_context(id);
        }
        let contexts = self.0.contexts.lock().expect("contexts lock");
        contexts
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| unknown_context(id))
    }

    /// Queues a run in its context now, in call order.
    fn start_run(&self, request: RunRequest, control: RunControl) -> BoxFuture<RunReply> {
        let request_id = self.next_request_id();
        let closed = self.is_closed();
        let context = match request.context.as_deref() {
            None => self.default_context(&request.language),
            Some(id) => self.context(id),
        };
        let submitted = context.and_then(|context| {
            if context.info.language != request.language {
                return Err(CodebayError::error(
                    ErrorCode::InvalidArgument,
                    format!(
                        "The context {} runs {}, not {}.",
                        context.info.id, context.info.language, request.language
                    ),
                ));
            }
            Ok(context.submit(RunJob {
                code: request.code,
                timeout_s: request.timeout_s,
                envs: request.envs,
                sink: control.sink,
                cancel: control.cancel.clone(),
            }))
        });
        let cancel = control.cancel;
        Box::pin(async move {
            if closed {
                return RunReply {
                    request_id,
                    report: Err(closed_error()),
                };
            }
            let (mut report, started) = match submitted {
                Ok(queued) => queued,
                Err(e) => {
                    return RunReply {
                        request_id,
                        report: Err(e),
                    }
                }
            };
            let gone = |_| unknown_context("(removed while the run was queued)");
            // An abort while the run waits for its turn answers at once; the context's
            // task then skips it. Once it began, the task stops it and answers.
            let report = tokio::select! {
                biased;
                r = &mut report => r.map_err(gone),
                _ = cancel.cancelled() => {
                    if started.load(Ordering::SeqCst) {
                        report.await.map_err(gone)
                    } else {
                        Ok(RunReport::failure(ErrorInfo::new("AbortError", "The run was aborted before it started.")))
                    }
                }
            };
            RunReply { request_id, report }
        })
    }

    fn create_code_context(
        &self,
        language: &str,
        cwd: Option<&str>,
    ) -> Result<CodeContext, CodebayError> {
        self.ensure_open()?;
        let language = self.0.registry.resolve(language)?.name.clone();
        let cwd = match cwd {
            Some(cwd) => absolute_cwd(cwd)?,
            None => HOME.to_owned(),
        };
        let mut contexts = self.0.contexts.lock().expect("contexts lock");
        if contexts.created.len() >= self.0.max_contexts {
            return Err(CodebayError::error(ErrorCode::ContextLimit, format!(
                "This session already has {} code contexts, its limit (the maxContexts option); remove one first.",
                self.0.max_contexts
            )));
        }
        let id = format!("ctx-{:012x}", super::random_u64() & 0xffff_ffff_ffff);
        let info = CodeContext {
            id: id.clone(),
            language,
            cwd,
        };
        let context = self.spawn_context(info.clone())?;
        contexts.by_id.insert(id.clone(), context);
        contexts.created.push(id);
        Ok(info)
    }

    fn list_code_contexts(&self) -> Vec<CodeContext> {
        let contexts = self.0.contexts.lock().expect("contexts lock");
        let defaults = self.0.registry.runtimes().iter().map(|r| CodeContext {
            id: r.name.clone(),
            language: r.name.clone(),
            cwd: HOME.to_owned(),
        });
        defaults
            .chain(
                contexts
                    .created
                    .iter()
                    .filter_map(|id| contexts.by_id.get(id))
                    .map(|c| c.info.clone()),
            )
            .collect()
    }

    fn restart_code_context(&self, id: &str) -> Result<BoxFuture<()>, CodebayError> {
        self.ensure_open()?;
        Ok(self.context(id)?.restart())
    }

    fn remove_code_context(&self, id: &str) -> Result<BoxFuture<()>, CodebayError> {
        self.ensure_open()?;
        if self.is_default_context(id) {
            return Err(CodebayError::new(
                ErrorCode::InvalidArgument,
                ErrorKind::TypeError,
                format!(
                    "The default {id} context cannot be removed; restart it to clear its state."
                ),
            ));
        }
        let context = {
            let mut contexts = self.0.contexts.lock().expect("contexts lock");
            let context = contexts
                .by_id
                .remove(id)
                .ok_or_else(|| unknown_context(id))?;
            contexts.created.retain(|c| c != id);
            context
        };
        Ok(context.remove())
    }

    /// The session as a tool server: never fails, every problem is a failed result.
    /// A run's place in its context's queue is taken now, when called.
    pub fn call_tool_now(&self, name: &str, args: &Value) -> BoxFuture<McpToolResult> {
        let request_id = self.next_request_id();
        let registry = &self.0.registry;
        let failed = |e: CodebayError, request_id: String| -> BoxFuture<McpToolResult> {
            Box::pin(async move { McpToolResult::failed(e.to_tool_message(), request_id) })
        };
        let json_ok = |data: String, request_id: String| -> BoxFuture<McpToolResult> {
            Box::pin(async move { McpToolResult::ok(data, request_id) })
        };
        match name {
            RUN_CODE => match RunRequest::from_tool_args(registry, args) {
                Ok(request) => {
                    let run = self.start_run(request, RunControl::default());
                    Box::pin(async move { run.await.into_tool_result() })
                }
                Err(e) => failed(e, request_id),
            },
            CREATE_CODE_CONTEXT => match parse_args::<CreateContextArgs>(name, args)
                .and_then(|a| self.create_code_context(&a.language, a.cwd.as_deref()))
            {
                Ok(info) => json_ok(
                    serde_json::to_string(&info).expect("serialises"),
                    request_id,
                ),
                Err(e) => failed(e, request_id),
            },
            LIST_CODE_CONTEXTS => json_ok(
                serde_json::to_string(&self.list_code_contexts()).expect("serialises"),
                request_id,
            ),
            RESTART_CODE_CONTEXT | REMOVE_CODE_CONTEXT => {
                let operation = parse_args::<ContextIdArgs>(name, args).and_then(|a| {
                    if name == RESTART_CODE_CONTEXT {
                        self.restart_code_context(&a.id)
                    } else {
                        self.remove_code_context(&a.id)
                    }
                });
                match operation {
                    Ok(done) => Box::pin(async move {
                        done.await;
                        McpToolResult::ok("{}".into(), request_id)
                    }),
                    Err(e) => failed(e, request_id),
                }
            }
            WRITE_FILE | READ_FILE | LIST_FILES | REMOVE_FILE => {
                let session = self.clone();
                let (name, args) = (name.to_owned(), args.clone());
                Box::pin(async move {
                    match session.file_tool(&name, &args).await {
                        Ok(data) => McpToolResult::ok(data, request_id),
                        Err(e) => McpToolResult::failed(e.to_tool_message(), request_id),
                    }
                })
            }
            other => failed(
                CodebayError::error(
                    ErrorCode::ToolFailed,
                    format!(
                        "Unknown tool '{other}'. This session offers: {}.",
                        TOOLS.join(", ")
                    ),
                ),
                request_id,
            ),
        }
    }

    /// A file tool's answer (`data`): the file in the encoding asked for, a listing as
    /// JSON, or `{}`.
    async fn file_tool(&self, name: &str, args: &Value) -> Result<String, CodebayError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        match name {
            WRITE_FILE => {
                let a = parse_args::<WriteFileArgs>(name, args)?;
                let data = match a.encoding.unwrap_or_default() {
                    FileEncoding::Utf8 => a.data.into_bytes(),
                    FileEncoding::Base64 => b64.decode(a.data.trim()).map_err(|e| {
                        CodebayError::new(
                            ErrorCode::InvalidArgument,
                            ErrorKind::TypeError,
                            format!("{name}: data is not base64: {e}"),
                        )
                    })?,
                };
                self.write_file(placed(&a.path)?, data).await?;
                Ok("{}".into())
            }
            READ_FILE => {
                let a = parse_args::<ReadFileArgs>(name, args)?;
                let data = self.read_file(placed(&a.path)?).await?;
                match a.encoding.unwrap_or_default() {
                    FileEncoding::Base64 => Ok(b64.encode(data)),
                    FileEncoding::Utf8 => String::from_utf8(data).map_err(|_| {
                        CodebayError::new(
                            ErrorCode::InvalidArgument,
                            ErrorKind::TypeError,
                            format!(
                                "{}: the file is not UTF-8 text; read it with encoding 'base64'",
                                a.path
                            ),
                        )
                    }),
                }
            }
            LIST_FILES => {
                let a = parse_args::<FilePathArgs>(name, args)?;
                let entries = self.list_files(placed(&a.path)?).await?;
                Ok(serde_json::to_string(&entries).expect("serialises"))
            }
            _ => {
                let a = parse_args::<FilePathArgs>(name, args)?;
                self.remove_file(placed(&a.path)?).await?;
                Ok("{}".into())
            }
        }
    }

    /// A failed result for a call that could not even be read (no tool name, arguments
    /// that are not JSON), numbered like any other answer.
    pub fn refuse(&self, message: String) -> McpToolResult {
        McpToolResult::failed(message, self.next_request_id())
    }

    /// Kills every process, removes the cgroups and the workspace (a tmpfs of the
    /// sandbox's own mount namespace). Idempotent.
    pub async fn close(&self) {
        self.0.shared.closed.store(true, Ordering::SeqCst);
        self.0.shared.sandbox.close().await;
    }
}

impl Session for LocalSession {
    fn session_id(&self) -> String {
        self.0.id.clone()
    }

    fn api_key(&self) -> String {
        String::new()
    }

    fn registry(&self) -> &Registry {
        &self.0.registry
    }

    fn call_tool(&self, name: &str, args: Value) -> BoxFuture<Result<McpToolResult, String>> {
        let call = self.call_tool_now(name, &args);
        Box::pin(async move { Ok(call.await) })
    }

    /// Directly, without the JSON of the wire: a large output is not encoded and
    /// parsed again, and the output streams to the sink as it comes.
    /// Display results stream as they happen; the main result and the error reach the
    /// sink when the run ends.
    fn run(&self, request: RunRequest, control: RunControl) -> BoxFuture<CodeExecutionResult> {
        let sink = control.sink.clone();
        let run = self.start_run(request, control);
        Box::pin(async move {
            let result = run.await.into_code_result();
            if let Some(sink) = sink {
                let main = result
                    .results
                    .iter()
                    .flatten()
                    .find(|i| i.is_main_result == Some(true));
                if let Some(main) = main {
                    sink.result(main);
                }
                if let Some(error) = &result.error {
                    sink.error(error);
                }
            }
            result
        })
    }

    fn create_context(
        &self,
        language: String,
        cwd: Option<String>,
    ) -> BoxFuture<Result<CodeContext, CodebayError>> {
        let made = self.create_code_context(&language, cwd.as_deref());
        Box::pin(async move { made })
    }

    fn list_contexts(&self) -> BoxFuture<Result<Vec<CodeContext>, CodebayError>> {
        let list = self.ensure_open().map(|()| self.list_code_contexts());
        Box::pin(async move { list })
    }

    fn restart_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        let done = self.restart_code_context(&id);
        Box::pin(async move {
            done?.await;
            Ok(())
        })
    }

    fn remove_context(&self, id: String) -> BoxFuture<Result<(), CodebayError>> {
        let done = self.remove_code_context(&id);
        Box::pin(async move {
            done?.await;
            Ok(())
        })
    }

    fn write_file(&self, path: String, data: Vec<u8>) -> BoxFuture<Result<(), CodebayError>> {
        let engine = self.0.clone();
        Box::pin(async move { engine.files.write(&engine.shared, path, data).await })
    }

    fn read_file(&self, path: String) -> BoxFuture<Result<Vec<u8>, CodebayError>> {
        let engine = self.0.clone();
        Box::pin(async move { engine.files.read(&engine.shared, path).await })
    }

    fn list_files(&self, path: String) -> BoxFuture<Result<Vec<FileEntry>, CodebayError>> {
        let engine = self.0.clone();
        Box::pin(async move { engine.files.list(&engine.shared, path).await })
    }

    fn remove_file(&self, path: String) -> BoxFuture<Result<(), CodebayError>> {
        let engine = self.0.clone();
        Box::pin(async move { engine.files.remove(&engine.shared, path).await })
    }

    fn file_exists(&self, path: String) -> BoxFuture<Result<bool, CodebayError>> {
        let engine = self.0.clone();
        Box::pin(async move { engine.files.exists(&engine.shared, path).await })
    }

    fn close(&self) -> BoxFuture<()> {
        let session = self.clone();
        Box::pin(async move { session.close().await })
    }
}

/// What a run gives back before it becomes a tool result or a `CodeExecutionResult`.
pub struct RunReply {
    pub request_id: String,
    /// An error when the run could not be queued (a closed session, an unknown context).
    pub report: Result<RunReport, CodebayError>,
}

impl RunReply {
    /// The wire form (DESIGN §2): the backend JSON in `data`, or in `errorMessage`
    /// when the run failed; result bundles as JSON-encoded strings.
    pub fn into_tool_result(self) -> McpToolResult {
        match self.report {
            // A run that could not be queued fails like a run, so that every session
            // kind reports it the same way.
            Err(e) => {
                let RunReport { output, .. } = RunReport::failure(run_error(e));
                McpToolResult::failed(output.to_json(), self.request_id)
            }
            Ok(RunReport {
                success,
                mut output,
            }) => {
                for item in output.result.iter_mut() {
                    if item.is_object() {
                        *item = Value::String(item.to_string());
                    }
                }
                match success {
                    true => McpToolResult::ok(output.to_json(), self.request_id),
                    false => McpToolResult::failed(output.to_json(), self.request_id),
                }
            }
        }
    }

    /// What `Code.runCode` resolves with, without the JSON round trip of the wire
    /// form: a large output is not encoded and parsed again.
    pub fn into_code_result(self) -> CodeExecutionResult {
        match self.report {
            Err(e) => CodeExecutionResult::failed(self.request_id, run_error(e)),
            Ok(RunReport { success, output }) => {
                CodeExecutionResult::from_backend_output(output, self.request_id, success)
            }
        }
    }
}

/// How long importing one preloaded module may take.
const PRELOAD_TIMEOUT_S: f64 = 120.0;

/// The run that imports `module` in `language`'s interpreter, or None when the language
/// has no preload. The Python run decrements the driver's execution count (`_State.count`
/// in the frame that called the cell), so that it is not one of the user's runs; a
/// driver without that counter only leaves the count one higher.
fn preload_code(language: &str, module: &str) -> Option<String> {
    if language != "python" || !crate::options::is_module_name(module) {
        return None;
    }
    let module = serde_json::to_string(module).expect("a string serialises");
    Some(format!(
        r#"def __codebay_preload(name):
    import importlib, sys
    importlib.import_module(name)
    frame = sys._getframe(1)
    while frame is not None:
        state = frame.f_globals.get('_State')
        if frame.f_globals is not globals() and isinstance(getattr(state, 'count', None), int):
            state.count -= 1
            break
        frame = frame.f_back
try:
    __codebay_preload({module})
finally:
    del __codebay_preload
"#
    ))
}

/// Why a run could not be queued, as a run's error.
fn run_error(e: CodebayError) -> ErrorInfo {
    let name = match e.code {
        ErrorCode::SessionClosed => "SessionClosed",
        ErrorCode::InterpreterNotFound => "InterpreterNotFound",
        _ => "ContextError",
    };
    ErrorInfo::new(name, e.message)
}

fn closed_error() -> CodebayError {
    CodebayError::error(ErrorCode::SessionClosed, "The session is closed.")
}

fn unknown_context(id: &str) -> CodebayError {
    CodebayError::error(
        ErrorCode::UnknownContext,
        format!(
            "No code context has the id {id} in this session (it was removed, or never existed)."
        ),
    )
}

fn parse_args<T: serde::de::DeserializeOwned>(tool: &str, args: &Value) -> Result<T, CodebayError> {
    serde_json::from_value(args.clone()).map_err(|e| {
        CodebayError::new(
            ErrorCode::InvalidArgument,
            ErrorKind::TypeError,
            format!("{tool} arguments: {e}"),
        )
    })
}

/// How old an empty session cgroup must be to count as a dead session's: a session
/// being built has its directories a few milliseconds before its init.
const STALE_CGROUP_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Once per process, before its first sandbox: the cgroups of sessions whose helpers
/// were all killed at once (nothing was left to remove them) are removed.
async fn sweep_stale_cgroups_once() {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let _ = tokio::task::spawn_blocking(|| {
                codebay_sandbox::cgroup::sweep_stale(STALE_CGROUP_AGE)
            })
            .await;
        })
        .await;
}

/// `cgroupParent`, else `CODEBAY_CGROUP_PARENT` (checked as the option is).
fn configured_cgroup_parent(options: &SessionOptions) -> Result<Option<String>, CodebayError> {
    if let Some(parent) = &options.cgroup_parent {
        return Ok(Some(parent.clone()));
    }
    match std::env::var("CODEBAY_CGROUP_PARENT") {
        Ok(p) if !p.is_empty() => {
            cgroup_parent(&Value::String(p))
                .map(Some)
                .map_err(|e| CodebayError {
                    message: format!("CODEBAY_CGROUP_PARENT: {}", e.message),
                    ..e
                })
        }
        _ => Ok(None),
    }
}

/// What the host has for the interpreters the registry's runtimes need: each found one
/// as the sandbox shows it, with what to bind and the environment it needs; each missing
/// one with why.
#[derive(Debug, Default)]
struct Found {
    interpreters: Interpreters,
    binds: Vec<ReadOnlyBind>,
    env: BTreeMap<String, String>,
    missing: BTreeMap<&'static str, String>,
}

/// Each runtime's driver command line, or the error its runs (and the creation of its
/// contexts) fail with, by canonical language name.
type Launches = HashMap<String, Result<Launch, CodebayError>>;

/// The languages `create()` starts an interpreter of (`prewarm`, which holds the
/// languages of `preload` when the options came from JavaScript, and `preload`'s).
fn started_by_create(options: &SessionOptions) -> Vec<String> {
    let mut languages = options.pool.prewarm.clone();
    languages.extend(options.pool.preload.keys().cloned());
    languages
}

/// Looks for every interpreter the registry's runtimes need, off the runtime's I/O
/// worker. A missing one is not an error here: only the runtimes that need it are
/// unavailable ([`launch_table`]).
async fn find_interpreters(options: &SessionOptions, placement: &Placement) -> Found {
    let needs: Vec<&'static str> = placement
        .registry
        .runtimes()
        .iter()
        .flat_map(|r| r.needs.iter().copied())
        .collect();
    let mut found = Found::default();
    let mut take =
        |name: &'static str, probed: Result<interpreters::Interpreter, String>| match probed {
            Ok(interpreter) => {
                found
                    .interpreters
                    .executables
                    .insert(name, interpreter.executable);
                found.binds.extend(interpreter.binds);
                found.env.extend(interpreter.env);
            }
            Err(why) => {
                found.missing.insert(name, why);
            }
        };
    if needs.contains(&"python") {
        let python = interpreters::python(options.python.as_deref()).await;
        take("python", python.map_err(|e| e.to_string()));
    }
    if needs.contains(&"node") {
        let asked = placement.node.clone();
        let node = tokio::task::spawn_blocking(move || interpreters::node(asked.as_deref()))
            .await
            .map_err(|e| format!("no node interpreter found: the probe failed: {e}"))
            .and_then(|probed| probed.map_err(|e| e.to_string()));
        take("node", node);
    }
    found
}

/// How each runtime's driver starts. A runtime whose interpreter is missing fails
/// `create()` when `create()` starts it (`started_now`: `prewarm`, `preload`);
/// otherwise only its runs fail, naming what is missing, and the session serves the
/// other languages. Also the driver paths to bind for the runtimes that can start.
fn launch_table(
    registry: &Registry,
    found: &Found,
    started_now: &[String],
) -> Result<(Launches, Vec<ReadOnlyBind>), CodebayError> {
    let mut launches = Launches::new();
    let mut binds = Vec::new();
    for runtime in registry.runtimes() {
        let name = &runtime.name;
        let argv = match runtime.needs.iter().find_map(|n| found.missing.get(n)) {
            Some(why) => Err(why.clone()),
            None => (runtime.command)(&found.interpreters).map_err(|why| format!("{name}: {why}")),
        };
        let launch = match argv {
            Ok(argv) => {
                binds.extend(
                    runtime
                        .read_only_paths
                        .iter()
                        .map(|p| ReadOnlyBind::same(&p.to_string_lossy())),
                );
                Ok(Launch {
                    argv,
                    env: runtime.env.clone(),
                })
            }
            Err(why) if started_now.contains(name) => {
                return Err(CodebayError::error(
                    ErrorCode::InterpreterNotFound,
                    format!(
                        "{why} (create() starts {name} for the prewarm option, whose default is ['python'], \
                         or for preload; a session that runs no {name} can leave it out, e.g. prewarm: [])"
                    ),
                ))
            }
            Err(why) => Err(CodebayError::error(
                ErrorCode::InterpreterNotFound,
                format!("{name} is not available in this session: {why} (looked for when the session was created)"),
            )),
        };
        launches.insert(name.clone(), launch);
    }
    Ok((launches, binds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with node and without python.
    fn without_python() -> Found {
        let mut found = Found::default();
        found
            .interpreters
            .executables
            .insert("node", "/usr/bin/node".into());
        found.missing.insert(
            "python",
            "no python interpreter found: python3 is not installed or not on PATH".into(),
        );
        found
    }

    #[test]
    fn a_missing_interpreter_leaves_the_other_languages_runnable() {
        let registry = Registry::default();
        for started_now in [vec![], vec!["javascript".to_string()]] {
            let (launches, _) = launch_table(&registry, &without_python(), &started_now).unwrap();
            let js = launches["javascript"].as_ref().expect("javascript runs");
            assert_eq!(js.argv[0], "/usr/bin/node");
            let python = launches["python"].as_ref().unwrap_err();
            assert_eq!(python.code, ErrorCode::InterpreterNotFound);
            assert_eq!(
                python.message,
                "python is not available in this session: no python interpreter found: python3 \
                 is not installed or not on PATH (looked for when the session was created)"
            );
            // A run of it fails with that error, named.
            let info = run_error(python.clone());
            assert_eq!(info.name, "InterpreterNotFound");
            assert!(info
                .value
                .contains("python3 is not installed or not on PATH"));
        }
    }

    #[test]
    fn a_missing_interpreter_that_create_starts_fails_create() {
        let registry = Registry::default();
        let defaults = SessionOptions::default();
        let err = launch_table(&registry, &without_python(), &started_by_create(&defaults))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InterpreterNotFound);
        assert!(
            err.message.starts_with(
                "no python interpreter found: python3 is not installed or not on PATH (create() starts python"
            ),
            "{}",
            err.message
        );
        // preload starts its languages too, even when prewarm does not list them.
        let mut preloading = SessionOptions::default();
        preloading.pool.prewarm.clear();
        preloading
            .pool
            .preload
            .insert("python".into(), vec!["json".into()]);
        assert_eq!(started_by_create(&preloading), ["python"]);
        assert!(launch_table(
            &registry,
            &without_python(),
            &started_by_create(&preloading)
        )
        .is_err());
    }

    #[test]
    fn every_interpreter_found_gives_every_launch() {
        let mut found = without_python();
        found.missing.clear();
        found
            .interpreters
            .executables
            .insert("python", "/usr/bin/python3.11".into());
        let (launches, _) = launch_table(&Registry::default(), &found, &["python".into()]).unwrap();
        assert!(launches.values().all(Result::is_ok));
        assert_eq!(
            launches["python"].as_ref().unwrap().argv[0],
            "/usr/bin/python3.11"
        );
    }
}
