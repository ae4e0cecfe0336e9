//! The `codebay-sandbox` helper process, seen from the engine: start it with the
//! config, ask it to spawn and kill processes, end it (docs/internals.md §1–2). Every
//! message is a `codebay_protocol::helper` type; descriptors travel with
//! `codebay_sandbox::sys`'s SCM_RIGHTS functions.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codebay_protocol::helper::{MAX_FDS, MAX_MESSAGE_BYTES};
use codebay_protocol::{CgroupInfo, HelperReply, HelperRequest, SandboxConfig, SpawnedFds};
use codebay_sandbox::sys::{recv_with_fds, send_with_fds};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not start the sandbox helper {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A layer of the sandbox could not be built, or a spawn was refused; `step` names
    /// the layer. Nothing runs.
    #[error("the sandbox could not be built ({step}): {message}")]
    Setup { step: String, message: String },
    #[error("the sandbox helper broke its protocol: {0}")]
    Protocol(String),
    #[error("the sandbox is gone: {0}")]
    Gone(String),
}

impl SandboxError {
    /// The kernel lacks what isolation needs (as opposed to a failure of this host).
    pub fn is_kernel_unsupported(&self) -> bool {
        matches!(self, SandboxError::Setup { step, .. } if step == "kernel_check")
    }

    /// Not root and no cgroup delegated: the message says how to get one.
    pub fn is_no_cgroup(&self) -> bool {
        matches!(self, SandboxError::Setup { step, .. } if step == "no_cgroup")
    }
}

/// A spawned process: its pid inside the sandbox and its descriptors.
pub struct Spawned {
    pub pid: i32,
    pub fds: SpawnedFds<OwnedFd>,
}

pub struct Sandbox {
    control: Mutex<Option<ControlSocket>>,
    helper: Mutex<Option<tokio::process::Child>>,
    /// None for a session with rlimits only.
    pub cgroup: Option<CgroupInfo>,
}

/// How long a spawn or kill may take: init answers in milliseconds; one that does not
/// answer in this time is stopped or stuck, and the sandbox is treated as gone.
const HELPER_ANSWERS_WITHIN: Duration = Duration::from_secs(10);

/// Long enough for the helper to kill a full pid namespace and remove its cgroups.
const EXIT_GRACE: Duration = Duration::from_secs(10);

