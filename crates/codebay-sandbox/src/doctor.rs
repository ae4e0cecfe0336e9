//! `codebay-sandbox doctor [--cgroup-parent P] [--json]`: what this machine gives the
//! sandbox, checked with the code a session runs (the kernel check's probes,
//! [`cgroup::detect`] and [`SessionCgroups`], [`HostIds`], the seccomp filter and the
//! Landlock ruleset), each tried for real in a throwaway child where that is cheap and
//! safe. Every check says what it found and, when something is missing, how to get it.
//! `bin/codebay.js doctor` runs this with `--json` and adds the checks of Node's side.
//!
//! Exit status: 0 when nothing required is missing (warnings allowed), 1 otherwise, 2 on
//! a usage error.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use codebay_protocol::SandboxConfig;

use crate::cgroup::{self, Layout, SessionCgroups};
use crate::id_range;
use crate::kernel_check::{self, Container, Feature};
use crate::namespaces::{self, HostIds, HOST_ID_BASE, ID_RANGE};
use crate::{landlock, seccomp, sys, SandboxError};

/// The helper's argument that selects the doctor.
pub const DOCTOR_ARG: &str = "doctor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, with less than the best (or something only some runs need is absent).
    Warning,
    /// A session cannot start until this is fixed.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// How to fix it; empty when there is nothing to fix.
    pub fix: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: String::new(),
        }
    }
    fn bad(
        name: &'static str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            verdict,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    pub cgroup_parent: Option<String>,
    pub json: bool,
}

const USAGE: &str = "usage: codebay-sandbox doctor [--cgroup-parent P] [--json]";

/// The doctor's options (`args` after `doctor`); `--cgroup-parent` defaults to
/// `CODEBAY_CGROUP_PARENT`, as a session's `cgroupParent` does.
pub fn parse_args(args: &[String], env_parent: Option<String>) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--cgroup-parent" => {
                let p = it.next().ok_or("--cgroup-parent needs a cgroup path")?;
                o.cgroup_parent = Some(p.clone());
            }
            s if s.starts_with("--cgroup-parent=") => {
                o.cgroup_parent = Some(s["--cgroup-parent=".len()..].to_owned())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.cgroup_parent.is_none() {
        o.cgroup_parent = env_parent.filter(|p| !p.is_empty());
    }
    if let Some(p) = &o.cgroup_parent {
        o.cgroup_parent = Some(
            codebay_protocol::helper::normalise_cgroup_parent(p)
                .map_err(|why| format!("--cgroup-parent must be {why}"))?,
        );
    }
    Ok(o)
}

/// `codebay-sandbox doctor ...`: `args` are the arguments after `doctor`.
pub fn run(args: &[OsString]) -> i32 {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let options = match parse_args(&args, std::env::var("CODEBAY_CGROUP_PARENT").ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("codebay-sandbox doctor: {e}\n{USAGE}");
            return 2;
        }
    };
    let checks = checks(&options);
    let ok = all_required_ok(&checks);
    if options.json {
        println!("{}", to_json(&checks, options.cgroup_parent.as_deref()));
    } else {
        print!("{}", to_text(&checks));
    }
    if ok {
        0
    } else {
        1
    }
}

pub fn all_required_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.verdict != Verdict::Missing)
}

pub fn to_json(checks: &[Check], cgroup_parent: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "ok": all_required_ok(checks),
        "cgroupParent": cgroup_parent,
        "checks": checks.iter().map(|c| serde_json::json!({
            "name": c.name,
            "verdict": c.verdict.as_str(),
            "detail": c.detail,
            "fix": if c.fix.is_empty() { None } else { Some(&c.fix) },
        })).collect::<Vec<_>>(),
    })
}

pub fn to_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<8} {:<width$}  {}\n",
            c.verdict.as_str(),
            c.name,
            c.detail
        ));
        if !c.fix.is_empty() {
            out.push_str(&format!("{:<8} {:<width$}  fix: {}\n", "", "", c.fix));
        }
    }
    out
}

