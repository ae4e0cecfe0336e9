//! The sandbox helper's control socket (docs/internals.md §1–2): one JSON object per
//! SOCK_SEQPACKET datagram. The engine sends the [`SandboxConfig`], then
//! [`HelperRequest`]s; the helper answers each with one [`HelperReply`]. A `spawned`
//! reply carries the driver's descriptors as SCM_RIGHTS, in [`SpawnedFds`] order.
//!
//! The helper knows no language: a spawn names the command line to execute.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// The largest datagram either side sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The most descriptors one datagram carries.
pub const MAX_FDS: usize = 8;
/// The smallest memory limit a sandbox is built with: an interpreter and its pipes.
pub const MIN_MEMORY_BYTES: u64 = 32 * MIB;
/// The fewest processes: init, an interpreter, and room for it to start a child.
pub const MIN_PROCESSES: u64 = 4;
/// The fewest open files a driver may have: its five protocol descriptors and more.
pub const MIN_OPEN_FILES: u64 = 16;
/// Where the engine's runtime drivers are bound inside the sandbox.
pub const RUNTIMES_INSIDE: &str = "/opt/codebay/runtimes";
/// The code's home and working directory inside the sandbox.
pub const HOME: &str = "/home/user";
/// The writable places inside the sandbox; a context's cwd must be in one.
pub const WRITABLE_ROOTS: [&str; 2] = [HOME, "/tmp"];
/// Size of `/dev/shm` (POSIX shared memory, Python's multiprocessing).
pub const DEV_SHM_BYTES: u64 = 64 * MIB;
/// The most System V shared memory the session may hold (`kernel.shmall`, `shmmax`).
pub const SYSV_SHM_BYTES: u64 = 64 * MIB;
/// A tmpfs gets one inode per this many bytes of its size: inodes are kernel memory the
/// size does not count, so their number is bounded with it.
pub const BYTES_PER_INODE: u64 = 16 * 1024;
/// Kernel memory budgeted per inode (an empty tmpfs file costs ~1.2 KiB here: inode,
/// dentry and their slab overhead).
pub const INODE_BUDGET_BYTES: u64 = 2 * 1024;

/// The inode count of a tmpfs of `bytes`.
pub fn tmpfs_inodes(bytes: u64) -> u64 {
    (bytes / BYTES_PER_INODE).max(256)
}

/// What the helper needs to build one sandbox: the first datagram. Every field is
/// sent; the engine validated each against the limits above before sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxConfig {
    /// `[a-z0-9-]{1,64}`; names the session's cgroups.
    pub session_id: String,
    /// Memory (and swap) the session's processes have whatever its files hold; the
    /// cgroup limit is [`SandboxConfig::memory_limit_bytes`].
    pub memory_bytes: u64,
    /// Processes and threads of the session at once (`pids.max`).
    pub max_processes: u64,
    /// CPU quota in cores; none means all.
    pub cpu_cores: Option<f64>,
    /// False: a new, empty network namespace. True: the host's.
    pub network: bool,
    pub workspace_bytes: u64,
    pub tmp_bytes: u64,
    /// Host paths bound read-only (interpreters and their libraries), each where the
    /// sandbox shows it; no two `inside` paths nest.
    pub read_only_binds: Vec<ReadOnlyBind>,
    /// Host directory bound read-only at [`RUNTIMES_INSIDE`].
    pub runtimes_dir: String,
    /// Added to every spawned process's environment.
    pub env: BTreeMap<String, String>,
    pub max_open_files: u64,
    pub max_file_bytes: u64,
    /// The cgroup (a path from each hierarchy's root) the session's cgroups are made
    /// under; none: `codebay` at the root (root), or the delegated subtree found from
    /// `/proc/self/cgroup` (cgroup v2, not root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// What bounds the session as a whole.
    #[serde(default, skip_serializing_if = "ResourceLimits::is_cgroup")]
    pub resource_limits: ResourceLimits,
}

/// A cgroup path as `cgroupParent` takes it (`/codebay-alice`, `codebay-alice`,
/// `/user.slice/codebay`: names of `[A-Za-z0-9_.@:-]`, no `.` or `..`), made absolute; or
/// what is wrong with it. The engine's option and the doctor's flag check it here.
pub fn normalise_cgroup_parent(path: &str) -> Result<String, String> {
    let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
    let fine = |n: &&str| {
        *n != "."
            && *n != ".."
            && n.len() <= 255
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.@:-".contains(c))
    };
    if names.is_empty() || !names.iter().all(fine) {
        return Err(format!(
            "a cgroup path such as '/codebay-alice' (names of letters, digits and _.@:-), got {path:?}"
        ));
    }
    Ok(format!("/{}", names.join("/")))
}

/// How a session is bounded: by cgroups (memory and processes of the whole session,
/// OOM and refused forks seen per context), or, as an explicit opt-in where no cgroup
/// can be had, by per-process rlimits only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceLimits {
    #[default]
    Cgroup,
    Rlimits,
}

