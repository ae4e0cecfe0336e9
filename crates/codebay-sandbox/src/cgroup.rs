//! Cgroups: one per session, one per context below it.
//!
//! The session's cgroup is `codebay/<sessionId>` under cgroup v2 when v2 offers the
//! memory and pids controllers, else under each v1 controller (memory, pids, cpu if
//! mounted) plus the v2 unified hierarchy if mounted, so that `cgroup.kill` can still
//! end the session at once. The session's limits are set there, by the supervisor, in
//! files that stay root's.
//!
//! Every spawned process gets a child cgroup of its own, named by its context, in every
//! hierarchy, so the engine can read per-context events (OOM kills, refused forks) and
//! init can kill exactly a context's processes, whatever sessions or process groups
//! they made. Delegation: the supervisor gives each session directory, with its
//! `cgroup.procs` (v1 also `tasks`, v2 also `cgroup.subtree_control`), to the host ids
//! init runs as, and hands init an O_DIRECTORY fd of each ([`ContextCgroups`]). Init
//! makes `<context>` with mkdirat; the forked child moves itself in by writing "0" to
//! `<context>/cgroup.procs` while still inside-root, before any other step, and never
//! execs if that fails.
//!
//! In a cgroup2 hierarchy processes may not live in a cgroup whose children have
//! controllers enabled, so init lives in the leaf [`INIT_LEAF`] beside the contexts;
//! in v1 hierarchies it stays in the session directory itself.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codebay_protocol::{CgroupInfo, SandboxConfig};

use crate::{sys, SandboxError};

const PARENT: &str = "codebay";
/// The CPU weight of all sandboxes together (v1 `cpu.shares`, default 1024; v2
/// `cpu.weight`, default 100): an eighth of an ordinary process's.
pub const SANDBOXES_CPU_SHARES: &str = "128";
pub const SANDBOXES_CPU_WEIGHT: &str = "12";
const CPU_PERIOD_US: u64 = 100_000;
/// Init's cgroup in a cgroup2 hierarchy. The `_` is outside the context name alphabet,
/// so no context can collide with it.
pub const INIT_LEAF: &str = "_init";
/// Upper bound on kill rounds; each round rereads the context's cgroup.procs after a
/// 1 ms pause, so a fork bomb cannot keep init busy for more than a fraction of a second.
const KILL_ROUNDS: usize = 200;
/// How long a removal waits for the kernel to finish the exits of killed processes.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Where the session directories go: the base cgroup of each hierarchy (a session's
/// directory is `<base>/<sessionId>`), as host paths. A base is always codebay's own
/// `codebay` directory (at the root, or in the user's parent): made when missing,
/// removed when empty, weighted below ordinary processes; the parent is never touched
/// but for enabling controllers in it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    V2 {
        base: PathBuf,
        /// Cgroups above `base`, top-down, whose `cgroup.subtree_control` must enable
        /// the controllers before `base` can have them.
        enable_in: Vec<PathBuf>,
        cpu: bool,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
}

impl Layout {
    fn has_cpu(&self) -> bool {
        match self {
            Layout::V2 { cpu, .. } => *cpu,
            Layout::V1 { cpu, .. } => cpu.is_some(),
        }
    }

    fn bases(&self) -> Vec<&Path> {
        match self {
            Layout::V2 { base, .. } => vec![base],
            Layout::V1 {
                memory,
                pids,
                cpu,
                unified,
                ..
            } => {
                let mut v = vec![memory.as_path(), pids.as_path()];
                v.extend(cpu.iter().map(PathBuf::as_path));
                v.extend(unified.iter().map(PathBuf::as_path));
                v
            }
        }
    }
}

/// Mount points of the hierarchies, read from /proc/self/mountinfo.
#[derive(Debug, Default, Clone)]
pub struct Mounts {
    pub v2: Option<PathBuf>,
    pub v1: Vec<(PathBuf, Vec<String>)>,
}

pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        let mp = PathBuf::from(mount_point.replace("\\040", " "));
        match fstype {
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mp),
            "cgroup" => {
                m.v1.push((mp, opts.split(',').map(str::to_owned).collect()))
            }
            _ => {}
        }
    }
    m
}

fn v1_with(m: &Mounts, controller: &str) -> Option<PathBuf> {
    m.v1.iter()
        .find(|(_, o)| o.iter().any(|x| x == controller))
        .map(|(p, _)| p.clone())
}

/// `root` joined with a cgroup path (`/a/b` or `a/b`).
fn under(root: &Path, cgroup: &str) -> PathBuf {
    root.join(cgroup.trim_start_matches('/'))
}

fn has_memory_and_pids(controllers: &str) -> bool {
    let c: Vec<&str> = controllers.split_whitespace().collect();
    c.contains(&"memory") && c.contains(&"pids")
}