/// Every check, in the order a session meets them.
pub fn checks(o: &Options) -> Vec<Check> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let container = kernel_check::container();
    let mut v = vec![
        user_check(uid, gid),
        container_check(container.as_ref()),
        kernel_release(),
    ];
    let (userns, mounts) = namespace_checks(uid, container.as_ref());
    v.push(userns);
    v.push(mounts);
    v.push(seccomp_check(container.as_ref()));
    v.push(landlock_check(container.as_ref()));
    v.push(cgroup_check(
        uid,
        o.cgroup_parent.as_deref(),
        container.as_ref(),
    ));
    v.push(id_check(uid, gid));
    v
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next();
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

fn who(uid: u32) -> String {
    match user_name(uid) {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

fn user_check(uid: u32, gid: u32) -> Check {
    if uid == 0 {
        Check::ok("user", "root (uid 0): each session gets a range of 65536 unprivileged host ids of its own and its cgroups under codebay/ at each hierarchy's root (or under --cgroup-parent)")
    } else {
        Check::ok(
            "user",
            format!(
                "{}, gid {gid}, not root: sessions need a cgroup delegated to this user (see cgroup) and map ids as id_mapping says",
                who(uid)
            ),
        )
    }
}

fn container_check(c: Option<&Container>) -> Check {
    match c {
        None => Check::ok("container", "not in a container, as far as this can tell (/.dockerenv with an overlay root, /run/.containerenv, $container, $KUBERNETES_SERVICE_HOST, /proc/1/cgroup)"),
        Some(c) => Check::ok(
            "container",
            format!("in a {} container: the checks below say which of its settings to change, and docs/containers.md has them all", c.name()),
        ),
    }
}

fn kernel_release() -> Check {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Check::ok("kernel", "uname failed");
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Check::ok(
        "kernel",
        format!(
            "{} {} {}",
            field(&u.sysname),
            field(&u.release),
            field(&u.machine)
        ),
    )
}

// --- Probes in a forked child ---------------------------------------------------------

/// Runs `f` in a forked child and returns what it returned. The helper is
/// single-threaded, so the child may allocate; it never returns from here.
fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (r, w) = sys::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: fork in a single-threaded process; the child only runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(r);
        let msg = match f() {
            Ok(()) => "ok".to_owned(),
            Err(m) => format!("!{m}"),
        };
        let _ = sys::write_all(w.as_raw_fd(), msg.as_bytes());
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let out = sys::read_to_end(&r).unwrap_or_default();
    let status = sys::wait_child(pid);
    let text = String::from_utf8_lossy(&out).into_owned();
    if text == "ok" {
        Ok(())
    } else if let Some(m) = text.strip_prefix('!') {
        Err(m.to_owned())
    } else {
        Err(format!(
            "the probe ended without an answer ({})",
            sys::describe_status(status)
        ))
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn syscall_ok(ret: libc::c_long, what: &str) -> Result<(), String> {
    if ret < 0 {
        Err(format!("{what}: {}", errno()))
    } else {
        Ok(())
    }
}

/// The sysctls that gate user namespaces, those this kernel has.
fn userns_sysctls() -> Vec<String> {
    [
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
        ),
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ]
    .iter()
    .filter_map(|(name, path)| {
        std::fs::read_to_string(path)
            .ok()
            .map(|v| format!("{name}={}", v.trim()))
    })
    .collect()
}

/// Where a namespace probe failed: the namespaces themselves, or mounting in them.
#[derive(Debug, PartialEq)]
enum NsFailure {
    /// Root could not take the unprivileged id it makes the namespaces as: an id this
    /// process's own user namespace does not map.
    Ids(String),
    UserNamespaces(String),
    Mounts(String),
}

/// As the helper does: the user namespace made by an unprivileged id (as root, the
/// first host id a session gets, as `clone_process_owned` does), then the session's
/// other namespaces, then, as pid 1 of the new pid namespace, the mounts init makes
/// first: / private, a tmpfs, a fresh /proc. All in a throwaway child.
fn namespace_probe(uid: u32) -> Result<(), NsFailure> {
    let result = in_child(move || {
        let u = |m: String| format!("U{m}");
        if uid == 0 {
            let i = |e: std::io::Error, what: &str| {
                format!("Icannot switch the effective {what} to {HOST_ID_BASE} (as the helper does to create the user namespace): {e}")
            };
            sys::set_effective_gid(HOST_ID_BASE).map_err(|e| i(e, "gid"))?;
            sys::set_effective_uid(HOST_ID_BASE).map_err(|e| i(e, "uid"))?;
            // A changed euid makes the process undumpable, and its /proc/self root's.
            // SAFETY: prctl takes integers.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        }
        // Read before the unshare: inside, until mapped, every id is the overflow id.
        // SAFETY: geteuid/getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // SAFETY: unshare takes flags only.
        syscall_ok(
            unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) },
            "unshare(CLONE_NEWUSER)",
        )
        .map_err(u)?;
        let rest = namespaces::clone_flags(false) & !libc::CLONE_NEWUSER;
        // SAFETY: as above.
        syscall_ok(
            unsafe { libc::syscall(libc::SYS_unshare, rest) },
            "unshare of new pid, mount, ipc, uts and net namespaces",
        )
        .map_err(u)?;
        let name = crate::mounts::HOSTNAME.as_bytes();
        // SAFETY: name is valid for its length.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
            return Err(u(format!(
                "sethostname in the new uts namespace (as init does): {}",
                errno()
            )));
        }
        let m = |m: String| format!("M{m}");
        let maps = namespaces::IdMaps {
            uid_map: format!("0 {euid} 1\n"),
            gid_map: format!("0 {egid} 1\n"),
            deny_setgroups: true,
        };
        namespaces::write_id_maps(std::process::id() as libc::pid_t, &maps).map_err(|e| {
            m(format!(
                "cannot map its own id in the new user namespace: {e}"
            ))
        })?;
        // The first child in the new pid namespace is its pid 1, as init is.
        in_child(|| {
            let step = |e: SandboxError| e.to_string();
            crate::mounts::make_root_private().map_err(step)?;
            crate::mounts::tmpfs(
                Path::new("/tmp"),
                libc::MS_NOSUID | libc::MS_NODEV,
                "size=1m",
            )
            .map_err(step)?;
            crate::mounts::fresh_proc(Path::new("/proc")).map_err(step)?;
            // Into the tmpfs, as init pivots into the sandbox's root.
            crate::mounts::pivot_into(Path::new("/tmp")).map_err(step)
        })
        .map_err(m)
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(
            match (
                e.strip_prefix('U'),
                e.strip_prefix('M'),
                e.strip_prefix('I'),
            ) {
                (Some(u), ..) => NsFailure::UserNamespaces(u.to_owned()),
                (_, Some(m), _) => NsFailure::Mounts(m.to_owned()),
                (.., Some(i)) => NsFailure::Ids(i.to_owned()),
                _ => NsFailure::UserNamespaces(e),
            },
        ),
    }
}

const MOUNTS_OK: &str = "made / private, mounted a tmpfs and a fresh /proc (hidepid=2), and pivoted into the tmpfs, in new namespaces";

fn namespace_checks(uid: u32, container: Option<&Container>) -> (Check, Check) {
    let sysctls = userns_sysctls().join(", ");
    let sysctls = if sysctls.is_empty() {
        String::new()
    } else {
        format!(" ({sysctls})")
    };
    let hint = |f| kernel_check::hint(f, container);
    let as_who = if uid == 0 {
        format!("as uid {HOST_ID_BASE} (as the helper does)")
    } else {
        "as this user".into()
    };
    let static_missing = kernel_check::user_namespaces_missing();
    match namespace_probe(uid) {
        Ok(()) if static_missing.is_none() => (
            Check::ok("user_namespaces", format!("made user, pid, mount, ipc, uts and net namespaces and set the hostname in them, {as_who}{sysctls}")),
            Check::ok("mounts", MOUNTS_OK),
        ),
        Ok(()) => (
            Check::bad("user_namespaces", Verdict::Missing, format!("{}{sysctls}", static_missing.unwrap_or_default()), hint(Feature::UserNamespaces)),
            Check::ok("mounts", MOUNTS_OK),
        ),
        Err(NsFailure::Ids(why)) => (
            Check::bad("user_namespaces", Verdict::Missing, format!("untried: {why}"), "see id_mapping"),
            Check::bad("mounts", Verdict::Missing, "untried: the namespaces to mount in could not be made", "see id_mapping"),
        ),
        Err(NsFailure::UserNamespaces(why)) => (
            Check::bad("user_namespaces", Verdict::Missing, format!("refused {as_who}: {why}{sysctls}"), hint(Feature::UserNamespaces)),
            Check::bad("mounts", Verdict::Missing, "untried: the namespaces to mount in could not be made", "see user_namespaces"),
        ),
        Err(NsFailure::Mounts(why)) => (
            Check::ok("user_namespaces", format!("made user, pid, mount, ipc, uts and net namespaces and set the hostname in them, {as_who}{sysctls}")),
            Check::bad("mounts", Verdict::Missing, format!("refused: {why}"), hint(Feature::Mounts)),
        ),
    }
}

fn seccomp_check(container: Option<&Container>) -> Check {
    let fix = || kernel_check::hint(Feature::Seccomp, container);
    if let Some(m) = kernel_check::seccomp_missing() {
        return Check::bad("seccomp", Verdict::Missing, format!("missing: {m}"), fix());
    }
    let programs = match seccomp::build() {
        Ok(p) => p,
        Err(e) => {
            return Check::bad(
                "seccomp",
                Verdict::Missing,
                format!("cannot build the sandbox's filter: {e}"),
                fix(),
            )
        }
    };
    let probe = in_child(move || {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("cannot set no_new_privs: {}", errno()));
        }
        seccomp::apply(&programs).map_err(|e| e.to_string())?;
        // SAFETY: unshare takes flags only; the filter must refuse it.
        let r = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
        if r == 0 || errno().raw_os_error() != Some(libc::EPERM) {
            return Err(
                "the installed filter did not refuse unshare(CLONE_NEWUSER) with EPERM".into(),
            );
        }
        Ok(())
    });
    match probe {
        Ok(()) => Check::ok(
            "seccomp",
            "installed the sandbox's filters in a child; they refuse what they should",
        ),
        Err(e) => Check::bad("seccomp", Verdict::Missing, format!("refused: {e}"), fix()),
    }
}

