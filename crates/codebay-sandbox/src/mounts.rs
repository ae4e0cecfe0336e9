//! The sandbox's filesystem: a tmpfs root holding read-only binds of /usr, the runtimes
//! and the configured paths, a minimal /dev and /etc of its own, a fresh /proc, writable
//! size-limited /home/user and /tmp; pivot_root into it and make the root read-only.
//!
//! Work is split in two: `prepare` runs in the supervisor (host credentials, so it can
//! reach paths such as /root/.pyenv that the unprivileged sandbox root cannot traverse)
//! and detaches copies of the sources with open_tree; `setup` runs in init and attaches
//! them with move_mount.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use codebay_protocol::files::FILE_AGENT_INSIDE;
use codebay_protocol::helper::{is_under, tmpfs_inodes, DEV_SHM_BYTES, HOME, RUNTIMES_INSIDE};
use codebay_protocol::SandboxConfig;

use crate::namespaces::{SANDBOX_GID, SANDBOX_UID};
use crate::sys::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use crate::SandboxError;

/// Where the new root is assembled in init's private copy of the host tree. Any existing
/// directory works: sources were opened before it is covered.
const ASSEMBLY_POINT: &str = "/tmp";
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom"];
pub const HOSTNAME: &str = "codebay";

#[derive(Debug)]
pub enum Source {
    /// A detached mount made by the supervisor, already read-only.
    Tree(OwnedFd),
    /// Fallback for an unprivileged supervisor (open_tree needs CAP_SYS_ADMIN): init binds
    /// the host path itself, which works because it then runs as the same host user.
    Path(PathBuf),
}

#[derive(Debug)]
pub struct Bind {
    pub inside: PathBuf,
    pub source: Source,
    pub is_dir: bool,
    pub attrs: u64,
}

#[derive(Debug)]
pub struct MountPlan {
    pub binds: Vec<Bind>,
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    pub etc_files: Vec<(String, Vec<u8>)>,
    pub workspace_bytes: u64,
    pub tmp_bytes: u64,
}

fn m_err(what: String, e: io::Error) -> SandboxError {
    SandboxError::Mounts(format!("{what}: {e}{}", refused_hint(&e)))
}

/// For a mount refused by policy (a container's seccomp or AppArmor profile, or its
/// masked /proc): what allows it.
fn refused_hint(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "; {}",
            crate::kernel_check::container_hint(crate::kernel_check::Feature::Mounts)
        ),
        _ => String::new(),
    }
}

pub fn etc_files(
    network: bool,
    resolv: Option<Vec<u8>>,
    ld_cache: Option<Vec<u8>>,
) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        (
            "passwd".into(),
            b"root:x:0:0:root:/root:/usr/sbin/nologin\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                .to_vec(),
        ),
        ("group".into(), b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n".to_vec()),
        (
            "hosts".into(),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME}\n").into_bytes(),
        ),
        ("hostname".into(), format!("{HOSTNAME}\n").into_bytes()),
        (
            "nsswitch.conf".into(),
            b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".to_vec(),
        ),
    ];
    if let Some(c) = ld_cache {
        v.push(("ld.so.cache".into(), c));
    }
    if network {
        if let Some(r) = resolv {
            v.push(("resolv.conf".into(), r));
        }
    }
    v
}

fn detach(path: &Path, attrs: u64) -> Result<Source, SandboxError> {
    match sys::open_tree_clone(path) {
        Ok(fd) => {
            sys::mount_setattr(
                fd.as_raw_fd(),
                Path::new(""),
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                attrs,
            )
            .map_err(|e| {
                m_err(
                    format!("cannot make the copy of {} read-only", path.display()),
                    e,
                )
            })?;
            Ok(Source::Tree(fd))
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(Source::Path(path.to_owned())),
        Err(e) => Err(m_err(
            format!("cannot copy the mount of {}", path.display()),
            e,
        )),
    }
}

/// Supervisor side: resolve and detach every source, read the small /etc files.
pub fn prepare(c: &SandboxConfig) -> Result<MountPlan, SandboxError> {
    let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    let mut binds = Vec::new();
    let mut symlinks = Vec::new();
    let mut add =
        |inside: &str, host: &Path, required: bool, attrs: u64| -> Result<(), SandboxError> {
            let md = match fs::metadata(host) {
                Ok(m) => m,
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(m_err(
                        format!("cannot use {} as a read-only path", host.display()),
                        e,
                    ))
                }
            };
            binds.push(Bind {
                inside: inside.into(),
                source: detach(host, attrs)?,
                is_dir: md.is_dir(),
                attrs,
            });
            Ok(())
        };
    add("/usr", Path::new("/usr"), true, ro)?;
    for top in ["/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32"] {
        match fs::symlink_metadata(top) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    fs::read_link(top).map_err(|e| m_err(format!("cannot read link {top}"), e))?;
                symlinks.push((PathBuf::from(top), target));
            }
            Ok(m) if m.is_dir() => add(top, Path::new(top), true, ro)?,
            _ => {}
        }
    }
    for b in &c.read_only_binds {
        if b.host == b.inside && is_under(&b.inside, "/usr") {
            continue; // already visible through /usr
        }
        add(&b.inside, Path::new(&b.host), true, ro)?;
    }
    add(RUNTIMES_INSIDE, Path::new(&c.runtimes_dir), true, ro)?;
    // This binary, for init to run as the file agent (the code's user, confined).
    let exe = std::env::current_exe()
        .map_err(|e| m_err("cannot find the helper's own executable".into(), e))?;
    add(FILE_AGENT_INSIDE, &exe, true, ro)?;
    add("/etc/ssl/certs", Path::new("/etc/ssl/certs"), false, ro)?;
    for n in DEV_NODES {
        let p = format!("/dev/{n}");
        // Device nodes need nodev cleared; a read-only mount still lets /dev/null be written.
        add(
            &p,
            Path::new(&p),
            true,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        )?;
    }
    let resolv = if c.network {
        fs::read("/etc/resolv.conf").ok()
    } else {
        None
    };
    let ld_cache = fs::read("/etc/ld.so.cache").ok();
    Ok(MountPlan {
        binds,
        symlinks,
        etc_files: etc_files(c.network, resolv, ld_cache),
        workspace_bytes: c.workspace_bytes,
        tmp_bytes: c.tmp_bytes,
    })
}

