//! `LocalSession`: a `run_code` tool server backed by one sandbox on this machine.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use super::context::{Context, Request, RunEnd, RunOutcome};
use super::interpreters::{self, InterpreterError};
use super::sandbox::{Sandbox, SandboxConfig, SandboxError};
use super::turns::TurnQueue;
use crate::request::{check_timeout, Language, RequestError, RunRequest};
use crate::result::CodeExecutionResult;
use crate::tool::McpToolResult;
use crate::wire::{BackendOutput, WireError};

const MIB: u64 = 1024 * 1024;

/// What `LocalSession.create(options)` accepts, with the defaults of the issue.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub memory_bytes: u64,
    pub max_processes: u32,
    /// None: all cores.
    pub cpu_cores: Option<f64>,
    /// Off by default: the sandbox gets an empty network namespace.
    pub network: bool,
    pub env: BTreeMap<String, String>,
    pub workspace_bytes: u64,
    pub tmp_bytes: u64,
    /// Per stream, per run.
    pub output_cap_bytes: usize,
    pub max_open_files: u64,
    /// A python3 to resolve (default: `python3` on PATH, past any shim).
    pub python: Option<PathBuf>,
    /// Default: `node` on PATH; the addon passes the running Node.
    pub node: Option<PathBuf>,
    pub sandbox_binary: PathBuf,
    pub runtimes_dir: PathBuf,
}

