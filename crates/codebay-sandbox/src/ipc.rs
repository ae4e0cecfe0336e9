//! System V IPC limits of the sandbox's IPC namespace. Its objects are kernel memory
//! charged to the session's memory cgroup and outlive the process that made them, so
//! without limits a segment nobody attaches keeps its memory after its interpreter is
//! replaced. Set by init (root of the user namespace that owns this IPC namespace),
//! while the host's /proc still shows it.

use std::path::Path;

use codebay_protocol::helper::SYSV_SHM_BYTES;

use crate::SandboxError;

const PAGE_BYTES: u64 = 4096;

/// (file under /proc/sys/kernel, value).
pub fn settings() -> Vec<(&'static str, String)> {
    vec![
        // A segment goes when its last process detaches, and with the process that made
        // it when nobody attached: none is orphaned.
        ("shm_rmid_forced", "1".into()),
        ("shmmax", SYSV_SHM_BYTES.to_string()),
        ("shmall", (SYSV_SHM_BYTES / PAGE_BYTES).to_string()),
        ("shmmni", "128".into()),
        // Message queues: 64 of at most 64 KiB each.
        ("msgmni", "64".into()),
        ("msgmnb", "65536".into()),
        // Semaphores: SEMMSL SEMMNS SEMOPM SEMMNI.
        ("sem", "250 8192 32 128".into()),
    ]
}

pub fn apply() -> Result<(), SandboxError> {
    let dir = Path::new("/proc/sys/kernel");
    for (name, value) in settings() {
        std::fs::write(dir.join(name), &value)
            .map_err(|e| SandboxError::Ipc(format!("cannot set kernel.{name} to {value}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_is_bounded_and_never_orphaned() {
        let s = settings();
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get("shm_rmid_forced").as_deref(), Some("1"));
        let pages: u64 = get("shmall").unwrap().parse().unwrap();
        assert_eq!(pages * PAGE_BYTES, SYSV_SHM_BYTES);
    }
}
