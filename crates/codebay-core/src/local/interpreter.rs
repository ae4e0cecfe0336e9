//! One interpreter: a driver process inside the sandbox, and the exchange of one run
//! with it — request out, stdout/stderr and display results in as they come, one
//! reply back (docs/internals.md §4). Its owner ([`super::context`]) runs one exchange
//! at a time and always finishes it, so a reply can never reach the wrong run.

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use codebay_protocol::{DriverMessage, DriverReply, MimeBundle, SpawnedFds};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use super::output::CappedOutput;
use crate::result::item_from_bundle;
use crate::session::{now_ns, Cancel, OutputSink};

/// After the interrupt, how long a run gets to stop by itself before it is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// How often the interrupt is repeated while a stopped run has not answered.
const INTERRUPT_REPEAT: Duration = Duration::from_millis(50);
/// A reply larger than this is not a reply: the interpreter is treated as broken.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// How long a streamed line's start waits for its end before it goes out alone
/// (Python's unbuffered `print` writes the text and its newline separately).
const PARTIAL_LINE_WAIT: Duration = Duration::from_millis(50);
/// One pipe read: the size of a default pipe buffer.
const READ_CHUNK: usize = 64 * 1024;
type Buffers = [[u8; READ_CHUNK]; 3];

/// Why a run was stopped before it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its timeout passed.
    Timeout,
    /// Its caller aborted it (an AbortSignal, an MCP cancellation).
    Abort,
    /// Its caller went away (the future was dropped): nobody reads the result, but
    /// the interpreter must be brought back to a clean state for the next run.
    Dropped,
}

/// How a run ended, seen from outside the interpreter.
#[derive(Debug)]
pub enum RunEnd {
    /// The driver answered; `stopped` when that was after an interrupt.
    Replied {
        reply: DriverReply,
        stopped: Option<Stop>,
    },
    /// Stopped, and it did not answer within the grace: killed.
    Killed { stop: Stop },
    /// The interpreter exited, or closed or garbled its reply channel; `why` says which.
    Broken { why: String },
}

/// One run as the interpreter gets it.
pub struct Exchange {
    pub id: u64,
    /// The request line, and how much of it is in the pipe already, of which interpreter.
    pub line: String,
    pub written: usize,
    pub written_to: Option<Arc<pipe::Sender>>,
    pub started: Option<Instant>,
    pub timeout: Duration,
    pub sink: Option<Arc<dyn OutputSink>>,
    pub cancel: Cancel,
}

pub struct RunOutcome {
    pub end: RunEnd,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub dropped: (u64, u64),
    /// Display results, in the order displayed.
    pub displays: Vec<MimeBundle>,
    pub elapsed: Duration,
}

pub struct Interpreter {
    /// The driver's pid inside the sandbox.
    pub pid: i32,
    /// The name of its cgroup below the session's.
    pub cgroup: String,
    /// Shared so a caller can write a request straight into an idle interpreter.
    pub request: Arc<pipe::Sender>,
    reply: pipe::Receiver,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    pidfd: AsyncFd<OwnedFd>,
    reply_buf: Vec<u8>,
    /// How much of `reply_buf` is known to hold no newline, so each byte is scanned once.
    reply_scanned: usize,
    /// Read buffers, allocated once per interpreter rather than once per run (zeroing
    /// and freeing 192 KiB a run showed up in the warm path's profile).
    buffers: Box<Buffers>,
    /// Which of stdout/stderr reached end of file. The driver holds the only write
    /// ends, so this means the code closed the interpreter's fd 1 or 2: its output
    /// would be lost from then on, silently.
    closed_streams: [bool; 2],
    /// Whether a run has begun on this interpreter. What it writes before its first run
    /// (its start) is the first run's output; what it writes between runs is no run's.
    has_run: bool,
    /// Output read while no run was in progress, after the next run's request had been
    /// written into the pipe already (so it may be that run's): that run's, first.
    carried: [Vec<u8>; 2],
    /// False once the interpreter is known to be dead or unusable.
    pub alive: bool,
}

/// One read of the output pipes while no run is in progress: which stream, how many bytes.
pub struct IdleRead {
    pub stream: usize,
    pub len: usize,
}

impl Interpreter {
    pub fn new(pid: i32, cgroup: String, fds: SpawnedFds<OwnedFd>) -> std::io::Result<Interpreter> {
        super::sandbox::set_nonblocking(fds.pidfd.as_raw_fd())?;
        Ok(Interpreter {
            pid,
            cgroup,
            request: Arc::new(pipe::Sender::from_owned_fd(fds.request_w)?),
            reply: pipe::Receiver::from_owned_fd(fds.reply_r)?,
            stdout: pipe::Receiver::from_owned_fd(fds.stdout_r)?,
            stderr: pipe::Receiver::from_owned_fd(fds.stderr_r)?,
            pidfd: super::sandbox::register(fds.pidfd)?,
            reply_buf: Vec::new(),
            reply_scanned: 0,
            buffers: Box::new([[0; READ_CHUNK]; 3]),
            closed_streams: [false; 2],
            has_run: false,
            carried: [Vec::new(), Vec::new()],
            alive: true,
        })
    }