/// The layout with `base` (a cgroup path) in every hierarchy. Prefers v2 when its root
/// offers memory+pids; `v2_controllers` is that root's cgroup.controllers content
/// (passed in so the choice is testable). Which hierarchy has what is all this decides;
/// whether the directories may be written is for the caller.
pub fn choose_layout(m: &Mounts, v2_controllers: &str, base: &str) -> Option<Layout> {
    if let Some(root) = &m.v2 {
        if has_memory_and_pids(v2_controllers) {
            let base = under(root, base);
            // Every cgroup from the root down to the base's parent enables the controllers.
            let mut enable_in: Vec<PathBuf> = base
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(root))
                .map(Path::to_owned)
                .collect();
            enable_in.reverse();
            return Some(Layout::V2 {
                base,
                enable_in,
                cpu: v2_controllers.split_whitespace().any(|c| c == "cpu"),
            });
        }
    }
    Some(Layout::V1 {
        memory: under(&v1_with(m, "memory")?, base),
        pids: under(&v1_with(m, "pids")?, base),
        cpu: v1_with(m, "cpu").map(|r| under(&r, base)),
        unified: m.v2.as_ref().map(|r| under(r, base)),
    })
}

/// The cgroup a non-root user may make session groups in under cgroup v2: the nearest
/// cgroup, from the process's own (`own`, a path from the root) upwards, that the user
/// owns, holds no process itself (the "no internal processes" rule: its children can
/// then get controllers) and has memory and pids available. `view` reads a cgroup's
/// owner, `cgroup.procs` and `cgroup.controllers` (a trait so the walk is testable).
pub fn delegated_v2(root: &Path, own: &str, uid: u32, view: &dyn CgroupView) -> Option<PathBuf> {
    let mut dir = under(root, own);
    while dir.starts_with(root) && dir != root {
        if view.owner(&dir) == Some(uid)
            && view.procs(&dir).is_empty()
            && has_memory_and_pids(&view.controllers(&dir))
        {
            return Some(dir);
        }
        if !dir.pop() {
            break;
        }
    }
    None
}

/// What [`delegated_v2`] reads of a cgroup.
pub trait CgroupView {
    fn owner(&self, dir: &Path) -> Option<u32>;
    fn procs(&self, dir: &Path) -> Vec<libc::pid_t>;
    fn controllers(&self, dir: &Path) -> String;
}

struct HostView;

impl CgroupView for HostView {
    fn owner(&self, dir: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(dir).ok().map(|m| m.uid())
    }
    fn procs(&self, dir: &Path) -> Vec<libc::pid_t> {
        SessionCgroups::procs(dir)
    }
    fn controllers(&self, dir: &Path) -> String {
        fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default()
    }
}

/// The process's own cgroup v2 path (the `0::` line of /proc/self/cgroup).
fn own_v2_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// How to get a cgroup, for the error that says there is none.
fn no_cgroup(uid: u32, why: &str) -> SandboxError {
    SandboxError::NoCgroup(format!(
        "codebay runs as uid {uid}, not root, and {why}: the session's memory and process \
         limits need a cgroup it may write. Either (cgroup v2) run Node in a delegated \
         systemd scope, e.g. `systemd-run --user --scope -p Delegate=yes node agent.js`; or \
         (cgroup v1) have an administrator make a parent per controller and give it to \
         you, e.g. `for c in memory pids cpu; do sudo mkdir -p /sys/fs/cgroup/$c/codebay-$USER \
         && sudo chown -R $USER /sys/fs/cgroup/$c/codebay-$USER; done`, then pass \
         `cgroupParent: '/codebay-<user>'` or set CODEBAY_CGROUP_PARENT; or opt in to \
         `resourceLimits: 'rlimits'` (per-process limits only, no session-wide cap: see \
         the README). `npx codebay doctor` checks this machine"
    ))
}