fn landlock_check(container: Option<&Container>) -> Check {
    let required = landlock::ABI_REQUIRED_NUMBER;
    let fix = || kernel_check::hint(Feature::Landlock, container);
    let (abi, refused) = match kernel_check::landlock_query() {
        Ok(abi) => (abi, 0),
        Err(e) => (-1, e),
    };
    if let Some(m) = kernel_check::landlock_missing(abi, refused) {
        return Check::bad("landlock", Verdict::Missing, format!("missing: {m}"), fix());
    }
    let probe = in_child(|| {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("cannot set no_new_privs: {}", errno()));
        }
        landlock::restrict(&landlock::Policy {
            deny_tcp: true,
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    });
    match probe {
        Ok(()) => Check::ok(
            "landlock",
            format!("ABI {abi} (needs {required}); a child enforced the sandbox's ruleset in full"),
        ),
        Err(e) => Check::bad(
            "landlock",
            Verdict::Missing,
            format!("ABI {abi}, but enforcing the ruleset failed: {e}"),
            fix(),
        ),
    }
}

// --- Cgroups --------------------------------------------------------------------------

fn probe_config(parent: Option<&str>) -> SandboxConfig {
    SandboxConfig {
        session_id: format!("doctor-{}", std::process::id()),
        memory_bytes: 512 << 20,
        max_processes: 64,
        cpu_cores: None,
        network: false,
        workspace_bytes: 1 << 20,
        tmp_bytes: 1 << 20,
        read_only_binds: vec![],
        runtimes_dir: "/".into(),
        env: Default::default(),
        max_open_files: 1024,
        max_file_bytes: 1 << 20,
        cgroup_parent: parent.map(str::to_owned),
        resource_limits: Default::default(),
    }
}