impl MountPlan {
    /// Directories the driver may read and execute from (for Landlock).
    pub fn read_exec_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .binds
            .iter()
            .filter(|b| b.is_dir && !b.inside.starts_with("/dev") && !b.inside.starts_with("/etc"))
            .map(|b| b.inside.clone())
            .collect();
        v.push("/etc".into());
        v.push("/proc".into());
        v
    }

    /// Single files bound read-only (readOnlyBinds entries that are files).
    pub fn read_exec_files(&self) -> Vec<PathBuf> {
        self.binds
            .iter()
            .filter(|b| !b.is_dir && !b.inside.starts_with("/dev"))
            .map(|b| b.inside.clone())
            .collect()
    }
}

fn inside(p: &Path) -> PathBuf {
    Path::new(ASSEMBLY_POINT).join(p.strip_prefix("/").unwrap_or(p))
}

fn mkdirs(p: &Path) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| m_err(format!("cannot create {}", p.display()), e))
}

pub fn tmpfs(target: &Path, flags: libc::c_ulong, data: &str) -> Result<(), SandboxError> {
    sys::mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(data)).map_err(|e| {
        m_err(
            format!("cannot mount a tmpfs ({data}) on {}", target.display()),
            e,
        )
    })
}

/// Nothing mounted in this mount namespace may propagate back to the host.
pub fn make_root_private() -> Result<(), SandboxError> {
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| m_err("cannot make / private".into(), e))
}

/// A fresh /proc at `target`, as the sandbox has it.
/// It must be mounted while the host's /proc is still visible in this mount
/// namespace: the kernel refuses a new proc mount in a user namespace otherwise.
/// hidepid=2: a process sees only the processes it may ptrace, so user code never sees
/// init (inside-root), whose cmdline, status and maps name host paths such as the
/// helper binary; init itself holds CAP_SYS_PTRACE here and still sees every process.
pub fn fresh_proc(target: &Path) -> Result<(), SandboxError> {
    sys::mount(
        Some("proc"),
        target,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("hidepid=2"),
    )
    .map_err(|e| {
        SandboxError::Proc(format!(
            "cannot mount a fresh /proc: {e}{}",
            refused_hint(&e)
        ))
    })
}