/// The layout for `config`: as root, `codebay` at each hierarchy's root (or under the
/// given parent); as another user, under the given parent, which must exist and be
/// writable, else under the delegated v2 subtree; else the [`no_cgroup`] error.
pub fn detect(config: &SandboxConfig) -> Result<Layout, SandboxError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SandboxError::Cgroup(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let m = parse_mountinfo(&text);
    let controllers =
        m.v2.as_ref()
            .and_then(|r| fs::read_to_string(r.join("cgroup.controllers")).ok())
            .unwrap_or_default();
    let none = || {
        SandboxError::Cgroup(
            "no usable cgroup hierarchy: need cgroup v2 with memory+pids or v1 memory and pids"
                .into(),
        )
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let layout = match (&config.cgroup_parent, uid) {
        (None, 0) => choose_layout(&m, &controllers, PARENT).ok_or_else(none)?,
        (Some(parent), _) => {
            let layout =
                choose_layout(&m, &controllers, &format!("{parent}/{PARENT}")).ok_or_else(none)?;
            // The parent is the user's (an administrator made it); codebay's own
            // directory inside it is codebay's.
            if uid != 0 {
                let missing: Vec<String> = layout
                    .required_parents()
                    .into_iter()
                    .filter(|p| !writable_dir(p))
                    .map(|p| p.display().to_string())
                    .collect();
                if !missing.is_empty() {
                    return Err(no_cgroup(
                        uid,
                        &format!(
                            "cgroupParent {parent} is not a directory it may write in {}",
                            missing.join(", ")
                        ),
                    ));
                }
            }
            let own =
                m.v2.as_ref()
                    .zip(own_v2_cgroup())
                    .map(|(r, own)| under(r, &own));
            layout.without_unwritable_optional(uid, own.as_deref())
        }
        (None, _) => {
            let (Some(root), Some(own)) = (m.v2.as_ref(), own_v2_cgroup()) else {
                return Err(no_cgroup(
                    uid,
                    "there is no cgroup v2 hierarchy with a delegated subtree",
                ));
            };
            if !has_memory_and_pids(&controllers) {
                return Err(no_cgroup(uid, &format!("cgroup v2 at {} offers no memory and pids controllers, and no cgroupParent is given", root.display())));
            }
            let delegated = delegated_v2(root, &own, uid, &HostView).ok_or_else(|| {
                no_cgroup(
                    uid,
                    &format!("no cgroup above its own ({own}) is delegated to it"),
                )
            })?;
            let base = delegated.join(PARENT);
            Layout::V2 {
                base,
                enable_in: vec![delegated],
                cpu: controllers.split_whitespace().any(|c| c == "cpu"),
            }
        }
    };
    if config.cpu_cores.is_some() && !layout.has_cpu() {
        return Err(SandboxError::Cgroup(
            "cpuCores needs the cpu controller, which this cgroup layout does not offer".into(),
        ));
    }
    Ok(layout)
}

fn writable_dir(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

impl Layout {
    /// The user's parents the session directories go under (the bases' parents), which
    /// a non-root user cannot make: memory and pids (v1), or the one (v2).
    fn required_parents(&self) -> Vec<PathBuf> {
        let parent = |b: &Path| b.parent().map(Path::to_owned).unwrap_or_default();
        match self {
            Layout::V2 { base, .. } => vec![parent(base)],
            Layout::V1 { memory, pids, .. } => vec![parent(memory), parent(pids)],
        }
    }

    /// Drops an optional v1 hierarchy (cpu, unified) whose parent the user may not
    /// write: it then goes unused, as it does where it is not mounted. The unified
    /// hierarchy also needs the process's own cgroup there (`own`) to be inside the
    /// parent: cgroup v2 lets a user move a process only below a common ancestor it
    /// may write.
    fn without_unwritable_optional(self, uid: u32, own: Option<&Path>) -> Layout {
        let keep =
            |b: Option<PathBuf>| b.filter(|b| uid == 0 || b.parent().is_some_and(writable_dir));
        match self {
            Layout::V1 {
                memory,
                pids,
                cpu,
                unified,
            } => Layout::V1 {
                memory,
                pids,
                cpu: keep(cpu),
                unified: keep(unified).filter(|u| {
                    uid == 0
                        || own
                            .zip(u.parent())
                            .is_some_and(|(own, p)| own.starts_with(p))
                }),
            },
            // A user's v2 parent: its ancestors are the administrator's, who enabled
            // the controllers down to it; codebay enables them in the parent only.
            Layout::V2 { base, cpu, .. } if uid != 0 => Layout::V2 {
                enable_in: base.parent().map(Path::to_owned).into_iter().collect(),
                base,
                cpu,
            },
            other => other,
        }
    }
}

/// The limit files to write, relative to each session directory: (hierarchy index,
/// file, content), indexes into [`session_dirs`]' order.
pub fn limit_files(layout: &Layout, c: &SandboxConfig) -> Vec<(usize, &'static str, String)> {
    let quota = c
        .cpu_cores
        .map(|cores| ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000));
    let mut v = Vec::new();
    match layout {
        Layout::V2 { cpu, .. } => {
            v.push((0, "memory.max", c.memory_limit_bytes().to_string()));
            // memory + swap == the limit, as v1's memsw does.
            v.push((0, "memory.swap.max", "0".into()));
            v.push((0, "pids.max", c.max_processes.to_string()));
            if let (Some(q), true) = (quota, cpu) {
                v.push((0, "cpu.max", format!("{q} {CPU_PERIOD_US}")));
            }
        }
        Layout::V1 { cpu, .. } => {
            let limit = c.memory_limit_bytes().to_string();
            v.push((0, "memory.limit_in_bytes", limit.clone()));
            v.push((0, "memory.memsw.limit_in_bytes", limit));
            v.push((1, "pids.max", c.max_processes.to_string()));
            // Index 2 is the cpu hierarchy only when there is one; then it is.
            if let (Some(q), Some(_)) = (quota, cpu) {
                v.push((2, "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                v.push((2, "cpu.cfs_quota_us", q.to_string()));
            }
        }
    }
    v
}

/// One hierarchy's session directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    pub dir: PathBuf,
    /// A cgroup2 hierarchy: init lives in [`INIT_LEAF`] there, and `cgroup.kill` exists.
    pub cgroup2: bool,
}

/// The session's directories: v2: the one; v1: memory, pids, cpu if any, unified if any.
pub fn session_dirs(layout: &Layout, session_id: &str) -> (u8, Vec<Hierarchy>) {
    let version = match layout {
        Layout::V2 { .. } => 2,
        Layout::V1 { .. } => 1,
    };
    let unified = match layout {
        Layout::V1 { unified, .. } => unified.as_deref(),
        Layout::V2 { .. } => None,
    };
    let dirs = layout
        .bases()
        .into_iter()
        .map(|base| Hierarchy {
            dir: base.join(session_id),
            cgroup2: version == 2 || Some(base) == unified,
        })
        .collect();
    (version, dirs)
}

fn write_file(path: &Path, content: &str) -> io::Result<()> {
    fs::write(path, content)
}

fn mkdir_ok_exists(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn cg_err(what: &str, p: &Path, e: io::Error) -> SandboxError {
    SandboxError::Cgroup(format!("{what} {}: {e}", p.display()))
}

fn controllers(cpu: bool) -> &'static str {
    if cpu {
        "+memory +pids +cpu"
    } else {
        "+memory +pids"
    }
}

/// Pids listed in a `cgroup.procs`.
fn parse_procs(text: &[u8]) -> impl Iterator<Item = libc::pid_t> + '_ {
    text.split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
}

/// The session's cgroups as the supervisor sees them: host paths.
#[derive(Debug, Clone)]
pub struct SessionCgroups {
    pub version: u8,
    pub hierarchies: Vec<Hierarchy>,
    memory: usize,
    pids: usize,
}

impl SessionCgroups {
    pub fn create(layout: &Layout, c: &SandboxConfig) -> Result<SessionCgroups, SandboxError> {
        let (version, hierarchies) = session_dirs(layout, &c.session_id);
        let cg = SessionCgroups {
            version,
            hierarchies,
            memory: 0,
            pids: if version == 2 { 0 } else { 1 },
        };
        if let Err(e) = cg.create_dirs(layout, c) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_dirs(&self, layout: &Layout, c: &SandboxConfig) -> Result<(), SandboxError> {
        let v2_cpu = match layout {
            Layout::V2 { cpu, .. } => Some(*cpu),
            Layout::V1 { .. } => None,
        };
        if let (Layout::V2 { enable_in, .. }, Some(cpu)) = (layout, v2_cpu) {
            for above in enable_in {
                let sc = above.join("cgroup.subtree_control");
                write_file(&sc, controllers(cpu))
                    .map_err(|e| cg_err("cannot enable controllers in", &sc, e))?;
            }
        }
        for h in &self.hierarchies {
            let dir = &h.dir;
            let parent = dir.parent().expect("session dir has a parent");
            // A concurrent session's cleanup may rmdir the shared parent between our
            // mkdirs; retry a few times instead of failing the create.
            let mut attempt = 0;
            loop {
                mkdir_ok_exists(parent).map_err(|e| cg_err("cannot create", parent, e))?;
                if let Some(cpu) = v2_cpu {
                    let sc = parent.join("cgroup.subtree_control");
                    if let Err(e) = write_file(&sc, controllers(cpu)) {
                        if e.kind() == io::ErrorKind::NotFound && attempt < 5 {
                            attempt += 1;
                            continue;
                        }
                        return Err(cg_err("cannot enable controllers in", &sc, e));
                    }
                }
                match fs::create_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => attempt += 1,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(cg_err("a session cgroup already exists at", dir, e))
                    }
                    Err(e) => return Err(cg_err("cannot create", dir, e)),
                }
            }
        }
        // Every sandbox together weighs less than one ordinary process of the host: a
        // busy background child must not starve the Node process or the host. A session's
        // `cpuCores` still caps it; this only orders who runs when the CPUs are busy.
        for h in &self.hierarchies {
            let parent = h.dir.parent().expect("session dir has a parent");
            for (file, weight) in [
                ("cpu.shares", SANDBOXES_CPU_SHARES),
                ("cpu.weight", SANDBOXES_CPU_WEIGHT),
            ] {
                let p = parent.join(file);
                if p.exists() {
                    write_file(&p, weight)
                        .map_err(|e| cg_err(&format!("cannot write {weight} to"), &p, e))?;
                }
            }
        }
        for (idx, file, content) in limit_files(layout, c) {
            let p = self.hierarchies[idx].dir.join(file);
            match write_file(&p, &content) {
                Ok(()) => {}
                // Swap accounting is optional (kernel/boot option); memory.max still holds.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && (file == "memory.memsw.limit_in_bytes" || file == "memory.swap.max") => {
                }
                Err(e) => return Err(cg_err(&format!("cannot write {content:?} to"), &p, e)),
            }
        }
        if let Some(cpu) = v2_cpu {
            // The contexts get the controllers, so each has its own memory.events and
            // pids.current; the limits above still bound them all together.
            let sc = self.hierarchies[0].dir.join("cgroup.subtree_control");
            write_file(&sc, controllers(cpu))
                .map_err(|e| cg_err("cannot enable controllers in", &sc, e))?;
        }
        for h in self.hierarchies.iter().filter(|h| h.cgroup2) {
            let leaf = h.dir.join(INIT_LEAF);
            fs::create_dir(&leaf).map_err(|e| cg_err("cannot create", &leaf, e))?;
        }
        Ok(())
    }

    /// The directory init is placed in, in each hierarchy.
    fn init_dir(h: &Hierarchy) -> PathBuf {
        if h.cgroup2 {
            h.dir.join(INIT_LEAF)
        } else {
            h.dir.clone()
        }
    }

    /// Hands each session directory to `uid`/`gid`, the host ids of init, so init can
    /// make and populate context cgroups: the directory itself (mkdir), its `cgroup.procs`
    /// (v2 allows a move only with write access to the common ancestor's) and `tasks`
    /// (v1) or `cgroup.subtree_control` (v2). The limit files stay root's.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<(), SandboxError> {
        for h in &self.hierarchies {
            let extra = if h.cgroup2 {
                "cgroup.subtree_control"
            } else {
                "tasks"
            };
            for p in [h.dir.clone(), h.dir.join("cgroup.procs"), h.dir.join(extra)] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| cg_err(&format!("cannot give to {uid}:{gid}"), &p, e))?;
            }
        }
        Ok(())
    }

    /// Directory fds of the session directories, for init: opened by the supervisor,
    /// inherited through the clone.
    pub fn open(&self) -> Result<ContextCgroups, SandboxError> {
        let dirs = self
            .hierarchies
            .iter()
            .map(|h| {
                let fd = sys::open_dir(&h.dir).map_err(|e| cg_err("cannot open", &h.dir, e))?;
                Ok((fd, h.clone()))
            })
            .collect::<Result<_, SandboxError>>()?;
        Ok(ContextCgroups { dirs })
    }

    /// Called by the supervisor before it releases init, so init never runs unconfined.
    pub fn add_init(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        for h in &self.hierarchies {
            let p = Self::init_dir(h).join("cgroup.procs");
            write_file(&p, &pid.to_string())
                .map_err(|e| cg_err(&format!("cannot move pid {pid} into"), &p, e))?;
        }
        Ok(())
    }

    /// What the `ready` reply tells the engine.
    pub fn info(&self) -> Result<CgroupInfo, SandboxError> {
        let s = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| SandboxError::Cgroup(format!("{} is not UTF-8", p.display())))
        };
        Ok(CgroupInfo {
            version: self.version,
            dirs: self
                .hierarchies
                .iter()
                .map(|h| s(&h.dir))
                .collect::<Result<_, _>>()?,
            memory: s(&self.hierarchies[self.memory].dir)?,
            pids: s(&self.hierarchies[self.pids].dir)?,
        })
    }

    /// `dir` and every cgroup below it, children before their parent.
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![(dir.to_owned(), false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                out.push(d);
                continue;
            }
            stack.push((d.clone(), true));
            for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), false));
                }
            }
        }
        out
    }

    fn procs(dir: &Path) -> Vec<libc::pid_t> {
        fs::read(dir.join("cgroup.procs"))
            .map(|s| parse_procs(&s).collect())
            .unwrap_or_default()
    }

    /// Kills whatever is left and removes every directory of the session, contexts
    /// first; best effort, never fails, because it runs on every exit path.
    pub fn destroy(&self) {
        let dirs: Vec<PathBuf> = self.hierarchies.iter().map(|h| h.dir.clone()).collect();
        destroy_tree(&dirs);
    }
}