/// The layout in words: the version and each base directory.
pub fn describe_layout(l: &Layout) -> String {
    let d = |p: &Path| p.display().to_string();
    match l {
        Layout::V2 { base, cpu, .. } => format!(
            "cgroup v2 under {}{}",
            d(base),
            if *cpu {
                ""
            } else {
                " (no cpu controller: cpuCores cannot be used)"
            }
        ),
        Layout::V1 {
            memory,
            pids,
            cpu,
            unified,
        } => {
            let mut s = format!("cgroup v1: memory {}, pids {}", d(memory), d(pids));
            match cpu {
                Some(c) => s.push_str(&format!(", cpu {}", d(c))),
                None => s.push_str(" (no cpu hierarchy it may use: cpuCores cannot be used)"),
            }
            match unified {
                Some(u) => s.push_str(&format!(", and the v2 hierarchy {} (for cgroup.kill)", d(u))),
                None => s.push_str(" (no v2 hierarchy it may use: contexts are ended by rounds of SIGKILL, without cgroup.kill)"),
            }
            s
        }
    }
}

/// What to do when there is no cgroup: tailored to who runs and which hierarchies
/// there are (the helper's own message says all the ways; this says the likely one).
pub fn cgroup_fix(uid: u32, name: &str, parent: Option<&str>, v2_has_controllers: bool) -> String {
    if uid == 0 {
        return "make the cgroup filesystem writable for root: on a host it is; in a container see docs/containers.md (or opt in to resourceLimits: 'rlimits')".into();
    }
    let rlimits =
        "or opt in to `resourceLimits: 'rlimits'` (per-process limits only, no session-wide cap)";
    let parent = parent
        .map(str::to_owned)
        .unwrap_or_else(|| format!("/codebay-{name}"));
    let admin = format!(
        "an administrator makes a parent per controller and gives it to {name}: `for c in memory pids cpu; do sudo mkdir -p /sys/fs/cgroup/$c{parent} && sudo chown -R {name} /sys/fs/cgroup/$c{parent}; done`, then pass `cgroupParent: '{parent}'` (or CODEBAY_CGROUP_PARENT={parent}; here: --cgroup-parent {parent})"
    );
    if v2_has_controllers {
        format!("run Node in a delegated systemd scope: `systemd-run --user --scope -p Delegate=yes node agent.js`; or {admin}; {rlimits}")
    } else {
        format!("{admin}; {rlimits}")
    }
}