impl ResourceLimits {
    pub fn is_cgroup(&self) -> bool {
        *self == ResourceLimits::Cgroup
    }
}

/// A host path and where the sandbox shows it: an interpreter outside `/usr` is shown
/// at a neutral path (`/opt/python`), so nothing of the host's layout is visible.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyBind {
    pub host: String,
    pub inside: String,
}

impl ReadOnlyBind {
    /// A path shown where it is on the host.
    pub fn same(path: &str) -> ReadOnlyBind {
        ReadOnlyBind {
            host: path.into(),
            inside: path.into(),
        }
    }
}

/// What a session's files can hold when full: the workspace, `/tmp`, `/dev/shm` and
/// System V segments, with the kernel memory of their inodes.
pub fn file_space_bytes(workspace_bytes: u64, tmp_bytes: u64) -> u64 {
    [workspace_bytes, tmp_bytes, DEV_SHM_BYTES]
        .iter()
        .map(|&b| b.saturating_add(tmpfs_inodes(b) * INODE_BUDGET_BYTES))
        .fold(SYSV_SHM_BYTES, u64::saturating_add)
}

/// A session's memory cgroup limit. The kernel charges a tmpfs page to the process
/// that writes it, so files and processes share one counter; sized so that with every
/// file system full, processes still have `memory_bytes`.
pub fn memory_limit_bytes(memory_bytes: u64, workspace_bytes: u64, tmp_bytes: u64) -> u64 {
    memory_bytes.saturating_add(file_space_bytes(workspace_bytes, tmp_bytes))
}

impl SandboxConfig {
    /// [`file_space_bytes`] of this session.
    pub fn file_space_bytes(&self) -> u64 {
        file_space_bytes(self.workspace_bytes, self.tmp_bytes)
    }

    /// [`memory_limit_bytes`] of this session.
    pub fn memory_limit_bytes(&self) -> u64 {
        memory_limit_bytes(self.memory_bytes, self.workspace_bytes, self.tmp_bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum HelperRequest {
    /// Start a process (a runtime driver) in a new cgroup of its own, `context`, below
    /// the session's, with the driver fd layout of docs/internals.md §3.
    #[serde(rename_all = "camelCase")]
    Spawn {
        id: u64,
        /// The child cgroup's name, `[a-z0-9-]{1,64}`, unique in the session.
        context: String,
        /// Executed as given; `argv[0]` is an absolute path visible inside the sandbox.
        argv: Vec<String>,
        /// Added to the base environment, after the config's `env`.
        env: BTreeMap<String, String>,
        /// Absolute, under [`WRITABLE_ROOTS`]; created (as the code's user) if missing.
        cwd: String,
    },
    /// SIGKILL every process of the context's cgroup, except `keepPid` when given
    /// (an interpreter whose children are cleared); without it the cgroup is removed.
    #[serde(rename_all = "camelCase")]
    Kill {
        id: u64,
        context: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_pid: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum HelperReply {
    /// The sandbox stands: the answer to the config.
    Ready {
        /// None when the session runs with rlimits only (`resourceLimits: 'rlimits'`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup: Option<CgroupInfo>,
    },
    /// The process runs; its descriptors come with this datagram.
    Spawned {
        id: u64,
        pid: i32,
    },
    Killed {
        id: u64,
        count: u32,
    },
    /// `step` names the layer that failed (`config`, `kernel_check`, `cgroup`, ...).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        step: String,
        message: String,
    },
}

/// Where the session's cgroups are on the host. A context's cgroup is a directory of
/// its name below each of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupInfo {
    /// 2, or 1 for per-controller hierarchies.
    pub version: u8,
    /// Every session directory (v1: memory, pids, cpu if any, the unified one if any).
    pub dirs: Vec<String>,
    /// The session directory with the memory controller.
    pub memory: String,
    /// The session directory with the pids controller.
    pub pids: String,
}

impl CgroupInfo {
    /// The file with an `oom_kill N` line for `context` (v2 `memory.events`, v1
    /// `memory.oom_control`; on v1 the count is of the cgroup the victim was in).
    pub fn memory_events(&self, context: &str) -> PathBuf {
        let file = if self.version == 2 {
            "memory.events.local"
        } else {
            "memory.oom_control"
        };
        Path::new(&self.memory).join(context).join(file)
    }

    /// The file with a `max N` line that counts `context`'s refused forks. On v1 that
    /// is the context's own `pids.events` (forks refused to a process of that cgroup).
    /// On v2 the count is kept only where the limit is set, the session's `pids.events`,
    /// so the engine also reads [`Self::pids_current`] to tell whose processes hit it.
    pub fn pids_events(&self, context: &str) -> PathBuf {
        if self.version == 2 {
            Path::new(&self.pids).join("pids.events")
        } else {
            Path::new(&self.pids).join(context).join("pids.events")
        }
    }

    /// The number of processes in `context`'s cgroup now.
    pub fn pids_current(&self, context: &str) -> PathBuf {
        Path::new(&self.pids).join(context).join("pids.current")
    }
}

/// The descriptors of a spawned process, in the order they travel.
#[derive(Debug, PartialEq)]
pub struct SpawnedFds<T> {
    /// The engine writes requests here; the process's fd 3.
    pub request_w: T,
    /// The engine reads replies here; the process's fd 4.
    pub reply_r: T,
    /// The process's fd 1.
    pub stdout_r: T,
    /// The process's fd 2.
    pub stderr_r: T,
    /// A pidfd of the process: signalled with pidfd_send_signal, readable at its exit.
    pub pidfd: T,
}

impl<T> SpawnedFds<T> {
    pub const COUNT: usize = 5;

    pub fn into_vec(self) -> Vec<T> {
        vec![
            self.request_w,
            self.reply_r,
            self.stdout_r,
            self.stderr_r,
            self.pidfd,
        ]
    }

    /// Refuses any other count, handing the descriptors back so they are closed.
    pub fn from_vec(fds: Vec<T>) -> Result<Self, Vec<T>> {
        let [request_w, reply_r, stdout_r, stderr_r, pidfd]: [T; 5] = fds.try_into()?;
        Ok(SpawnedFds {
            request_w,
            reply_r,
            stdout_r,
            stderr_r,
            pidfd,
        })
    }
}

/// Session ids and context names: they become cgroup directory names.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Absolute, normalised (no `.`, `..` or doubled `/`), NUL-free: these become mount
/// targets and working directories.
pub fn valid_abs_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    // Split by hand: Path::components would quietly drop a `.` or a doubled `/`.
    !p.contains('\0')
        && p.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|segment| !matches!(segment, "" | "." | ".."))
        })
}