impl SessionOptions {
    pub fn new(sandbox_binary: PathBuf, runtimes_dir: PathBuf) -> Self {
        SessionOptions {
            memory_bytes: 512 * MIB,
            max_processes: 64,
            cpu_cores: None,
            network: false,
            env: BTreeMap::new(),
            workspace_bytes: 512 * MIB,
            tmp_bytes: 256 * MIB,
            output_cap_bytes: 10 * MIB as usize,
            max_open_files: 1024,
            python: None,
            node: None,
            sandbox_binary,
            runtimes_dir,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Interpreter(#[from] InterpreterError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("invalid session option: {0}")]
    Option(String),
}

/// One language's interpreter and the queue of runs waiting for it.
#[derive(Default)]
struct ContextSlot {
    context: Mutex<Option<Context>>,
    turns: TurnQueue,
}

/// What a run gives back before it becomes a tool result or a `CodeExecutionResult`.
pub struct RunReply {
    pub request_id: String,
    /// True when the code ran cleanly.
    pub success: bool,
    /// None when the session was closed before the run could start.
    pub output: Option<BackendOutput>,
}

const CLOSED: &str = "The session is closed.";

impl RunReply {
    /// The wire form (DESIGN §2): the backend JSON in `data`, or in `errorMessage`
    /// when the run failed.
    pub fn into_tool_result(self) -> McpToolResult {
        match self.output {
            None => McpToolResult::failed(CLOSED.into(), self.request_id),
            Some(out) if self.success => McpToolResult::ok(out.to_json(), self.request_id),
            Some(out) => McpToolResult::failed(out.to_json(), self.request_id),
        }
    }

    /// What `Code.runCode` resolves with, without the JSON round trip of the wire
    /// form: a large output is not encoded and parsed again.
    pub fn into_code_result(self) -> CodeExecutionResult {
        match self.output {
            None => CodeExecutionResult::from_tool_result(McpToolResult::failed(
                CLOSED.into(),
                self.request_id,
            )),
            Some(out) => {
                CodeExecutionResult::from_backend_output(out, self.request_id, self.success)
            }
        }
    }
}

/// A request prepared (and maybe already sent) when the call was made, with the limit
/// counters as they were before it could start.
struct Early {
    request: Request,
    counters: Option<(u64, u64)>,
}

/// A place taken in a context's queue. If the call is dropped before its turn
/// comes, the place is given up so the calls behind it are not stuck.
struct PendingTurn {
    session: Arc<LocalSession>,
    language: Language,
    ticket: Option<u64>,
}

impl PendingTurn {
    fn take(session: Arc<LocalSession>, language: Language) -> Self {
        let ticket = session.contexts[language as usize].turns.take();
        PendingTurn {
            session,
            language,
            ticket: Some(ticket),
        }
    }
}

impl Drop for PendingTurn {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.session.contexts[self.language as usize]
                .turns
                .abandon(ticket);
        }
    }
}

pub struct LocalSession {
    id: String,
    sandbox: Sandbox,
    /// One interpreter per language; the lock queues runs of a context in call order.
    contexts: [ContextSlot; 2],
    closed: AtomicBool,
    requests: AtomicU64,
    spawns: AtomicU64,
    output_cap: usize,
    memory_limit: u64,
    max_processes: u32,
    oom_kills: EventCounter,
    pids_max_events: EventCounter,
}

impl LocalSession {
    pub async fn create(options: SessionOptions) -> Result<LocalSession, SessionError> {
        check_options(&options)?;
        let python = interpreters::python(options.python.as_deref())?;
        let node = interpreters::node(options.node.as_deref())?;
        let mut read_only_paths = python.read_only_paths.clone();
        read_only_paths.extend(node.read_only_paths.iter().cloned());
        let id = format!("cb-{:012x}", random_u64() & 0xffff_ffff_ffff);
        let config = SandboxConfig {
            session_id: id.clone(),
            memory_bytes: options.memory_bytes,
            max_processes: options.max_processes,
            cpu_cores: options.cpu_cores,
            network: options.network,
            workspace_bytes: options.workspace_bytes,
            tmp_bytes: options.tmp_bytes,
            read_only_paths,
            runtimes_dir: options.runtimes_dir.clone(),
            python_executable: python.executable.clone(),
            node_executable: node.executable.clone(),
            env: options.env.clone(),
            max_open_files: options.max_open_files,
            max_file_bytes: options.workspace_bytes,
        };
        let sandbox = Sandbox::start(&options.sandbox_binary, &config).await?;
        let pids_events = sandbox
            .ready
            .cgroup
            .dirs
            .iter()
            .map(|d| d.join("pids.events"))
            .find(|p| p.exists());
        let oom_kills = EventCounter::open(Some(&sandbox.ready.memory_events), "oom_kill");
        let pids_max_events = EventCounter::open(pids_events.as_deref(), "max");
        Ok(LocalSession {
            id,
            sandbox,
            contexts: Default::default(),
            closed: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            spawns: AtomicU64::new(0),
            output_cap: options.output_cap_bytes,
            memory_limit: options.memory_bytes,
            max_processes: options.max_processes,
            oom_kills,
            pids_max_events,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The session as a tool server: never fails, every problem is a failed result.
    /// The arguments are checked and the run's place in its context's queue is taken
    /// now, when called; the returned future does the rest.
    pub fn call_tool(
        self: &Arc<Self>,
        name: &str,
        args: &Value,
    ) -> impl Future<Output = McpToolResult> + Send + 'static {
        let request_id = self.next_request_id();
        let prepared = match name {
            "run_code" => {
                run_code_request(args).map(|request| self.start_run(request, request_id.clone()))
            }
            other => Err(format!(
                "Unknown tool '{other}'. This session offers: run_code."
            )),
        };
        let closed = self.is_closed();
        async move {
            if closed {
                return McpToolResult::failed(CLOSED.into(), request_id);
            }
            match prepared {
                Ok(run) => run.await.into_tool_result(),
                Err(message) => McpToolResult::failed(message, request_id),
            }
        }
    }

    /// A failed result for a call that could not even be read (no tool name, arguments
    /// that are not JSON), numbered like any other answer.
    pub fn refuse(&self, message: String) -> McpToolResult {
        McpToolResult::failed(message, self.next_request_id())
    }

    fn next_request_id(&self) -> String {
        format!(
            "{}-{}",
            self.id,
            self.requests.fetch_add(1, Ordering::SeqCst) + 1
        )
    }

    /// Runs checked code: its turn in the context's queue is taken now, in call order.
    pub fn run_code(
        self: &Arc<Self>,
        request: RunRequest,
    ) -> impl Future<Output = RunReply> + Send + 'static {
        self.start_run(request, self.next_request_id())
    }

    fn start_run(
        self: &Arc<Self>,
        request: RunRequest,
        request_id: String,
    ) -> impl Future<Output = RunReply> + Send + 'static {
        let ticket = PendingTurn::take(self.clone(), request.language);
        let early = self.send_early(&request, &ticket);
        async move {
            if ticket.session.is_closed() {
                return RunReply {
                    request_id,
                    success: false,
                    output: None,
                };
            }
            let (success, output) = ticket
                .session
                .clone()
                .run_in_turn(&request, ticket, early)
                .await;
            RunReply {
                request_id,
                success,
                output: Some(output),
            }
        }
    }

