//! Init: pid 1 of the sandbox. Finishes the sandbox (cgroup namespace, hostname, mounts),
//! reports `ready`, then serves spawn requests, forking one fully confined driver per
//! request, and kill requests, which SIGKILL a driver's whole session. It reaps every zombie by ignoring SIGCHLD (SA_NOCLDWAIT semantics), and
//! exits on EOF of the control socket, which makes the kernel kill the whole pid namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use seccompiler::BpfProgram;

use crate::config::Config;
use crate::landlock::Policy;
use crate::mounts::{self, MountPlan, HOME, RUNTIMES_INSIDE};
use crate::namespaces::{SANDBOX_GID, SANDBOX_UID};
use crate::protocol::{self, Language, Reply, Request, CONTROL_FD};
use crate::{credentials, resource_limits, seccomp, sys, SandboxError};

pub struct InitContext {
    pub config: Config,
    pub plan: MountPlan,
    pub seccomp: Vec<BpfProgram>,
    pub ready: Reply,
    /// The supervisor writes one byte here once cgroups and id maps are in place.
    pub release_r: OwnedFd,
    /// Init's id inside the sandbox: 0 when the supervisor mapped a range, else 1000.
    pub inside_id: u32,
}

struct Session {
    config: Config,
    seccomp: Vec<BpfProgram>,
    policy: Policy,
    devnull: OwnedFd,
}

/// `report_w`: init writes 'R' after `ready` or 'E' after an error, so the supervisor
/// knows whether the addon has already been told something.
pub fn run(ctx: InitContext, report_w: OwnedFd) -> ! {
    let report = report_w.as_raw_fd();
    let code = match setup(ctx) {
        Ok(Some(session)) => {
            let _ = sys::write_all(report, b"R");
            serve(&session)
        }
        Ok(None) => 1,
        Err(e) => {
            let _ = protocol::send(CONTROL_FD, &Reply::error(None, &e), &[]);
            let _ = sys::write_all(report, b"E");
            1
        }
    };
    // SAFETY: _exit ends init without unwinding or running destructors of the supervisor's
    // copied state.
    unsafe { libc::_exit(code) }
}

fn init_err(what: &str) -> SandboxError {
    SandboxError::Init(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn setup(ctx: InitContext) -> Result<Option<Session>, SandboxError> {
    // If the supervisor dies, nobody would clean up; die with it.
    // SAFETY: integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(init_err("cannot set the parent-death signal"));
    }
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

    // Now that the supervisor placed us in the session cgroup, make it our cgroup root.
    // SAFETY: integer argument.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(SandboxError::CgroupNamespace(format!(
            "cannot create a cgroup namespace: {}",
            std::io::Error::last_os_error()
        )));
    }
    let name = mounts::HOSTNAME.as_bytes();
    // SAFETY: name is valid for its length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(SandboxError::Hostname(format!(
            "cannot set the hostname: {}",
            std::io::Error::last_os_error()
        )));
    }
    // Host root's supplementary groups are unmapped here; drop them for init too.
    if credentials::setgroups_allowed() {
        // SAFETY: an empty group list.
        unsafe { libc::setgroups(0, std::ptr::null()) };
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
    }))
}

fn serve(s: &Session) -> i32 {
    loop {
        let msg = match protocol::recv(CONTROL_FD) {
            Ok(Some(m)) => m,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        let reply = match protocol::parse_request(&msg) {
            Err((id, e)) => Reply::error(Some(id.unwrap_or(serde_json::Value::Null)), &e),
            Ok(Request::Spawn { id, language }) => match spawn(s, language) {
                Ok((pid, fds)) => {
                    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
                    if protocol::send(CONTROL_FD, &Reply::Spawned { id, pid }, &raw).is_err() {
                        return 1;
                    }
                    continue; // fds drop (close) here; the addon holds its copies
                }
                Err(e) => Reply::error(Some(id), &e),
            },
            Ok(Request::Kill { pid }) => match kill_session(pid) {
                Ok((pid, count)) => Reply::Killed { pid, count },
                Err(e) => Reply::error(None, &e),
            },
        };
        if protocol::send(CONTROL_FD, &reply, &[]).is_err() {
            return 1;
        }
    }
}

/// Upper bound on kill rounds; each round rescans /proc after a 1 ms pause, so a fork bomb
/// cannot keep init busy for more than a fraction of a second.
const KILL_ROUNDS: usize = 200;

/// Parses `/proc/<pid>/stat` into (state, session id). comm (field 2) may contain spaces
/// and parentheses, so the fixed fields are read after the *last* ')'.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace(); // state, ppid, pgrp, session, ...
    let state = f.next()?.chars().next()?;
    let session = f.nth(2)?.parse().ok()?;
    Some((state, session))
}

