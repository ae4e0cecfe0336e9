//! Fail closed: refuse to build a sandbox on a kernel that lacks any layer we rely on.

use crate::SandboxError;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

#[derive(Debug, Clone, Copy)]
pub struct KernelFeatures {
    pub landlock_abi: i64,
}

pub fn landlock_abi() -> i64 {
    // SAFETY: the version query takes no attribute pointer and size 0.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

fn user_namespaces_available() -> Result<(), String> {
    match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(s) if s.trim().parse::<u64>().map(|n| n > 0).unwrap_or(false) => Ok(()),
        Ok(_) => Err("user namespaces (max_user_namespaces is 0)".into()),
        // Kernels without the sysctl either lack user namespaces or predate it; the clone
        // itself is the real probe and fails with step user_namespace.
        Err(_) => Ok(()),
    }
}

fn seccomp_available() -> Result<(), String> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 {
        return Err("seccomp (PR_GET_SECCOMP failed; kernel built without CONFIG_SECCOMP)".into());
    }
    if let Ok(actions) = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
        if !actions.split_whitespace().any(|a| a == "errno") {
            return Err("seccomp filter mode (no errno action)".into());
        }
    }
    Ok(())
}

/// What is missing of Landlock for an ABI query that answered `abi` (negative: failed
/// with `why`). Every protection the sandbox relies on needs its ABI: none is dropped.
pub fn landlock_missing(abi: i64, why: &str) -> Option<String> {
    let required = crate::landlock::ABI_REQUIRED_NUMBER;
    if abi < 1 {
        Some(format!(
            "Landlock (ABI query failed: {why}; enable CONFIG_SECURITY_LANDLOCK and lsm=landlock)"
        ))
    } else if abi < required {
        Some(format!(
            "Landlock ABI {required} (Linux 6.12: TCP rules, device ioctls, abstract-socket and signal scoping); this kernel has ABI {abi}"
        ))
    } else {
        None
    }
}

/// Runs every probe and names everything missing at once, so an operator fixes the
/// kernel in one go.
pub fn check() -> Result<KernelFeatures, SandboxError> {
    let mut missing = Vec::new();
    if let Err(m) = user_namespaces_available() {
        missing.push(m);
    }
    if let Err(m) = seccomp_available() {
        missing.push(m);
    }
    let abi = landlock_abi();
    if let Some(m) = landlock_missing(abi, &std::io::Error::last_os_error().to_string()) {
        missing.push(m);
    }
    if missing.is_empty() {
        Ok(KernelFeatures { landlock_abi: abi })
    } else {
        Err(SandboxError::KernelCheck(format!(
            "the kernel cannot sandbox safely; missing: {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::landlock_missing;

    #[test]
    fn this_kernel_passes() {
        let f = super::check().expect("test machine supports every layer");
        assert!(f.landlock_abi >= 1);
    }

    #[test]
    fn landlock_below_the_required_abi_is_missing_by_name() {
        assert!(landlock_missing(-1, "ENOSYS")
            .unwrap()
            .contains("ABI query failed: ENOSYS"));
        let old = landlock_missing(3, "").unwrap();
        assert!(
            old.contains("Landlock ABI 6") && old.contains("this kernel has ABI 3"),
            "{old}"
        );
        assert_eq!(landlock_missing(6, ""), None);
        assert_eq!(landlock_missing(7, ""), None);
    }
}
