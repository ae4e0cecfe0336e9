//! End-to-end: spawn the helper with a SEQPACKET socketpair as fd 0, as the engine does,
//! and judge what it built from the host side (cgroup files, /proc of the host).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codebay_protocol::helper::{ReadOnlyBind, MAX_MESSAGE_BYTES};
use codebay_protocol::{CgroupInfo, HelperReply, HelperRequest, SandboxConfig, SpawnedFds};
use codebay_sandbox::sys;

/// Init's cgroup leaf in cgroup2 hierarchies (not a context).
const INIT_LEAF: &str = codebay_sandbox::cgroup::INIT_LEAF;
/// Inside uid 1000 seen from the host, for a root supervisor's id map.
/// The code's user (1000 inside) as the host sees it: 1000 into one of the ranges.
fn is_host_user(id: u32) -> bool {
    use codebay_sandbox::namespaces::{HOST_ID_BASE, ID_RANGE};
    id >= HOST_ID_BASE && (id - HOST_ID_BASE) % ID_RANGE == 1000
}

const STUB: &str = r#"
import os, sys, json
info = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "pid": os.getpid(),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "status": {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status")
                   if l.split(":")[0] in ("NoNewPrivs", "CapEff", "CapPrm", "Seccomp")},
        "cgroup": open("/proc/self/cgroup").read().splitlines(),
        "root": sorted(os.listdir("/")), "env": dict(os.environ)}
def attempt(f):
    try:
        f(); return "ok"
    except OSError as e:
        return e.errno
info["write_usr"] = attempt(lambda: open("/usr/x", "w"))
info["write_etc"] = attempt(lambda: open("/etc/x", "w"))
info["write_home"] = attempt(lambda: open("/home/user/x", "w").write("hi"))
info["write_tmp"] = attempt(lambda: open("/tmp/x", "w").write("hi"))
import socket
info["netlink"] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
info["tcp_connect"] = attempt(lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def raw(rc):
    return ctypes.get_errno() if rc != 0 else "ok"
info["unshare"] = raw(libc.unshare(0x10000000))
info["mount"] = raw(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
info["ps"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("hello from stdout", flush=True)
print("hello from stderr", file=sys.stderr, flush=True)
r = os.fdopen(3, "rb"); w = os.fdopen(4, "wb")
for line in r:
    req = json.loads(line)
    w.write((json.dumps({"id": req["id"], "info": info}) + "\n").encode()); w.flush()
"#;

/// The tests marked `needs root` build cgroups; `npm test` runs them (as root, with
/// `--include-ignored`).
fn python() -> (String, Vec<String>) {
    let pyenv = "/root/.pyenv/versions/3.11.7";
    if Path::new(pyenv).join("bin/python3.11").exists() {
        return (format!("{pyenv}/bin/python3.11"), vec![pyenv.to_owned()]);
    }
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "these tests need a Python: {pyenv} or /usr/bin/python3"
    );
    ("/usr/bin/python3".to_owned(), vec![])
}

fn runtimes_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codebay-sandbox-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stub.py"), STUB).unwrap();
    dir
}

fn config(tag: &str, runtimes: &Path, ro: &[String]) -> SandboxConfig {
    SandboxConfig {
        session_id: format!("it-{tag}-{}", std::process::id()),
        memory_bytes: 256 << 20,
        max_processes: 32,
        cpu_cores: Some(1.0),
        network: false,
        workspace_bytes: 16 << 20,
        tmp_bytes: 16 << 20,
        read_only_binds: ro.iter().map(|p| ReadOnlyBind::same(p)).collect(),
        runtimes_dir: runtimes.to_str().unwrap().into(),
        env: [("FOO".to_string(), "bar".to_string())].into(),
        max_open_files: 256,
        max_file_bytes: 1 << 20,
        cgroup_parent: None,
        resource_limits: Default::default(),
    }
}

fn start(config: &SandboxConfig) -> (OwnedFd, std::process::Child) {
    start_under(&serde_json::to_vec(config).unwrap(), None)
}

/// Starts the helper, under `kernel_without` when given: a seccomp filter installed
/// between fork and exec that makes the kernel look as if it lacked a feature.
fn start_under(
    config: &[u8],
    kernel_without: Option<seccompiler::BpfProgram>,
) -> (OwnedFd, std::process::Child) {
    let (ours, theirs) = sys::seqpacket_pair().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebay-sandbox"));
    if let Some(program) = kernel_without {
        filtered_on_exec(&mut command, program);
    }
    let child = command
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("CODEBAY_DEBUG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .spawn()
        .unwrap();
    sys::send_with_fds(ours.as_raw_fd(), config, &[]).unwrap();
    (ours, child)
}

/// Makes `command` exec under `program`, a seccomp filter installed between fork and exec.
fn filtered_on_exec(command: &mut Command, program: seccompiler::BpfProgram) {
    // SAFETY: the closure runs between fork and exec and only makes two syscalls
    // (prctl, seccomp) on memory the parent prepared; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    1, /* SECCOMP_SET_MODE_FILTER */
                    0,
                    &fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn recv(sock: &OwnedFd) -> (HelperReply, Vec<OwnedFd>) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let (n, fds) = sys::recv_with_fds(sock.as_raw_fd(), &mut buf).unwrap();
    assert!(n > 0, "the helper closed the control socket");
    let reply = serde_json::from_slice(&buf[..n])
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buf[..n])));
    (reply, fds)
}