/// Kills every process left in the session directories `dirs` (one per hierarchy) and
/// removes them, contexts first. Best effort, never fails: the supervisor runs it on
/// every exit path, and the engine runs it after a supervisor that was killed.
pub fn destroy_tree(dirs: &[PathBuf]) {
    for dir in dirs {
        let kill = dir.join("cgroup.kill");
        if kill.exists() {
            // Recursive: the contexts and init's leaf too.
            let _ = write_file(&kill, "1");
        }
    }
    let deadline = Instant::now() + EXIT_GRACE;
    for dir in dirs {
        for d in SessionCgroups::tree(dir) {
            loop {
                let pids = SessionCgroups::procs(&d);
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids.into_iter().filter(|p| *p > 0) {
                    // SAFETY: kill has no memory-safety preconditions; p > 0 names
                    // one process, never a group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    for dir in dirs {
        for d in SessionCgroups::tree(dir) {
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        }
        // The shared parent goes too when this was the last session; a busy or
        // non-empty parent simply stays.
        if let Some(parent) = dir
            .parent()
            .filter(|p| p.file_name() == Some(PARENT.as_ref()))
        {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Removes the cgroups of dead sessions: session directories under every hierarchy's
/// `codebay/` that hold no process at all (a live session always holds its init) and
/// were made more than `min_age` ago (a session being built has its directories before
/// its init). What is left when every helper was SIGKILLed at once. Returns how many
/// sessions were swept.
pub fn sweep_stale(min_age: Duration) -> usize {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mounts = parse_mountinfo(&text);
    let roots = mounts.v2.iter().chain(mounts.v1.iter().map(|(p, _)| p));
    let mut sessions: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for root in roots {
        for entry in fs::read_dir(root.join(PARENT))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && codebay_protocol::helper::valid_name(&name)
            {
                sessions.entry(name).or_default().push(entry.path());
            }
        }
    }
    let old_enough = |dir: &Path| {
        fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age)
    };
    let mut swept = 0;
    for dirs in sessions.values() {
        let empty = dirs.iter().all(|d| {
            SessionCgroups::tree(d)
                .iter()
                .all(|t| SessionCgroups::procs(t).is_empty())
        });
        if empty && dirs.iter().all(|d| old_enough(d)) {
            destroy_tree(dirs);
            swept += 1;
        }
    }
    swept
}

/// The session directories as init holds them: directory fds, so init needs no view of
/// the host's cgroup mounts. Every operation takes a context name that the caller
/// checked with `valid_name`, so it is one path component.
#[derive(Debug)]
pub struct ContextCgroups {
    dirs: Vec<(OwnedFd, Hierarchy)>,
}

impl ContextCgroups {
    fn err(&self, what: &str, h: &Hierarchy, context: &str, e: io::Error) -> SandboxError {
        SandboxError::Cgroup(format!("{what} {}/{context}: {e}", h.dir.display()))
    }

    /// Makes `context` in every hierarchy; one that exists already is an error (and
    /// nothing is left made).
    pub fn create(&self, context: &str) -> Result<(), SandboxError> {
        for (i, (fd, h)) in self.dirs.iter().enumerate() {
            if let Err(e) = sys::mkdirat(fd, context, 0o755) {
                for (fd, _) in &self.dirs[..i] {
                    let _ = sys::rmdirat(fd, context);
                }
                let what = if e.kind() == io::ErrorKind::AlreadyExists {
                    "the context exists already:"
                } else {
                    "cannot create"
                };
                return Err(self.err(what, h, context, e));
            }
        }
        Ok(())
    }

    /// Moves the calling process into `context` in every hierarchy. Runs in the forked
    /// child, which must never exec if this fails.
    pub fn join(&self, context: &str) -> Result<(), SandboxError> {
        let procs = format!("{context}/cgroup.procs");
        for (fd, h) in &self.dirs {
            sys::write_at(fd, &procs, b"0")
                .map_err(|e| self.err("cannot move the process into", h, context, e))?;
        }
        Ok(())
    }

    /// The processes of `context` (pids of init's namespace), in any hierarchy, other
    /// than `keep` and init. A context that does not exist has none.
    pub fn members(
        &self,
        context: &str,
        keep: Option<libc::pid_t>,
    ) -> Result<BTreeSet<libc::pid_t>, SandboxError> {
        let procs = format!("{context}/cgroup.procs");
        let mut pids = BTreeSet::new();
        for (fd, h) in &self.dirs {
            match sys::read_at(fd, &procs) {
                // 0: a process outside init's pid namespace, which no context holds.
                Ok(text) => pids.extend(parse_procs(&text).filter(|p| *p > 1 && Some(*p) != keep)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("cannot read the processes of", h, context, e)),
            }
        }
        Ok(pids)
    }

    /// SIGKILLs every process of `context` except `keep`, rereading the context until
    /// none is left; returns how many distinct processes were signalled.
    ///
    /// Each listed pid is pinned with a pidfd and signalled only if the context still
    /// lists it afterwards, so a number reused by a process elsewhere is never hit.
    pub fn kill(&self, context: &str, keep: Option<libc::pid_t>) -> Result<u32, SandboxError> {
        let mut signalled = BTreeSet::new();
        for _ in 0..KILL_ROUNDS {
            let listed: Vec<libc::pid_t> = self.members(context, keep)?.into_iter().collect();
            if listed.is_empty() {
                return Ok(signalled.len() as u32);
            }
            sys::kill_pinned(&listed, &mut signalled, || self.members(context, keep))?;
            // Killed processes stay listed until their exit completes; give them a moment.
            std::thread::sleep(Duration::from_millis(1));
        }
        if keep.is_none() {
            // Forks outran the rounds; cgroup.kill takes the whole cgroup at once, forks
            // in flight included. Only cgroup2 has it.
            for (fd, _) in self.dirs.iter().filter(|(_, h)| h.cgroup2) {
                let _ = sys::write_at(fd, &format!("{context}/cgroup.kill"), b"1");
            }
            let deadline = Instant::now() + EXIT_GRACE;
            while !self.members(context, None)?.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let left = self.members(context, keep)?.len();
        if left > 0 {
            return Err(SandboxError::Cgroup(format!(
                "{left} processes of context {context} survived {KILL_ROUNDS} rounds of SIGKILL"
            )));
        }
        Ok(signalled.len() as u32)
    }

    /// Removes `context` from every hierarchy, waiting while the kernel finishes the
    /// exits of its last processes. A context that does not exist is removed already.
    pub fn remove(&self, context: &str) -> Result<(), SandboxError> {
        let deadline = Instant::now() + EXIT_GRACE;
        for (fd, h) in &self.dirs {
            loop {
                match sys::rmdirat(fd, context) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => return Err(self.err("cannot remove", h, context, e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    const MOUNTINFO: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw";

    fn config(cores: Option<f64>) -> SandboxConfig {
        SandboxConfig {
            session_id: "cb-1".into(),
            memory_bytes: 536870912,
            max_processes: 64,
            cpu_cores: cores,
            network: false,
            workspace_bytes: 1 << 20,
            tmp_bytes: 1 << 20,
            read_only_binds: vec![],
            runtimes_dir: "/r".into(),
            env: Default::default(),
            max_open_files: 64,
            max_file_bytes: 1 << 20,
            cgroup_parent: None,
            resource_limits: Default::default(),
        }
    }

    #[test]
    fn falls_back_to_v1_when_v2_has_no_controllers() {
        let m = parse_mountinfo(MOUNTINFO);
        let l = choose_layout(&m, "", PARENT).unwrap();
        assert_eq!(
            l,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/codebay".into(),
                pids: "/sys/fs/cgroup/pids/codebay".into(),
                cpu: Some("/sys/fs/cgroup/cpu/codebay".into()),
                unified: Some("/sys/fs/cgroup/unified/codebay".into()),
            }
        );
        let (v, dirs) = session_dirs(&l, "cb-1");
        assert_eq!(v, 1);
        assert_eq!(
            dirs[0],
            Hierarchy {
                dir: "/sys/fs/cgroup/memory/codebay/cb-1".into(),
                cgroup2: false
            }
        );
        assert_eq!(
            dirs[3],
            Hierarchy {
                dir: "/sys/fs/cgroup/unified/codebay/cb-1".into(),
                cgroup2: true
            }
        );
        let c = config(Some(1.5));
        let limit = c.memory_limit_bytes().to_string();
        assert!(
            c.memory_limit_bytes() > c.memory_bytes,
            "files have room of their own"
        );
        let files = limit_files(&l, &c);
        assert!(files.contains(&(0, "memory.limit_in_bytes", limit.clone())));
        assert!(files.contains(&(0, "memory.memsw.limit_in_bytes", limit)));
        assert!(files.contains(&(1, "pids.max", "64".into())));
        assert!(files.contains(&(2, "cpu.cfs_quota_us", "150000".into())));
        // Without a cpu hierarchy, index 2 is the unified one and gets no cpu files.
        let no_cpu = Layout::V1 {
            memory: "/m".into(),
            pids: "/p".into(),
            cpu: None,
            unified: Some("/u".into()),
        };
        assert!(session_dirs(&no_cpu, "x").1[2].cgroup2);
        assert!(limit_files(&no_cpu, &config(Some(1.0)))
            .iter()
            .all(|(i, ..)| *i < 2));
    }

    #[test]
    fn prefers_v2_with_memory_and_pids() {
        let m = parse_mountinfo(MOUNTINFO);
        let l = choose_layout(&m, "cpuset cpu io memory pids", PARENT).unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                base: "/sys/fs/cgroup/unified/codebay".into(),
                enable_in: vec!["/sys/fs/cgroup/unified".into()],
                cpu: true
            }
        );
        // Under a parent, every cgroup from the root down to it enables the controllers.
        let under_parent = choose_layout(&m, "memory pids", "/team/alice/codebay").unwrap();
        assert_eq!(
            under_parent,
            Layout::V2 {
                base: "/sys/fs/cgroup/unified/team/alice/codebay".into(),
                enable_in: vec![
                    "/sys/fs/cgroup/unified".into(),
                    "/sys/fs/cgroup/unified/team".into(),
                    "/sys/fs/cgroup/unified/team/alice".into()
                ],
                cpu: false
            }
        );
        assert_eq!(
            session_dirs(&under_parent, "cb-1").1[0].dir,
            Path::new("/sys/fs/cgroup/unified/team/alice/codebay/cb-1")
        );
        let files = limit_files(&l, &config(None));
        assert_eq!(
            files,
            vec![
                (
                    0,
                    "memory.max",
                    config(None).memory_limit_bytes().to_string()
                ),
                (0, "memory.swap.max", "0".to_string()),
                (0, "pids.max", "64".to_string()),
            ]
        );
        let files = limit_files(&l, &config(Some(0.5)));
        assert!(files.contains(&(0, "cpu.max", "50000 100000".into())));
    }

    /// A cgroup tree in memory: dir → (owner, processes, controllers).
    struct Tree(Vec<(&'static str, u32, usize, &'static str)>);

    impl CgroupView for Tree {
        fn owner(&self, dir: &Path) -> Option<u32> {
            self.0.iter().find(|e| Path::new(e.0) == dir).map(|e| e.1)
        }
        fn procs(&self, dir: &Path) -> Vec<libc::pid_t> {
            let n = self
                .0
                .iter()
                .find(|e| Path::new(e.0) == dir)
                .map_or(0, |e| e.2);
            (1..=n as libc::pid_t).collect()
        }
        fn controllers(&self, dir: &Path) -> String {
            self.0
                .iter()
                .find(|e| Path::new(e.0) == dir)
                .map_or("", |e| e.3)
                .into()
        }
    }

    #[test]
    fn the_delegated_subtree_is_the_nearest_owned_cgroup_without_processes() {
        let root = Path::new("/sys/fs/cgroup");
        let u = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service";
        let tree = Tree(vec![
            ("/sys/fs/cgroup/user.slice", 0, 0, "memory pids"),
            (
                "/sys/fs/cgroup/user.slice/user-1000.slice",
                0,
                0,
                "memory pids",
            ),
            (u, 1000, 0, "memory pids cpu"),
            (
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice",
                1000,
                0,
                "memory pids",
            ),
            (
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope",
                1000,
                3,
                "memory pids",
            ),
            (
                "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope",
                0,
                5,
                "memory pids",
            ),
        ]);
        // A delegated scope holds the process itself: its slice takes the sessions.
        let own = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope";
        assert_eq!(
            delegated_v2(root, own, 1000, &tree).unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice")
        );
        // Another user's, or a login scope owned by root: nothing is delegated.
        assert_eq!(delegated_v2(root, own, 1001, &tree), None);
        assert_eq!(
            delegated_v2(
                root,
                "/user.slice/user-1000.slice/session-2.scope",
                1000,
                &tree
            ),
            None
        );
        // Without the controllers there, it is not a place for limits.
        let bare = Tree(vec![
            (u, 1000, 0, "cpu"),
            (
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/x",
                1000,
                1,
                "",
            ),
        ]);
        assert_eq!(
            delegated_v2(
                root,
                "/user.slice/user-1000.slice/user@1000.service/x",
                1000,
                &bare
            ),
            None
        );
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("1000").spawn().unwrap()
    }

    fn alive(c: &mut Child) -> bool {
        c.try_wait().unwrap().is_none()
    }

    #[test]
    #[ignore = "needs root"]
    fn contexts_on_this_host() {
        let mut c = config(Some(1.0));
        c.session_id = format!("unit-test-{}", std::process::id());
        let layout = detect(&c).unwrap();
        let cg = SessionCgroups::create(&layout, &c).unwrap();
        let info = cg.info().unwrap();
        assert_eq!(info.dirs.len(), cg.hierarchies.len());
        assert!(info.dirs.contains(&info.memory) && info.dirs.contains(&info.pids));
        for h in &cg.hierarchies {
            assert!(h.dir.is_dir(), "{}", h.dir.display());
            assert_eq!(
                h.dir.join(INIT_LEAF).is_dir(),
                h.cgroup2,
                "{}",
                h.dir.display()
            );
        }
        cg.delegate(4242, 4343).unwrap();
        {
            use std::os::unix::fs::MetadataExt;
            let md = fs::metadata(cg.hierarchies[0].dir.join("cgroup.procs")).unwrap();
            assert_eq!((md.uid(), md.gid()), (4242, 4343));
            let limits = if cg.version == 2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            let md = fs::metadata(cg.hierarchies[0].dir.join(limits)).unwrap();
            assert_eq!(md.uid(), 0, "a limit file was delegated");
        }

        let ctx = cg.open().unwrap();
        // A child that cannot join reports the cgroup step (and then never execs).
        assert_eq!(ctx.join("absent").unwrap_err().step(), "cgroup");
        ctx.create("ctx-1").unwrap();
        let e = ctx.create("ctx-1").unwrap_err();
        assert_eq!(e.step(), "cgroup");
        assert!(e.to_string().contains("exists already"), "{e}");
        let (mut a, mut b) = (sleeper(), sleeper());
        for h in &cg.hierarchies {
            for p in [&a, &b] {
                write_file(&h.dir.join("ctx-1/cgroup.procs"), &p.id().to_string()).unwrap();
            }
        }
        let (pa, pb) = (a.id() as i32, b.id() as i32);
        assert_eq!(ctx.members("ctx-1", None).unwrap(), [pa, pb].into());
        assert_eq!(ctx.members("ctx-1", Some(pa)).unwrap(), [pb].into());
        assert_eq!(ctx.members("absent", None).unwrap(), BTreeSet::new());

        assert_eq!(ctx.kill("ctx-1", Some(pa)).unwrap(), 1);
        let _ = b.wait();
        assert!(alive(&mut a), "the kept process was killed");
        assert_eq!(ctx.kill("ctx-1", None).unwrap(), 1);
        let _ = a.wait();
        assert_eq!(ctx.kill("absent", None).unwrap(), 0);
        ctx.remove("ctx-1").unwrap();
        ctx.remove("ctx-1").unwrap();
        for h in &cg.hierarchies {
            assert!(!h.dir.join("ctx-1").exists());
        }

        // A context left with a process in it: destroy takes both.
        ctx.create("ctx-2").unwrap();
        let mut d = sleeper();
        for h in &cg.hierarchies {
            write_file(&h.dir.join("ctx-2/cgroup.procs"), &d.id().to_string()).unwrap();
        }
        drop(ctx);
        cg.destroy();
        let _ = d.wait();
        for h in &cg.hierarchies {
            assert!(!h.dir.exists(), "{}", h.dir.display());
        }
    }
}
