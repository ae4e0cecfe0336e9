//! A code context: one interpreter and the FIFO queue of runs it serves, owned by a
//! task of its own. Runs are queued in call order; the task runs each to its end —
//! a reply, or an interrupt and then the reply, or a kill — before it takes the next,
//! so a run that is dropped, aborted or timed out leaves its context consistent and
//! never hands its reply to another run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use codebay_protocol::{BackendOutput, CgroupInfo, CodeContext, DriverRequest, ErrorInfo};
use serde_json::Value;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::accounting::{ContextCounters, Events, Snapshot};
use super::interpreter::{random_id, Exchange, IdleRead, Interpreter, RunEnd, RunOutcome, Stop};
use super::sandbox::Sandbox;
use crate::options::MIB;

/// How long an interpreter killed for memory while idle may take to exit.
const IDLE_KILL_SETTLES_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);
/// How long an interpreter gets to reap the children killed after a process-limit
/// hit (Node does at once; Python's subprocess only when it polls them).
const CHILDREN_REAPED_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);
/// Output written while no run is in progress is read (and dropped) at most this fast,
/// this much per window: a background `yes` must not keep a host thread copying. Past
/// it the writer waits on the full pipe, as it did before the reading.
const IDLE_READ_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
const IDLE_READ_PER_WINDOW: usize = 256 * 1024;
/// What a run's start takes from the pipes at most, as written before its request.
const IDLE_DRAIN_AT_START: usize = 1024 * 1024;

/// What every context of a session shares.
pub struct Shared {
    pub sandbox: Sandbox,
    pub closed: AtomicBool,
    /// Numbers interpreters (and names their cgroups) across the session.
    pub spawns: AtomicU64,
    pub output_cap: usize,
    /// `memoryBytes`, and the file space the session's memory limit adds to it.
    pub memory_bytes: u64,
    pub file_space_bytes: u64,
    pub max_processes: u64,
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The memory limit as a run reports it.
    fn memory_limit(&self) -> String {
        format!(
            "{} for processes plus the {} its files may hold",
            size(self.memory_bytes),
            size(self.file_space_bytes)
        )
    }

    fn cgroup(&self) -> Option<&CgroupInfo> {
        self.sandbox.cgroup.as_ref()
    }
}

/// How to start a context's interpreter.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// What a run gives back: the backend output (DESIGN §2), and whether it ran cleanly.
pub struct RunReport {
    pub success: bool,
    pub output: BackendOutput,
}

impl RunReport {
    pub fn failure(error: ErrorInfo) -> Self {
        RunReport {
            success: false,
            output: BackendOutput {
                execution_error: error.summary(),
                error: Some(error),
                ..Default::default()
            },
        }
    }
}

/// A run as it enters a context's queue.
pub struct RunJob {
    pub code: String,
    pub timeout_s: f64,
    pub envs: BTreeMap<String, String>,
    pub sink: Option<Arc<dyn crate::session::OutputSink>>,
    pub cancel: crate::session::Cancel,
}

enum Job {
    Run {
        exchange: Exchange,
        timeout_s: f64,
        reply: oneshot::Sender<RunReport>,
        started: Arc<AtomicBool>,
    },
    Start(oneshot::Sender<Result<(), String>>),
    Restart(oneshot::Sender<()>),
    Remove(oneshot::Sender<()>),
}

/// The caller's side of a context.
pub struct ContextHandle {
    pub info: CodeContext,
    /// Each MIME value of a result is cut to this many bytes (the output limit).
    result_limit: u64,
    jobs: mpsc::UnboundedSender<Job>,
    gate: Arc<Gate>,
}

/// Lets a caller write a request straight into an idle interpreter, from its own
/// thread: the interpreter starts while the task that reads the reply is still being
/// scheduled, a cross-CPU wake-up taken off the critical path (measured in issue 4).
#[derive(Default)]
struct Gate(Mutex<GateState>);

#[derive(Default)]
struct GateState {
    /// Set exactly while the context's task waits for work with a live interpreter.
    idle_writer: Option<Arc<pipe::Sender>>,
    /// Jobs sent and not yet taken: an early write is only for the next one.
    queued: usize,
}

