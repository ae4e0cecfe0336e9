//! The `codebay-sandbox` helper process, seen from the addon: start it, ask it for
//! interpreter processes, end it. The protocol is docs/internals.md §1–2.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use crate::request::Language;

/// What the helper needs to build one sandbox (docs/internals.md §1).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    pub session_id: String,
    pub memory_bytes: u64,
    pub max_processes: u32,
    pub cpu_cores: Option<f64>,
    pub network: bool,
    pub workspace_bytes: u64,
    pub tmp_bytes: u64,
    pub read_only_paths: Vec<PathBuf>,
    pub runtimes_dir: PathBuf,
    pub python_executable: PathBuf,
    pub node_executable: PathBuf,
    pub env: BTreeMap<String, String>,
    pub max_open_files: u64,
    pub max_file_bytes: u64,
}

/// The helper's first answer once the sandbox stands.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    pub cgroup: CgroupInfo,
    /// v2 `memory.events` or v1 `memory.oom_control`: both have an `oom_kill N` line.
    pub memory_events: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CgroupInfo {
    pub version: u8,
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not start the sandbox helper {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A layer of the sandbox could not be built; `step` names it. Nothing runs.
    #[error("the sandbox could not be built ({step}): {message}")]
    Setup { step: String, message: String },
    #[error("the sandbox helper broke its protocol: {0}")]
    Protocol(String),
    #[error("the sandbox is gone: {0}")]
    Gone(String),
}

/// The five descriptors of one interpreter, in the order init sends them.
pub struct DriverFds {
    pub pid: i64,
    pub request_w: OwnedFd,
    pub reply_r: OwnedFd,
    pub stdout_r: OwnedFd,
    pub stderr_r: OwnedFd,
    pub pidfd: OwnedFd,
}

pub struct Sandbox {
    control: Mutex<Option<ControlSocket>>,
    helper: Mutex<Option<tokio::process::Child>>,
    pub ready: Ready,
}

/// Long enough for the helper to kill a full pid namespace and remove its cgroups.
const EXIT_GRACE: Duration = Duration::from_secs(10);

impl Sandbox {
    pub async fn start(
        helper_path: &Path,
        config: &SandboxConfig,
    ) -> Result<Sandbox, SandboxError> {
        let (ours, theirs) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| SandboxError::Spawn {
            path: helper_path.into(),
            source: e.into(),
        })?;
        let stderr = if std::env::var_os("CODEBAY_DEBUG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        // The socket becomes the helper's stdin: std dup2s it without a pre_exec hook,
        // which would be unsound in a multi-threaded process like Node.
        // No kill_on_drop: a session dropped without close() (Node exiting, a lost
        // reference) must still be cleaned up, and only the helper can remove its
        // cgroups. SIGKILLing it would leave them behind; dropping our socket end
        // instead makes init exit and the helper clean up and exit by itself.
        let mut child = tokio::process::Command::new(helper_path)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_clear()
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                path: helper_path.into(),
                source,
            })?;
        let mut control = ControlSocket::new(ours)?;
        let config = serde_json::to_value(config).expect("the config serialises");
        let answer = async {
            control.send(&config).await?;
            control.recv().await
        }
        .await;
        let (message, _) = match answer {
            Ok(answer) => answer,
            Err(err) => {
                end_helper(control, &mut child).await;
                return Err(err);
            }
        };
        match message.get("type").and_then(Value::as_str) {
            Some("ready") => {
                let ready: Ready = serde_json::from_value(message.clone()).map_err(|e| {
                    SandboxError::Protocol(format!("bad ready message {message}: {e}"))
                })?;
                Ok(Sandbox {
                    control: Mutex::new(Some(control)),
                    helper: Mutex::new(Some(child)),
                    ready,
                })
            }
            Some("error") => {
                let _ = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
                Err(setup_error(&message))
            }
            _ => {
                end_helper(control, &mut child).await;
                Err(SandboxError::Protocol(format!(
                    "expected ready, got {message}"
                )))
            }
        }
    }

    /// Starts one interpreter for `language` inside the sandbox.
    pub async fn spawn(&self, id: u64, language: Language) -> Result<DriverFds, SandboxError> {
        let (message, fds) = self
            .request(json!({ "type": "spawn", "id": id, "language": language.canonical() }))
            .await?;
        if message.get("type").and_then(Value::as_str) != Some("spawned") {
            return Err(setup_error(&message));
        }
        let pid = message.get("pid").and_then(Value::as_i64).unwrap_or(-1);
        let [request_w, reply_r, stdout_r, stderr_r, pidfd]: [OwnedFd; 5] =
            fds.try_into().map_err(|fds: Vec<OwnedFd>| {
                SandboxError::Protocol(format!("spawn sent {} fds, not 5", fds.len()))
            })?;
        Ok(DriverFds {
            pid,
            request_w,
            reply_r,
            stdout_r,
            stderr_r,
            pidfd,
        })
    }

    /// Kills an interpreter and every process of its session (its children, a fork bomb).
    pub async fn kill_group(&self, pid: i64) -> Result<(), SandboxError> {
        let (message, _) = self.request(json!({ "type": "kill", "pid": pid })).await?;
        match message.get("type").and_then(Value::as_str) {
            Some("killed") => Ok(()),
            _ => Err(setup_error(&message)),
        }
    }

    async fn request(&self, message: Value) -> Result<(Value, Vec<OwnedFd>), SandboxError> {
        let mut guard = self.control.lock().await;
        let control = guard
            .as_mut()
            .ok_or_else(|| SandboxError::Gone("the session is closed".into()))?;
        control.send(&message).await?;
        control.recv().await
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

fn setup_error(message: &Value) -> SandboxError {
    let text = |k: &str| {
        message
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if message.get("type").and_then(Value::as_str) == Some("error") {
        SandboxError::Setup {
            step: text("step"),
            message: text("message"),
        }
    } else {
        SandboxError::Protocol(format!("unexpected message {message}"))
    }
}

/// The addon's end of the SOCK_SEQPACKET control socket: one JSON object per datagram.
struct ControlSocket {
    fd: AsyncFd<OwnedFd>,
}

const MAX_MESSAGE: usize = 64 * 1024;
const MAX_FDS: usize = 8;

impl ControlSocket {
    fn new(fd: OwnedFd) -> Result<Self, SandboxError> {
        set_nonblocking(fd.as_raw_fd())
            .map_err(|e| SandboxError::Protocol(format!("control socket: {e}")))?;
        let fd =
            register(fd).map_err(|e| SandboxError::Protocol(format!("control socket: {e}")))?;
        Ok(ControlSocket { fd })
    }

    async fn send(&mut self, message: &Value) -> Result<(), SandboxError> {
        let bytes = message.to_string().into_bytes();
        loop {
            let mut guard = self.fd.writable().await.map_err(gone)?;
            let sent = guard.try_io(|fd| {
                socket::sendmsg::<()>(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &[],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(gone(e)),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&mut self) -> Result<(Value, Vec<OwnedFd>), SandboxError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut guard = self.fd.readable().await.map_err(gone)?;
            let got = guard.try_io(|fd| receive(fd.as_raw_fd(), &mut buf));
            match got {
                Ok(Ok((0, _))) => {
                    return Err(SandboxError::Gone("the sandbox helper exited".into()))
                }
                Ok(Ok((n, fds))) => {
                    let message = serde_json::from_slice(&buf[..n])
                        .map_err(|e| SandboxError::Protocol(format!("not JSON: {e}")))?;
                    return Ok((message, fds));
                }
                Ok(Err(e)) => return Err(gone(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = socket::recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: SCM_RIGHTS gave this process new descriptors that nothing else owns.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    Ok((msg.bytes, fds))
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
