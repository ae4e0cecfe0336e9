//! Clone into the session's namespaces and map its user/group ids.

use std::fs;

use crate::id_range::{self, IdRange, SubordinateIds};
use crate::kernel_check::{container_hint, Feature};
use crate::{sys, SandboxError};

/// First host id of the range a root supervisor maps into the sandbox; inside 0..65536
/// lands on unprivileged host ids so neither inside-root nor `user` is host root.
pub const HOST_ID_BASE: u32 = 1_000_000;
pub const ID_RANGE: u32 = 65_536;
pub const SANDBOX_UID: u32 = 1000;
pub const SANDBOX_GID: u32 = 1000;

/// The cgroup namespace is deliberately absent: init unshares it after the supervisor
/// has moved it into the session cgroup, so the session cgroup becomes its root.
pub fn clone_flags(network: bool) -> libc::c_int {
    let mut f = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if !network {
        f |= libc::CLONE_NEWNET;
    }
    f
}

/// fork-like clone(2) into new namespaces: returns 0 in the child, its pid in the parent.
pub fn clone_process(flags: libc::c_int) -> Result<libc::pid_t, SandboxError> {
    // SAFETY: a null stack makes clone behave like fork (the child runs on a copy of our
    // stack); the process is single-threaded, so no other thread's locks are copied held.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_void>(),
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        // Refused (rather than out of memory): name the setting that allows it.
        let hint = match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES | libc::ENOSPC | libc::EINVAL) => {
                format!("; {}", container_hint(Feature::UserNamespaces))
            }
            _ => String::new(),
        };
        return Err(SandboxError::UserNamespace(format!(
            "cannot clone into new user/pid/mount/ipc/uts{} namespaces: {e}{hint}",
            if flags & libc::CLONE_NEWNET != 0 {
                "/net"
            } else {
                ""
            }
        )));
    }
    Ok(ret as libc::pid_t)
}

/// clone_process with the new user namespace owned by host `owner`: the kernel charges
/// per-user counters of everything inside (inotify instances and watches, pending
/// signals, message queues) to the namespace's owner, so one owned by root would let the
/// code fill root's. The effective ids are switched for the clone only (the saved ids
/// stay 0, so the supervisor gets root back at once).
pub fn clone_process_owned(flags: libc::c_int, owner: u32) -> Result<libc::pid_t, SandboxError> {
    let set = |set: fn(u32) -> std::io::Result<()>, id: u32, what: &str| {
        set(id).map_err(|e| {
            SandboxError::UserNamespace(format!(
                "cannot switch the {what} to {id} to create the user namespace: {e}"
            ))
        })
    };
    // The group first, while the effective uid is still 0 (CAP_SETGID).
    set(sys::set_effective_gid, owner, "effective gid")?;
    if let Err(e) = set(sys::set_effective_uid, owner, "effective uid") {
        let _ = set(sys::set_effective_gid, 0, "effective gid");
        return Err(e);
    }
    let pid = clone_process(flags);
    if matches!(pid, Ok(0)) {
        return pid; // the child keeps the owner's ids until init switches inside
    }
    // Back to root (the saved uid is 0), then the group (CAP_SETGID again).
    set(sys::set_effective_uid, 0, "effective uid")?;
    set(sys::set_effective_gid, 0, "effective gid")?;
    pid
}

/// Whose host ids the session's ids are, decided once by the supervisor.
#[derive(Debug)]
pub enum HostIds {
    /// A root supervisor: a range of 65536 unprivileged ids of the session's own
    /// (inside 0..65536 → `base`..), held by its claim.
    Range(IdRange),
    /// An ordinary user with subordinate ids: init is the user (inside 0), the code a
    /// subordinate id of the session's own (inside 1000).
    Subordinate {
        uid: u32,
        gid: u32,
        ids: SubordinateIds,
    },
    /// An ordinary user without: the user's own id is the code's (inside 1000), and
    /// init runs as it too.
    Own { uid: u32, gid: u32 },
}