impl ContextHandle {
    pub fn spawn(info: CodeContext, launch: Launch, shared: Arc<Shared>) -> ContextHandle {
        let (jobs, queue) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate::default());
        let task = ContextTask {
            info: info.clone(),
            launch,
            shared: shared.clone(),
            interpreter: None,
            counted: None,
            killed_while_idle: false,
            lost_while_idle: None,
            idle_dropped: 0,
            idle_window: (Instant::now(), 0),
            gate: gate.clone(),
        };
        let result_limit = shared.output_cap as u64;
        shared.runtime.spawn(task.serve(queue));
        ContextHandle {
            info,
            result_limit,
            jobs,
            gate,
        }
    }

    /// Queues a run now, in call order. The receiver gets the report; dropping it
    /// stops the run (it is interrupted and drained, or never started). The flag is set
    /// when the run's turn came and it began.
    pub fn submit(&self, run: RunJob) -> (oneshot::Receiver<RunReport>, Arc<AtomicBool>) {
        let id = random_id();
        let request = DriverRequest {
            id,
            code: run.code,
            timeout_ms: (run.timeout_s * 1000.0).min(u64::MAX as f64) as u64,
            envs: run.envs,
            result_limit_bytes: Some(self.result_limit),
        };
        let mut exchange = Exchange {
            id,
            line: request.to_line(),
            written: 0,
            written_to: None,
            started: None,
            timeout: std::time::Duration::from_secs_f64(run.timeout_s),
            sink: run.sink,
            cancel: run.cancel,
        };
        let (reply, report) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let mut gate = self.gate.0.lock().expect("gate lock");
        if gate.queued == 0 && !exchange.cancel.is_cancelled() {
            if let Some(writer) = gate.idle_writer.take() {
                if let Ok(n) = writer.try_write(exchange.line.as_bytes()) {
                    exchange.written = n;
                    exchange.started = Some(Instant::now());
                    exchange.written_to = Some(writer);
                }
            }
        }
        gate.idle_writer = None;
        gate.queued += 1;
        let timeout_s = run.timeout_s;
        if exchange.written > 0 {
            started.store(true, Ordering::SeqCst);
        }
        // A send fails only when the task ended (the context was removed): the
        // receiver then sees a closed channel.
        let _ = self.jobs.send(Job::Run {
            exchange,
            timeout_s,
            reply,
            started: started.clone(),
        });
        (report, started)
    }

    fn control(&self, job: Job) {
        let mut gate = self.gate.0.lock().expect("gate lock");
        gate.idle_writer = None;
        gate.queued += 1;
        let _ = self.jobs.send(job);
    }

    /// Starts the interpreter now rather than at the first run.
    pub async fn start(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.control(Job::Start(tx));
        rx.await
            .unwrap_or_else(|_| Err("the context was removed".into()))
    }

    /// A fresh interpreter for the runs queued after this: state cleared. Queued now,
    /// when called, so a run called after it is served after it.
    pub fn restart(&self) -> crate::session::BoxFuture<()> {
        self.control_done(Job::Restart)
    }

    /// Ends the context after the runs queued before this; runs queued after it fail.
    /// Queued now, when called.
    pub fn remove(&self) -> crate::session::BoxFuture<()> {
        self.control_done(Job::Remove)
    }

    /// Queues `job` now; the future resolves when the task has done it.
    fn control_done(&self, job: fn(oneshot::Sender<()>) -> Job) -> crate::session::BoxFuture<()> {
        let (tx, rx) = oneshot::channel();
        self.control(job(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

struct ContextTask {
    info: CodeContext,
    launch: Launch,
    shared: Arc<Shared>,
    interpreter: Option<(Interpreter, ContextCounters)>,
    /// The interpreter's counters as last read (at its start, at the end of its last
    /// run, or when a run began): what the next reading adds happened since.
    counted: Option<Snapshot>,
    /// A process of the context was killed for memory while no run was in progress.
    killed_while_idle: bool,
    /// Why the previous interpreter died while no run was in progress, for the next run.
    lost_while_idle: Option<String>,
    /// Bytes the interpreter wrote to stdout/stderr while no run was in progress (by a
    /// process or thread an earlier run started): dropped, and said to the next run.
    idle_dropped: u64,
    /// The current window of idle reading: when it began, how much it has read.
    idle_window: (Instant, usize),
    gate: Arc<Gate>,
}

impl ContextTask {
    async fn serve(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        loop {
            {
                let mut gate = self.gate.0.lock().expect("gate lock");
                if gate.queued == 0 {
                    gate.idle_writer = self
                        .interpreter
                        .as_ref()
                        .filter(|(i, _)| i.alive)
                        .map(|(i, _)| i.request.clone());
                }
            }
            let Some(job) = self.next_job(&mut queue).await else {
                break;
            };
            {
                let mut gate = self.gate.0.lock().expect("gate lock");
                gate.idle_writer = None;
                gate.queued -= 1;
            }
            match job {
                Job::Run {
                    exchange,
                    timeout_s,
                    reply,
                    started,
                } => {
                    started.store(true, Ordering::SeqCst);
                    self.run(exchange, timeout_s, reply).await
                }
                Job::Start(reply) => {
                    let started = self.ensure_interpreter().await;
                    let _ = reply.send(started);
                }
                Job::Restart(reply) => {
                    self.stop_interpreter().await;
                    let _ = reply.send(());
                }
                Job::Remove(reply) => {
                    self.stop_interpreter().await;
                    let _ = reply.send(());
                    break;
                }
            }
        }
        self.stop_interpreter().await;
    }

    /// Waits for the next job. Meanwhile the interpreter's output is read: it belongs to
    /// no run (an earlier run's background process or thread wrote it), so it is dropped
    /// and counted — unless a caller has written its request into the pipe already, when
    /// it may be that run's own, and is kept for it.
    async fn next_job(&mut self, queue: &mut mpsc::UnboundedReceiver<Job>) -> Option<Job> {
        if let Some((interpreter, _)) = &mut self.interpreter {
            // Kept for a run that did not come (a control job took the idle writer).
            self.idle_dropped += interpreter.drop_carried();
        }
        loop {
            let reading = self
                .interpreter
                .as_ref()
                .is_some_and(|(i, _)| i.can_write_between_runs());
            let (window_start, read) = self.idle_window;
            let paused_until =
                (read >= IDLE_READ_PER_WINDOW).then_some(window_start + IDLE_READ_WINDOW);
            let interpreter = self.interpreter.as_mut().map(|(i, _)| i);
            tokio::select! {
                biased;
                job = queue.recv() => return job,
                read = async { interpreter.expect("reading").read_idle().await }, if reading && paused_until.is_none() => {
                    self.took_idle_output(read)
                }
                _ = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)), if reading && paused_until.is_some() => {
                    self.idle_window = (Instant::now(), 0);
                }
            }
        }
    }

    fn took_idle_output(&mut self, read: IdleRead) {
        let now = Instant::now();
        if now >= self.idle_window.0 + IDLE_READ_WINDOW {
            self.idle_window = (now, 0);
        }
        self.idle_window.1 += read.len;
        // Taken under the gate: while the idle writer is there, no request was written.
        let requested = self.gate.0.lock().expect("gate lock").idle_writer.is_none();
        let Some((interpreter, _)) = &mut self.interpreter else {
            return;
        };
        if requested {
            interpreter.carry(&read);
        } else {
            self.idle_dropped += read.len as u64;
        }
    }

    async fn run(
        &mut self,
        mut exchange: Exchange,
        timeout_s: f64,
        mut reply: oneshot::Sender<RunReport>,
    ) {
        let in_pipe = exchange.written > 0;
        if !in_pipe && reply.is_closed() {
            return; // dropped before its turn: nothing was sent, nothing to undo
        }
        if !in_pipe && exchange.cancel.is_cancelled() {
            let _ = reply.send(RunReport::failure(ErrorInfo::new(
                "AbortError",
                "The run was aborted before it started.",
            )));
            return;
        }
        if self.shared.is_closed() {
            let _ = reply.send(closed_report(false));
            return;
        }
        self.take_idle_events().await;
        if self.shared.sandbox.is_gone() {
            let _ = reply.send(RunReport::failure(sandbox_gone()));
            return;
        }
        // Starting the interpreter counts against the run's timeout: a stuck sandbox
        // must not hold a run past it.
        let started = tokio::time::timeout(exchange.timeout, self.ensure_interpreter()).await;
        let started = started.unwrap_or_else(|_| {
            Err(format!(
                "it did not start within the run's timeout of {timeout_s} s"
            ))
        });
        if let Err(why) = started {
            let _ = reply.send(RunReport::failure(ErrorInfo::new(
                "SandboxError",
                format!(
                    "Could not start the {} interpreter: {why}",
                    self.info.language
                ),
            )));
            return;
        }
        // An early write went to the interpreter that was idle then; if another one
        // serves the run (that one died), the whole request goes to this one.
        let served_by = &self.interpreter.as_ref().expect("just ensured").0.request;
        if !exchange
            .written_to
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, served_by))
        {
            exchange.written = 0;
            exchange.started = None;
        }
        let (interpreter, _) = self.interpreter.as_mut().expect("just ensured");
        if exchange.written == 0 {
            // None of this run is in the pipes: what they hold was written before it.
            self.idle_dropped += interpreter.drop_carried();
            if interpreter.can_write_between_runs() {
                self.idle_dropped += interpreter.drain_idle(IDLE_DRAIN_AT_START);
            }
        }
        self.idle_window = (Instant::now(), 0);
        // Said first, so that the run's own output reads after them.
        let mut notices = Vec::new();
        if let Some(why) = self.lost_while_idle.take() {
            notices.push(format!("[codebay] The {} interpreter of this context {why} while no run was in progress; its state was lost and this run started a fresh interpreter.\n", self.info.language));
        }
        if self.idle_dropped > 0 {
            notices.push(format!("[codebay] {} bytes of output written while no run was in progress (by a process or thread an earlier run started) were dropped.\n", std::mem::take(&mut self.idle_dropped)));
        }
        if let Some(sink) = &exchange.sink {
            for notice in &notices {
                sink.stderr(notice, crate::session::now_ns());
            }
        }
        let (interpreter, counters) = self.interpreter.as_mut().expect("just ensured");
        // Read when the run began (by `take_idle_events`, or at the interpreter's start).
        let before = self.counted.unwrap_or_else(|| counters.snapshot());
        let cap = self.shared.output_cap;
        let outcome = interpreter.run(exchange, cap, reply.closed()).await;
        let after = counters.snapshot();
        let events = after.since(before);
        self.counted = Some(after);
        let mut kept = interpreter.alive;
        if kept && events.processes {
            kept = self.clear_children().await;
        }
        let mut report = self.describe(timeout_s, outcome, events, kept);
        report.output.stderr.splice(0..0, notices);
        if !kept {
            self.stop_interpreter().await;
        }
        let report = if self.shared.is_closed() {
            closed_report(true)
        } else {
            report
        };
        let _ = reply.send(report);
    }

    /// Reads what happened in the context since its last run. A process killed for
    /// memory meanwhile may be the interpreter itself, still exiting: it gets the moment
    /// that takes, so the run goes to a fresh interpreter and is told why, instead of
    /// failing on a dying one.
    async fn take_idle_events(&mut self) {
        let Some((interpreter, counters)) = &self.interpreter else {
            return;
        };
        let now = counters.snapshot();
        let killed = self.counted.is_some_and(|c| now.since(c).memory);
        self.counted = Some(now);
        self.killed_while_idle = killed;
        if killed && interpreter.alive {
            let deadline = Instant::now() + IDLE_KILL_SETTLES_WITHIN;
            while !interpreter.has_exited() && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }

    /// Kills whatever the interpreter forked and keeps the interpreter, if that frees
    /// the context's processes: children it has not reaped stay counted as zombies, and
    /// then only replacing it frees them. True when the interpreter was kept.
    async fn clear_children(&mut self) -> bool {
        let Some((interpreter, counters)) = self.interpreter.as_ref() else {
            return false;
        };
        let (pid, cgroup) = (interpreter.pid, interpreter.cgroup.clone());
        if self
            .shared
            .sandbox
            .kill(random_id(), &cgroup, Some(pid))
            .await
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + CHILDREN_REAPED_WITHIN;
        loop {
            match counters.processes() {
                Some(1) => return true,
                Some(_) if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
                _ => return false,
            }
        }
    }

    async fn ensure_interpreter(&mut self) -> Result<(), String> {
        if let Some((interpreter, _)) = &self.interpreter {
            let exited = interpreter.has_exited();
            // Alive as far as we knew, yet gone: it died between runs.
            if interpreter.alive && exited {
                self.lost_while_idle = Some(if self.killed_while_idle {
                    format!(
                        "was killed because the session ran out of memory ({})",
                        self.shared.memory_limit()
                    )
                } else {
                    "exited".to_owned()
                });
            }
            if !interpreter.alive || exited {
                self.stop_interpreter().await;
            }
        }
        if self.interpreter.is_none() {
            let number = self.shared.spawns.fetch_add(1, Ordering::SeqCst) + 1;
            let cgroup = format!("i-{number}");
            let spawned = self
                .shared
                .sandbox
                .spawn(
                    number,
                    &cgroup,
                    self.launch.argv.clone(),
                    self.launch.env.clone(),
                    &self.info.cwd,
                )
                .await
                .map_err(|e| e.to_string())?;
            let counters = ContextCounters::open(self.shared.cgroup(), &cgroup);
            let interpreter = Interpreter::new(spawned.pid, cgroup, spawned.fds)
                .map_err(|e| format!("its descriptors: {e}"))?;
            self.counted = Some(counters.snapshot());
            self.interpreter = Some((interpreter, counters));
        }
        Ok(())
    }

    /// Kills the interpreter and everything in its cgroup, and removes the cgroup.
    async fn stop_interpreter(&mut self) {
        if let Some((interpreter, _)) = self.interpreter.take() {
            let _ = self
                .shared
                .sandbox
                .kill(random_id(), &interpreter.cgroup, None)
                .await;
        }
    }

    fn describe(
        &self,
        timeout_s: f64,
        outcome: RunOutcome,
        events: Events,
        alive: bool,
    ) -> RunReport {
        let RunOutcome {
            end,
            stdout,
            stderr,
            dropped,
            displays,
            elapsed,
        } = outcome;
        let language = &self.info.language;
        let lost = "; its state was lost and the next run starts a fresh interpreter";
        let stopped_name = |stop: Stop| match stop {
            Stop::Abort => "AbortError",
            _ => "TimeoutError",
        };
        // "The ..." in a message, "the ..." after the name in a traceback's last line.
        let stopped_why = |stop: Stop| match stop {
            Stop::Abort => "run was aborted".to_owned(),
            _ => format!("run exceeded its timeout of {timeout_s} s"),
        };
        let (reply, mut error) = match end {
            RunEnd::Replied { reply, stopped } => {
                let error = match stopped {
                    Some(stop) => {
                        let mut e = ErrorInfo::new(stopped_name(stop), format!("The {} and was interrupted.", stopped_why(stop)));
                        // Where the interrupt landed is what the user needs to find the slow
                        // line; its last line names the stop, not the signal that did it (an
                        // agent reading `KeyboardInterrupt` thinks someone pressed Ctrl-C).
                        let last = format!("{}: the {}", stopped_name(stop), stopped_why(stop));
                        e.traceback = reply
                            .error
                            .as_ref()
                            .map(|e| stop_traceback(&e.traceback, &last))
                            .unwrap_or_default();
                        Some(e)
                    }
                    None => reply.error.clone(),
                };
                (Some(reply), error)
            }
            RunEnd::Killed { stop } => (None, Some(ErrorInfo::new(stopped_name(stop), format!(
                "The {} and did not stop when interrupted, so the {language} interpreter was killed{lost}.", stopped_why(stop)
            )))),
            RunEnd::Broken { .. } if self.shared.sandbox.is_gone() => (None, Some(sandbox_gone())),
            RunEnd::Broken { why } => (None, Some(ErrorInfo::new("InterpreterExitError", format!(
                "The {language} interpreter stopped: {why}{lost}."
            )))),
        };
        if events.memory {
            let what = if alive {
                format!("a process this run started was killed; the {language} interpreter kept its state")
            } else {
                format!("the {language} interpreter was killed{lost}")
            };
            error = Some(ErrorInfo::new(
                "MemoryError",
                format!(
                    "The session ran out of memory ({}): {what}.",
                    self.shared.memory_limit()
                ),
            ));
        } else if events.processes {
            // Reported even when the code caught the failed fork: its processes were
            // killed, and a run must not report success for work it lost.
            let cause = error
                .as_ref()
                .map(|e| format!(" ({})", e.summary()))
                .unwrap_or_default();
            let kept = if alive {
                format!("; the {language} interpreter kept its state")
            } else {
                lost.to_owned()
            };
            error = Some(ErrorInfo::new("ProcessLimitError", format!(
                "The run reached the session's limit of {} processes{cause}; the processes it started were killed{kept}.",
                self.shared.max_processes
            )));
        }
        let results_dropped = reply.as_ref().map_or(0, |r| r.result_bytes_dropped);
        if results_dropped > 0 {
            let cap = size(self.shared.output_cap as u64);
            let cut = ErrorInfo::new("OutputLimitError", format!(
                "The run's results passed the cap of {cap} per value: the first {cap} of each were kept, {results_dropped} bytes were dropped."
            ));
            // Both are said when the code also raised: neither hides the other.
            error = Some(match error {
                Some(e) => ErrorInfo {
                    value: format!("{} ({})", e.value, cut.summary()),
                    ..e
                },
                None => cut,
            });
        }
        if error.is_none() && (dropped.0 > 0 || dropped.1 > 0) {
            let cap = size(self.shared.output_cap as u64);
            error = Some(ErrorInfo::new("OutputLimitError", format!(
                "The run's output passed the cap of {cap} per stream: the first {cap} were kept, {} bytes of stdout and {} bytes of stderr were dropped.",
                dropped.0, dropped.1
            )));
        }
        let (main, execution_count) = match reply {
            Some(r) => (r.main_result, Some(r.execution_count)),
            None => (None, None),
        };
        let result = displays
            .into_iter()
            .chain(main)
            .map(Value::Object)
            .collect::<Vec<Value>>();
        let output = BackendOutput {
            stdout,
            stderr,
            result,
            execution_error: error.as_ref().map(ErrorInfo::summary).unwrap_or_default(),
            execution_time: Some(elapsed.as_secs_f64()),
            execution_count,
            error,
        };
        RunReport {
            success: output.error.is_none(),
            output,
        }
    }
}