/// Whether `p` is `root` or below it.
pub fn is_under(p: &str, root: &str) -> bool {
    p == root
        || p.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A working directory a context may have.
pub fn valid_cwd(p: &str) -> bool {
    valid_abs_path(p) && WRITABLE_ROOTS.iter().any(|root| is_under(p, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(valid_name("ctx-1") && valid_name("cb-0123abcd"));
        for bad in ["", "CB", "a/b", "..", "a b", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"x".repeat(65)));
        assert!(valid_abs_path("/usr/lib") && valid_abs_path("/"));
        for bad in ["rel", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\0b"] {
            assert!(!valid_abs_path(bad), "{bad:?}");
        }
        assert!(valid_cwd("/home/user") && valid_cwd("/home/user/proj") && valid_cwd("/tmp/x"));
        for bad in ["/home/username", "/etc", "/home", "/home/user/../x", "tmp"] {
            assert!(!valid_cwd(bad), "{bad:?}");
        }
    }

    #[test]
    fn full_file_systems_leave_processes_their_memory() {
        let c: SandboxConfig = serde_json::from_str(
            r#"{"sessionId":"cb-1","memoryBytes":536870912,"maxProcesses":64,"cpuCores":null,
            "network":false,"workspaceBytes":536870912,"tmpBytes":268435456,"readOnlyBinds":[],
            "runtimesDir":"/r","env":{},"maxOpenFiles":1024,"maxFileBytes":536870912}"#,
        )
        .unwrap();
        // 512 MiB + 256 MiB + 64 MiB of tmpfs, 64 MiB of SysV shm, 2 KiB per inode.
        let inodes = (32768 + 16384 + 4096) * 2 * 1024;
        assert_eq!(c.file_space_bytes(), (512 + 256 + 64 + 64) * MIB + inodes);
        assert_eq!(
            c.memory_limit_bytes(),
            c.memory_bytes + c.file_space_bytes()
        );
        assert_eq!(
            tmpfs_inodes(MIB),
            256,
            "a small tmpfs still holds a few files"
        );
    }

    #[test]
    fn spawned_fds_keep_their_order() {
        let fds = SpawnedFds::from_vec(vec![1, 2, 3, 4, 5]).unwrap();
        assert_eq!((fds.request_w, fds.pidfd), (1, 5));
        assert_eq!(fds.into_vec(), vec![1, 2, 3, 4, 5]);
        assert_eq!(SpawnedFds::from_vec(vec![1, 2]).unwrap_err(), vec![1, 2]);
    }

    #[test]
    fn context_event_files() {
        let v1 = CgroupInfo {
            version: 1,
            dirs: vec![],
            memory: "/m/codebay/cb-1".into(),
            pids: "/p/codebay/cb-1".into(),
        };
        assert_eq!(
            v1.memory_events("ctx-2"),
            PathBuf::from("/m/codebay/cb-1/ctx-2/memory.oom_control")
        );
        assert_eq!(
            v1.pids_events("ctx-2"),
            PathBuf::from("/p/codebay/cb-1/ctx-2/pids.events")
        );
    }
}
