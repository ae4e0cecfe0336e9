//! Landlock: the driver may only read/execute the read-only runtime paths and write its
//! workspace, /tmp and /dev/shm; with network off it also may not bind or connect TCP.
//! A second line behind the mount layout (a path outside these rules is refused even if
//! a mount mistake made it visible).

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::SandboxError;

/// The ABI whose rights every sandbox gets: TCP rules (ABI 4), ioctl on devices (5),
/// abstract-socket and signal scoping (6). Asked for as a hard requirement, never best
/// effort: a kernel without one of them fails the kernel check, naming it, instead of
/// silently dropping the protection.
pub const ABI_REQUIRED: ABI = ABI::V6;
/// The same, as the number the kernel reports.
pub const ABI_REQUIRED_NUMBER: i64 = 6;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub read_exec_dirs: Vec<PathBuf>,
    pub read_exec_files: Vec<PathBuf>,
    pub read_write_dirs: Vec<PathBuf>,
    pub read_write_files: Vec<PathBuf>,
    pub read_files: Vec<PathBuf>,
    pub list_dirs: Vec<PathBuf>,
    pub deny_tcp: bool,
}

impl Policy {
    pub fn for_sandbox(
        read_exec_dirs: Vec<PathBuf>,
        read_exec_files: Vec<PathBuf>,
        network: bool,
    ) -> Policy {
        Policy {
            read_exec_dirs,
            read_exec_files,
            read_write_dirs: vec!["/home/user".into(), "/tmp".into(), "/dev/shm".into()],
            read_write_files: ["null", "zero", "full"]
                .iter()
                .map(|n| PathBuf::from(format!("/dev/{n}")))
                .collect(),
            read_files: ["random", "urandom"]
                .iter()
                .map(|n| PathBuf::from(format!("/dev/{n}")))
                .collect(),
            list_dirs: vec!["/".into(), "/dev".into()],
            deny_tcp: !network,
        }
    }
}

fn ll_err(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(format!("{what}: {e}"))
}

pub fn restrict(p: &Policy) -> Result<(), SandboxError> {
    let abi = ABI_REQUIRED;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| ll_err("cannot handle filesystem access", e))?;
    if p.deny_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| ll_err("cannot handle TCP access", e))?;
    }
    // Abstract unix sockets are per network namespace: with network on they would reach
    // the host's (D-Bus, X11, ...). Signals to processes outside the domain (init, the
    // host) are refused too.
    ruleset = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| ll_err("cannot scope the ruleset", e))?;
    let mut created = ruleset
        .create()
        .map_err(|e| ll_err("cannot create the ruleset", e))?;

    let file_rights = AccessFs::from_file(abi);
    let groups: [(&[PathBuf], landlock::BitFlags<AccessFs>); 6] = [
        (&p.read_exec_dirs, AccessFs::from_read(abi)),
        (&p.read_exec_files, AccessFs::from_read(abi) & file_rights),
        (&p.read_write_dirs, AccessFs::from_all(abi)),
        (
            &p.read_write_files,
            (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev)
                & file_rights,
        ),
        (
            &p.read_files,
            (AccessFs::ReadFile | AccessFs::IoctlDev) & file_rights,
        ),
        (&p.list_dirs, AccessFs::ReadDir.into()),
    ];
    for (paths, rights) in groups {
        for path in paths {
            created = add(created, path, rights)?;
        }
    }
    let status = created
        .restrict_self()
        .map_err(|e| ll_err("cannot enforce the ruleset", e))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(SandboxError::Landlock(format!(
            "the kernel did not fully enforce the Landlock ruleset ({:?})",
            status.ruleset
        )));
    }
    Ok(())
}

fn add(
    created: landlock::RulesetCreated,
    path: &Path,
    rights: landlock::BitFlags<AccessFs>,
) -> Result<landlock::RulesetCreated, SandboxError> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        // A rule for a path that does not exist grants nothing; skipping it is safe.
        Err(_) if !path.exists() => return Ok(created),
        Err(e) => return Err(ll_err(&format!("cannot open {}", path.display()), e)),
    };
    created
        .add_rule(PathBeneath::new(fd, rights))
        .map_err(|e| ll_err(&format!("cannot add a rule for {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child and returns its exit code, so restrictions never leak
    /// into the test process.
    pub(crate) fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` and exits; the test harness's other threads are
        // not touched by it (it never returns into the harness).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
            // SAFETY: _exit skips atexit handlers inherited from the harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn denies_writes_outside_allowed_paths() {
        let dir = std::env::temp_dir().join(format!("ll-test-{}", std::process::id()));
        let allowed = dir.join("allowed");
        let denied = dir.join("denied");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&denied).unwrap();
        let (a, d) = (allowed.clone(), denied.clone());
        let code = in_child(move || {
            // SAFETY: plain prctl integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let p = Policy {
                read_write_dirs: vec![a.clone()],
                read_exec_dirs: vec!["/usr".into()],
                deny_tcp: true,
                ..Default::default()
            };
            if restrict(&p).is_err() {
                return 1;
            }
            if std::fs::write(a.join("f"), "ok").is_err() {
                return 2;
            }
            match std::fs::write(d.join("f"), "no") {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                _ => return 3,
            }
            // TCP connect is denied by the net rules even to a closed local port.
            match std::net::TcpStream::connect("127.0.0.1:9") {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 0,
                _ => 4,
            }
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(code, 0);
    }
}
