//! End-to-end: spawn the helper with a SEQPACKET socketpair as fd 0, as the addon does.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codebay_sandbox::protocol;

const STUB_DRIVER: &str = r#"
import os, sys, json
info = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "pid": os.getpid(),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "status": {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status")
                   if l.split(":")[0] in ("NoNewPrivs", "CapEff", "CapPrm", "Seccomp")},
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
children = []
for line in r:
    req = json.loads(line)
    if req.get("code") == "spawn_sleep":
        import subprocess
        children.append(subprocess.Popen(["sleep", "1000"]))
    ps_now = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    w.write((json.dumps({"id": req["id"], "echo": req, "info": info, "ps_now": ps_now,
                         "children": [c.pid for c in children]}) + "\n").encode()); w.flush()
"#;

fn python() -> Option<(String, Vec<String>)> {
    let pyenv = "/root/.pyenv/versions/3.11.7";
    if Path::new(pyenv).join("bin/python3.11").exists() {
        return Some((format!("{pyenv}/bin/python3.11"), vec![pyenv.to_owned()]));
    }
    Path::new("/usr/bin/python3")
        .exists()
        .then(|| ("/usr/bin/python3".to_owned(), vec![]))
}

fn start(config: &serde_json::Value) -> (OwnedFd, std::process::Child) {
    start_under(config, None)
}

/// Starts the helper, under `kernel_without` when given: a seccomp filter installed
/// between fork and exec that makes the kernel look as if it lacked a feature.
fn start_under(
    config: &serde_json::Value,
    kernel_without: Option<seccompiler::BpfProgram>,
) -> (OwnedFd, std::process::Child) {
    let (ours, theirs) = codebay_sandbox::sys::seqpacket_pair().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_codebay-sandbox"));
    if let Some(program) = kernel_without {
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
    use std::os::fd::AsRawFd;
    protocol::send_raw(ours.as_raw_fd(), config.to_string().as_bytes(), &[]).unwrap();
    (ours, child)
}

fn recv_json(fd: &OwnedFd) -> (serde_json::Value, Vec<OwnedFd>) {
    use std::os::fd::AsRawFd;
    let (body, fds) = protocol::recv_with_fds(fd.as_raw_fd()).unwrap();
    // SAFETY: the fds arrived via SCM_RIGHTS and are ours.
    let fds = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    (
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        fds,
    )
}

fn config(session: &str, runtimes: &Path, py: &str, ro: &[String]) -> serde_json::Value {
    serde_json::json!({
        "sessionId": session, "memoryBytes": 256u64 << 20, "maxProcesses": 32, "cpuCores": 1.0,
        "network": false, "workspaceBytes": 16u64 << 20, "tmpBytes": 16u64 << 20,
        "readOnlyPaths": ro, "runtimesDir": runtimes, "pythonExecutable": py,
        "nodeExecutable": "/usr/bin/node", "env": {"FOO": "bar"}, "maxOpenFiles": 256, "maxFileBytes": 1u64 << 20
    })
}

fn runtimes_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codebay-sandbox-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("python")).unwrap();
    std::fs::write(dir.join("python/driver.py"), STUB_DRIVER).unwrap();
    dir
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