/// `traceback` with its last line (the interrupt's exception) replaced by `last`.
fn stop_traceback(traceback: &str, last: &str) -> String {
    if traceback.is_empty() {
        return String::new();
    }
    let body = traceback.trim_end_matches('\n');
    let frames = match body.rfind('\n') {
        Some(i) => &body[..=i],
        None => "",
    };
    format!("{frames}{last}\n")
}

fn sandbox_gone() -> ErrorInfo {
    ErrorInfo::new(
        "SandboxError",
        "The sandbox is gone (its supervisor or init was killed): this session cannot run code any more; close it and create another.",
    )
}

fn closed_report(during: bool) -> RunReport {
    let value = if during {
        "The session was closed while the code was running."
    } else {
        "The session is closed."
    };
    RunReport::failure(ErrorInfo::new("SessionClosed", value))
}

/// A byte count as people read it: exact, in the largest unit that divides it
/// (a cap of 256 KiB must not read as "0 MiB").
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_traceback_ends_with_the_stop() {
        let tb = "Traceback (most recent call last):\n  File \"<cell-1>\", line 1, in <module>\nKeyboardInterrupt\n";
        assert_eq!(
            stop_traceback(tb, "TimeoutError: t"),
            "Traceback (most recent call last):\n  File \"<cell-1>\", line 1, in <module>\nTimeoutError: t\n"
        );
        assert_eq!(stop_traceback("", "TimeoutError: t"), "");
    }

    #[test]
    fn sizes_read_exactly() {
        assert_eq!(size(10 * MIB), "10 MiB");
        assert_eq!(size(256 * 1024), "256 KiB");
        assert_eq!(size(MIB + 1024), "1025 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