fn ask(sock: &OwnedFd, req: &HelperRequest) -> (HelperReply, Vec<OwnedFd>) {
    let body = serde_json::to_vec(req).unwrap();
    sys::send_with_fds(sock.as_raw_fd(), &body, &[]).unwrap();
    recv(sock)
}

fn ready(sock: &OwnedFd) -> CgroupInfo {
    match recv(sock).0 {
        HelperReply::Ready {
            cgroup: Some(cgroup),
        } => cgroup,
        other => panic!("not ready: {other:?}"),
    }
}

/// A spawned process as the engine holds it.
#[derive(Debug)]
struct Proc {
    /// In the sandbox's pid namespace.
    pid: i32,
    /// In ours.
    host_pid: i32,
    fds: SpawnedFds<OwnedFd>,
}

/// Whether the process of `pidfd` ends within `ms`: a pidfd polls readable at exit.
fn exited_within(pidfd: &OwnedFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

impl Proc {
    fn exited_within(&self, ms: i32) -> bool {
        exited_within(&self.fds.pidfd, ms)
    }

    fn stdout(self) -> String {
        let mut out = String::new();
        std::fs::File::from(self.fds.stdout_r)
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

/// The pid a pidfd names, in the reader's (the host's) pid namespace.
fn host_pid(pidfd: &OwnedFd) -> i32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn spawn_request(id: u64, context: &str, argv: &[&str], cwd: &str) -> HelperRequest {
    HelperRequest::Spawn {
        id,
        context: context.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: cwd.into(),
    }
}

fn spawn_with(sock: &OwnedFd, req: &HelperRequest) -> Result<Proc, (String, String)> {
    let HelperRequest::Spawn { id: asked, .. } = req else {
        unreachable!()
    };
    match ask(sock, req) {
        (HelperReply::Spawned { id, pid }, fds) => {
            assert_eq!(id, *asked);
            let fds = SpawnedFds::from_vec(fds).expect("five descriptors");
            Ok(Proc {
                pid,
                host_pid: host_pid(&fds.pidfd),
                fds,
            })
        }
        (HelperReply::Error { id, step, message }, fds) => {
            assert_eq!(id, Some(*asked), "{step}: {message}");
            assert!(fds.is_empty());
            Err((step, message))
        }
        (other, _) => panic!("{other:?}"),
    }
}

fn spawn(sock: &OwnedFd, id: u64, context: &str, argv: &[&str]) -> Proc {
    spawn_with(sock, &spawn_request(id, context, argv, "/home/user"))
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e:?}"))
}

fn kill(sock: &OwnedFd, id: u64, context: &str, keep_pid: Option<i32>) -> HelperReply {
    let req = HelperRequest::Kill {
        id,
        context: context.into(),
        keep_pid,
    };
    ask(sock, &req).0
}

/// Host pids in `<dir>/<context>/cgroup.procs`.
fn procs(dir: &str, context: &str) -> Vec<i32> {
    let text = std::fs::read_to_string(Path::new(dir).join(context).join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("{dir}/{context}: {e}"));
    let mut v: Vec<i32> = text.lines().map(|l| l.parse().unwrap()).collect();
    v.sort();
    v
}

/// The cgroups below a session directory, init's leaf aside.
fn contexts_in(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != INIT_LEAF)
        .collect();
    v.sort();
    v
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "helper did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends the session as the engine does (closing its end) and checks that nothing of it
/// is left in any hierarchy.
fn close(sock: OwnedFd, mut child: std::process::Child, info: &CgroupInfo) {
    drop(sock);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    for d in &info.dirs {
        assert!(!Path::new(d).exists(), "cgroup {d} left behind");
    }
}

#[test]
#[ignore = "needs root"]
fn full_session_lifecycle() {
    let (py, ro) = python();
    let rt = runtimes_dir("life");
    let cfg = config("life", &rt, &ro);
    let (sock, child) = start(&cfg);
    let info = ready(&sock);
    assert_eq!(
        info.version, 1,
        "this host has v1 memory/pids and a bare unified v2"
    );
    for d in &info.dirs {
        assert!(d.ends_with(&format!("/codebay/{}", cfg.session_id)), "{d}");
        assert!(Path::new(d).is_dir(), "{d}");
    }
    assert!(info.dirs.contains(&info.memory) && info.dirs.contains(&info.pids));
    assert!(
        info.memory.starts_with("/sys/fs/cgroup/memory/"),
        "{info:?}"
    );
    assert!(info.pids.starts_with("/sys/fs/cgroup/pids/"), "{info:?}");

    let p = spawn(
        &sock,
        7,
        "main",
        &[&py, "-I", "-u", "/opt/codebay/runtimes/stub.py"],
    );
    // From the host: the process is in its context's cgroup in every hierarchy, and
    // the context's event files are there for the engine to read.
    for d in &info.dirs {
        assert_eq!(procs(d, "main"), [p.host_pid], "{d}");
    }
    assert!(info.memory_events("main").exists());
    assert!(info.pids_events("main").exists());
    assert!(info.pids_current("main").exists());

    let Proc { pid, fds, .. } = p;
    let mut request = std::fs::File::from(fds.request_w);
    request.write_all(b"{\"id\": 1}\n").unwrap();
    let mut line = String::new();
    BufReader::new(std::fs::File::from(fds.reply_r))
        .read_line(&mut line)
        .unwrap();
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["id"], 1);
    let info_in = &r["info"];
    assert_eq!(info_in["pid"], pid);
    assert_eq!(info_in["uid"], 1000);
    assert_eq!(info_in["gid"], 1000);
    assert_eq!(info_in["cwd"], "/home/user");
    // 0..4 and listdir's own; no cgroup directory fd or anything else of init's.
    assert_eq!(info_in["fds"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(info_in["status"]["NoNewPrivs"], "1");
    assert_eq!(info_in["status"]["CapEff"], "0000000000000000");
    assert_eq!(info_in["status"]["CapPrm"], "0000000000000000");
    assert_eq!(info_in["status"]["Seccomp"], "2");
    // Its own cgroup namespace: the code sees its cgroup as the root, not the host path.
    let cgroups = info_in["cgroup"].as_array().unwrap();
    assert!(!cgroups.is_empty());
    for l in cgroups {
        assert!(l.as_str().unwrap().ends_with(":/"), "{cgroups:?}");
    }
    assert_eq!(info_in["write_home"], "ok");
    assert_eq!(info_in["write_tmp"], "ok");
    assert_ne!(info_in["write_usr"], "ok");
    assert_ne!(info_in["write_etc"], "ok");
    assert_eq!(info_in["netlink"], libc::EPERM);
    assert_ne!(info_in["tcp_connect"], "ok");
    assert_eq!(info_in["unshare"], libc::EPERM);
    assert_eq!(info_in["mount"], libc::EPERM);
    // Only the process itself is visible: a fresh pid namespace, and hidepid=2 hides init.
    assert_eq!(info_in["ps"], serde_json::json!([pid]));
    let root: Vec<&str> = info_in["root"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for hidden in ["var", "srv", "run", "mnt", "sys"] {
        assert!(!root.contains(&hidden), "/{hidden} visible: {root:?}");
    }
    let mut keys: Vec<&str> = info_in["env"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    // Python may add LC_CTYPE at startup (PEP 538); the rest is exactly ours.
    keys.retain(|k| *k != "LC_CTYPE");
    assert_eq!(keys, ["FOO", "HOME", "LANG", "PATH"]);

    drop(request); // the stub sees EOF and exits, closing its stdout/stderr
    let read = |f: OwnedFd| {
        let mut text = String::new();
        std::fs::File::from(f).read_to_string(&mut text).unwrap();
        text
    };
    assert_eq!(read(fds.stdout_r), "hello from stdout\n");
    assert_eq!(read(fds.stderr_r), "hello from stderr\n");
    assert!(
        exited_within(&fds.pidfd, 5000),
        "the pidfd did not report the exit"
    );

    close(sock, child, &info);
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
#[ignore = "needs root"]
fn contexts_are_cgroups_and_kill_follows_them() {
    let rt = runtimes_dir("kill");
    let (sock, child) = start(&config("kill", &rt, &[]));
    let info = ready(&sock);

    // The setsid child left the process session: the old kill-by-session missed it.
    let a = spawn(
        &sock,
        1,
        "ctx-a",
        &[
            "/bin/sh",
            "-c",
            "setsid sleep 1000 & sleep 1000 & exec sleep 1000",
        ],
    );
    let b = spawn(&sock, 2, "ctx-b", &["/usr/bin/sleep", "1000"]);
    eventually("ctx-a's three processes", || {
        procs(&info.pids, "ctx-a").len() == 3
    });
    for d in &info.dirs {
        let pa = procs(d, "ctx-a");
        assert!(pa.contains(&a.host_pid) && pa.len() == 3, "{d}: {pa:?}");
        assert_eq!(procs(d, "ctx-b"), [b.host_pid], "{d}");
    }

    for (context, keep) in [("../x", None), ("ctx-a", Some(1)), ("ctx-a", Some(0))] {
        match kill(&sock, 9, context, keep) {
            HelperReply::Error { id, step, .. } => {
                assert_eq!(
                    (id, step.as_str()),
                    (Some(9), "protocol"),
                    "{context} {keep:?}"
                )
            }
            other => panic!("{context} {keep:?}: {other:?}"),
        }
    }

    // keepPid: the kept process lives on, its children are gone, its cgroup stays.
    assert_eq!(
        kill(&sock, 10, "ctx-a", Some(a.pid)),
        HelperReply::Killed { id: 10, count: 2 }
    );
    assert!(!a.exited_within(100), "the kept process was killed");
    for d in &info.dirs {
        assert_eq!(procs(d, "ctx-a"), [a.host_pid], "{d}");
    }

    // Without keepPid: everything, and the context's cgroups go.
    assert_eq!(
        kill(&sock, 11, "ctx-a", None),
        HelperReply::Killed { id: 11, count: 1 }
    );
    assert!(a.exited_within(5000));
    for d in &info.dirs {
        assert!(!Path::new(d).join("ctx-a").exists(), "{d}/ctx-a left");
        assert_eq!(
            procs(d, "ctx-b"),
            [b.host_pid],
            "{d}: another context was touched"
        );
    }
    assert!(!b.exited_within(0));
    // Killing a context that is gone already is not an error: nothing of it is left.
    assert_eq!(
        kill(&sock, 12, "ctx-a", None),
        HelperReply::Killed { id: 12, count: 0 }
    );
    // The name is free again.
    let a2 = spawn(&sock, 13, "ctx-a", &["/usr/bin/sleep", "1000"]);
    assert_eq!(procs(&info.pids, "ctx-a"), [a2.host_pid]);

    // Closing with two live contexts leaves nothing behind.
    close(sock, child, &info);
    assert!(b.exited_within(1000) && a2.exited_within(1000));
    let _ = std::fs::remove_dir_all(rt);
}

fn max_events(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("max "))
        .unwrap_or_else(|| panic!("{path:?}: {text}"))
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs root"]
fn a_fork_refused_at_the_session_limit_counts_in_its_context() {
    let rt = runtimes_dir("pids");
    let mut cfg = config("pids", &rt, &[]);
    cfg.max_processes = 6; // init, two contexts' processes, and three forks
    let (sock, child) = start(&cfg);
    let info = ready(&sock);

    let _quiet = spawn(&sock, 1, "quiet", &["/usr/bin/sleep", "1000"]);
    let _forker = spawn(
        &sock,
        2,
        "forker",
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & done; exec sleep 1000",
        ],
    );
    eventually("a refused fork", || {
        max_events(&info.pids_events("forker")) > 0
    });
    assert!(
        std::fs::read_to_string(info.pids_current("forker"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            >= 3
    );
    if info.version == 1 {
        // v1 counts a refused fork in the forking process's own cgroup only.
        assert_eq!(max_events(&info.pids_events("quiet")), 0);
    }
    assert_eq!(
        std::fs::read_to_string(info.pids_current("quiet"))
            .unwrap()
            .trim(),
        "1"
    );
    close(sock, child, &info);
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
#[ignore = "needs root"]
fn bad_spawns_are_refused_by_step_and_leave_nothing() {
    let rt = runtimes_dir("refuse");
    let (sock, child) = start(&config("refuse", &rt, &[]));
    let info = ready(&sock);
    let sh = ["/bin/sh", "-c", "exec sleep 1000"];
    let helper = env!("CARGO_BIN_EXE_codebay-sandbox");
    for (context, argv, cwd, step, says) in [
        ("c1", &sh[..], "/etc", "spawn", "cwd"),
        ("c1", &sh[..], "home/user", "spawn", "cwd"),
        ("c1", &sh[..], "/home/user/../etc", "spawn", "cwd"),
        ("c1", &sh[..], "/home", "spawn", "cwd"),
        (
            "c1",
            &["/nonexistent/bin"][..],
            "/tmp",
            "spawn",
            "/nonexistent/bin is not visible",
        ),
        // A host path that exists outside, not inside.
        ("c1", &[helper][..], "/tmp", "spawn", "is not visible"),
        ("c1", &["sh"][..], "/tmp", "spawn", "absolute"),
        ("c1", &[][..], "/tmp", "spawn", "argv is empty"),
        ("../c1", &sh[..], "/tmp", "protocol", "context"),
        (INIT_LEAF, &sh[..], "/tmp", "protocol", "context"),
        // Visible but not executable: refused by the child, after the cgroup was made.
        ("c1", &["/etc/passwd"][..], "/tmp", "exec", "/etc/passwd"),
    ] {
        let req = spawn_request(5, context, argv, cwd);
        let (got_step, message) = match spawn_with(&sock, &req) {
            Ok(_) => panic!("{argv:?} in {cwd} was spawned"),
            Err(e) => e,
        };
        assert_eq!(got_step, step, "{argv:?} {cwd}: {message}");
        assert!(message.contains(says), "{argv:?} {cwd}: {message}");
    }
    let _dup = spawn(&sock, 6, "dup", &sh);
    let (step, message) = spawn_with(&sock, &spawn_request(7, "dup", &sh, "/tmp")).unwrap_err();
    assert_eq!(step, "cgroup", "{message}");
    assert!(message.contains("exists already"), "{message}");
    for d in &info.dirs {
        assert_eq!(contexts_in(d), ["dup"], "{d}");
    }
    // A request that is not one: the error still names its id.
    sys::send_with_fds(
        sock.as_raw_fd(),
        br#"{"type":"spawn","id":8,"language":"python"}"#,
        &[],
    )
    .unwrap();
    match recv(&sock).0 {
        HelperReply::Error { id, step, .. } => {
            assert_eq!((id, step.as_str()), (Some(8), "protocol"))
        }
        other => panic!("{other:?}"),
    }
    close(sock, child, &info);
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
#[ignore = "needs root"]
fn cwd_is_made_by_the_code_user_and_env_is_exact() {
    let rt = runtimes_dir("cwd");
    let mut cfg = config("cwd", &rt, &[]);
    cfg.env.insert("CFG".into(), "config".into());
    let (sock, child) = start(&cfg);
    let info = ready(&sock);

    let p = spawn_with(
        &sock,
        &spawn_request(
            1,
            "cwd",
            &[
                "/bin/sh",
                "-c",
                "stat -c %u:%g . .. && pwd && exec sleep 1000",
            ],
            "/home/user/proj/sub",
        ),
    )
    .unwrap();
    let mut out = BufReader::new(std::fs::File::from(p.fds.stdout_r.try_clone().unwrap()));
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim().to_owned());
    }
    assert_eq!(lines, ["1000:1000", "1000:1000", "/home/user/proj/sub"]);
    // From the host: the directory, and the one made on the way, belong to the code's
    // user as the host sees it, not to root of either side.
    // Each session has a host id range of its own: the code's user is 1000 in it.
    let cwd = std::fs::metadata(format!("/proc/{}/cwd", p.host_pid)).unwrap();
    assert!(
        is_host_user(cwd.uid()) && is_host_user(cwd.gid()),
        "{} {}",
        cwd.uid(),
        cwd.gid()
    );
    let proj = std::fs::metadata(format!("/proc/{}/root/home/user/proj", p.host_pid)).unwrap();
    assert_eq!(proj.uid(), cwd.uid());

    let t = spawn_with(
        &sock,
        &spawn_request(2, "tmp", &["/usr/bin/pwd"], "/tmp/new"),
    )
    .unwrap();
    assert_eq!(t.stdout(), "/tmp/new\n");

    let req = HelperRequest::Spawn {
        id: 3,
        context: "env".into(),
        argv: vec!["/usr/bin/env".into()],
        env: [
            ("CFG".to_string(), "request".to_string()),
            ("REQ".to_string(), "r".to_string()),
        ]
        .into(),
        cwd: "/home/user".into(),
    };
    let e = spawn_with(&sock, &req).unwrap();
    assert_eq!(
        e.stdout(),
        "CFG=request\nFOO=bar\nHOME=/home/user\nLANG=C.UTF-8\n\
         PATH=/usr/local/bin:/usr/bin:/bin\nREQ=r\n"
    );
    close(sock, child, &info);
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
fn bad_config_is_reported_and_helper_exits() {
    let rt = runtimes_dir("bad");
    let mut cfg = serde_json::to_value(config("bad", &rt, &[])).unwrap();
    cfg["sessionId"] = "BAD ID".into();
    let (sock, mut child) = start_under(cfg.to_string().as_bytes(), None);
    match recv(&sock).0 {
        HelperReply::Error { id, step, .. } => assert_eq!((id, step.as_str()), (None, "config")),
        other => panic!("{other:?}"),
    }
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
#[ignore = "needs root"]
fn missing_read_only_path_fails_closed() {
    let rt = runtimes_dir("missing");
    let (sock, mut child) = start(&config("missing", &rt, &["/nonexistent/x".into()]));
    match recv(&sock).0 {
        HelperReply::Error { step, .. } => assert_eq!(step, "mounts"),
        other => panic!("{other:?}"),
    }
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}

/// A filter that fails `syscall` with `errno` when `flag` (if any) is set in its first
/// argument, and allows everything else.
fn deny(syscall: libc::c_long, flag: Option<u64>, errno: i32) -> seccompiler::BpfProgram {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let rules = match flag {
        None => vec![],
        Some(flag) => vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .unwrap()])
        .unwrap()],
    };
    SeccompFilter::new(
        [(syscall, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        seccompiler::TargetArch::x86_64,
    )
    .unwrap()
    .try_into()
    .unwrap()
}

#[test]
fn a_kernel_without_landlock_is_refused_by_name() {
    let rt = runtimes_dir("nolandlock");
    let cfg = serde_json::to_vec(&config("nolandlock", &rt, &[])).unwrap();
    let (sock, mut child) = start_under(
        &cfg,
        Some(deny(libc::SYS_landlock_create_ruleset, None, libc::ENOSYS)),
    );
    match recv(&sock).0 {
        HelperReply::Error { step, message, .. } => {
            assert_eq!(step, "kernel_check", "{message}");
            assert!(message.contains("missing: Landlock"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
#[ignore = "needs root"]
fn a_kernel_without_user_namespaces_is_refused_by_name() {
    let rt = runtimes_dir("nouserns");
    let cfg = config("nouserns", &rt, &[]);
    let newuser = libc::CLONE_NEWUSER as u64;
    let (sock, mut child) = start_under(
        &serde_json::to_vec(&cfg).unwrap(),
        Some(deny(libc::SYS_clone, Some(newuser), libc::EPERM)),
    );
    match recv(&sock).0 {
        HelperReply::Error { step, message, .. } => assert_eq!(step, "user_namespace", "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!wait_exit(&mut child).success());
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|h| {
            let dir = h.ok()?.path().join("codebay").join(&cfg.session_id);
            dir.exists().then_some(dir)
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "cgroups left after a refused start: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(rt);
}

/// `deny`, for several syscalls at once: each fails with `errno` when its flag (if any)
/// is set in its first argument.
fn deny_all(rules: &[(libc::c_long, Option<u64>)], errno: i32) -> seccompiler::BpfProgram {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let map = rules
        .iter()
        .map(|&(syscall, flag)| {
            let rules = match flag {
                None => vec![],
                Some(flag) => vec![SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .unwrap()])
                .unwrap()],
            };
            (syscall, rules)
        })
        .collect();
    SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        seccompiler::TargetArch::x86_64,
    )
    .unwrap()
    .try_into()
    .unwrap()
}

/// The kernel check's refusal names what allows the feature: a container cannot add
/// Landlock (the host kernel must have it), and a seccomp profile that refuses its
/// calls must allow them.
#[test]
fn a_refused_landlock_says_what_allows_it() {
    for (errno, why) in [
        (libc::ENOSYS, "CONFIG_SECURITY_LANDLOCK"),
        (libc::EPERM, "refused by a seccomp filter"),
    ] {
        let rt = runtimes_dir("llhint");
        let cfg = serde_json::to_vec(&config("llhint", &rt, &[])).unwrap();
        let (sock, mut child) = start_under(
            &cfg,
            Some(deny(libc::SYS_landlock_create_ruleset, None, errno)),
        );
        match recv(&sock).0 {
            HelperReply::Error { step, message, .. } => {
                assert_eq!(step, "kernel_check", "{message}");
                assert!(message.contains("missing: Landlock"), "{message}");
                assert!(message.contains(why), "{message}");
                for hint in ["lsm=", "no container setting can add", "docs/containers.md"] {
                    assert!(message.contains(hint), "{hint}: {message}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(!wait_exit(&mut child).success());
        let _ = std::fs::remove_dir_all(rt);
    }
}

/// `codebay-sandbox doctor --json` under `program`: its exit status and checks by name.
fn doctor_under(
    program: Option<seccompiler::BpfProgram>,
) -> (i32, BTreeMap<String, serde_json::Value>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebay-sandbox"));
    command
        .args(["doctor", "--json"])
        .env_remove("CODEBAY_CGROUP_PARENT");
    if let Some(p) = program {
        filtered_on_exec(&mut command, p);
    }
    let out = command.output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let checks = answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    (out.status.code().unwrap(), checks)
}

/// The doctor tries each layer for real: under a filter shaped like a container
/// runtime's default profile (no unshare, no clone of a user namespace, no Landlock)
/// it names each refusal, with the setting that allows it, and exits 1.
#[test]
fn the_doctor_names_each_refused_layer_and_its_fix() {
    let verdict = |checks: &BTreeMap<String, serde_json::Value>, name: &str| {
        checks[name]["verdict"].as_str().unwrap().to_owned()
    };
    let (status, checks) = doctor_under(None);
    for name in ["user_namespaces", "mounts", "seccomp", "landlock"] {
        assert_eq!(verdict(&checks, name), "ok", "{name}: {:?}", checks[name]);
    }
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        assert_eq!(status, 0, "{checks:?}");
        assert_eq!(verdict(&checks, "cgroup"), "ok");
        assert_eq!(verdict(&checks, "id_mapping"), "ok");
    }

    let container_like = deny_all(
        &[
            (libc::SYS_unshare, None),
            (libc::SYS_clone, Some(libc::CLONE_NEWUSER as u64)),
            (libc::SYS_landlock_create_ruleset, None),
        ],
        libc::EPERM,
    );
    let (status, checks) = doctor_under(Some(container_like));
    assert_eq!(status, 1, "{checks:?}");
    let userns = &checks["user_namespaces"];
    assert_eq!(userns["verdict"], "missing");
    assert!(
        userns["detail"]
            .as_str()
            .unwrap()
            .contains("unshare(CLONE_NEWUSER): Operation not permitted"),
        "{userns}"
    );
    assert!(
        userns["fix"]
            .as_str()
            .unwrap()
            .contains("--security-opt seccomp=unconfined"),
        "{userns}"
    );
    assert_eq!(verdict(&checks, "mounts"), "missing");
    assert_eq!(verdict(&checks, "id_mapping"), "missing");
    let ll = &checks["landlock"];
    assert_eq!(ll["verdict"], "missing");
    assert!(
        ll["detail"]
            .as_str()
            .unwrap()
            .contains("refused by a seccomp filter"),
        "{ll}"
    );
    assert!(
        ll["fix"]
            .as_str()
            .unwrap()
            .contains("CONFIG_SECURITY_LANDLOCK"),
        "{ll}"
    );
    assert_eq!(
        verdict(&checks, "seccomp"),
        "ok",
        "stacking a filter is allowed under another"
    );

    // Only mount refused (AppArmor's `deny mount` in docker-default does this).
    let (_, checks) = doctor_under(Some(deny(libc::SYS_mount, None, libc::EACCES)));
    assert_eq!(verdict(&checks, "user_namespaces"), "ok");
    let mounts = &checks["mounts"];
    assert_eq!(mounts["verdict"], "missing", "{mounts}");
    assert!(
        mounts["detail"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{mounts}"
    );
    assert!(
        mounts["fix"]
            .as_str()
            .unwrap()
            .contains("systempaths=unconfined"),
        "{mounts}"
    );
}

/// The clone a container's seccomp profile refuses: the `user_namespace` step names the
/// container settings that allow it (`kernel_check::container_hint`).
#[test]
#[ignore = "needs root"]
fn a_refused_user_namespace_says_what_allows_it() {
    let rt = runtimes_dir("nsh");
    let cfg = config("nsh", &rt, &[]);
    let (sock, mut child) = start_under(
        &serde_json::to_vec(&cfg).unwrap(),
        Some(deny(
            libc::SYS_clone,
            Some(libc::CLONE_NEWUSER as u64),
            libc::EPERM,
        )),
    );
    match recv(&sock).0 {
        HelperReply::Error { step, message, .. } => {
            assert_eq!(step, "user_namespace", "{message}");
            for hint in [
                "--security-opt seccomp=unconfined",
                "apparmor=unconfined",
                "seccompProfile: {type: Unconfined}",
                "max_user_namespaces",
            ] {
                assert!(message.contains(hint), "{hint}: {message}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}
