//! Fail closed: refuse to build a sandbox on a kernel that lacks any layer we rely on.
//!
//! Each probe is public so that `codebay doctor` ([`crate::doctor`]) asks exactly what
//! a session asks. A refusal names the missing feature and says what allows it
//! ([`container_hint`]): inside a container the kernel usually has the feature and the
//! container's seccomp or AppArmor profile refuses it, which a setting of the
//! container changes; a feature the host kernel lacks no container setting can add.

use std::path::Path;

use crate::SandboxError;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

#[derive(Debug, Clone, Copy)]
pub struct KernelFeatures {
    pub landlock_abi: i64,
}

/// A kernel feature the sandbox needs, as refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// clone/unshare of user (and pid, mount, ipc, uts, net) namespaces.
    UserNamespaces,
    /// Mounting inside the new mount namespace: a fresh /proc, tmpfs, bind mounts.
    Mounts,
    Seccomp,
    Landlock,
}

/// The container runtime this process seems to run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    Docker,
    Podman,
    Kubernetes,
    /// Another runtime, by the name it gives itself (`container=lxc`, `systemd-nspawn`, ...).
    Other(String),
}

impl Container {
    pub fn name(&self) -> &str {
        match self {
            Container::Docker => "Docker",
            Container::Podman => "Podman",
            Container::Kubernetes => "Kubernetes",
            Container::Other(n) => n,
        }
    }
}

/// What tells a container, gathered by [`container`] (a struct so the decision is testable).
#[derive(Debug, Default, Clone)]
pub struct ContainerSigns {
    /// `/.dockerenv` exists.
    pub dockerenv: bool,
    /// `/run/.containerenv` exists (Podman, Buildah).
    pub containerenv: bool,
    /// The `container` environment variable (systemd's convention: podman, lxc, ...).
    pub container_env: Option<String>,
    /// `KUBERNETES_SERVICE_HOST` is set.
    pub kubernetes_env: bool,
    /// /proc/1/cgroup, else /proc/self/cgroup.
    pub cgroup: String,
    /// The filesystem type of `/` (overlay in most container images).
    pub root_fstype: String,
}

/// The container the signs point to, if any. `/.dockerenv` alone is not enough: images
/// built by Docker keep it when they are booted as VMs; a Docker container's root is
/// also an overlay (or its cgroup names docker).
pub fn classify(s: &ContainerSigns) -> Option<Container> {
    let cg = s.cgroup.to_ascii_lowercase();
    if s.kubernetes_env || cg.contains("kubepods") {
        return Some(Container::Kubernetes);
    }
    if s.containerenv || cg.contains("libpod") || s.container_env.as_deref() == Some("podman") {
        return Some(Container::Podman);
    }
    if cg.contains("docker") || (s.dockerenv && s.root_fstype == "overlay") {
        return Some(Container::Docker);
    }
    match s.container_env.as_deref() {
        Some("docker") => Some(Container::Docker),
        Some(other) if !other.is_empty() => Some(Container::Other(other.to_owned())),
        _ if cg.contains("lxc") => Some(Container::Other("lxc".into())),
        _ if cg.contains("containerd") || cg.contains("crio") => Some(Container::Kubernetes),
        _ => None,
    }
}

fn root_fstype(mountinfo: &str) -> String {
    // The last mount on `/` is the one in effect.
    mountinfo
        .lines()
        .rev()
        .filter(|l| l.split(' ').nth(4) == Some("/"))
        .find_map(|l| l.split_once(" - ").and_then(|(_, r)| r.split(' ').next()))
        .unwrap_or("")
        .to_owned()
}

pub fn container_signs() -> ContainerSigns {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cgroup = match read("/proc/1/cgroup") {
        s if s.is_empty() => read("/proc/self/cgroup"),
        s => s,
    };
    ContainerSigns {
        dockerenv: Path::new("/.dockerenv").exists(),
        containerenv: Path::new("/run/.containerenv").exists(),
        container_env: std::env::var("container").ok(),
        kubernetes_env: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        cgroup,
        root_fstype: root_fstype(&read("/proc/self/mountinfo")),
    }
}

/// The container this process runs in, as far as it can tell.
pub fn container() -> Option<Container> {
    classify(&container_signs())
}

/// What allows `feature`, phrased for the container this process seems to be in.
pub fn container_hint(feature: Feature) -> String {
    hint(feature, container().as_ref())
}

const DOCS: &str = "see docs/containers.md, and `npx codebay doctor`";

