//! seccomp-bpf denylist for drivers: kernel attack surface and namespace/mount escapes
//! return EPERM; clone3 returns ENOSYS because its flags live in memory seccomp cannot
//! inspect, and ENOSYS makes libc fall back to clone, whose flags we can check.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};

use crate::SandboxError;

const DENIED: &[(libc::c_long, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_sethostname, "sethostname"),
    (libc::SYS_setdomainname, "setdomainname"),
    (libc::SYS_fanotify_init, "fanotify_init"),
    (libc::SYS_uselib, "uselib"),
];

const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

// libc marks SOCK_PACKET deprecated; it is exactly what we deny.
const SOCK_PACKET: u64 = 10;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

fn cond(arg: u8, len: Len, op: Op, v: u64) -> Result<Cond, SandboxError> {
    Cond::new(arg, len, op, v).map_err(|e| SandboxError::Seccomp(format!("bad condition: {e}")))
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conds).map_err(|e| SandboxError::Seccomp(format!("bad rule: {e}")))
}

/// Rules of the EPERM filter: an empty rule list means "always", otherwise any rule
/// (an AND of its conditions) matching denies the call.
fn eperm_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in DENIED {
        m.insert(*nr, vec![]);
    }
    // clone(flags, ...): any namespace flag.
    let mut clone_rules = Vec::new();
    for f in NS_FLAGS {
        clone_rules.push(rule(vec![cond(0, Len::Qword, Op::MaskedEq(*f), *f)?])?);
    }
    m.insert(libc::SYS_clone, clone_rules);
    // socket/socketpair: only unix, inet and inet6; never raw or packet sockets.
    let families = |nr: i64| -> Result<Vec<SeccompRule>, SandboxError> {
        let mut v = vec![rule(vec![
            cond(0, Len::Dword, Op::Ne, libc::AF_UNIX as u64)?,
            cond(0, Len::Dword, Op::Ne, libc::AF_INET as u64)?,
            cond(0, Len::Dword, Op::Ne, libc::AF_INET6 as u64)?,
        ])?];
        for ty in [libc::SOCK_RAW as u64, SOCK_PACKET] {
            v.push(rule(vec![cond(1, Len::Dword, Op::MaskedEq(0xf), ty)?])?);
        }
        // MPTCP is TCP by another protocol number, which Landlock's TCP rules do not
        // cover: refused outright.
        v.push(rule(vec![cond(2, Len::Dword, Op::Eq, IPPROTO_MPTCP)?])?);
        let _ = nr;
        Ok(v)
    };
    m.insert(libc::SYS_socket, families(libc::SYS_socket)?);
    m.insert(libc::SYS_socketpair, families(libc::SYS_socketpair)?);
    // personality: only querying (0xffffffff) and the default PER_LINUX (0).
    m.insert(
        libc::SYS_personality,
        vec![rule(vec![
            cond(0, Len::Dword, Op::Ne, 0)?,
            cond(0, Len::Dword, Op::Ne, 0xffff_ffff)?,
        ])?],
    );
    // Terminal injection ioctls (there is no tty, but keep them out regardless).
    m.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Len::Dword, Op::Eq, TIOCSTI)?])?,
            rule(vec![cond(1, Len::Dword, Op::Eq, TIOCLINUX)?])?,
        ],
    );
    Ok(m)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| SandboxError::Seccomp(format!("invalid filter: {e}")))?;
    BpfProgram::try_from(filter)
        .map_err(|e| SandboxError::Seccomp(format!("cannot compile filter: {e}")))
}

/// First syscall number of the x32 ABI (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// x32 syscalls arrive with the x86_64 audit arch, so the arch check of the other
/// programs lets them through, and their numbers (`nr | X32_SYSCALL_BIT`) match no rule:
/// on a kernel built with CONFIG_X86_X32_ABI, `unshare` or `mount` would be one bit away.
/// seccompiler keys rules by exact number, so this range check is written by hand.
fn x32_program() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        insn(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// Three programs (seccomp stacks them; the strictest answer wins): x32 numbers → ENOSYS,
/// clone3 → ENOSYS, the denylist → EPERM.
/// `IPPROTO_MPTCP` (linux/in.h); libc does not name it.
const IPPROTO_MPTCP: u64 = 262;

pub fn build() -> Result<Vec<BpfProgram>, SandboxError> {
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    Ok(vec![
        x32_program(),
        compile(clone3, libc::ENOSYS)?,
        compile(eperm_rules()?, libc::EPERM)?,
    ])
}

/// Needs no_new_privs (set by the credentials layer).
pub fn apply(programs: &[BpfProgram]) -> Result<(), SandboxError> {
    for p in programs {
        seccompiler::apply_filter(p)
            .map_err(|e| SandboxError::Seccomp(format!("cannot install filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of(ret: libc::c_long) -> i32 {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn filter_denies_and_allows_in_a_child() {
        let progs = build().unwrap();
        // SAFETY: the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: every call below takes integer arguments or valid pointers.
            let code = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if apply(&progs).is_err() {
                    libc::_exit(1);
                }
                let mut code = 0;
                if errno_of(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)) != libc::EPERM {
                    code |= 2;
                }
                if errno_of(libc::syscall(libc::SYS_clone3, 0usize, 0usize)) != libc::ENOSYS {
                    code |= 4;
                }
                // x32 unshare: refused by the filter whether or not the kernel has x32.
                if errno_of(libc::syscall(
                    (X32_SYSCALL_BIT as libc::c_long) | libc::SYS_unshare,
                    libc::CLONE_NEWUSER,
                )) != libc::ENOSYS
                {
                    code |= 4;
                }
                if errno_of(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) as libc::c_long)
                    != libc::EPERM
                {
                    code |= 8;
                }
                if errno_of(libc::socket(libc::AF_INET, libc::SOCK_RAW, 1) as libc::c_long)
                    != libc::EPERM
                {
                    code |= 16;
                }
                for family in [libc::AF_INET, libc::AF_INET6] {
                    if errno_of(
                        libc::socket(family, libc::SOCK_STREAM, IPPROTO_MPTCP as i32)
                            as libc::c_long,
                    ) != libc::EPERM
                    {
                        code |= 16; // shares the bit of the other refused sockets (an exit status has 8)
                    }
                }
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if s < 0 {
                    code |= 32;
                }
                if libc::getpid() <= 0 {
                    code |= 64;
                }
                if errno_of(libc::syscall(libc::SYS_personality, 0x0040000)) != libc::EPERM {
                    code |= 128;
                }
                if libc::syscall(libc::SYS_personality, 0xffff_ffffu64) < 0 {
                    code |= 128;
                }
                code
            };
            // SAFETY: terminate the forked child without running the harness's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "bitmask of failed checks");
    }

    #[test]
    fn fork_still_works_under_the_filter() {
        let progs = build().unwrap();
        // SAFETY: see above.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: integer/pointer-valid calls only.
            let code = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                apply(&progs).unwrap();
                let c = libc::fork();
                if c == 0 {
                    libc::_exit(7);
                }
                let mut st = 0;
                libc::waitpid(c, &mut st, 0);
                if libc::WEXITSTATUS(st) == 7 {
                    0
                } else {
                    1
                }
            };
            // SAFETY: see above.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