fn cgroup_check(uid: u32, parent: Option<&str>, container: Option<&Container>) -> Check {
    let config = probe_config(parent);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| cgroup::parse_mountinfo(&t))
        .unwrap_or_default();
    let v2_has = mounts
        .v2
        .as_ref()
        .and_then(|r| std::fs::read_to_string(r.join("cgroup.controllers")).ok())
        .is_some_and(|c| {
            let c: Vec<&str> = c.split_whitespace().collect();
            c.contains(&"memory") && c.contains(&"pids")
        });
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let fix = || {
        let mut f = cgroup_fix(uid, &name, parent, v2_has);
        if uid == 0 && container.is_some() {
            f = format!("this {} container's cgroup filesystem is not writable: see docs/containers.md (or opt in to resourceLimits: 'rlimits')", container.map(Container::name).unwrap_or(""));
        }
        f
    };
    let layout = match cgroup::detect(&config) {
        Ok(l) => l,
        Err(e) => {
            let text = e.to_string();
            // The helper's message ends with every way there is; the fix says the likely one.
            let detail = match text.split_once(". Either ") {
                Some((why, _)) => format!("{why} (step {})", e.step()),
                None => format!("{text} (step {})", e.step()),
            };
            return Check::bad("cgroup", Verdict::Missing, detail, fix());
        }
    };
    let layout_text = describe_layout(&layout);
    let cg = match SessionCgroups::create(&layout, &config) {
        Ok(cg) => cg,
        Err(e) => {
            return Check::bad(
                "cgroup",
                Verdict::Missing,
                format!("{layout_text}, but a test session's cgroups could not be made: {e}"),
                fix(),
            )
        }
    };
    let moved = move_a_child_into(&cg);
    cg.destroy();
    let under = match parent {
        Some(p) => format!(" (cgroupParent {p})"),
        None if uid != 0 => " (the delegated subtree)".into(),
        None => String::new(),
    };
    match moved {
        Ok(()) => Check::ok("cgroup", format!("{layout_text}{under}; a test session's cgroups were made there with limits, a process moved in, then removed")),
        Err(e) => Check::bad(
            "cgroup",
            Verdict::Missing,
            format!("{layout_text}{under}: a test session's cgroups were made, but a process could not be moved in: {e}"),
            if uid != 0 && matches!(layout, Layout::V2 { .. }) {
                "cgroup v2 lets a user move a process only below a cgroup it may write that holds both ends: run Node itself inside the delegated subtree (e.g. `systemd-run --user --scope -p Delegate=yes node agent.js`)".to_owned()
            } else {
                fix()
            },
        ),
    }
}

