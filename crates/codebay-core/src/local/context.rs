//! One interpreter (a driver process inside the sandbox) and the runs it serves:
//! request out, stdout/stderr captured, one reply back (docs/internals.md §4).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::time::Instant;

use super::output::CappedOutput;
use super::sandbox::DriverFds;
use crate::wire::{MimeBundle, WireError};

/// After the interrupt, how long a run gets to stop by itself before it is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// A reply larger than this is not a reply: the interpreter is treated as broken.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// One pipe read: the size of a default pipe buffer.
const READ_CHUNK: usize = 64 * 1024;
type Chunks = [[u8; READ_CHUNK]; 3];

/// What the driver answers for one run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverReply {
    pub id: Option<u64>,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub execution_count: Option<u64>,
    #[serde(default)]
    pub results: Vec<MimeBundle>,
    #[serde(default)]
    pub error: Option<WireError>,
}

/// How a run ended, seen from outside the interpreter.
#[derive(Debug)]
pub enum RunEnd {
    /// The driver answered (possibly after the interrupt, when `interrupted`).
    Replied {
        reply: DriverReply,
        interrupted: bool,
    },
    /// The deadline passed and the interpreter did not stop within the grace: killed.
    KilledAfterTimeout,
    /// The interpreter exited, or closed or garbled its reply channel; `why` says which.
    Broken { why: String },
}

/// One request line for the driver, and how much of it is already in the pipe.
pub struct Request {
    id: u64,
    line: String,
    timeout: Duration,
    written: usize,
    started: Option<Instant>,
}

impl Request {
    pub fn new(code: &str, timeout: Duration) -> Request {
        // Unpredictable, so that a reply can only come from the driver that read the request.
        let id = random_id();
        let line = json!({ "id": id, "code": code, "timeoutMs": timeout.as_millis() as u64 })
            .to_string()
            + "\n";
        Request {
            id,
            line,
            timeout,
            written: 0,
            started: None,
        }
    }
}

pub struct RunOutcome {
    pub end: RunEnd,
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
    pub elapsed: Duration,
}

pub struct Context {
    pub pid: i64,
    request: pipe::Sender,
    reply: pipe::Receiver,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    pidfd: AsyncFd<OwnedFd>,
    reply_buf: Vec<u8>,
    /// How much of `reply_buf` is known to hold no newline, so each byte is scanned once.
    reply_scanned: usize,
    /// Read buffers, allocated once per interpreter rather than once per run (zeroing
    /// and freeing 192 KiB a run showed up in the warm path's profile).
    chunks: Option<Box<Chunks>>,
    /// Which of stdout/stderr reached end of file. The driver holds the only write
    /// ends, so this means the user's code closed the interpreter's fd 1 or 2: its
    /// output would be lost from then on, silently.
    closed_streams: [bool; 2],
    /// False once the interpreter is known to be dead or unusable.
    pub alive: bool,
}

impl Context {
    pub fn new(fds: DriverFds) -> std::io::Result<Context> {
        super::sandbox::set_nonblocking(fds.pidfd.as_raw_fd())?;
        Ok(Context {
            pid: fds.pid,
            request: pipe::Sender::from_owned_fd(fds.request_w)?,
            reply: pipe::Receiver::from_owned_fd(fds.reply_r)?,
            stdout: pipe::Receiver::from_owned_fd(fds.stdout_r)?,
            stderr: pipe::Receiver::from_owned_fd(fds.stderr_r)?,
            pidfd: super::sandbox::register(fds.pidfd)?,
            reply_buf: Vec::new(),
            reply_scanned: 0,
            chunks: Some(Box::new([[0; READ_CHUNK]; 3])),
            closed_streams: [false; 2],
            alive: true,
        })
    }

    /// Writes the request now if the pipe takes it without waiting, so the interpreter
    /// can start while the task that will read its reply is still being scheduled.
    /// Safe from any thread: it only tries a non-blocking write.
    pub fn send_early(&self, request: &mut Request) {
        if self.alive && request.written == 0 {
            if let Ok(n) = self.request.try_write(request.line.as_bytes()) {
                request.written = n;
                request.started = Some(Instant::now());
            }
        }
    }

    /// Runs a request, part or all of which may have been sent already (`send_early`).
    /// At its timeout the run is interrupted (SIGINT), and killed if it has not
    /// answered `INTERRUPT_GRACE` later. Output past `cap` bytes a stream is counted and
    /// dropped.
    pub async fn run(&mut self, request: Request, cap: usize) -> RunOutcome {
        let started = request.started.unwrap_or_else(Instant::now);
        let mut stdout = CappedOutput::new(cap);
        let mut stderr = CappedOutput::new(cap);
        let mut chunks = self
            .chunks
            .take()
            .unwrap_or_else(|| Box::new([[0; READ_CHUNK]; 3]));
        let end = self
            .exchange(
                request.id,
                &request.line.as_bytes()[request.written..],
                started + request.timeout,
                &mut chunks,
                &mut stdout,
                &mut stderr,
            )
            .await;
        self.drain(&mut chunks[0], &mut stdout, &mut stderr);
        self.chunks = Some(chunks);
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
        RunOutcome {
            end,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }
    }

