//! Per-session cgroups: `codebay/<sessionId>` under cgroup v2 when it offers the memory
//! and pids controllers, else under each v1 controller plus the v2 unified group (if
//! mounted) so that `cgroup.kill` can still end the session atomically.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::SandboxError;

const PARENT: &str = "codebay";
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    V2 {
        root: PathBuf,
        cpu: bool,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
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

/// Prefers v2 when its root offers memory+pids; `controllers` is that root's
/// cgroup.controllers content (passed in so the choice is testable).
pub fn choose_layout(m: &Mounts, v2_controllers: &str) -> Option<Layout> {
    if let Some(root) = &m.v2 {
        let c: Vec<&str> = v2_controllers.split_whitespace().collect();
        if c.contains(&"memory") && c.contains(&"pids") {
            return Some(Layout::V2 {
                root: root.clone(),
                cpu: c.contains(&"cpu"),
            });
        }
    }
    Some(Layout::V1 {
        memory: v1_with(m, "memory")?,
        pids: v1_with(m, "pids")?,
        cpu: v1_with(m, "cpu"),
        unified: m.v2.clone(),
    })
}

pub fn detect() -> Result<Layout, SandboxError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SandboxError::Cgroup(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let m = parse_mountinfo(&text);
    let controllers =
        m.v2.as_ref()
            .and_then(|r| fs::read_to_string(r.join("cgroup.controllers")).ok())
            .unwrap_or_default();
    choose_layout(&m, &controllers).ok_or_else(|| {
        SandboxError::Cgroup(
            "no usable cgroup hierarchy: need cgroup v2 with memory+pids or v1 memory and pids"
                .into(),
        )
    })
}

/// The limit files to write, relative to each session directory: (hierarchy index, file, content).
/// Hierarchy index 0 is the first directory of `dirs`.
pub fn limit_files(layout: &Layout, c: &Config) -> Vec<(usize, &'static str, String)> {
    let quota = c
        .cpu_cores
        .map(|cores| ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000));
    let mut v = Vec::new();
    match layout {
        Layout::V2 { cpu, .. } => {
            v.push((0, "memory.max", c.memory_bytes.to_string()));
            // memory + swap == memoryBytes, as v1's memsw does.
            v.push((0, "memory.swap.max", "0".into()));
            v.push((0, "pids.max", c.max_processes.to_string()));
            if let (Some(q), true) = (quota, cpu) {
                v.push((0, "cpu.max", format!("{q} {CPU_PERIOD_US}")));
            }
        }
        Layout::V1 { cpu, .. } => {
            v.push((0, "memory.limit_in_bytes", c.memory_bytes.to_string()));
            v.push((0, "memory.memsw.limit_in_bytes", c.memory_bytes.to_string()));
            v.push((1, "pids.max", c.max_processes.to_string()));
            if let (Some(q), Some(_)) = (quota, cpu) {
                v.push((2, "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                v.push((2, "cpu.cfs_quota_us", q.to_string()));
            }
        }
    }
    v
}

/// The session's directories, in limit-file index order (v1: memory, pids, cpu?, unified?).
pub fn session_dirs(layout: &Layout, session_id: &str) -> (u8, Vec<PathBuf>) {
    let d = |root: &Path| root.join(PARENT).join(session_id);
    match layout {
        Layout::V2 { root, .. } => (2, vec![d(root)]),
        Layout::V1 {
            memory,
            pids,
            cpu,
            unified,
        } => {
            let mut v = vec![d(memory), d(pids)];
            // Keep index 2 = cpu for limit_files even when cpu is absent by not pushing
            // anything after it in that case.
            if let Some(c) = cpu {
                v.push(d(c));
            }
            if let Some(u) = unified {
                v.push(d(u));
            }
            (1, v)
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionCgroups {
    pub version: u8,
    pub dirs: Vec<PathBuf>,
    pub memory_events: PathBuf,
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

impl SessionCgroups {
    pub fn create(layout: &Layout, c: &Config) -> Result<SessionCgroups, SandboxError> {
        let (version, dirs) = session_dirs(layout, &c.session_id);
        let memory_events = if version == 2 {
            dirs[0].join("memory.events")
        } else {
            dirs[0].join("memory.oom_control")
        };
        let cg = SessionCgroups {
            version,
            dirs,
            memory_events,
        };
        if let Err(e) = cg.create_dirs(layout, c) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_dirs(&self, layout: &Layout, c: &Config) -> Result<(), SandboxError> {
        if let Layout::V2 { root, cpu } = layout {
            let enable = if *cpu {
                "+memory +pids +cpu"
            } else {
                "+memory +pids"
            };
            let sc = root.join("cgroup.subtree_control");
            write_file(&sc, enable).map_err(|e| cg_err("cannot enable controllers in", &sc, e))?;
        }
        for dir in &self.dirs {
            let parent = dir.parent().expect("session dir has a parent");
            // A concurrent session's cleanup may rmdir the shared parent between our
            // mkdirs; retry a few times instead of failing the create.
            let mut attempt = 0;
            loop {
                mkdir_ok_exists(parent).map_err(|e| cg_err("cannot create", parent, e))?;
                if matches!(layout, Layout::V2 { .. }) && self.version == 2 {
                    let enable = if let Layout::V2 { cpu: true, .. } = layout {
                        "+memory +pids +cpu"
                    } else {
                        "+memory +pids"
                    };
                    let sc = parent.join("cgroup.subtree_control");
                    if let Err(e) = write_file(&sc, enable) {
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
        for (idx, file, content) in limit_files(layout, c) {
            let p = self.dirs[idx].join(file);
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
        Ok(())
    }

    /// Called by the supervisor before it releases init, so init never runs unconfined.
    pub fn add_pid(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        for dir in &self.dirs {
            let p = dir.join("cgroup.procs");
            write_file(&p, &pid.to_string())
                .map_err(|e| cg_err(&format!("cannot move pid {pid} into"), &p, e))?;
        }
        Ok(())
    }

    fn pids(dir: &Path) -> Vec<libc::pid_t> {
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills whatever is left and removes the directories; best effort, never fails,
    /// because it runs on every exit path.
    pub fn destroy(&self) {
        for dir in &self.dirs {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                let _ = write_file(&kill, "1");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in &self.dirs {
            loop {
                let pids = Self::pids(dir);
                if pids.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
            // The shared parent goes too when this was the last session; a busy or
            // non-empty parent simply stays.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw";

    fn config(cores: Option<f64>) -> Config {
        let mut c: Config = serde_json::from_value(serde_json::json!({
            "sessionId": "cb-1", "memoryBytes": 536870912u64, "maxProcesses": 64,
            "runtimesDir": "/r"
        }))
        .unwrap();
        c.cpu_cores = cores;
        c
    }

    #[test]
    fn falls_back_to_v1_when_v2_has_no_controllers() {
        let m = parse_mountinfo(MOUNTINFO);
        let l = choose_layout(&m, "").unwrap();
        assert_eq!(
            l,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
                unified: Some("/sys/fs/cgroup/unified".into()),
            }
        );
        let (v, dirs) = session_dirs(&l, "cb-1");
        assert_eq!(v, 1);
        assert_eq!(dirs[0], PathBuf::from("/sys/fs/cgroup/memory/codebay/cb-1"));
        assert_eq!(
            dirs[3],
            PathBuf::from("/sys/fs/cgroup/unified/codebay/cb-1")
        );
        let files = limit_files(&l, &config(Some(1.5)));
        assert!(files.contains(&(0, "memory.limit_in_bytes", "536870912".into())));
        assert!(files.contains(&(0, "memory.memsw.limit_in_bytes", "536870912".into())));
        assert!(files.contains(&(1, "pids.max", "64".into())));
        assert!(files.contains(&(2, "cpu.cfs_quota_us", "150000".into())));
    }

    #[test]
    fn prefers_v2_with_memory_and_pids() {
        let m = parse_mountinfo(MOUNTINFO);
        let l = choose_layout(&m, "cpuset cpu io memory pids").unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                root: "/sys/fs/cgroup/unified".into(),
                cpu: true
            }
        );
        let files = limit_files(&l, &config(None));
        assert_eq!(
            files,
            vec![
                (0, "memory.max", "536870912".to_string()),
                (0, "memory.swap.max", "0".to_string()),
                (0, "pids.max", "64".to_string()),
            ]
        );
        let files = limit_files(&l, &config(Some(0.5)));
        assert!(files.contains(&(0, "cpu.max", "50000 100000".into())));
    }

    #[test]
    fn create_and_destroy_on_this_host() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let layout = detect().unwrap();
        let mut c = config(Some(1.0));
        c.session_id = format!("unit-test-{}", std::process::id());
        let cg = SessionCgroups::create(&layout, &c).unwrap();
        for d in &cg.dirs {
            assert!(d.is_dir(), "{}", d.display());
        }
        assert!(cg.memory_events.exists());
        cg.destroy();
        for d in &cg.dirs {
            assert!(!d.exists(), "{}", d.display());
        }
    }
}