/// As the supervisor places init ([`SessionCgroups::add_init`]): a child that waits on
/// a pipe is moved into the session's cgroups; destroy then ends it.
fn move_a_child_into(cg: &SessionCgroups) -> Result<(), SandboxError> {
    // SAFETY: fork in a single-threaded process; the child only reads and _exits.
    let fork = || match unsafe { libc::fork() } {
        pid if pid < 0 => Err(SandboxError::Init(format!("cannot fork: {}", errno()))),
        pid => Ok(pid),
    };
    with_waiting_child(fork, |pid| cg.add_init(pid))
}

/// Starts a child with `start` (a fork: 0 in the child) that waits until `then` is done
/// with it, then ends and reaps it; `then`'s result.
fn with_waiting_child(
    start: impl FnOnce() -> Result<libc::pid_t, SandboxError>,
    then: impl FnOnce(libc::pid_t) -> Result<(), SandboxError>,
) -> Result<(), SandboxError> {
    let (r, w) =
        sys::pipe().map_err(|e| SandboxError::Init(format!("cannot create a pipe: {e}")))?;
    let pid = start()?;
    if pid == 0 {
        drop(w);
        let mut b = [0u8; 1];
        // SAFETY: reads into a valid buffer; returns at EOF when the parent is done.
        unsafe {
            libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(r);
    let done = then(pid);
    drop::<OwnedFd>(w);
    sys::wait_child(pid);
    done
}

// --- Id mapping -----------------------------------------------------------------------

/// Whether a `/proc/self/uid_map` (or gid_map) maps every id of `start..start+count`.
pub fn map_covers(map: &str, start: u64, count: u64) -> bool {
    let mut ranges: Vec<(u64, u64)> = map
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            let (inside, _outside, n) = (f.next()??, f.next()??, f.next()??);
            Some((inside, inside + n))
        })
        .collect();
    ranges.sort();
    let (mut at, end) = (start, start + count);
    for (a, b) in ranges {
        if a <= at && b > at {
            at = b;
        }
        if at >= end {
            return true;
        }
    }
    at >= end
}