    async fn exchange(
        &mut self,
        id: u64,
        request: &[u8],
        deadline: Instant,
        chunks: &mut Chunks,
        stdout: &mut CappedOutput,
        stderr: &mut CappedOutput,
    ) -> RunEnd {
        if !self.alive {
            return RunEnd::Broken {
                why: "the interpreter had already stopped".into(),
            };
        }
        // The rest of the request (all of it unless sent early) is written concurrently
        // with reading: a request bigger than the pipe buffer must not wait on a driver
        // that is itself blocked writing output.
        let mut to_write = request;
        let [out_buf, err_buf, reply_chunk] = chunks;
        let [mut out_open, mut err_open] = self.closed_streams.map(|closed| !closed);
        let mut interrupted_at: Option<Instant> = None;
        loop {
            if let Some(line) = self.take_reply_line() {
                return match serde_json::from_slice::<DriverReply>(&line) {
                    Ok(reply) if reply.id == Some(id) => RunEnd::Replied {
                        reply,
                        interrupted: interrupted_at.is_some(),
                    },
                    Ok(_) => RunEnd::Broken {
                        why: "the interpreter's reply channel carried a reply to another request"
                            .into(),
                    },
                    Err(_) => RunEnd::Broken {
                        why:
                            "the interpreter's reply channel carried something that is not a reply"
                                .into(),
                    },
                };
            }
            if self.reply_buf.len() > MAX_REPLY_BYTES {
                return RunEnd::Broken {
                    why: "the interpreter's reply was larger than 64 MiB".into(),
                };
            }
            let kill_at = interrupted_at.map(|t| t + INTERRUPT_GRACE);
            tokio::select! {
                written = self.request.write(to_write), if !to_write.is_empty() => match written {
                    Ok(n) => to_write = &to_write[n..],
                    Err(e) => return RunEnd::Broken { why: format!("the interpreter stopped reading requests ({e})") },
                },
                n = self.stdout.read(out_buf), if out_open => match n {
                    Ok(0) | Err(_) => (out_open, self.closed_streams[0]) = (false, true),
                    Ok(n) => stdout.push(&out_buf[..n]),
                },
                n = self.stderr.read(err_buf), if err_open => match n {
                    Ok(0) | Err(_) => (err_open, self.closed_streams[1]) = (false, true),
                    Ok(n) => stderr.push(&err_buf[..n]),
                },
                n = self.reply.read(reply_chunk) => match n {
                    // Dying of the interrupt (e.g. still starting up) is still the timeout.
                    Ok(0) | Err(_) if interrupted_at.is_some() => return RunEnd::KilledAfterTimeout,
                    Ok(0) | Err(_) => return RunEnd::Broken { why: "the interpreter exited or closed its reply channel".into() },
                    Ok(n) => self.reply_buf.extend_from_slice(&reply_chunk[..n]),
                },
                _ = tokio::time::sleep_until(deadline), if interrupted_at.is_none() => {
                    self.signal(libc::SIGINT);
                    interrupted_at = Some(Instant::now());
                },
                _ = tokio::time::sleep_until(kill_at.unwrap_or(deadline)), if kill_at.is_some() => {
                    self.signal(libc::SIGKILL);
                    return RunEnd::KilledAfterTimeout;
                },
            }
        }
    }

    fn take_reply_line(&mut self) -> Option<Vec<u8>> {
        let Some(offset) = self.reply_buf[self.reply_scanned..]
            .iter()
            .position(|&b| b == b'\n')
        else {
            self.reply_scanned = self.reply_buf.len();
            return None;
        };
        let end = self.reply_scanned + offset;
        let rest = self.reply_buf.split_off(end + 1);
        let mut line = std::mem::replace(&mut self.reply_buf, rest);
        line.pop();
        self.reply_scanned = 0;
        Some(line)
    }

    /// What the interpreter wrote before replying is already in the pipes: take it
    /// without waiting (a background process may keep writing; that is the next run's).
    fn drain(&mut self, buf: &mut [u8], stdout: &mut CappedOutput, stderr: &mut CappedOutput) {
        let pipes = [(&self.stdout, stdout), (&self.stderr, stderr)];
        for ((pipe, out), closed) in pipes.into_iter().zip(&mut self.closed_streams) {
            while !*closed {
                match pipe.try_read(buf) {
                    Ok(0) => *closed = true,
                    Ok(n) => out.push(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
    }

    /// Signals through the pidfd, which names exactly this process even if its pid
    /// was reused, and works across the pid namespace.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal with a valid pidfd, a null siginfo and no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal,
                std::ptr::null::<u8>(),
                0,
            );
        }
    }
}

fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised; a zero id
    // would still be correct, only guessable.
    // SAFETY: the buffer is valid for 8 bytes.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, 0) };
    // JSON numbers above 2^53 lose precision in JavaScript: stay below it.
    u64::from_le_bytes(bytes) >> 11
}
