//! Init: pid 1 of the sandbox. Finishes the sandbox (hostname, mounts), reports `ready`,
//! then serves the engine's requests in order:
//!
//! - `spawn`: makes the context's cgroup in every hierarchy, forks, and the child joins
//!   that cgroup (first of all, or it never execs), takes a cgroup namespace rooted
//!   there, and applies every other layer (fd layout 0..4, setsid, rlimits, the code's
//!   credentials, Landlock, its working directory made as the code's user, seccomp)
//!   before executing the request's argv. The helper knows no language: argv, env and
//!   cwd are the engine's.
//! - `kill`: SIGKILLs every process of a context's cgroup (except `keepPid`), whatever
//!   sessions or process groups they made; without `keepPid` the cgroup goes too.
//!
//! It reaps every zombie by ignoring SIGCHLD (SA_NOCLDWAIT semantics), and exits on EOF
//! of the control socket, which makes the kernel kill the whole pid namespace.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use codebay_protocol::helper::{valid_abs_path, valid_cwd, valid_name, HOME};
use codebay_protocol::{HelperReply, HelperRequest, SandboxConfig, SpawnedFds};
use seccompiler::BpfProgram;

use crate::contexts::Contexts;
use crate::landlock::Policy;
use crate::mounts::{self, MountPlan};
use crate::namespaces::{SANDBOX_GID, SANDBOX_UID};
use crate::protocol::{self, CONTROL_FD};
use crate::{config, credentials, ipc, resource_limits, seccomp, sys, SandboxError};

pub struct InitContext {
    pub config: SandboxConfig,
    pub plan: MountPlan,
    pub seccomp: Vec<BpfProgram>,
    pub ready: HelperReply,
    /// The supervisor writes one byte here once cgroups and id maps are in place.
    pub release_r: OwnedFd,
    /// Init's id inside the sandbox: 0 when the supervisor mapped a range, else 1000.
    pub inside_id: u32,
    /// The session's cgroup directories, delegated to init, where contexts are made.
    pub contexts: Contexts,
}

struct Session {
    config: SandboxConfig,
    seccomp: Vec<BpfProgram>,
    policy: Policy,
    devnull: OwnedFd,
    contexts: Contexts,
}

/// `report_w`: init writes 'R' after `ready` or 'E' after an error, so the supervisor
/// knows whether the engine has already been told something.
pub fn run(ctx: InitContext, report_w: OwnedFd) -> ! {
    let report = report_w.as_raw_fd();
    let code = match setup(ctx, report) {
        Ok(Some(session)) => {
            let _ = sys::write_all(report, b"R");
            serve(&session)
        }
        Ok(None) => 1,
        Err(e) => {
            let _ = protocol::send(CONTROL_FD, &protocol::error_reply(None, &e), &[]);
            let _ = sys::write_all(report, b"E");
            1
        }
    };
    // SAFETY: _exit ends init without unwinding or running destructors of the supervisor's
    // copied state.
    unsafe { libc::_exit(code) }
}

