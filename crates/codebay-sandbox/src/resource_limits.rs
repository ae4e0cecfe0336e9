//! Per-process rlimits of the driver; the cgroup bounds the session as a whole (or,
//! with `resourceLimits: 'rlimits'`, these alone do).

use crate::SandboxError;
use codebay_protocol::{ResourceLimits, SandboxConfig};

/// Signals queued at once by the code's user.
pub const SIGPENDING: u64 = 1024;
/// Bytes of POSIX message queues the code's user may hold (below the kernel's default
/// of 800 KiB: a limit can be lowered, never raised, without CAP_SYS_RESOURCE).
pub const MSGQUEUE_BYTES: u64 = 256 << 10;

pub fn limits(c: &SandboxConfig) -> Vec<(libc::__rlimit_resource_t, &'static str, u64)> {
    let mut v = vec![
        (libc::RLIMIT_NOFILE, "NOFILE", c.max_open_files),
        (libc::RLIMIT_FSIZE, "FSIZE", c.max_file_bytes),
        // No core dumps: they would fill the workspace and may leak memory contents.
        (libc::RLIMIT_CORE, "CORE", 0),
        // Queued signals and POSIX message queue bytes are counted per user up the user
        // namespaces: small, so a session cannot build up a host-sized backlog.
        (libc::RLIMIT_SIGPENDING, "SIGPENDING", SIGPENDING),
        (libc::RLIMIT_MSGQUEUE, "MSGQUEUE", MSGQUEUE_BYTES),
    ];
    if c.resource_limits == ResourceLimits::Rlimits {
        // No cgroup bounds the session: each process gets the memory, and the code's
        // user the processes. Data, not address space: V8 reserves gigabytes it never
        // touches, and only writable private memory is counted here. The kernel counts
        // RLIMIT_NPROC per user in the sandbox's user namespace, so it caps the
        // session's processes as a whole (init's and the file agent's included).
        v.push((libc::RLIMIT_DATA, "DATA", c.memory_bytes));
        v.push((libc::RLIMIT_NPROC, "NPROC", c.max_processes));
    }
    v
}

pub fn apply(c: &SandboxConfig) -> Result<(), SandboxError> {
    for (res, name, value) in limits(c) {
        // Never above what is allowed already: lowering needs no privilege.
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: now is a valid rlimit struct to fill.
        let value = if unsafe { libc::getrlimit(res, &mut now) } == 0 {
            value.min(now.rlim_max)
        } else {
            value
        };
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: lim is a valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            return Err(SandboxError::ResourceLimits(format!(
                "cannot set RLIMIT_{name} to {value}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_config() {
        let c: SandboxConfig = serde_json::from_value(serde_json::json!({
            "sessionId": "x", "memoryBytes": 1u64 << 30, "maxProcesses": 8, "cpuCores": null,
            "network": false, "workspaceBytes": 1u64 << 20, "tmpBytes": 1u64 << 20,
            "readOnlyBinds": [], "runtimesDir": "/r", "env": {},
            "maxOpenFiles": 256, "maxFileBytes": 1024
        }))
        .unwrap();
        let l = limits(&c);
        assert!(l.contains(&(libc::RLIMIT_NOFILE, "NOFILE", 256)));
        assert!(l.contains(&(libc::RLIMIT_FSIZE, "FSIZE", 1024)));
        assert!(l.contains(&(libc::RLIMIT_CORE, "CORE", 0)));
        assert!(l.contains(&(libc::RLIMIT_SIGPENDING, "SIGPENDING", SIGPENDING)));
    }
}