    /// Whether the process has exited (its pidfd is readable), without waiting.
    pub fn has_exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut poll, 1, 0) > 0 }
    }

    /// Runs one exchange to its end: an answer, or a kill. At the deadline, on
    /// `cancel`, or when `gone` resolves (the caller dropped the run) the run is
    /// interrupted (SIGINT), and killed if it has not answered `INTERRUPT_GRACE` later.
    /// Output past `cap` bytes a stream is counted and dropped.
    pub async fn run(
        &mut self,
        exchange: Exchange,
        cap: usize,
        gone: impl Future<Output = ()>,
    ) -> RunOutcome {
        let started = exchange.started.unwrap_or_else(Instant::now);
        self.has_run = true;
        let (mut stdout, mut stderr) = match exchange.sink {
            Some(_) => (CappedOutput::streaming(cap), CappedOutput::streaming(cap)),
            None => (CappedOutput::collecting(cap), CappedOutput::collecting(cap)),
        };
        let mut displays = Vec::new();
        let mut streams = Streams {
            stdout: &mut stdout,
            stderr: &mut stderr,
            displays: &mut displays,
            sink: exchange.sink.as_deref(),
        };
        let [out, err] = std::mem::take(&mut self.carried);
        if !out.is_empty() {
            streams.out(&out);
        }
        if !err.is_empty() {
            streams.err(&err);
        }
        let end = self
            .exchange(&exchange, started + exchange.timeout, &mut streams, gone)
            .await;
        self.drain(&mut streams);
        let end = match end {
            RunEnd::Replied { .. } if self.closed_streams.contains(&true) => {
                let stream = if self.closed_streams[0] {
                    "stdout (fd 1)"
                } else {
                    "stderr (fd 2)"
                };
                RunEnd::Broken {
                    why: format!("the code closed the interpreter's {stream}, so its output could no longer be captured"),
                }
            }
            end => end,
        };
        if !matches!(end, RunEnd::Replied { .. }) {
            self.alive = false;
        }
        let dropped = (stdout.dropped(), stderr.dropped());
        let sink = exchange.sink.as_deref();
        let mut emit_out = |c: &str| {
            if let Some(s) = sink {
                s.stdout(c, now_ns())
            }
        };
        let stdout = stdout.into_chunks(&mut emit_out);
        let mut emit_err = |c: &str| {
            if let Some(s) = sink {
                s.stderr(c, now_ns())
            }
        };
        let stderr = stderr.into_chunks(&mut emit_err);
        RunOutcome {
            end,
            stdout,
            stderr,
            dropped,
            displays,
            elapsed: started.elapsed(),
        }
    }

    async fn exchange(
        &mut self,
        exchange: &Exchange,
        deadline: Instant,
        streams: &mut Streams<'_>,
        gone: impl Future<Output = ()>,
    ) -> RunEnd {
        if !self.alive {
            return RunEnd::Broken {
                why: "the interpreter had already stopped".into(),
            };
        }
        tokio::pin!(gone);
        let request = self.request.clone();
        // The rest of the request (all of it unless sent early) is written concurrently
        // with reading: a request bigger than the pipe buffer must not wait on a driver
        // that is itself blocked writing output.
        let mut to_write = &exchange.line.as_bytes()[exchange.written..];
        let [out_buf, err_buf, reply_chunk] = &mut *self.buffers;
        let mut stopped: Option<(Stop, Instant)> = None;
        let mut caller_gone = false;
        // When the start of a line read so far goes out without its end.
        let mut flush_line_at: Option<Instant> = None;
        // The interrupt is sent again until the run answers: a driver that is still
        // reading the request takes a SIGINT then for one meant for the previous run,
        // and drops it.
        let mut interrupt_again_at: Option<Instant> = None;
        loop {
            flush_line_at = match (flush_line_at, streams.holds_partial_line()) {
                (_, false) => None,
                (None, true) => Some(Instant::now() + PARTIAL_LINE_WAIT),
                (at, true) => at,
            };
            while let Some(line) = take_line(&mut self.reply_buf, &mut self.reply_scanned) {
                match serde_json::from_slice::<DriverMessage>(&line) {
                    Ok(message) if message.id() != Some(exchange.id) => {
                        return RunEnd::Broken {
                            why: "the interpreter's reply channel carried a message for another request".into(),
                        }
                    }
                    Ok(DriverMessage::Display { bundle, .. }) => {
                        // The driver flushed what the code wrote before it displayed:
                        // that output is in the pipes now, and goes out first.
                        drain([&self.stdout, &self.stderr], &mut self.closed_streams, out_buf, streams);
                        streams.flush_partial_lines();
                        if let Some(sink) = streams.sink {
                            sink.result(&item_from_bundle(&bundle));
                        }
                        streams.displays.push(bundle);
                    }
                    Ok(DriverMessage::Reply(reply)) => {
                        return RunEnd::Replied {
                            reply,
                            stopped: stopped.map(|(s, _)| s),
                        }
                    }
                    Err(_) => {
                        return RunEnd::Broken {
                            why: "the interpreter's reply channel carried something that is not a driver message".into(),
                        }
                    }
                }
            }
            if self.reply_buf.len() > MAX_REPLY_BYTES {
                return RunEnd::Broken {
                    why: "the interpreter's reply was larger than 64 MiB".into(),
                };
            }
            let kill_at = stopped.map(|(_, at)| at + INTERRUPT_GRACE);
            let stop_now = tokio::select! {
                written = request.writable(), if !to_write.is_empty() => {
                    match written.and_then(|()| request.try_write(to_write)) {
                        Ok(n) => to_write = &to_write[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return RunEnd::Broken { why: format!("the interpreter stopped reading requests ({e})") },
                    }
                    None
                }
                n = self.stdout.read(out_buf), if !self.closed_streams[0] => {
                    match n {
                        Ok(0) | Err(_) => self.closed_streams[0] = true,
                        Ok(n) => streams.out(&out_buf[..n]),
                    }
                    None
                }
                n = self.stderr.read(err_buf), if !self.closed_streams[1] => {
                    match n {
                        Ok(0) | Err(_) => self.closed_streams[1] = true,
                        Ok(n) => streams.err(&err_buf[..n]),
                    }
                    None
                }
                n = self.reply.read(reply_chunk) => match n {
                    // Dying of the interrupt (e.g. still starting up) still ends as the stop.
                    Ok(0) | Err(_) => return match stopped {
                        Some((stop, _)) => RunEnd::Killed { stop },
                        None => RunEnd::Broken { why: "the interpreter exited or closed its reply channel".into() },
                    },
                    Ok(n) => {
                        self.reply_buf.extend_from_slice(&reply_chunk[..n]);
                        None
                    }
                },
                _ = tokio::time::sleep_until(deadline), if stopped.is_none() => Some(Stop::Timeout),
                _ = exchange.cancel.cancelled(), if stopped.is_none() => Some(Stop::Abort),
                _ = tokio::time::sleep_until(interrupt_again_at.unwrap_or(deadline)), if interrupt_again_at.is_some() => {
                    send_signal(&self.pidfd, libc::SIGINT);
                    interrupt_again_at = Some(Instant::now() + INTERRUPT_REPEAT);
                    None
                }
                _ = tokio::time::sleep_until(flush_line_at.unwrap_or(deadline)), if flush_line_at.is_some() => {
                    streams.flush_partial_lines();
                    None
                }
                _ = &mut gone, if stopped.is_none() && !caller_gone => {
                    caller_gone = true;
                    Some(Stop::Dropped)
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(deadline)), if kill_at.is_some() => {
                    send_signal(&self.pidfd, libc::SIGKILL);
                    return RunEnd::Killed { stop: stopped.map_or(Stop::Timeout, |(s, _)| s) };
                }
            };
            if let Some(stop) = stop_now {
                send_signal(&self.pidfd, libc::SIGINT);
                stopped = Some((stop, Instant::now()));
                interrupt_again_at = Some(Instant::now() + INTERRUPT_REPEAT);
            }
        }
    }

    /// What the interpreter wrote before replying is already in the pipes: take it
    /// without waiting (what a background process writes later is no run's: the
    /// context reads and drops it while it waits for the next run).
    fn drain(&mut self, streams: &mut Streams<'_>) {
        let pipes = [&self.stdout, &self.stderr];
        drain(
            pipes,
            &mut self.closed_streams,
            &mut self.buffers[0],
            streams,
        );
    }

    /// Whether output written now would belong to no run: a run has been served, and
    /// the interpreter can still write (it is alive, a stream is open).
    pub fn can_write_between_runs(&self) -> bool {
        self.has_run && self.alive && self.closed_streams.contains(&false)
    }

    /// Waits for output while no run is in progress and reads one chunk of it (into a
    /// buffer of this interpreter: then [`Self::carry`] keeps it or the caller drops it).
    /// A stream at its end reads as 0 bytes and is marked closed, as during a run.
    /// Cancel-safe: dropped before it completes, it has read nothing.
    pub async fn read_idle(&mut self) -> IdleRead {
        let [out_buf, err_buf, _] = &mut *self.buffers;
        let (stream, n) = tokio::select! {
            n = self.stdout.read(out_buf), if !self.closed_streams[0] => (0, n),
            n = self.stderr.read(err_buf), if !self.closed_streams[1] => (1, n),
            else => std::future::pending().await,
        };
        let len = match n {
            Ok(0) | Err(_) => {
                self.closed_streams[stream] = true;
                0
            }
            Ok(n) => n,
        };
        IdleRead { stream, len }
    }

    /// Keeps what `read` read for the next run.
    pub fn carry(&mut self, read: &IdleRead) {
        let buf = &self.buffers[read.stream];
        self.carried[read.stream].extend_from_slice(&buf[..read.len]);
    }

    /// Forgets what was kept for the next run; how many bytes that was.
    pub fn drop_carried(&mut self) -> u64 {
        let n = self.carried.iter().map(Vec::len).sum::<usize>();
        self.carried = [Vec::new(), Vec::new()];
        n as u64
    }

    /// Reads and drops what the pipes hold now, at most about `limit` bytes, without
    /// waiting: output written while no run was in progress. How many bytes that was.
    pub fn drain_idle(&mut self, limit: usize) -> u64 {
        let mut total = 0;
        let pipes = [&self.stdout, &self.stderr];
        for (index, pipe) in pipes.into_iter().enumerate() {
            while !self.closed_streams[index] && total < limit {
                match pipe.try_read(&mut self.buffers[0]) {
                    Ok(0) => self.closed_streams[index] = true,
                    Ok(n) => total += n,
                    Err(_) => break,
                }
            }
        }
        total as u64
    }

    /// Signals through the pidfd, which names exactly this process even if its pid
    /// was reused, and works across the pid namespace.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(&self.pidfd, signal);
    }
}