/// Whether nobody reads `report` any more: the supervisor exited.
fn supervisor_gone(report: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: report,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

fn init_err(what: &str) -> SandboxError {
    SandboxError::Init(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// `report` is the write end of a pipe only the supervisor reads: it reports POLLERR
/// once the supervisor is gone.
fn setup(ctx: InitContext, report: RawFd) -> Result<Option<Session>, SandboxError> {
    let mut byte = [0u8; 1];
    // SAFETY: byte is a valid 1-byte buffer.
    let n = unsafe { libc::read(ctx.release_r.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        // The supervisor failed (and reports it) or died before releasing us.
        return Ok(None);
    }
    drop(ctx.release_r);

    // Our credentials still carry the host ids, which this namespace may not map (then
    // every file we create fails with EOVERFLOW); switch to the mapped inside id.
    credentials::become_inside(ctx.inside_id)?;

    // If the supervisor dies, nobody would clean up: die with it. Set after the uid
    // switch, which clears it; then make sure the supervisor did not die before it was
    // set (in a new pid namespace getppid() says nothing: it is 0).
    // SAFETY: integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(init_err("cannot set the parent-death signal"));
    }
    if supervisor_gone(report) {
        return Ok(None);
    }

    // No cgroup namespace for init itself: one rooted at init's cgroup would not contain
    // the contexts beside it, and with nsdelegate the kernel refuses a move between
    // cgroups outside the mover's namespace. Each spawned child takes its own instead.
    let name = mounts::HOSTNAME.as_bytes();
    // SAFETY: name is valid for its length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            format!(
                "; {}",
                crate::kernel_check::container_hint(crate::kernel_check::Feature::UserNamespaces)
            )
        } else {
            String::new()
        };
        return Err(SandboxError::Hostname(format!(
            "cannot set the hostname: {e}{hint}"
        )));
    }
    // Host root's supplementary groups are unmapped here; drop them for init too.
    if credentials::setgroups_allowed() {
        // SAFETY: an empty group list.
        unsafe { libc::setgroups(0, std::ptr::null()) };
    }

    // The IPC sysctls belong to the namespace's root: an init mapped to one id only (a
    // user without subordinate ids) is not it, and the kernel's defaults stay; SysV
    // memory is still charged to the session's memory cgroup.
    if ctx.inside_id == 0 {
        ipc::apply()?;
    }
    mounts::setup(&ctx.plan)?;
    let policy = Policy::for_sandbox(
        ctx.plan.read_exec_dirs(),
        ctx.plan.read_exec_files(),
        ctx.config.network,
    );
    drop(ctx.plan); // closes the detached-mount fds

    // SAFETY: installing SIG_IGN dispositions; no handlers run.
    unsafe {
        // Ignoring SIGCHLD makes the kernel reap children (and orphans reparented to us).
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| {
            SandboxError::Mounts(format!("cannot open /dev/null inside the sandbox: {e}"))
        })?;

    protocol::send(CONTROL_FD, &ctx.ready, &[])?;
    Ok(Some(Session {
        config: ctx.config,
        seccomp: ctx.seccomp,
        policy,
        devnull: devnull.into(),
        contexts: ctx.contexts,
    }))
}

fn serve(s: &Session) -> i32 {
    let mut buf = protocol::buffer();
    loop {
        let msg = match protocol::recv(CONTROL_FD, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        let reply = match protocol::parse_request(msg) {
            Err((id, e)) => protocol::error_reply(id, &e),
            Ok(HelperRequest::Spawn {
                id,
                context,
                argv,
                env,
                cwd,
            }) => match spawn(s, &context, &argv, &env, &cwd) {
                Ok((pid, fds)) => {
                    let fds = fds.into_vec();
                    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
                    let spawned = HelperReply::Spawned { id, pid };
                    if protocol::send(CONTROL_FD, &spawned, &raw).is_err() {
                        return 1;
                    }
                    continue; // our copies closed with `fds`; the engine holds its own
                }
                Err(e) => protocol::error_reply(Some(id), &e),
            },
            Ok(HelperRequest::Kill {
                id,
                context,
                keep_pid,
            }) => match kill(s, &context, keep_pid) {
                Ok(count) => HelperReply::Killed { id, count },
                Err(e) => protocol::error_reply(Some(id), &e),
            },
        };
        if protocol::send(CONTROL_FD, &reply, &[]).is_err() {
            return 1;
        }
    }
}

fn check_context(context: &str) -> Result<(), SandboxError> {
    if valid_name(context) {
        Ok(())
    } else {
        Err(SandboxError::Protocol(format!(
            "context {context:?} must match [a-z0-9-]{{1,64}}"
        )))
    }
}

/// SIGKILLs the context's processes but `keep`; without `keep` also removes its cgroup.
fn kill(s: &Session, context: &str, keep: Option<i32>) -> Result<u32, SandboxError> {
    check_context(context)?;
    if let Some(k) = keep.filter(|k| *k <= 1) {
        return Err(SandboxError::Protocol(format!(
            "keepPid {k} is not a process of the sandbox (must be > 1)"
        )));
    }
    let count = s.contexts.kill(context, keep)?;
    if keep.is_none() {
        s.contexts.remove(context)?;
    }
    Ok(count)
}

/// The base environment of every spawned process; the config's `env` and then the
/// request's override it.
const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", HOME),
    ("LANG", "C.UTF-8"),
];