    /// Runs one request in its language's context once its turn comes; `true` when
    /// the code ran cleanly.
    /// When this call is first in line and its interpreter idle, the request goes
    /// into the pipe now, on the caller's thread: the interpreter starts while the
    /// task that reads the reply is still being scheduled, which on this 2-core VM is
    /// a cross-CPU wake-up off the critical path. The limit counters are read first,
    /// since the run may begin at once.
    fn send_early(&self, request: &RunRequest, ticket: &PendingTurn) -> Early {
        let slot = &self.contexts[request.language as usize];
        let mut sent = Request::new(&request.code, Duration::from_secs_f64(request.timeout_s));
        let number = ticket.ticket.expect("a fresh ticket");
        if self.is_closed() || !slot.turns.is_serving(number) {
            return Early {
                request: sent,
                counters: None,
            };
        }
        let Ok(guard) = slot.context.try_lock() else {
            return Early {
                request: sent,
                counters: None,
            };
        };
        match guard.as_ref() {
            Some(context) if context.alive => {
                let counters = (self.oom_kills.read(), self.pids_max_events.read());
                context.send_early(&mut sent);
                Early {
                    request: sent,
                    counters: Some(counters),
                }
            }
            _ => Early {
                request: sent,
                counters: None,
            },
        }
    }

    async fn run_in_turn(
        self: Arc<Self>,
        request: &RunRequest,
        mut ticket: PendingTurn,
        early: Early,
    ) -> (bool, BackendOutput) {
        let slot = &self.contexts[request.language as usize];
        let number = ticket.ticket.expect("a turn is waited for once");
        // Still held by `ticket` while waiting: a call dropped here gives up its place.
        let _turn = slot.turns.wait(number).await;
        ticket.ticket = None;
        let mut slot = slot.context.lock().await;
        if self.is_closed() {
            return failure("SessionClosed", "The session is closed.");
        }
        if slot.as_ref().is_none_or(|c| !c.alive) {
            match self.start_context(request.language).await {
                Ok(context) => *slot = Some(context),
                Err(err) => {
                    return failure(
                        "SandboxError",
                        &format!(
                            "Could not start the {} interpreter: {err}",
                            request.language
                        ),
                    )
                }
            }
        }
        let context = slot.as_mut().expect("a context was just put in the slot");
        let (oom_before, pids_before) = early
            .counters
            .unwrap_or_else(|| (self.oom_kills.read(), self.pids_max_events.read()));
        let outcome = context.run(early.request, self.output_cap).await;
        let hit_memory = self.oom_kills.read() > oom_before;
        let hit_pids = self.pids_max_events.read() > pids_before;
        let output = self.describe(request, outcome, hit_memory, hit_pids);
        // A context that broke, or whose children hit the process limit, is replaced:
        // its whole process session goes, so the next run starts clean.
        let context = slot.as_ref().expect("still there");
        if !context.alive || hit_pids || hit_memory {
            let pid = context.pid;
            *slot = None;
            let _ = self.sandbox.kill_group(pid).await;
        }
        if self.is_closed() {
            return failure(
                "SessionClosed",
                "The session was closed while the code was running.",
            );
        }
        output
    }

    /// Starts the interpreters of `languages` now rather than on their first run.
    /// Spawning returns once the process exists; it finishes booting on its own, so a
    /// session kept in a pool is fully warm by the time it is handed out.
    pub async fn prewarm(&self, languages: &[Language]) -> Result<(), SandboxError> {
        for &language in languages {
            let mut slot = self.contexts[language as usize].context.lock().await;
            if slot.is_none() {
                *slot = Some(self.start_context(language).await?);
            }
        }
        Ok(())
    }

    async fn start_context(&self, language: Language) -> Result<Context, SandboxError> {
        let id = self.spawns.fetch_add(1, Ordering::SeqCst) + 1;
        let fds = self.sandbox.spawn(id, language).await?;
        Context::new(fds).map_err(|e| SandboxError::Protocol(format!("driver descriptors: {e}")))
    }