/// The settings that give a container `feature` (or, for what only the host kernel can
/// give, says so). `container`: the detected runtime; `None` is a host or a container
/// that could not be told, so both are covered.
pub fn hint(feature: Feature, container: Option<&Container>) -> String {
    let unconfined = "run the container with `--security-opt seccomp=unconfined` (or a profile \
                      that allows them), and `--security-opt apparmor=unconfined` where AppArmor \
                      confines containers (its default profile denies mount)";
    let docker = format!(
        "Docker's default seccomp profile refuses pivot_root, and unshare, mount, sethostname and \
         clone with namespace flags to a process without CAP_SYS_ADMIN: {unconfined}"
    );
    let podman = format!(
        "Podman's default seccomp profile refuses sethostname to a process without \
         CAP_SYS_ADMIN (older ones more): {unconfined}"
    );
    let kubernetes = "set the container's `securityContext: {seccompProfile: {type: Unconfined}, \
                      appArmorProfile: {type: Unconfined}}` (the runtime's default profiles \
                      refuse unshare, mount, pivot_root and clone with namespace flags)";
    let host_userns = "on the host, `sysctl user.max_user_namespaces` must be above 0; Debian and \
                       Ubuntu kernels also have `kernel.unprivileged_userns_clone` (must be 1) and \
                       Ubuntu 23.10+ `kernel.apparmor_restrict_unprivileged_userns` (must be 0, or \
                       an AppArmor profile that allows userns for node)";
    let proc_masked = |how: &str| {
        format!("a fresh /proc is refused while the container's /proc has masked paths: {how}")
    };
    match feature {
        Feature::UserNamespaces | Feature::Mounts => {
            let mut hint = match container {
                Some(Container::Docker) => format!("in this Docker container: {docker}"),
                Some(Container::Podman) => format!("in this Podman container: {podman}"),
                Some(Container::Kubernetes) => format!("in this Kubernetes pod: {kubernetes}"),
                Some(Container::Other(name)) => format!(
                    "in this {name} container: its seccomp and AppArmor/SELinux profiles must allow \
                     unshare, mount, pivot_root, sethostname and clone with namespace flags"
                ),
                None => format!(
                    "{host_userns}; in a container, its seccomp profile must allow unshare, mount, \
                     pivot_root, sethostname and clone with namespace flags (Docker and Podman: \
                     `--security-opt seccomp=unconfined`, plus `--security-opt apparmor=unconfined` \
                     where AppArmor confines containers; Kubernetes: {kubernetes})"
                ),
            };
            if feature == Feature::Mounts {
                hint.push_str("; ");
                hint.push_str(&match container {
                    Some(Container::Docker) => {
                        proc_masked("add `--security-opt systempaths=unconfined`")
                    }
                    Some(Container::Podman) => proc_masked("add `--security-opt unmask=ALL`"),
                    Some(Container::Kubernetes) => proc_masked(
                        "set `procMount: Unmasked` (which needs the pod's `hostUsers: false`)",
                    ),
                    _ => proc_masked(
                        "Docker `--security-opt systempaths=unconfined`, Podman `--security-opt \
                         unmask=ALL`, Kubernetes `procMount: Unmasked`",
                    ),
                });
            }
            format!("{hint}; {DOCS}")
        }
        Feature::Seccomp => {
            let base =
                "seccomp filters come from the host kernel (CONFIG_SECCOMP_FILTER), which no \
                        container setting adds";
            match container {
                Some(c) => format!(
                    "{base}; in this {} container, a custom seccomp profile that refuses seccomp(2) \
                     or prctl(PR_SET_SECCOMP) must allow them (the default profiles do); {DOCS}",
                    c.name()
                ),
                None => format!("{base}; {DOCS}"),
            }
        }
        Feature::Landlock => {
            let base =
                "Landlock comes from the host kernel: it needs CONFIG_SECURITY_LANDLOCK=y and \
                        landlock in the `lsm=` boot parameter (e.g. `lsm=landlock,lockdown,yama,\
                        integrity,apparmor`), which no container setting can add";
            match container {
                Some(c) => format!(
                    "{base}; this {} container shares its host's kernel, so the host must have it; \
                     a seccomp profile that refuses the landlock_* calls (EPERM; older default \
                     profiles did) must allow them; {DOCS}",
                    c.name()
                ),
                None => format!("{base}; {DOCS}"),
            }
        }
    }
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

/// The Landlock ABI, or the errno of the refused query.
pub fn landlock_query() -> Result<i64, i32> {
    let abi = landlock_abi();
    if abi < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(abi)
    }
}

