use thiserror::Error;

/// One variant per isolation layer; the variant decides the `step` reported to the engine,
/// so a failure always names the layer that refused to come up.
#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    KernelCheck(String),
    #[error("{0}")]
    Cgroup(String),
    /// No cgroup this user may write (not root, nothing delegated): a step of its own,
    /// so the engine can say how to get one.
    #[error("{0}")]
    NoCgroup(String),
    #[error("{0}")]
    UserNamespace(String),
    #[error("{0}")]
    IdMap(String),
    #[error("{0}")]
    CgroupNamespace(String),
    #[error("{0}")]
    Hostname(String),
    #[error("{0}")]
    Ipc(String),
    #[error("{0}")]
    Mounts(String),
    #[error("{0}")]
    Proc(String),
    #[error("{0}")]
    PivotRoot(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Spawn(String),
    #[error("{0}")]
    Fds(String),
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    ResourceLimits(String),
    #[error("{0}")]
    Landlock(String),
    #[error("{0}")]
    Seccomp(String),
    #[error("{0}")]
    Exec(String),
    #[error("{0}")]
    Init(String),
}

impl SandboxError {
    pub fn step(&self) -> &'static str {
        match self {
            SandboxError::Config(_) => "config",
            SandboxError::KernelCheck(_) => "kernel_check",
            SandboxError::Cgroup(_) => "cgroup",
            SandboxError::NoCgroup(_) => "no_cgroup",
            SandboxError::UserNamespace(_) => "user_namespace",
            SandboxError::IdMap(_) => "id_map",
            SandboxError::CgroupNamespace(_) => "cgroup_namespace",
            SandboxError::Hostname(_) => "hostname",
            SandboxError::Ipc(_) => "ipc",
            SandboxError::Mounts(_) => "mounts",
            SandboxError::Proc(_) => "proc",
            SandboxError::PivotRoot(_) => "pivot_root",
            SandboxError::Protocol(_) => "protocol",
            SandboxError::Spawn(_) => "spawn",
            SandboxError::Fds(_) => "fds",
            SandboxError::Credentials(_) => "credentials",
            SandboxError::ResourceLimits(_) => "resource_limits",
            SandboxError::Landlock(_) => "landlock",
            SandboxError::Seccomp(_) => "seccomp",
            SandboxError::Exec(_) => "exec",
            SandboxError::Init(_) => "init",
        }
    }

    /// Rebuilds an error from a (step, message) pair, used when a forked child reports
    /// its failure through a pipe.
    pub fn from_step(step: &str, message: String) -> SandboxError {
        match step {
            "config" => SandboxError::Config(message),
            "kernel_check" => SandboxError::KernelCheck(message),
            "cgroup" => SandboxError::Cgroup(message),
            "no_cgroup" => SandboxError::NoCgroup(message),
            "user_namespace" => SandboxError::UserNamespace(message),
            "id_map" => SandboxError::IdMap(message),
            "cgroup_namespace" => SandboxError::CgroupNamespace(message),
            "hostname" => SandboxError::Hostname(message),
            "ipc" => SandboxError::Ipc(message),
            "mounts" => SandboxError::Mounts(message),
            "proc" => SandboxError::Proc(message),
            "pivot_root" => SandboxError::PivotRoot(message),
            "protocol" => SandboxError::Protocol(message),
            "fds" => SandboxError::Fds(message),
            "credentials" => SandboxError::Credentials(message),
            "resource_limits" => SandboxError::ResourceLimits(message),
            "landlock" => SandboxError::Landlock(message),
            "seccomp" => SandboxError::Seccomp(message),
            "exec" => SandboxError::Exec(message),
            "init" => SandboxError::Init(message),
            _ => SandboxError::Spawn(message),
        }
    }
}