    fn describe(
        &self,
        request: &RunRequest,
        outcome: RunOutcome,
        hit_memory: bool,
        hit_pids: bool,
    ) -> (bool, BackendOutput) {
        let RunOutcome {
            end,
            stdout,
            stderr,
            elapsed,
        } = outcome;
        let language = request.language;
        let lost = "; its state was lost and the next run starts a fresh interpreter";
        let (reply, mut error) = match end {
            RunEnd::Replied { reply, interrupted } => {
                let error = if interrupted {
                    let mut timeout = wire_error("TimeoutError", &format!("The run exceeded its timeout of {} s and was interrupted.", request.timeout_s));
                    // Where the interrupt landed is what the user needs to find the slow line.
                    timeout.traceback = reply.error.as_ref().map(|e| e.traceback.clone()).unwrap_or_default();
                    Some(timeout)
                } else {
                    reply.error.clone()
                };
                (Some(reply), error)
            }
            RunEnd::KilledAfterTimeout => (
                None,
                Some(wire_error(
                    "TimeoutError",
                    &format!("The run exceeded its timeout of {} s and did not stop when interrupted, so the {language} interpreter was killed{lost}.", request.timeout_s),
                )),
            ),
            RunEnd::Broken { why } => (None, Some(wire_error("InterpreterExitError", &format!("The {language} interpreter stopped: {why}{lost}.")))),
        };
        if hit_memory {
            error = Some(wire_error(
                "MemoryError",
                &format!(
                    "The session ran out of memory (limit {}) and a process was killed{}.",
                    size(self.memory_limit),
                    if reply.is_none() { lost } else { "" }
                ),
            ));
        } else if hit_pids {
            // Reported even when the code caught the failed fork (or, in JavaScript,
            // when it surfaces only after the reply): the context is killed below
            // either way, and a run must not report success for state it lost.
            let cause = error
                .as_ref()
                .map(|e| format!(" ({}: {})", e.name, e.value))
                .unwrap_or_default();
            error = Some(wire_error(
                "ProcessLimitError",
                &format!("The run reached the session's limit of {} processes{cause}; its processes were killed{lost}.", self.max_processes),
            ));
        }
        let (out_dropped, err_dropped) = (stdout.dropped(), stderr.dropped());
        if error.is_none() && (out_dropped > 0 || err_dropped > 0) {
            let cap = size(self.output_cap as u64);
            error = Some(wire_error(
                "OutputLimitError",
                &format!("The run's output passed the cap of {cap} per stream: the first {cap} were kept, {out_dropped} bytes of stdout and {err_dropped} bytes of stderr were dropped."),
            ));
        }
        let (results, execution_count) = match reply {
            Some(r) => (r.results, r.execution_count),
            None => (Vec::new(), None),
        };
        let execution_error = error
            .as_ref()
            .map(|e| format!("{}: {}", e.name, e.value))
            .unwrap_or_default();
        let output = BackendOutput {
            stdout: stdout.into_chunks(),
            stderr: stderr.into_chunks(),
            result: results.into_iter().map(Value::Object).collect(),
            execution_error,
            execution_time: Some(elapsed.as_secs_f64()),
            execution_count,
            error,
        };
        (output.error.is_none(), output)
    }

    /// Kills every process, removes the cgroups and the workspace (a tmpfs of the
    /// sandbox's own mount namespace). Idempotent.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.sandbox.close().await;
    }
}

fn check_options(o: &SessionOptions) -> Result<(), SessionError> {
    if o.memory_bytes < 32 * MIB {
        return Err(SessionError::Option(format!(
            "memory must be at least 32 MiB, got {} bytes",
            o.memory_bytes
        )));
    }
    if o.max_processes < 4 {
        return Err(SessionError::Option(format!(
            "maxProcesses must be at least 4, got {}",
            o.max_processes
        )));
    }
    if let Some(c) = o.cpu_cores {
        if !(c.is_finite() && c > 0.0) {
            return Err(SessionError::Option(format!(
                "cpuCores must be a number greater than 0, got {c}"
            )));
        }
    }
    if o.output_cap_bytes == 0 {
        return Err(SessionError::Option(
            "outputCapBytes must be greater than 0".into(),
        ));
    }
    Ok(())
}