#[test]
fn full_session_lifecycle() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root for cgroups");
        return;
    }
    let Some((py, ro)) = python() else { return };
    let rt = runtimes_dir("life");
    let session = format!("it-{}", std::process::id());
    let (sock, mut child) = start(&config(&session, &rt, &py, &ro));

    let (ready, _) = recv_json(&sock);
    assert_eq!(ready["type"], "ready", "{ready}");
    let dirs: Vec<PathBuf> = ready["cgroup"]["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect();
    assert!(dirs.iter().all(|d| d.is_dir()));
    assert!(Path::new(ready["memoryEvents"].as_str().unwrap()).exists());

    use std::os::fd::AsRawFd;
    protocol::send_raw(
        sock.as_raw_fd(),
        br#"{"type":"spawn","id":7,"language":"python"}"#,
        &[],
    )
    .unwrap();
    let (spawned, mut fds) = recv_json(&sock);
    assert_eq!(spawned["type"], "spawned", "{spawned}");
    assert_eq!(spawned["id"], 7);
    assert_eq!(fds.len(), 5);
    let pidfd = fds.pop().unwrap();
    let stderr = std::fs::File::from(fds.pop().unwrap());
    let stdout = std::fs::File::from(fds.pop().unwrap());
    let reply = std::fs::File::from(fds.pop().unwrap());
    let mut request = std::fs::File::from(fds.pop().unwrap());

    request
        .write_all(b"{\"id\": 1, \"code\": \"1+1\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(reply).read_line(&mut line).unwrap();
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["id"], 1);
    let info = &r["info"];
    assert_eq!(info["uid"], 1000);
    assert_eq!(info["gid"], 1000);
    assert_eq!(info["cwd"], "/home/user");
    assert_eq!(
        info["fds"],
        serde_json::json!([0, 1, 2, 3, 4, 5]),
        "5 = listdir's own fd"
    ); // 0..4 + listdir
    assert_eq!(info["status"]["NoNewPrivs"], "1");
    assert_eq!(info["status"]["CapEff"], "0000000000000000");
    assert_eq!(info["status"]["CapPrm"], "0000000000000000");
    assert_eq!(info["status"]["Seccomp"], "2");
    assert_eq!(info["write_home"], "ok");
    assert_eq!(info["write_tmp"], "ok");
    assert_ne!(info["write_usr"], "ok");
    assert_ne!(info["write_etc"], "ok");
    assert_eq!(info["netlink"], libc::EPERM);
    assert_ne!(info["tcp_connect"], "ok");
    assert_eq!(info["unshare"], libc::EPERM);
    assert_eq!(info["mount"], libc::EPERM);
    // Only the driver is visible: a fresh pid namespace, and hidepid=2 hides init.
    assert_eq!(info["ps"], serde_json::json!([info["pid"]]));
    let root: Vec<&str> = info["root"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for hidden in ["var", "srv", "run", "mnt"] {
        assert!(!root.contains(&hidden), "/{hidden} visible: {root:?}");
    }
    let env = info["env"].as_object().unwrap();
    let mut keys: Vec<&str> = env.keys().map(|k| k.as_str()).collect();
    keys.sort();
    // LC_CTYPE is added by Python itself at startup (PEP 538 C-locale coercion does not
    // apply to C.UTF-8, but keep the check tolerant of interpreter additions).
    keys.retain(|k| *k != "LC_CTYPE");
    assert_eq!(keys, ["FOO", "HOME", "LANG", "PATH", "PYTHONUNBUFFERED"]);

    let mut out = String::new();
    let mut err = String::new();
    drop(request); // driver sees EOF and exits, closing its stdout/stderr
    (&stdout).read_to_string(&mut out).unwrap();
    (&stderr).read_to_string(&mut err).unwrap();
    assert_eq!(out, "hello from stdout\n");
    assert_eq!(err, "hello from stderr\n");

    // The pidfd reports the driver's exit.
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);

    // Unknown language → error for that id, session still usable.
    protocol::send_raw(
        sock.as_raw_fd(),
        br#"{"type":"spawn","id":8,"language":"javascript"}"#,
        &[],
    )
    .unwrap();
    let (r8, _) = recv_json(&sock);
    assert!(r8["type"] == "spawned" || r8["type"] == "error", "{r8}");
    assert_eq!(r8["id"], 8);

    kill_request_kills_the_whole_driver_session(&sock);

    drop(sock);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    for d in &dirs {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    let _ = std::fs::remove_dir_all(rt);
}

/// Spawns a stub driver: (pid, pidfd, request, reply, [stdout, stderr] kept open).
type Driver = (
    i64,
    OwnedFd,
    std::fs::File,
    BufReader<std::fs::File>,
    Vec<OwnedFd>,
);

fn spawn_driver(sock: &OwnedFd, id: u32) -> Driver {
    use std::os::fd::AsRawFd;
    let req = format!(r#"{{"type":"spawn","id":{id},"language":"python"}}"#);
    protocol::send_raw(sock.as_raw_fd(), req.as_bytes(), &[]).unwrap();
    let (spawned, mut fds) = recv_json(sock);
    assert_eq!(spawned["type"], "spawned", "{spawned}");
    assert_eq!(fds.len(), 5);
    let pidfd = fds.pop().unwrap();
    let output = fds.split_off(2); // stdout/stderr: keep open, the stub prints at startup
    let reply = BufReader::new(std::fs::File::from(fds.pop().unwrap()));
    let request = std::fs::File::from(fds.pop().unwrap());
    (
        spawned["pid"].as_i64().unwrap(),
        pidfd,
        request,
        reply,
        output,
    )
}

fn ask(
    request: &mut std::fs::File,
    reply: &mut BufReader<std::fs::File>,
    req: &str,
) -> serde_json::Value {
    request.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    reply.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// `kill` takes the driver and the background child of its session down, and the
/// session keeps serving spawns afterwards.
fn kill_request_kills_the_whole_driver_session(sock: &OwnedFd) {
    use std::os::fd::AsRawFd;
    for bad in [
        r#"{"type":"kill","pid":1}"#,
        r#"{"type":"kill","pid":0}"#,
        r#"{"type":"kill","pid":-4}"#,
    ] {
        protocol::send_raw(sock.as_raw_fd(), bad.as_bytes(), &[]).unwrap();
        let (r, _) = recv_json(sock);
        assert_eq!(r["type"], "error", "{bad}: {r}");
        assert_eq!(r["step"], "protocol", "{bad}: {r}");
    }

    let (pid, pidfd, mut request, mut reply, _out) = spawn_driver(sock, 20);
    let r = ask(
        &mut request,
        &mut reply,
        r#"{"id": 1, "code": "spawn_sleep"}"#,
    );
    let sleeper = r["children"][0].as_i64().unwrap();
    assert!(
        r["ps_now"].as_array().unwrap().contains(&sleeper.into()),
        "{r}"
    );

    let kill = format!(r#"{{"type":"kill","pid":{pid}}}"#);
    protocol::send_raw(sock.as_raw_fd(), kill.as_bytes(), &[]).unwrap();
    let (k, _) = recv_json(sock);
    assert_eq!(
        k,
        serde_json::json!({"type": "killed", "pid": pid, "count": 2})
    );
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 5000) },
        1,
        "driver survived kill"
    );

    // Killing an empty session is not an error.
    protocol::send_raw(sock.as_raw_fd(), kill.as_bytes(), &[]).unwrap();
    let (k, _) = recv_json(sock);
    assert_eq!(
        k,
        serde_json::json!({"type": "killed", "pid": pid, "count": 0})
    );

    // A fresh driver works and sees neither the old driver nor its sleep.
    let (pid2, _pidfd2, mut request2, mut reply2, _out2) = spawn_driver(sock, 21);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = ask(&mut request2, &mut reply2, r#"{"id": 2, "code": "1+1"}"#);
        assert_eq!(r["id"], 2);
        if r["ps_now"] == serde_json::json!([pid2]) {
            break;
        }
        assert!(Instant::now() < deadline, "processes left after kill: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_config_is_reported_and_helper_exits() {
    let rt = runtimes_dir("bad");
    let mut cfg = config("BAD ID", &rt, "/usr/bin/python3", &[]);
    cfg["sessionId"] = "BAD ID".into();
    let (sock, mut child) = start(&cfg);
    let (reply, _) = recv_json(&sock);
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["step"], "config");
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
fn missing_read_only_path_fails_closed() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let rt = runtimes_dir("missing");
    let cfg = config(
        &format!("it-missing-{}", std::process::id()),
        &rt,
        "/usr/bin/python3",
        &["/nonexistent/x".into()],
    );
    let (sock, mut child) = start(&cfg);
    let (reply, _) = recv_json(&sock);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["step"], "mounts");
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
    let cfg = config(
        &format!("it-nolandlock-{}", std::process::id()),
        &rt,
        "/usr/bin/python3",
        &[],
    );
    let (sock, mut child) = start_under(
        &cfg,
        Some(deny(libc::SYS_landlock_create_ruleset, None, libc::ENOSYS)),
    );
    let (reply, _) = recv_json(&sock);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["step"], "kernel_check", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("missing: Landlock"),
        "{reply}"
    );
    assert!(!wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(rt);
}

#[test]
fn a_kernel_without_user_namespaces_is_refused_by_name() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let rt = runtimes_dir("nouserns");
    let session = format!("it-nouserns-{}", std::process::id());
    let cfg = config(&session, &rt, "/usr/bin/python3", &[]);
    let newuser = libc::CLONE_NEWUSER as u64;
    let (sock, mut child) = start_under(
        &cfg,
        Some(deny(libc::SYS_clone, Some(newuser), libc::EPERM)),
    );
    let (reply, _) = recv_json(&sock);
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["step"], "user_namespace", "{reply}");
    assert!(!wait_exit(&mut child).success());
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|h| {
            let dir = h.ok()?.path().join("codebay").join(&session);
            dir.exists().then_some(dir)
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "cgroups left after a refused start: {leftovers:?}"
    );
    let _ = std::fs::remove_dir_all(rt);
}
