//! Per-process rlimits of the driver; the cgroup bounds the session as a whole.

use crate::SandboxError;
use codebay_protocol::SandboxConfig;

pub fn limits(c: &SandboxConfig) -> Vec<(libc::__rlimit_resource_t, &'static str, u64)> {
    vec![
        (libc::RLIMIT_NOFILE, "NOFILE", c.max_open_files),
        (libc::RLIMIT_FSIZE, "FSIZE", c.max_file_bytes),
        // No core dumps: they would fill the workspace and may leak memory contents.
        (libc::RLIMIT_CORE, "CORE", 0),
    ]
}

pub fn apply(c: &SandboxConfig) -> Result<(), SandboxError> {
    for (res, name, value) in limits(c) {
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
            "readOnlyPaths": [], "runtimesDir": "/r", "env": {},
            "maxOpenFiles": 256, "maxFileBytes": 1024
        }))
        .unwrap();
        let l = limits(&c);
        assert!(l.contains(&(libc::RLIMIT_NOFILE, "NOFILE", 256)));
        assert!(l.contains(&(libc::RLIMIT_FSIZE, "FSIZE", 1024)));
        assert!(l.contains(&(libc::RLIMIT_CORE, "CORE", 0)));
    }
}