/// What is missing of user namespaces, from the sysctls (the clone itself is the real
/// probe: it fails with step `user_namespace`).
pub fn user_namespaces_missing() -> Option<String> {
    match std::fs::read_to_string("/proc/sys/user/max_user_namespaces") {
        Ok(s) if s.trim().parse::<u64>().map(|n| n > 0).unwrap_or(false) => None,
        Ok(_) => Some("user namespaces (max_user_namespaces is 0)".into()),
        // Kernels without the sysctl either lack user namespaces or predate it; the clone
        // itself is the real probe and fails with step user_namespace.
        Err(_) => None,
    }
}

pub fn seccomp_missing() -> Option<String> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if mode < 0 {
        return Some("seccomp (PR_GET_SECCOMP failed; kernel built without CONFIG_SECCOMP)".into());
    }
    if let Ok(actions) = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail") {
        if !actions.split_whitespace().any(|a| a == "errno") {
            return Some("seccomp filter mode (no errno action)".into());
        }
    }
    None
}

/// What is missing of Landlock for an ABI query that answered `abi` (negative: failed
/// with `errno`). Every protection the sandbox relies on needs its ABI: none is dropped.
pub fn landlock_missing(abi: i64, errno: i32) -> Option<String> {
    let required = crate::landlock::ABI_REQUIRED_NUMBER;
    if abi < 1 {
        let e = std::io::Error::from_raw_os_error(errno);
        let why = match errno {
            libc::ENOSYS => "the kernel has no Landlock (built without CONFIG_SECURITY_LANDLOCK), or a seccomp filter answers ENOSYS",
            libc::EOPNOTSUPP => "Landlock is built in but not enabled at boot (not in `lsm=`)",
            libc::EPERM => "refused by a seccomp filter (a container's profile that does not allow landlock_create_ruleset)",
            _ => "",
        };
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        Some(format!("Landlock (ABI query failed: {e}{why})"))
    } else if abi < required {
        Some(format!(
            "Landlock ABI {required} (Linux 6.12: TCP rules, device ioctls, abstract-socket and signal scoping); this kernel has ABI {abi}"
        ))
    } else {
        None
    }
}

/// Every feature missing, each with what is missing of it.
pub fn missing() -> Vec<(Feature, String)> {
    let mut missing = Vec::new();
    if let Some(m) = user_namespaces_missing() {
        missing.push((Feature::UserNamespaces, m));
    }
    if let Some(m) = seccomp_missing() {
        missing.push((Feature::Seccomp, m));
    }
    let (abi, errno) = match landlock_query() {
        Ok(abi) => (abi, 0),
        Err(errno) => (-1, errno),
    };
    if let Some(m) = landlock_missing(abi, errno) {
        missing.push((Feature::Landlock, m));
    }
    missing
}

/// The refusal for `missing`: every feature named, then what allows each.
pub fn refusal(missing: &[(Feature, String)], container: Option<&Container>) -> String {
    let names: Vec<&str> = missing.iter().map(|(_, m)| m.as_str()).collect();
    let hints: Vec<String> = missing
        .iter()
        .map(|(f, _)| format!("{f:?}: {}", hint(*f, container)))
        .collect();
    format!(
        "the kernel cannot sandbox safely; missing: {}. {}",
        names.join(", "),
        hints.join(". ")
    )
}