impl Sandbox {
    pub async fn start(
        helper_path: &Path,
        config: &SandboxConfig,
    ) -> Result<Sandbox, SandboxError> {
        let spawn_error = |source: std::io::Error| SandboxError::Spawn {
            path: helper_path.into(),
            source,
        };
        let (ours, theirs) = codebay_sandbox::sys::seqpacket_pair().map_err(spawn_error)?;
        let stderr = if std::env::var_os("CODEBAY_DEBUG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        // The socket becomes the helper's stdin: std dup2s it without a pre_exec hook,
        // which would be unsound in a multi-threaded process like Node.
        // No kill_on_drop: a session dropped without close() (Node exiting, a lost
        // reference) must still be cleaned up, and only the helper can remove its
        // cgroups. Dropping our socket end makes init exit and the helper clean up.
        let mut child = tokio::process::Command::new(helper_path)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_clear()
            .spawn()
            .map_err(spawn_error)?;
        let mut control = ControlSocket::new(ours)?;
        let config = serde_json::to_vec(config).expect("the config serialises");
        let answer = async {
            control.send(&config).await?;
            control.recv().await
        }
        .await;
        match answer {
            Ok((HelperReply::Ready { cgroup }, _)) => Ok(Sandbox {
                control: Mutex::new(Some(control)),
                helper: Mutex::new(Some(child)),
                cgroup,
            }),
            Ok((HelperReply::Error { step, message, .. }, _)) => {
                let _ = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
                Err(SandboxError::Setup { step, message })
            }
            Ok((other, _)) => {
                end_helper(control, &mut child).await;
                Err(SandboxError::Protocol(format!(
                    "expected ready, got {other:?}"
                )))
            }
            Err(err) => {
                end_helper(control, &mut child).await;
                Err(err)
            }
        }
    }

    /// Starts `argv` in a new child cgroup `context` of the session's.
    pub async fn spawn(
        &self,
        id: u64,
        context: &str,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: &str,
    ) -> Result<Spawned, SandboxError> {
        let request = HelperRequest::Spawn {
            id,
            context: context.into(),
            argv,
            env,
            cwd: cwd.into(),
        };
        match self.request(&request).await? {
            (HelperReply::Spawned { id: got, pid }, fds) if got == id => {
                let fds = SpawnedFds::from_vec(fds).map_err(|fds| {
                    SandboxError::Protocol(format!(
                        "spawn sent {} descriptors, not {}",
                        fds.len(),
                        SpawnedFds::<OwnedFd>::COUNT
                    ))
                })?;
                Ok(Spawned { pid, fds })
            }
            (HelperReply::Error { step, message, .. }, _) => {
                Err(SandboxError::Setup { step, message })
            }
            (other, _) => Err(SandboxError::Protocol(format!(
                "expected spawned {id}, got {other:?}"
            ))),
        }
    }

    /// Kills every process of a context's cgroup but `keep` (and then removes the
    /// cgroup when nothing is kept).
    pub async fn kill(
        &self,
        id: u64,
        context: &str,
        keep: Option<i32>,
    ) -> Result<u32, SandboxError> {
        let request = HelperRequest::Kill {
            id,
            context: context.into(),
            keep_pid: keep,
        };
        match self.request(&request).await? {
            (HelperReply::Killed { id: got, count }, _) if got == id => Ok(count),
            (HelperReply::Error { step, message, .. }, _) => {
                Err(SandboxError::Setup { step, message })
            }
            (other, _) => Err(SandboxError::Protocol(format!(
                "expected killed {id}, got {other:?}"
            ))),
        }
    }

    async fn request(
        &self,
        request: &HelperRequest,
    ) -> Result<(HelperReply, Vec<OwnedFd>), SandboxError> {
        let bytes = serde_json::to_vec(request).expect("requests serialise");
        let mut guard = self.control.lock().await;
        let control = guard
            .as_mut()
            .ok_or_else(|| SandboxError::Gone("the session is closed".into()))?;
        if control.in_flight {
            // An earlier request was given up mid-way (its caller timed out or went
            // away): its answer may still come, and would be read as this one's.
            *guard = None;
            return Err(SandboxError::Gone(
                "an earlier request to the sandbox helper was never answered".into(),
            ));
        }
        control.in_flight = true;
        let exchange = async {
            control.send(&bytes).await?;
            control.recv().await
        };
        match tokio::time::timeout(HELPER_ANSWERS_WITHIN, exchange).await {
            Ok(answer) => {
                if let Some(control) = guard.as_mut() {
                    control.in_flight = false;
                }
                answer
            }
            Err(_) => {
                *guard = None;
                Err(SandboxError::Gone(format!(
                    "the sandbox helper did not answer within {} s",
                    HELPER_ANSWERS_WITHIN.as_secs()
                )))
            }
        }
    }

    /// Whether the sandbox is gone: init holds the other end of the control socket, so
    /// a hang-up there means init (and with it every process of the sandbox) is dead.
    pub fn is_gone(&self) -> bool {
        let Ok(guard) = self.control.try_lock() else {
            return false; // in use: someone is talking to it
        };
        let Some(control) = guard.as_ref() else {
            return true;
        };
        let mut poll = libc::pollfd {
            fd: control.fd.get_ref().as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Ends the sandbox: closing the socket makes init exit, which kills every process
    /// of its pid namespace; the helper then removes the cgroups and exits. Waiting for
    /// that exit is what makes "nothing is left" true when this returns. Idempotent.
    pub async fn close(&self) {
        let control = self.control.lock().await.take();
        let Some(mut child) = self.helper.lock().await.take() else {
            return;
        };
        end_helper(control, &mut child).await;
        // A helper that was killed could not remove its cgroups: do it for it.
        let dirs: Vec<PathBuf> = self
            .cgroup
            .iter()
            .flat_map(|c| &c.dirs)
            .map(PathBuf::from)
            .collect();
        if dirs.iter().any(|d| d.exists()) {
            let _ =
                tokio::task::spawn_blocking(move || codebay_sandbox::cgroup::destroy_tree(&dirs))
                    .await;
        }
    }
}

/// Ends the helper the way that lets it clean up: our socket end closes, init exits,
/// the helper removes the cgroups. Killed only if it does not exit in time, because a
/// killed helper leaves its cgroups behind.
async fn end_helper(control: impl Sized, child: &mut tokio::process::Child) {
    drop(control);
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// The engine's end of the SOCK_SEQPACKET control socket.
struct ControlSocket {
    fd: AsyncFd<OwnedFd>,
    /// A request was sent and its answer not yet read.
    in_flight: bool,
}

impl ControlSocket {
    fn new(fd: OwnedFd) -> Result<Self, SandboxError> {
        let protocol = |e: std::io::Error| SandboxError::Protocol(format!("control socket: {e}"));
        set_nonblocking(fd.as_raw_fd()).map_err(protocol)?;
        Ok(ControlSocket {
            fd: register(fd).map_err(protocol)?,
            in_flight: false,
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SandboxError> {
        loop {
            let mut guard = self.fd.writable().await.map_err(gone)?;
            match guard.try_io(|fd| send_with_fds(fd.as_raw_fd(), bytes, &[])) {
                Ok(result) => return result.map_err(gone),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&mut self) -> Result<(HelperReply, Vec<OwnedFd>), SandboxError> {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        loop {
            let mut guard = self.fd.readable().await.map_err(gone)?;
            match guard.try_io(|fd| recv_with_fds(fd.as_raw_fd(), &mut buf)) {
                Ok(Ok((0, _))) => {
                    return Err(SandboxError::Gone("the sandbox helper exited".into()))
                }
                Ok(Ok((n, fds))) => {
                    if fds.len() > MAX_FDS {
                        return Err(SandboxError::Protocol(format!(
                            "{} descriptors in one message",
                            fds.len()
                        )));
                    }
                    let reply = serde_json::from_slice(&buf[..n]).map_err(|e| {
                        SandboxError::Protocol(format!(
                            "not a helper reply: {e}: {}",
                            String::from_utf8_lossy(&buf[..n])
                        ))
                    })?;
                    return Ok((reply, fds));
                }
                Ok(Err(e)) => return Err(gone(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers a descriptor with the reactor.
pub(crate) fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open, owned, and keeps the same descriptor until the
    // AsyncFd that now owns it drops it.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

pub(crate) fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn gone(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Gone(e.to_string())
}