/// Init side: runs in the new mount namespace with full capabilities of the new user
/// namespace, before pivot_root.
pub fn setup(plan: &MountPlan) -> Result<(), SandboxError> {
    make_root_private()?;

    // Path sources must be opened before the assembly point covers them.
    let mut path_fds: Vec<Option<OwnedFd>> = Vec::with_capacity(plan.binds.len());
    for b in &plan.binds {
        path_fds.push(match &b.source {
            Source::Path(p) => Some(
                sys::open_path(p).map_err(|e| m_err(format!("cannot open {}", p.display()), e))?,
            ),
            Source::Tree(_) => None,
        });
    }

    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    tmpfs(Path::new(ASSEMBLY_POINT), nosuid_nodev, "size=8m,mode=0755")?;
    for d in [
        "etc",
        "dev",
        "proc",
        "home/user",
        "tmp",
        "usr",
        "opt/codebay/runtimes",
    ] {
        mkdirs(&inside(Path::new(&format!("/{d}"))))?;
    }

    let dev = inside(Path::new("/dev"));
    tmpfs(
        &dev,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "size=64k,mode=0755",
    )?;
    mkdirs(&dev.join("shm"))?;
    tmpfs(
        &dev.join("shm"),
        nosuid_nodev,
        &format!(
            "size={DEV_SHM_BYTES},nr_inodes={},mode=1777",
            tmpfs_inodes(DEV_SHM_BYTES)
        ),
    )?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| m_err(format!("cannot create /dev/{name}"), e))?;
    }

    tmpfs(
        &inside(Path::new(HOME)),
        nosuid_nodev,
        &format!(
            "size={},nr_inodes={},mode=0755,uid={SANDBOX_UID},gid={SANDBOX_GID}",
            plan.workspace_bytes,
            tmpfs_inodes(plan.workspace_bytes)
        ),
    )?;
    tmpfs(
        &inside(Path::new("/tmp")),
        nosuid_nodev,
        &format!(
            "size={},nr_inodes={},mode=1777",
            plan.tmp_bytes,
            tmpfs_inodes(plan.tmp_bytes)
        ),
    )?;

    for (b, pfd) in plan.binds.iter().zip(&path_fds) {
        let target = inside(&b.inside);
        if b.is_dir {
            mkdirs(&target)?;
        } else {
            mkdirs(target.parent().expect("absolute path has a parent"))?;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&target)
                .map_err(|e| {
                    m_err(
                        format!("cannot create mount point {}", b.inside.display()),
                        e,
                    )
                })?;
        }
        match (&b.source, pfd) {
            (Source::Tree(fd), _) => sys::move_mount(fd, &target)
                .map_err(|e| m_err(format!("cannot attach {}", b.inside.display()), e))?,
            (Source::Path(p), Some(fd)) => {
                let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
                sys::mount(
                    Some(&src),
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| m_err(format!("cannot bind {}", p.display()), e))?;
                sys::mount_setattr(libc::AT_FDCWD, &target, libc::AT_RECURSIVE, b.attrs).map_err(
                    |e| m_err(format!("cannot make {} read-only", b.inside.display()), e),
                )?;
            }
            (Source::Path(_), None) => unreachable!("path sources were opened above"),
        }
    }

    for (link, target) in &plan.symlinks {
        std::os::unix::fs::symlink(target, inside(link))
            .map_err(|e| m_err(format!("cannot create symlink {}", link.display()), e))?;
    }
    let etc = inside(Path::new("/etc"));
    for (name, content) in &plan.etc_files {
        fs::write(etc.join(name), content)
            .map_err(|e| m_err(format!("cannot write /etc/{name}"), e))?;
    }

    fresh_proc(&inside(Path::new("/proc")))?;

    pivot_into(Path::new(ASSEMBLY_POINT))?;

    sys::mount_setattr(
        libc::AT_FDCWD,
        Path::new("/"),
        0,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
    .map_err(|e| m_err("cannot remount / read-only".into(), e))?;
    sys::mount_setattr(libc::AT_FDCWD, Path::new("/dev"), 0, MOUNT_ATTR_RDONLY)
        .map_err(|e| m_err("cannot remount /dev read-only".into(), e))?;
    Ok(())
}

/// Makes `root` the root of this mount namespace, with nothing of the old one in view.
pub fn pivot_into(root: &Path) -> Result<(), SandboxError> {
    let err = |what: &str, e: io::Error| SandboxError::PivotRoot(format!("{what}: {e}"));
    std::env::set_current_dir(root).map_err(|e| err("cannot enter the new root", e))?;
    let dot = sys::cstring(".").expect("no NUL");
    // SAFETY: both arguments are the NUL-terminated string ".". pivot_root(".", ".")
    // stacks the old root on top of the new one, so no put_old directory is needed.
    sys::check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })
        .map_err(|e| err("pivot_root failed", e))?;
    // Detaching the old root is what removes every host path from view.
    // SAFETY: dot is NUL-terminated.
    sys::check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) })
        .map_err(|e| err("cannot detach the old root", e))?;
    std::env::set_current_dir("/").map_err(|e| err("cannot chdir to /", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_has_no_resolv_without_network() {
        let f = etc_files(false, Some(b"nameserver 1.1.1.1\n".to_vec()), None);
        assert!(f.iter().all(|(n, _)| n != "resolv.conf"));
        let f = etc_files(
            true,
            Some(b"nameserver 1.1.1.1\n".to_vec()),
            Some(vec![1, 2]),
        );
        assert!(f.iter().any(|(n, _)| n == "resolv.conf"));
        assert!(f.iter().any(|(n, _)| n == "ld.so.cache"));
        let passwd = &f.iter().find(|(n, _)| n == "passwd").unwrap().1;
        let passwd = String::from_utf8_lossy(passwd);
        assert!(passwd.contains("user:x:1000:1000:user:/home/user:"));
        assert!(passwd.starts_with("root:x:0:0:"));
    }

    #[test]
    fn assembly_paths() {
        assert_eq!(
            inside(Path::new("/opt/codebay/runtimes")),
            PathBuf::from("/tmp/opt/codebay/runtimes")
        );
    }
}