/// `run_code` arguments as the tool receives them: checked here too, since a
/// session may be called directly through `callMcpTool`, without `Code`.
fn run_code_request(args: &Value) -> Result<RunRequest, String> {
    let code = match args.get("code") {
        Some(Value::String(c)) => c.clone(),
        _ => return Err("run_code needs a string argument 'code'.".into()),
    };
    let language = match args.get("language") {
        Some(Value::String(l)) => l.clone(),
        _ => return Err("run_code needs a string argument 'language'.".into()),
    };
    let timeout = match args.get("timeout_s") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().unwrap_or(f64::NAN)),
        Some(other) => return Err(RequestError::InvalidTimeout(other.to_string()).to_string()),
    };
    let language = Language::parse(&language).map_err(|e| e.to_string())?;
    let timeout_s = check_timeout(timeout).map_err(|e| e.to_string())?;
    Ok(RunRequest {
        code,
        language,
        timeout_s,
    })
}

/// A byte count as people read it: exact, in the largest unit that divides it
/// (a cap of 256 KiB must not read as "0 MiB").
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

fn wire_error(name: &str, value: &str) -> WireError {
    WireError {
        name: name.into(),
        value: value.into(),
        traceback: String::new(),
    }
}

fn failure(name: &str, value: &str) -> (bool, BackendOutput) {
    let error = wire_error(name, value);
    (
        false,
        BackendOutput {
            execution_error: format!("{name}: {value}"),
            error: Some(error),
            ..Default::default()
        },
    )
}

/// One `key N` line of a cgroup events file, kept open: the counters are read around
/// every run, and an open() per read showed up in the warm path's profile.
struct EventCounter {
    file: Option<std::fs::File>,
    key: &'static str,
}

impl EventCounter {
    fn open(path: Option<&std::path::Path>, key: &'static str) -> Self {
        EventCounter {
            file: path.and_then(|p| std::fs::File::open(p).ok()),
            key,
        }
    }

    /// A missing or unreadable file counts as 0: the limits still hold, only the name
    /// of the failure is lost.
    fn read(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else { return 0 };
        let mut buf = [0u8; 512];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        parse_counter(&String::from_utf8_lossy(&buf[..n]), self.key)
    }
}

fn parse_counter(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes; a short read leaves zeros, still a valid id.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_code_arguments_are_checked() {
        let ok = run_code_request(&json!({"code": "1", "language": "PY", "timeout_s": 2})).unwrap();
        assert_eq!((ok.language, ok.timeout_s), (Language::Python, 2.0));
        assert_eq!(
            run_code_request(&json!({"code": "1", "language": "js"}))
                .unwrap()
                .timeout_s,
            60.0
        );
        assert!(run_code_request(&json!({"language": "py"}))
            .unwrap_err()
            .contains("'code'"));
        assert!(run_code_request(&json!({"code": "1", "language": "ruby"}))
            .unwrap_err()
            .starts_with("Unsupported language: ruby."));
        assert!(
            run_code_request(&json!({"code": "1", "language": "py", "timeout_s": -1}))
                .unwrap_err()
                .contains("timeoutS")
        );
        assert!(
            run_code_request(&json!({"code": "1", "language": "py", "timeout_s": "5"})).is_err()
        );
    }

    #[test]
    fn sizes_read_exactly() {
        assert_eq!(size(10 * MIB), "10 MiB");
        assert_eq!(size(256 * 1024), "256 KiB");
        assert_eq!(size(MIB + 1024), "1025 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn counters_are_read_by_key() {
        let path = std::env::temp_dir().join(format!("codebay-counter-{}", std::process::id()));
        std::fs::write(&path, "oom 3\noom_kill 2\nunder_oom 0\n").unwrap();
        let counter = EventCounter::open(Some(&path), "oom_kill");
        assert_eq!(counter.read(), 2);
        std::fs::write(&path, "oom 3\noom_kill 5\nunder_oom 0\n").unwrap();
        assert_eq!(counter.read(), 5, "re-read from the start of the open file");
        assert_eq!(EventCounter::open(Some(&path), "max").read(), 0);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(EventCounter::open(Some(&path), "oom_kill").read(), 0);
        assert_eq!(EventCounter::open(None, "max").read(), 0);
    }
}