impl HostIds {
    pub fn choose() -> Result<HostIds, SandboxError> {
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid == 0 {
            return id_range::claim().map(HostIds::Range);
        }
        Ok(match id_range::subordinate(uid, gid)? {
            Some(ids) => HostIds::Subordinate { uid, gid, ids },
            None => HostIds::Own { uid, gid },
        })
    }

    /// The id init switches to inside: root of the namespace unless only one id is mapped.
    pub fn init_inside_id(&self) -> u32 {
        match self {
            HostIds::Own { .. } => SANDBOX_UID,
            _ => 0,
        }
    }

    /// Init's inside id seen from outside: the owner the session's cgroup directories
    /// are delegated to.
    pub fn init_host_ids(&self) -> (u32, u32) {
        match self {
            HostIds::Range(r) => (r.base, r.base),
            HostIds::Subordinate { uid, gid, .. } | HostIds::Own { uid, gid } => (*uid, *gid),
        }
    }

    /// clone_process, with the user namespace owned by the session's own host id when
    /// the supervisor is root (see [`clone_process_owned`]).
    pub fn clone(&self, flags: libc::c_int) -> Result<libc::pid_t, SandboxError> {
        match self {
            HostIds::Range(r) => clone_process_owned(flags, r.base),
            _ => clone_process(flags),
        }
    }

    /// Writes init's uid and gid maps.
    pub fn write_maps(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        match self {
            HostIds::Range(r) => write_maps_as_owner(pid, &id_maps(0, 0, r.base), r.base),
            HostIds::Own { uid, gid } => write_id_maps(pid, &id_maps(*uid, *gid, HOST_ID_BASE)),
            HostIds::Subordinate { uid, gid, ids } => {
                let map = |tool: &std::path::Path, own: u32, sub: u32| {
                    let args = subordinate_map_args(pid, own, sub);
                    let out = std::process::Command::new(tool)
                        .args(&args)
                        .stdin(std::process::Stdio::null())
                        .output()
                        .map_err(|e| {
                            SandboxError::IdMap(format!("cannot run {}: {e}", tool.display()))
                        })?;
                    if !out.status.success() {
                        return Err(SandboxError::IdMap(format!(
                            "{} {} failed ({}): {}",
                            tool.display(),
                            args.join(" "),
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        )));
                    }
                    Ok(())
                };
                map(&ids.newgidmap, *gid, ids.gid)?;
                map(&ids.newuidmap, *uid, ids.uid)
            }
        }
    }
}

/// `newuidmap`'s arguments: inside 0 is the user, inside 1000 the subordinate id.
pub fn subordinate_map_args(pid: libc::pid_t, own: u32, sub: u32) -> Vec<String> {
    [pid as u32, 0, own, 1, SANDBOX_UID, sub, 1]
        .iter()
        .map(u32::to_string)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
    /// Unprivileged writers must deny setgroups before writing gid_map; a privileged
    /// writer keeps it allowed so init can drop the inherited supplementary groups.
    pub deny_setgroups: bool,
}

/// `base`: the first host id of the session's own range (a root supervisor's claim).
pub fn id_maps(host_euid: u32, host_egid: u32, base: u32) -> IdMaps {
    if host_euid == 0 {
        IdMaps {
            uid_map: format!("0 {base} {ID_RANGE}\n"),
            gid_map: format!("0 {base} {ID_RANGE}\n"),
            deny_setgroups: false,
        }
    } else {
        IdMaps {
            uid_map: format!("{SANDBOX_UID} {host_euid} 1\n"),
            gid_map: format!("{SANDBOX_GID} {host_egid} 1\n"),
            deny_setgroups: true,
        }
    }
}

/// `PR_SET_SECUREBITS`' flag that keeps capabilities across a change of uid.
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