pub fn process_env(
    config: &BTreeMap<String, String>,
    request: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut m: BTreeMap<&str, &str> = BASE_ENV.into_iter().collect();
    for (k, v) in config.iter().chain(request) {
        m.insert(k, v);
    }
    m.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// What can be refused before anything is made for the request.
pub fn check_spawn(
    context: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
) -> Result<(), SandboxError> {
    check_context(context)?;
    let bad = |m: String| Err(SandboxError::Spawn(m));
    let Some(exe) = argv.first() else {
        return bad("argv is empty".into());
    };
    if !valid_abs_path(exe) {
        return bad(format!(
            "argv[0] {exe:?} must be an absolute normalised path"
        ));
    }
    if !Path::new(exe).exists() {
        return bad(format!("{exe} is not visible inside the sandbox"));
    }
    if !valid_cwd(cwd) {
        return bad(format!(
            "cwd {cwd:?} must be an absolute normalised path under {HOME} or /tmp"
        ));
    }
    config::validate_env(env).map_err(SandboxError::Spawn)
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, SandboxError> {
    v.iter()
        .map(|s| {
            CString::new(s.as_str()).map_err(|_| SandboxError::Spawn(format!("{s:?} contains NUL")))
        })
        .collect()
}

fn spawn_err(what: &str, e: std::io::Error) -> SandboxError {
    SandboxError::Spawn(format!("{what}: {e}"))
}

/// What the forked child needs, prepared before the fork.
struct Child<'a> {
    context: &'a str,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: &'a str,
}

/// A spawned process: its pid inside the sandbox and the engine's descriptors.
type Spawned = (i32, SpawnedFds<OwnedFd>);

/// Starts `argv` in a new cgroup `context`.
fn spawn(
    s: &Session,
    context: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
) -> Result<Spawned, SandboxError> {
    check_spawn(context, argv, env, cwd)?;
    let child = Child {
        context,
        argv: cstrings(argv)?,
        env: cstrings(&process_env(&s.config.env, env))?,
        cwd,
    };
    s.contexts.create(context)?;
    let spawned = fork_child(s, &child);
    if spawned.is_err() {
        // The name stays free for the engine to retry; the child is gone already.
        let _ = s.contexts.remove(context);
    }
    spawned
}

/// Forks the child and waits until it has exec'ed or reported why not. On any failure
/// after the fork the child is killed: whatever it got to, it must not outlive a
/// refused spawn.
fn fork_child(s: &Session, child: &Child) -> Result<Spawned, SandboxError> {
    let pipe = || sys::pipe().map_err(|e| spawn_err("pipe", e));
    let (req_r, req_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;

    let mut pidfd: libc::c_int = -1;
    // SAFETY: fork-like clone (null stack) of a single-threaded process; CLONE_PIDFD
    // stores a new close-on-exec pidfd in `pidfd` (the parent_tid argument), which makes
    // the pidfd race-free even if the child exits and is reaped immediately.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    if pid < 0 {
        return Err(spawn_err("cannot fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let child_fds = [
            s.devnull.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            req_r.as_raw_fd(),
            rep_w.as_raw_fd(),
        ];
        driver_child(s, child, child_fds, status_w.as_raw_fd());
    }
    s.contexts.started(child.context, pid as libc::pid_t);
    // SAFETY: clone succeeded with CLONE_PIDFD, so pidfd is a new fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((req_r, rep_w, out_w, err_w, status_w));
    let refuse = |e: SandboxError| {
        let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
        Err(e)
    };
    let status = match sys::read_to_end(&status_r) {
        Ok(status) => status,
        Err(e) => return refuse(spawn_err("cannot read the child's status", e)),
    };
    if !status.is_empty() {
        let text = String::from_utf8_lossy(&status);
        let (step, msg) = text.split_once('\0').unwrap_or(("spawn", &text));
        return refuse(SandboxError::from_step(
            step,
            format!("process setup failed: {msg}"),
        ));
    }
    let fds = SpawnedFds {
        request_w: req_w,
        reply_r: rep_r,
        stdout_r: out_r,
        stderr_r: err_r,
        pidfd,
    };
    Ok((pid as i32, fds))
}

/// The forked child: applies every layer in order, then execs. Any failure is written
/// to the status pipe and the child exits 127 without exec'ing.
fn driver_child(s: &Session, child: &Child, fds: [RawFd; 5], status_w: RawFd) -> ! {
    // Keep the status pipe far above 0..4 so the fd shuffle cannot clobber it, and at a
    // known place for close_range.
    // SAFETY: fcntl on an fd we own.
    let status = unsafe { libc::fcntl(status_w, libc::F_DUPFD_CLOEXEC, STATUS_FD_MIN) };
    let result: Result<Infallible, SandboxError> = if status < 0 {
        Err(fd_err("cannot move the status pipe"))
    } else {
        confine_and_exec(s, child, fds, status)
    };
    let Err(e) = result;
    let msg = format!("{}\0{}", e.step(), e);
    let _ = sys::write_all(if status < 0 { status_w } else { status }, msg.as_bytes());
    // SAFETY: leave the forked child without running init's destructors.
    unsafe { libc::_exit(127) }
}

/// Where the child's status pipe moves: above the driver's 0..4 and the copies lifted
/// to 16 and up on the way there.
const STATUS_FD_MIN: RawFd = 64;

fn fd_err(what: &str) -> SandboxError {
    SandboxError::Fds(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Makes the working directory (as the code's user: a symlink planted by the code leads
/// nowhere the code could not go itself) and enters it.
fn enter_cwd(cwd: &str) -> Result<(), SandboxError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cwd)
        .map_err(|e| SandboxError::Spawn(format!("cannot create the cwd {cwd}: {e}")))?;
    std::env::set_current_dir(cwd)
        .map_err(|e| SandboxError::Spawn(format!("cannot chdir to {cwd}: {e}")))
}

fn confine_and_exec(
    s: &Session,
    child: &Child,
    fds: [RawFd; 5],
    status: RawFd,
) -> Result<Infallible, SandboxError> {
    // First, while inside-root: no process ever runs outside its context's cgroup.
    s.contexts.join(child.context)?;
    // The code sees its own cgroup as the root, not the host's path to it.
    // SAFETY: integer argument.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(SandboxError::CgroupNamespace(format!(
            "cannot create a cgroup namespace: {}",
            std::io::Error::last_os_error()
        )));
    }
    // Dispositions set to SIG_IGN survive execve; the process must start with defaults
    // (Python's subprocess needs SIGCHLD to reap its children).
    // SAFETY: resetting dispositions and the mask; no handlers are installed.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    // SAFETY: no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(SandboxError::Spawn(format!(
            "setsid: {}",
            std::io::Error::last_os_error()
        )));
    }

    // Lift every source above the targets first so dup2 never overwrites a source.
    let mut high = [0; 5];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: fcntl on fds we own.
        high[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 16) };
        if high[i] < 0 {
            return Err(fd_err("cannot duplicate a child fd"));
        }
    }
    for (target, src) in high.iter().enumerate() {
        // SAFETY: dup2 between fds we own; the copy at `target` is not close-on-exec.
        if unsafe { libc::dup2(*src, target as RawFd) } < 0 {
            return Err(fd_err("cannot place a child fd"));
        }
    }
    // A pipe inode belongs to its creator (init, inside-root) with mode 0600, so once the
    // process is `user` it could not reopen its pipes through /proc/self/fd: the
    // JavaScript driver reopens its protocol ends (3, 4) that way to get close-on-exec
    // copies out of its children's reach, and user code opens /dev/stdout and
    // /dev/stderr (links to /proc/self/fd/1 and 2). Hand the four pipes to `user` while we
    // still hold CAP_CHOWN; fd 0 is the host's /dev/null node and stays as it is.
    for fd in 1..=4 {
        // SAFETY: fchown on fds 1..4, the pipes dup2 just placed; integer arguments.
        if unsafe { libc::fchown(fd, SANDBOX_UID, SANDBOX_GID) } < 0 {
            return Err(fd_err(&format!("cannot give fd {fd} to user")));
        }
    }

    resource_limits::apply(&s.config)?;
    credentials::drop_to_user()?;
    crate::landlock::restrict(&s.policy)?;
    enter_cwd(child.cwd)?;

    // Only fds 0..4 (and the close-on-exec status pipe) may reach the code: this closes
    // the session's cgroup directory fds, the control socket's copies and every other
    // fd of init's.
    // SAFETY: close_range on ranges of our own fd table; status >= STATUS_FD_MIN > 5.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 5u32, (status - 1) as u32, 0u32) < 0
            || libc::syscall(libc::SYS_close_range, (status + 1) as u32, u32::MAX, 0u32) < 0
        {
            return Err(fd_err("close_range"));
        }
    }

    seccomp::apply(&s.seccomp)?;

    let mut argv_p: Vec<*const libc::c_char> = child.argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = child.env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: argv/env are NULL-terminated arrays of NUL-terminated strings alive for the call.
    unsafe { libc::execve(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
    Err(SandboxError::Exec(format!(
        "cannot execute {}: {}",
        child.argv[0].to_string_lossy(),
        std::io::Error::last_os_error()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_is_base_then_config_then_request() {
        assert_eq!(
            process_env(
                &env(&[("FOO", "bar"), ("LANG", "en_US.UTF-8"), ("X", "config")]),
                &env(&[("X", "request"), ("Y", "1")])
            ),
            [
                "FOO=bar",
                "HOME=/home/user",
                "LANG=en_US.UTF-8",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "X=request",
                "Y=1",
            ]
        );
        assert_eq!(
            process_env(&env(&[]), &env(&[])),
            [
                "HOME=/home/user",
                "LANG=C.UTF-8",
                "PATH=/usr/local/bin:/usr/bin:/bin"
            ]
        );
    }

    #[test]
    fn spawn_requests_are_checked_before_anything_is_made() {
        let sh = vec!["/bin/sh".to_string()];
        check_spawn("ctx-1", &sh, &env(&[]), "/home/user/p").unwrap();
        check_spawn("ctx-1", &sh, &env(&[]), "/tmp").unwrap();
        for context in ["", "../x", "A", "_init", "a/b"] {
            let e = check_spawn(context, &sh, &env(&[]), "/tmp").unwrap_err();
            assert_eq!(e.step(), "protocol", "{context:?}");
        }
        for (argv, cwd, env, why) in [
            (vec![], "/tmp", env(&[]), "argv is empty"),
            (vec!["sh".to_string()], "/tmp", env(&[]), "absolute"),
            (
                vec!["/bin/../bin/sh".to_string()],
                "/tmp",
                env(&[]),
                "absolute",
            ),
            (
                vec!["/nonexistent/x".to_string()],
                "/tmp",
                env(&[]),
                "/nonexistent/x is not visible",
            ),
            (sh.clone(), "/etc", env(&[]), "cwd"),
            (sh.clone(), "home/user", env(&[]), "cwd"),
            (sh.clone(), "/home/user/../x", env(&[]), "cwd"),
            (sh.clone(), "/tmp", env(&[("A=B", "x")]), "env"),
        ] {
            let e = check_spawn("ctx-1", &argv, &env, cwd).unwrap_err();
            assert_eq!(e.step(), "spawn", "{argv:?} {cwd}");
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
