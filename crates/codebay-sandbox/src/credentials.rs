//! Turn the driver child (inside-root with all capabilities of the sandbox's user
//! namespace) into `user` (1000) with no groups, no capabilities and no_new_privs.

use crate::namespaces::{SANDBOX_GID, SANDBOX_UID};
use crate::SandboxError;

const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn err(what: &str) -> SandboxError {
    SandboxError::Credentials(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Whether this process may call setgroups (an unprivileged supervisor wrote "deny").
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// Init's switch from the host ids it was cloned with to its mapped inside id; keeps
/// capabilities (a transition from or to the same id class keeps them in this namespace).
pub fn become_inside(id: u32) -> Result<(), SandboxError> {
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(id, id, id) } < 0 || unsafe { libc::setresuid(id, id, id) } < 0 {
        return Err(err(&format!("cannot switch init to inside id {id}")));
    }
    Ok(())
}

pub fn capabilities() -> Result<(u64, u64, u64), SandboxError> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are correctly laid out v3 capget arguments (2 data elements).
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(err("capget failed"));
    }
    let join = |f: fn(&CapData) -> u32| (f(&data[1]) as u64) << 32 | f(&data[0]) as u64;
    Ok((
        join(|d| d.effective),
        join(|d| d.permitted),
        join(|d| d.inheritable),
    ))
}

pub fn drop_to_user() -> Result<(), SandboxError> {
    if setgroups_allowed() {
        // SAFETY: a zero-length list with a null pointer is the documented way to clear groups.
        if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
            return Err(err("cannot clear supplementary groups"));
        }
    }
    // A lock on "root is special" so nothing can regain capabilities by becoming uid 0.
    // SAFETY: PR_SET_SECUREBITS takes an integer flag set.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(err("cannot set securebits"));
    }
    // The bounding set caps what any later execve could grant (needs CAP_SETPCAP, which
    // we still hold here).
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(err("cannot drop the capability bounding set"));
        }
    }
    // SAFETY: plain integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(err("cannot clear ambient capabilities"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID) } < 0 {
        return Err(err("cannot setgid(1000)"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) } < 0 {
        return Err(err("cannot setuid(1000)"));
    }
    // setuid from 0 clears effective/permitted but not inheritable, and from 1000 (the
    // unprivileged-supervisor map) clears nothing; clear everything explicitly.
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: hdr and data are correctly laid out v3 capset arguments.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(err("cannot clear capabilities"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(err("cannot set no_new_privs"));
    }
    let (e, p, i) = capabilities()?;
    // SAFETY: no arguments.
    let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
    if e != 0 || p != 0 || i != 0 || uid != SANDBOX_UID || euid != SANDBOX_UID || gid != SANDBOX_GID
    {
        return Err(SandboxError::Credentials(format!(
            "credentials did not drop (uid {uid}, gid {gid}, caps {e:x}/{p:x}/{i:x})"
        )));
    }
    Ok(())
}