/// Runs every probe and names everything missing at once, so an operator fixes the
/// kernel in one go.
pub fn check() -> Result<KernelFeatures, SandboxError> {
    let missing = missing();
    if missing.is_empty() {
        Ok(KernelFeatures {
            landlock_abi: landlock_abi(),
        })
    } else {
        Err(SandboxError::KernelCheck(refusal(
            &missing,
            container().as_ref(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_passes() {
        let f = super::check().expect("test machine supports every layer");
        assert!(f.landlock_abi >= 1);
    }

    #[test]
    fn landlock_below_the_required_abi_is_missing_by_name() {
        let gone = landlock_missing(-1, libc::ENOSYS).unwrap();
        assert!(
            gone.contains("ABI query failed: Function not implemented"),
            "{gone}"
        );
        assert!(gone.contains("CONFIG_SECURITY_LANDLOCK"), "{gone}");
        assert!(landlock_missing(-1, libc::EOPNOTSUPP)
            .unwrap()
            .contains("not enabled at boot"));
        assert!(landlock_missing(-1, libc::EPERM)
            .unwrap()
            .contains("seccomp filter"));
        let old = landlock_missing(3, 0).unwrap();
        assert!(
            old.contains("Landlock ABI 6") && old.contains("this kernel has ABI 3"),
            "{old}"
        );
        assert_eq!(landlock_missing(6, 0), None);
        assert_eq!(landlock_missing(7, 0), None);
    }

    fn signs() -> ContainerSigns {
        ContainerSigns {
            root_fstype: "ext4".into(),
            cgroup: "0::/\n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn containers_are_told_by_their_signs() {
        assert_eq!(classify(&signs()), None);
        // An image built by Docker and booted as a VM keeps /.dockerenv.
        assert_eq!(
            classify(&ContainerSigns {
                dockerenv: true,
                ..signs()
            }),
            None
        );
        let docker = ContainerSigns {
            dockerenv: true,
            root_fstype: "overlay".into(),
            ..signs()
        };
        assert_eq!(classify(&docker), Some(Container::Docker));
        let v1 = ContainerSigns {
            cgroup: "4:memory:/docker/0123abcd\n".into(),
            ..signs()
        };
        assert_eq!(classify(&v1), Some(Container::Docker));
        assert_eq!(
            classify(&ContainerSigns {
                containerenv: true,
                ..signs()
            }),
            Some(Container::Podman)
        );
        let podman = ContainerSigns {
            container_env: Some("podman".into()),
            dockerenv: true,
            ..signs()
        };
        assert_eq!(classify(&podman), Some(Container::Podman));
        let pod = ContainerSigns {
            kubernetes_env: true,
            dockerenv: true,
            ..signs()
        };
        assert_eq!(classify(&pod), Some(Container::Kubernetes));
        let kubepods = ContainerSigns {
            cgroup: "0::/kubepods.slice/kubepods-burstable.slice/x\n".into(),
            ..signs()
        };
        assert_eq!(classify(&kubepods), Some(Container::Kubernetes));
        let lxc = ContainerSigns {
            container_env: Some("lxc".into()),
            ..signs()
        };
        assert_eq!(classify(&lxc), Some(Container::Other("lxc".into())));
    }

    #[test]
    fn the_root_filesystem_type_is_the_last_mount_on_root() {
        let mi = "27 1 254:0 / / rw - ext4 /dev/vda rw\n30 27 0:40 / / rw - overlay overlay rw,lowerdir=/a\n";
        assert_eq!(root_fstype(mi), "overlay");
        assert_eq!(root_fstype(""), "");
    }

    #[test]
    fn hints_name_the_setting_of_each_runtime() {
        let u = |c: Option<Container>| hint(Feature::UserNamespaces, c.as_ref());
        for c in [Some(Container::Docker), Some(Container::Podman)] {
            let h = u(c.clone());
            assert!(h.contains("--security-opt seccomp=unconfined"), "{h}");
            assert!(h.contains("--security-opt apparmor=unconfined"), "{h}");
            assert!(h.contains(c.unwrap().name()), "{h}");
        }
        let k = u(Some(Container::Kubernetes));
        assert!(
            k.contains("seccompProfile: {type: Unconfined}") && k.contains("appArmorProfile"),
            "{k}"
        );
        let host = u(None);
        assert!(
            host.contains("max_user_namespaces") && host.contains("seccomp=unconfined"),
            "{host}"
        );
        let m = hint(Feature::Mounts, Some(&Container::Docker));
        assert!(m.contains("systempaths=unconfined"), "{m}");
        assert!(hint(Feature::Mounts, Some(&Container::Podman)).contains("unmask=ALL"));
        assert!(hint(Feature::Mounts, Some(&Container::Kubernetes)).contains("procMount: Unmasked"));
        let l = hint(Feature::Landlock, Some(&Container::Docker));
        assert!(
            l.contains("CONFIG_SECURITY_LANDLOCK") && l.contains("lsm=") && l.contains("host"),
            "{l}"
        );
        assert!(hint(Feature::Seccomp, None).contains("CONFIG_SECCOMP_FILTER"));
        let r = refusal(&[(Feature::Landlock, "Landlock (x)".into())], None);
        assert!(
            r.starts_with("the kernel cannot sandbox safely; missing: Landlock (x). Landlock: "),
            "{r}"
        );
    }
}
