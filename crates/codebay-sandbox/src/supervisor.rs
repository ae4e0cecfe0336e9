//! The supervisor: the helper's original process, outside the sandbox. Reads the config,
//! checks the kernel, prepares the mount sources and the session's cgroups (limits set,
//! the directories delegated to init's host ids, a directory fd of each for init to
//! inherit), clones init into the new namespaces, places it in the session's cgroups
//! (a leaf beside the contexts on cgroup2), writes its id maps, releases it, waits for
//! it and then removes everything it created, context cgroups included.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use codebay_protocol::{HelperReply, ResourceLimits, SandboxConfig};

use crate::cgroup::{self, ContextCgroups, SessionCgroups};
use crate::contexts::Contexts;
use crate::init::{self, InitContext};
use crate::namespaces::{self, HostIds};
use crate::process_contexts::ProcessContexts;
use crate::protocol::{self, CONTROL_FD};
use crate::{config, kernel_check, mounts, seccomp, sys, SandboxError};

static INIT_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_kill(_sig: libc::c_int) {
    let pid = INIT_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn fail(e: &SandboxError) -> i32 {
    let _ = protocol::send(CONTROL_FD, &protocol::error_reply(None, e), &[]);
    1
}

pub fn run() -> i32 {
    // SAFETY: SIG_IGN for SIGPIPE so a vanished engine gives EPIPE, not death.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut buf = protocol::buffer();
    let msg = match protocol::recv(CONTROL_FD, &mut buf) {
        Ok(Some(m)) => m,
        Ok(None) => return 1,
        Err(e) => return fail(&e),
    };
    let config = match config::parse(msg) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = kernel_check::check() {
        return fail(&e);
    }
    let seccomp = match seccomp::build() {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let plan = match mounts::prepare(&config) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    // The session's host ids (a range of its own as root, a subordinate id as a user
    // who has them), held until exit.
    let ids = match HostIds::choose() {
        Ok(ids) => ids,
        Err(e) => return fail(&e),
    };
    if config.resource_limits == ResourceLimits::Rlimits {
        // The user's explicit opt-in: no cgroup at all; contexts are process trees.
        let ready = HelperReply::Ready { cgroup: None };
        let contexts = Contexts::Processes(ProcessContexts::default());
        return run_session(config, plan, seccomp, None, ready, contexts, &ids);
    }
    let layout = match cgroup::detect(&config) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let cg = match SessionCgroups::create(&layout, &config) {
        Ok(cg) => cg,
        Err(e) => return fail(&e),
    };
    let code = match delegate(&cg, &ids) {
        Ok((ready, contexts)) => run_session(
            config,
            plan,
            seccomp,
            Some(&cg),
            ready,
            Contexts::Cgroups(contexts),
            &ids,
        ),
        Err(e) => fail(&e),
    };
    cg.destroy();
    code
}

/// Hands the session's cgroups to init's host ids and opens the directory fds init
/// inherits; returns them with the `ready` reply that names the directories.
fn delegate(
    cg: &SessionCgroups,
    ids: &HostIds,
) -> Result<(HelperReply, ContextCgroups), SandboxError> {
    let (uid, gid) = ids.init_host_ids();
    cg.delegate(uid, gid)?;
    let ready = HelperReply::Ready {
        cgroup: Some(cg.info()?),
    };
    Ok((ready, cg.open()?))
}

fn run_session(
    config: SandboxConfig,
    plan: mounts::MountPlan,
    seccomp: Vec<seccompiler::BpfProgram>,
    cg: Option<&SessionCgroups>,
    ready: HelperReply,
    contexts: Contexts,
    ids: &HostIds,
) -> i32 {
    let pipes = sys::pipe().and_then(|a| sys::pipe().map(|b| (a, b)));
    let ((release_r, release_w), (report_r, report_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(&SandboxError::Init(format!("cannot create pipes: {e}"))),
    };
    // Decided before clone: in the child, until the supervisor writes the id maps, every
    // id reads as the overflow id.
    let inside_id = ids.init_inside_id();
    let flags = namespaces::clone_flags(config.network);
    // A root supervisor makes the user namespace as the session's own host id, so that
    // nothing counted per user inside it is counted against root.
    let cloned = ids.clone(flags);
    let pid = match cloned {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if pid == 0 {
        drop((release_w, report_r));
        init::run(
            InitContext {
                config,
                plan,
                seccomp,
                ready,
                release_r,
                inside_id,
                contexts,
            },
            report_w,
        );
    }
    INIT_PID.store(pid, Ordering::Relaxed);
    // Only init works in the context cgroups; the supervisor cleans up by path.
    drop((release_r, report_w, plan, contexts));

    let prepared = cg
        .map_or(Ok(()), |cg| cg.add_init(pid))
        .and_then(|()| ids.write_maps(pid));
    if let Err(e) = prepared {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        sys::wait_child(pid);
        return fail(&e);
    }
    // Termination requests go to init; the normal path (EOF → init exits) then cleans up.
    // SAFETY: forward_kill only calls the async-signal-safe kill(2).
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, forward_kill as *const () as libc::sighandler_t);
        }
    }
    if sys::write_all(release_w.as_raw_fd(), b"1").is_err() {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        sys::wait_child(pid);
        return fail(&SandboxError::Init("cannot release init".into()));
    }
    drop(release_w);

    let status = sys::wait_child(pid);
    let report = sys::read_to_end(&report_r).unwrap_or_default();
    let clean_exit = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if std::env::var_os("CODEBAY_DEBUG").is_some() {
        eprintln!(
            "codebay-sandbox: init {} ({}), report {:?}",
            pid,
            sys::describe_status(status),
            String::from_utf8_lossy(&report)
        );
    }
    match report.first() {
        Some(b'R') if clean_exit => 0,
        Some(_) => 1,
        None => fail(&SandboxError::Init(format!(
            "sandbox init ended before it was ready ({})",
            sys::describe_status(status)
        ))),
    }
}