/// A root supervisor's maps, for a namespace owned by `owner` (see
/// [`clone_process_owned`]). The kernel checks CAP_SYS_ADMIN in the target namespace
/// with the credentials the map file was opened with; root holds it there through its
/// own CAP_SYS_ADMIN, which a container's root lacks, or as the namespace's owner. So
/// the files are opened with the effective uid `owner` and the capabilities kept
/// (`SECBIT_NO_SETUID_FIXUP`, for the switch only), and written as root.
fn write_maps_as_owner(pid: libc::pid_t, maps: &IdMaps, owner: u32) -> Result<(), SandboxError> {
    use std::io::Write;
    let proc = format!("/proc/{pid}");
    let err = |what: String, e: std::io::Error| SandboxError::IdMap(format!("{what}: {e}"));
    // SAFETY: PR_GET_SECUREBITS takes no pointer.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    if bits < 0 {
        return Err(err(
            "cannot read the securebits".into(),
            std::io::Error::last_os_error(),
        ));
    }
    let bits = bits as libc::c_ulong;
    // SAFETY: integer arguments; needs CAP_SETPCAP, which root has.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            bits | SECBIT_NO_SETUID_FIXUP,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(err(
            "cannot keep capabilities across the uid switch".into(),
            std::io::Error::last_os_error(),
        ));
    }
    let switch = |uid: u32| {
        sys::set_effective_uid(uid)
            .map_err(|e| err(format!("cannot switch the effective uid to {uid}"), e))
    };
    let open = |file: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("{proc}/{file}"))
            .map_err(|e| err(format!("cannot open {proc}/{file}"), e))
    };
    let opened = switch(owner).and_then(|()| {
        let files = (open("uid_map"), open("gid_map"));
        // Back to root (the saved uid is 0) whatever the opens did.
        switch(0)?;
        Ok((files.0?, files.1?))
    });
    // SAFETY: integer arguments.
    unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) };
    let (mut uid_map, mut gid_map) = opened?;
    uid_map.write_all(maps.uid_map.as_bytes()).map_err(|e| {
        err(
            format!("cannot write {:?} to {proc}/uid_map", maps.uid_map),
            e,
        )
    })?;
    gid_map.write_all(maps.gid_map.as_bytes()).map_err(|e| {
        err(
            format!("cannot write {:?} to {proc}/gid_map", maps.gid_map),
            e,
        )
    })
}

pub fn write_id_maps(pid: libc::pid_t, maps: &IdMaps) -> Result<(), SandboxError> {
    let proc = format!("/proc/{pid}");
    let w = |file: &str, content: &str| {
        fs::write(format!("{proc}/{file}"), content).map_err(|e| {
            SandboxError::IdMap(format!("cannot write {content:?} to {proc}/{file}: {e}"))
        })
    };
    if maps.deny_setgroups {
        w("setgroups", "deny")?;
    }
    w("uid_map", &maps.uid_map)?;
    w("gid_map", &maps.gid_map)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_a_range_of_unprivileged_ids() {
        let m = id_maps(0, 0, 1_065_536);
        assert_eq!(m.uid_map, "0 1065536 65536\n");
        assert_eq!(m.gid_map, "0 1065536 65536\n");
        assert!(!m.deny_setgroups);
    }

    #[test]
    fn non_root_maps_user_onto_itself() {
        let m = id_maps(1234, 99, HOST_ID_BASE);
        assert_eq!(m.uid_map, "1000 1234 1\n");
        assert_eq!(m.gid_map, "1000 99 1\n");
        assert!(m.deny_setgroups);
        assert_eq!(
            subordinate_map_args(77, 1234, 165_536),
            ["77", "0", "1234", "1", "1000", "165536", "1"]
        );
    }

    #[test]
    fn network_flag_controls_net_namespace() {
        assert_ne!(clone_flags(false) & libc::CLONE_NEWNET, 0);
        assert_eq!(clone_flags(true) & libc::CLONE_NEWNET, 0);
        assert_ne!(clone_flags(true) & libc::CLONE_NEWUSER, 0);
    }
}