/// What the doctor explains of subordinate ids that are not used: why not.
fn why_no_subordinate(uid: u32, gid: u32) -> String {
    let tool = |n: &str| {
        ["/usr/bin", "/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(n))
            .find(|p| p.is_file())
    };
    let mut why = Vec::new();
    if tool("newuidmap").is_none() || tool("newgidmap").is_none() {
        why.push("newuidmap/newgidmap are not installed (package uidmap)".to_owned());
    }
    let name = user_name(uid);
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    if id_range::subordinate_range(&read("/etc/subuid"), name.as_deref(), uid).is_none() {
        why.push(format!(
            "/etc/subuid has no range for {}",
            name.clone().unwrap_or_else(|| uid.to_string())
        ));
    }
    if id_range::subordinate_range(&read("/etc/subgid"), name.as_deref(), gid).is_none() {
        why.push(format!(
            "/etc/subgid has no range for {}",
            name.unwrap_or_else(|| gid.to_string())
        ));
    }
    why.join(", ")
}

/// Clones a child into a new user namespace as a session does ([`HostIds::clone`]) and
/// writes its maps as a session does ([`HostIds::write_maps`]).
fn map_probe(ids: &HostIds) -> Result<(), SandboxError> {
    with_waiting_child(|| ids.clone(libc::CLONE_NEWUSER), |pid| ids.write_maps(pid))
}

fn id_check(uid: u32, gid: u32) -> Check {
    const NAME: &str = "id_mapping";
    if uid == 0 {
        let span = id_range::RANGES as u64 * ID_RANGE as u64;
        let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
        let (um, gm) = (read("/proc/self/uid_map"), read("/proc/self/gid_map"));
        if !map_covers(&um, HOST_ID_BASE as u64, span)
            || !map_covers(&gm, HOST_ID_BASE as u64, span)
        {
            return Check::bad(
                NAME,
                Verdict::Missing,
                format!(
                    "root in a user namespace that does not map the host ids root's sessions use ({HOST_ID_BASE}..{}): uid_map {:?}",
                    HOST_ID_BASE as u64 + span,
                    um.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
                "run the container without a user namespace of its own (Docker's and rootful Podman's default; not Podman rootless, Docker userns-remap or Kubernetes hostUsers: false), or run codebay as a non-root user there",
            );
        }
    }
    let ids = match HostIds::choose() {
        Ok(ids) => ids,
        Err(e) => {
            return Check::bad(
                NAME,
                Verdict::Missing,
                format!("{e} (step {})", e.step()),
                if uid == 0 {
                    "make /run writable for root (codebay claims id ranges in /run/codebay/id-ranges)"
                } else {
                    "check /run/user/<uid> or /tmp: the id claims live there"
                },
            )
        }
    };
    let what = match &ids {
        HostIds::Range(r) => format!("root: each session maps 65536 unprivileged host ids of its own (this one would get {}..{}, claimed in {}); the code never runs as a host user", r.base, r.base + ID_RANGE, id_range::CLAIMS_DIR),
        HostIds::Subordinate { ids, .. } => format!(
            "subordinate ids: the code runs as host uid {} / gid {} (from /etc/subuid and /etc/subgid, mapped by {}), one of its own per session, sharing no per-user kernel counter with this user's processes",
            ids.uid, ids.gid, ids.newuidmap.display()
        ),
        HostIds::Own { .. } => format!("own uid only: the code runs as this user's own uid {uid} (inside: 1000); {}", why_no_subordinate(uid, gid)),
    };
    if let Err(e) = map_probe(&ids) {
        return Check::bad(NAME, Verdict::Missing, format!("{what}; but mapping a test namespace failed: {e} (step {})", e.step()), match ids {
            HostIds::Subordinate { .. } => "newuidmap and newgidmap must be setuid root (or have cap_setuid/cap_setgid): `sudo chmod u+s /usr/bin/newuidmap /usr/bin/newgidmap`",
            _ => "see user_namespaces",
        });
    }
    match ids {
        HostIds::Own { .. } => Check::bad(
            NAME,
            Verdict::Warning,
            format!("{what}. Sessions work and still cannot reach this user's files or processes, but they share its per-user kernel counters (processes, inotify instances, pending signals, message queues) with its other processes and with each other"),
            format!("give the user subordinate ids: `sudo apt-get install uidmap` (newuidmap/newgidmap) and `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}` (a range no other user has)", user_name(uid).unwrap_or_else(|| uid.to_string())),
        ),
        _ => Check::ok(NAME, format!("{what}; a test namespace was mapped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_flags_else_the_environment() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&a(&[]), None).unwrap(), Options::default());
        let o = parse_args(
            &a(&["--json", "--cgroup-parent", "codebay-alice/"]),
            Some("/x".into()),
        )
        .unwrap();
        assert_eq!(
            o,
            Options {
                cgroup_parent: Some("/codebay-alice".into()),
                json: true
            }
        );
        assert_eq!(
            parse_args(&a(&[]), Some("/team/a".into()))
                .unwrap()
                .cgroup_parent
                .as_deref(),
            Some("/team/a")
        );
        assert_eq!(
            parse_args(&a(&[]), Some(String::new()))
                .unwrap()
                .cgroup_parent,
            None
        );
        assert_eq!(
            parse_args(&a(&["--cgroup-parent=/p"]), None)
                .unwrap()
                .cgroup_parent
                .as_deref(),
            Some("/p")
        );
        assert!(parse_args(&a(&["--cgroup-parent", "../etc"]), None)
            .unwrap_err()
            .contains("cgroup path"));
        assert!(parse_args(&a(&["--cgroup-parent"]), None).is_err());
        assert!(parse_args(&a(&["--frobnicate"]), None)
            .unwrap_err()
            .contains("unknown"));
    }

    #[test]
    fn a_missing_check_fails_the_doctor_and_a_warning_does_not() {
        let ok = Check::ok("a", "fine");
        let warn = Check::bad("b", Verdict::Warning, "meh", "do x");
        let gone = Check::bad("c", Verdict::Missing, "absent", "do y");
        assert!(all_required_ok(&[ok.clone(), warn.clone()]));
        assert!(!all_required_ok(&[ok.clone(), gone.clone()]));
        let j = to_json(&[ok, warn, gone], Some("/p"));
        assert_eq!(j["ok"], false);
        assert_eq!(j["cgroupParent"], "/p");
        assert_eq!(j["checks"][0]["fix"], serde_json::Value::Null);
        assert_eq!(j["checks"][1]["verdict"], "warning");
        assert_eq!(j["checks"][2]["fix"], "do y");
        let t = to_text(&[Check::bad("cgroup", Verdict::Missing, "none", "make one")]);
        assert_eq!(t, "missing  cgroup  none\n                 fix: make one\n");
    }

    #[test]
    fn id_maps_cover_a_span_only_when_every_id_is_mapped() {
        let host = "         0          0 4294967295\n";
        assert!(map_covers(host, 1_000_000, 4096 * 65536));
        let container = "0 100000 65536\n";
        assert!(!map_covers(container, 1_000_000, 65536));
        let split = "0 0 1000000\n1000000 2000000 500\n1000500 3000000 100000\n";
        assert!(map_covers(split, 1_000_000, 100_500));
        assert!(!map_covers(split, 1_000_000, 100_501));
        assert!(!map_covers("", 0, 1));
    }

    #[test]
    fn layouts_are_described_with_what_they_lack() {
        let v1 = Layout::V1 {
            memory: "/m/codebay".into(),
            pids: "/p/codebay".into(),
            cpu: None,
            unified: None,
        };
        let d = describe_layout(&v1);
        assert!(
            d.starts_with("cgroup v1: memory /m/codebay, pids /p/codebay"),
            "{d}"
        );
        assert!(
            d.contains("cpuCores cannot be used") && d.contains("without cgroup.kill"),
            "{d}"
        );
        let v2 = Layout::V2 {
            base: "/sys/fs/cgroup/u/codebay".into(),
            enable_in: vec![],
            cpu: true,
        };
        assert_eq!(
            describe_layout(&v2),
            "cgroup v2 under /sys/fs/cgroup/u/codebay"
        );
    }

    #[test]
    fn the_cgroup_fix_fits_who_runs_and_what_is_mounted() {
        let v1 = cgroup_fix(1002, "cbuser", None, false);
        assert!(
            v1.contains("sudo mkdir -p /sys/fs/cgroup/$c/codebay-cbuser")
                && v1.contains("cgroupParent: '/codebay-cbuser'"),
            "{v1}"
        );
        assert!(!v1.contains("systemd-run"), "{v1}");
        assert!(v1.contains("resourceLimits: 'rlimits'"), "{v1}");
        let v2 = cgroup_fix(1000, "alice", Some("/team/alice"), true);
        assert!(
            v2.contains("systemd-run --user --scope -p Delegate=yes")
                && v2.contains("/sys/fs/cgroup/$c/team/alice"),
            "{v2}"
        );
        assert!(cgroup_fix(0, "root", None, true).contains("docs/containers.md"));
    }
}