/// Live (not zombie/dead) processes of session `sid`, never init itself.
fn session_members(sid: i32) -> Result<Vec<i32>, SandboxError> {
    let dir = std::fs::read_dir("/proc")
        .map_err(|e| SandboxError::Init(format!("cannot list /proc: {e}")))?;
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 1 {
            continue;
        }
        // A read failure means the process vanished meanwhile.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, session)) = parse_stat(&stat) {
            if session == sid && state != 'Z' && state != 'X' {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// SIGKILLs every process whose session id is `pid` (the driver, a session leader, and
/// everything it forked), rescanning until none is left or KILL_ROUNDS pass. Returns the
/// validated pid and how many distinct processes were signalled.
fn kill_session(pid: i64) -> Result<(i32, u32), SandboxError> {
    let sid = match i32::try_from(pid) {
        Ok(sid) if sid > 1 => sid,
        _ => {
            return Err(SandboxError::Protocol(format!(
                "kill: {pid} is not a driver pid (must be > 1)"
            )))
        }
    };
    let mut killed = BTreeSet::new();
    for _ in 0..KILL_ROUNDS {
        let members = session_members(sid)?;
        if members.is_empty() {
            break;
        }
        for p in members {
            // SAFETY: sending a signal; p > 1, so never init or a process group.
            if unsafe { libc::kill(p, libc::SIGKILL) } == 0 {
                killed.insert(p);
            }
        }
        // Killed processes linger in /proc until their exit completes; give them a moment.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((sid, killed.len() as u32))
}

pub fn driver_argv(c: &Config, lang: Language) -> Result<Vec<String>, SandboxError> {
    let (exe, args, script, field) = match lang {
        Language::Python => (
            &c.python_executable,
            vec!["-I", "-u"],
            "python/driver.py",
            "pythonExecutable",
        ),
        Language::Javascript => (
            &c.node_executable,
            vec!["--expose-internals"],
            "javascript/driver.js",
            "nodeExecutable",
        ),
    };
    let exe = exe
        .as_ref()
        .ok_or_else(|| SandboxError::Spawn(format!("config has no {field}")))?;
    let mut v = vec![exe.clone()];
    v.extend(args.into_iter().map(str::to_owned));
    v.push(format!("{RUNTIMES_INSIDE}/{script}"));
    Ok(v)
}

pub fn driver_env(c: &Config) -> Vec<String> {
    let mut m: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", HOME),
        ("LANG", "C.UTF-8"),
        ("PYTHONUNBUFFERED", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in &c.env {
        m.insert(k.clone(), v.clone());
    }
    m.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
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

/// Forks a driver and returns its pid and the addon's five fds, in protocol order:
/// request_w, reply_r, stdout_r, stderr_r, pidfd.
fn spawn(s: &Session, lang: Language) -> Result<(i32, [OwnedFd; 5]), SandboxError> {
    let argv = driver_argv(&s.config, lang)?;
    for p in [&argv[0], argv.last().unwrap()] {
        if !Path::new(p).exists() {
            return Err(SandboxError::Spawn(format!(
                "{p} is not visible inside the sandbox (is its directory in readOnlyPaths / runtimesDir?)"
            )));
        }
    }
    let argv_c = cstrings(&argv)?;
    let env_c = cstrings(&driver_env(&s.config))?;

    let (req_r, req_w) = sys::pipe().map_err(|e| spawn_err("pipe", e))?;
    let (rep_r, rep_w) = sys::pipe().map_err(|e| spawn_err("pipe", e))?;
    let (out_r, out_w) = sys::pipe().map_err(|e| spawn_err("pipe", e))?;
    let (err_r, err_w) = sys::pipe().map_err(|e| spawn_err("pipe", e))?;
    let (status_r, status_w) = sys::pipe().map_err(|e| spawn_err("pipe", e))?;

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
        return Err(spawn_err(
            "cannot fork the driver",
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        let child_fds = [
            s.devnull.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            req_r.as_raw_fd(),
            rep_w.as_raw_fd(),
        ];
        driver_child(s, child_fds, status_w.as_raw_fd(), &argv_c, &env_c);
    }
    // SAFETY: clone succeeded with CLONE_PIDFD, so pidfd is a new fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((req_r, rep_w, out_w, err_w, status_w));
    let status =
        sys::read_to_end(&status_r).map_err(|e| spawn_err("cannot read the driver's status", e))?;
    if !status.is_empty() {
        let text = String::from_utf8_lossy(&status);
        let (step, msg) = text.split_once('\0').unwrap_or(("spawn", &text));
        return Err(SandboxError::from_step(
            step,
            format!("driver setup failed: {msg}"),
        ));
    }
    Ok((pid as i32, [req_w, rep_r, out_r, err_r, pidfd]))
}

/// The forked driver: applies every layer in order, then execs. Any failure is written
/// to the status pipe and the child exits 127 without exec'ing.
fn driver_child(
    s: &Session,
    fds: [RawFd; 5],
    status_w: RawFd,
    argv: &[CString],
    env: &[CString],
) -> ! {
    // Keep the status pipe far above 0..4 so the fd shuffle cannot clobber it.
    // SAFETY: fcntl on an fd we own.
    let status = unsafe { libc::fcntl(status_w, libc::F_DUPFD_CLOEXEC, 64) };
    let status = if status < 0 { status_w } else { status };
    let Err(e) = confine_and_exec(s, fds, status, argv, env);
    let msg = format!("{}\0{}", e.step(), e);
    let _ = sys::write_all(status, msg.as_bytes());
    // SAFETY: leave the forked child without running init's destructors.
    unsafe { libc::_exit(127) }
}

fn fd_err(what: &str) -> SandboxError {
    SandboxError::Fds(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn confine_and_exec(
    s: &Session,
    fds: [RawFd; 5],
    status: RawFd,
    argv: &[CString],
    env: &[CString],
) -> Result<Infallible, SandboxError> {
    // Dispositions set to SIG_IGN survive execve; the driver must start with defaults
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
            return Err(fd_err("cannot duplicate a driver fd"));
        }
    }
    for (target, src) in high.iter().enumerate() {
        // SAFETY: dup2 between fds we own; the copy at `target` is not close-on-exec.
        if unsafe { libc::dup2(*src, target as RawFd) } < 0 {
            return Err(fd_err("cannot place a driver fd"));
        }
    }
    // A pipe inode belongs to its creator (init, inside-root) with mode 0600, so once the
    // driver is `user` it could not reopen its pipes through /proc/self/fd: the
    // JavaScript driver reopens its protocol ends (3, 4) that way to get close-on-exec
    // copies out of its children's reach, and user code opens /dev/stdout and
    // /dev/stderr (links to /proc/self/fd/1 and 2). Hand the four pipes to `user` while we
    // still hold CAP_CHOWN; fd 0 is the host's /dev/null node and stays as it is.
    for fd in 1..=4 {
        // SAFETY: fchown on fds 1..4, the pipes dup2 just placed; integer arguments.
        if unsafe { libc::fchown(fd, SANDBOX_UID, SANDBOX_GID) } < 0 {
            return Err(fd_err(&format!("cannot give driver fd {fd} to user")));
        }
    }
    std::env::set_current_dir(HOME)
        .map_err(|e| SandboxError::Spawn(format!("cannot chdir to {HOME}: {e}")))?;

    resource_limits::apply(&s.config)?;
    credentials::drop_to_user()?;
    crate::landlock::restrict(&s.policy)?;

    // Only fds 0..4 (and the close-on-exec status pipe) may reach the driver.
    // SAFETY: close_range on ranges of our own fd table.
    unsafe {
        if status > 5 && libc::syscall(libc::SYS_close_range, 5u32, (status - 1) as u32, 0u32) < 0 {
            return Err(fd_err("close_range"));
        }
        if libc::syscall(
            libc::SYS_close_range,
            (status.max(4) + 1) as u32,
            u32::MAX,
            0u32,
        ) < 0
        {
            return Err(fd_err("close_range"));
        }
    }

    seccomp::apply(&s.seccomp)?;

    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: argv/env are NULL-terminated arrays of NUL-terminated strings alive for the call.
    unsafe { libc::execve(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
    Err(SandboxError::Exec(format!(
        "cannot execute {}: {}",
        argv[0].to_string_lossy(),
        std::io::Error::last_os_error()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        serde_json::from_value(serde_json::json!({
            "sessionId": "x", "memoryBytes": 1u64 << 30, "maxProcesses": 8, "runtimesDir": "/r",
            "pythonExecutable": "/usr/bin/python3", "env": {"FOO": "bar", "LANG": "en_US.UTF-8"}
        }))
        .unwrap()
    }

    #[test]
    fn stat_parsing_survives_odd_comms() {
        let stat = "4242 (a) b (c)) d) S 1 4242 4241 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 4241)));
        assert_eq!(parse_stat("7 (sleep) Z 3 5 5 0"), Some(('Z', 5)));
        assert_eq!(parse_stat("7 (x)"), None);
        assert_eq!(parse_stat("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        // SAFETY: no arguments.
        assert_eq!(
            parse_stat(&own).map(|s| s.1),
            Some(unsafe { libc::getsid(0) })
        );
    }

    #[test]
    fn kill_rejects_init_and_non_positive_pids() {
        for pid in [1, 0, -5, i64::from(i32::MAX) + 1] {
            assert_eq!(kill_session(pid).unwrap_err().step(), "protocol", "{pid}");
        }
    }

    #[test]
    fn argv_per_language() {
        let c = cfg();
        assert_eq!(
            driver_argv(&c, Language::Python).unwrap(),
            [
                "/usr/bin/python3",
                "-I",
                "-u",
                "/opt/codebay/runtimes/python/driver.py"
            ]
        );
        assert_eq!(
            driver_argv(&c, Language::Javascript).unwrap_err().step(),
            "spawn"
        );
    }

    #[test]
    fn env_is_exactly_the_documented_set() {
        let env = driver_env(&cfg());
        assert_eq!(
            env,
            [
                "FOO=bar",
                "HOME=/home/user",
                "LANG=en_US.UTF-8",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "PYTHONUNBUFFERED=1",
            ]
        );
    }
}