/// Takes what the pipes hold now, without waiting; a pipe at its end is marked closed.
fn drain(
    pipes: [&pipe::Receiver; 2],
    closed: &mut [bool; 2],
    buf: &mut [u8],
    streams: &mut Streams<'_>,
) {
    for (index, pipe) in pipes.into_iter().enumerate() {
        while !closed[index] {
            match pipe.try_read(buf) {
                Ok(0) => closed[index] = true,
                Ok(n) if index == 0 => streams.out(&buf[..n]),
                Ok(n) => streams.err(&buf[..n]),
                Err(_) => break,
            }
        }
    }
}

fn send_signal(pidfd: &AsyncFd<OwnedFd>, signal: libc::c_int) {
    // SAFETY: pidfd_send_signal with a valid pidfd, a null siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.get_ref().as_raw_fd(),
            signal,
            std::ptr::null::<u8>(),
            0,
        );
    }
}

/// Where one run's output goes.
struct Streams<'a> {
    stdout: &'a mut CappedOutput,
    stderr: &'a mut CappedOutput,
    displays: &'a mut Vec<MimeBundle>,
    sink: Option<&'a dyn OutputSink>,
}

impl Streams<'_> {
    fn holds_partial_line(&self) -> bool {
        self.stdout.holds_partial_line() || self.stderr.holds_partial_line()
    }

    fn flush_partial_lines(&mut self) {
        let sink = self.sink;
        self.stdout.flush_partial_line(&mut |c| {
            if let Some(s) = sink {
                s.stdout(c, now_ns())
            }
        });
        self.stderr.flush_partial_line(&mut |c| {
            if let Some(s) = sink {
                s.stderr(c, now_ns())
            }
        });
    }

    fn out(&mut self, bytes: &[u8]) {
        let sink = self.sink;
        self.stdout.push(bytes, &mut |c| {
            if let Some(s) = sink {
                s.stdout(c, now_ns())
            }
        });
    }

    fn err(&mut self, bytes: &[u8]) {
        let sink = self.sink;
        self.stderr.push(bytes, &mut |c| {
            if let Some(s) = sink {
                s.stderr(c, now_ns())
            }
        });
    }
}

/// The next complete line of `buf`, without its newline.
fn take_line(buf: &mut Vec<u8>, scanned: &mut usize) -> Option<Vec<u8>> {
    let Some(offset) = buf[*scanned..].iter().position(|&b| b == b'\n') else {
        *scanned = buf.len();
        return None;
    };
    let end = *scanned + offset;
    let rest = buf.split_off(end + 1);
    let mut line = std::mem::replace(buf, rest);
    line.pop();
    *scanned = 0;
    Some(line)
}

/// Unpredictable request ids, so a reply can only come from the driver that read the
/// request; below 2^53, so a JavaScript number holds them exactly.
pub fn random_id() -> u64 {
    super::random_u64() >> 11
}
