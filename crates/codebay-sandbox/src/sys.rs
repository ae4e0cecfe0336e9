//! Thin checked wrappers over the raw syscalls the layers share, and the one place that
//! passes descriptors over a socket (SCM_RIGHTS): [`send_with_fds`] and
//! [`recv_with_fds`], used by the helper and by the engine on the control socket.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use codebay_protocol::helper::{MAX_FDS, MAX_MESSAGE_BYTES};

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains NUL"))
}

pub fn path_cstring(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A pipe whose both ends are close-on-exec; callers dup2 what a child must keep.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid 2-int array for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec SOCK_SEQPACKET pair: the shape of the control socket.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0 as RawFd; 2];
    // SAFETY: sv is a valid 2-int array for socketpair to fill.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends one datagram of `bytes` (at most [`MAX_MESSAGE_BYTES`]) on the SOCK_SEQPACKET
/// socket `fd`, with `fds` (at most [`MAX_FDS`]) as SCM_RIGHTS; the descriptors stay
/// open here, the receiver gets its own copies. Retries EINTR; a non-blocking socket
/// whose buffer is full gives `ErrorKind::WouldBlock`. MSG_NOSIGNAL: a vanished peer is
/// EPIPE, never SIGPIPE.
pub fn send_with_fds(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                bytes.len()
            ),
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors exceed {MAX_FDS}", fds.len()),
        ));
    }
    sendmsg(fd, bytes, fds)
}

/// sendmsg without the protocol's limits, so a test can play a peer that breaks them.
fn sendmsg(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let space = cmsg_space(fds.len());
    let mut cmsg_buf = vec![0u64; space.div_ceil(8)]; // u64: cmsghdr alignment
                                                      // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let fd_bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: msg_control points to CMSG_SPACE(fd_bytes) zeroed bytes, room for one
        // header plus the descriptor array copied below.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: msg points to iov and cmsg_buf, both alive for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // A SEQPACKET datagram goes whole or not at all; anything else is not ours.
        if n as usize != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", bytes.len()),
            ));
        }
        return Ok(());
    }
}

/// Receives one datagram from the SOCK_SEQPACKET socket `fd` into `buf`, with the
/// descriptors that came with it (close-on-exec, owned by the caller).
///
/// `Ok((0, []))` is EOF: the peer closed (ECONNRESET, a peer gone with replies unread,
/// counts as EOF too). A datagram longer than `buf`, or one whose descriptors did not
/// all fit [`MAX_FDS`], is an error (`InvalidData`; the datagram is consumed and the
/// descriptors that did arrive are closed), never a silently shortened message.
/// EINTR is retried; a non-blocking socket with nothing to read gives
/// `ErrorKind::WouldBlock`, so its caller can wait for readiness and call again.
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // Room for exactly MAX_FDS: the kernel flags MSG_CTRUNC for any more. u64 words give
    // the buffer cmsghdr alignment.
    let mut cmsg_buf = vec![0u64; cmsg_space(MAX_FDS).div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(MAX_FDS);
        // SAFETY: msg points to buf and cmsg_buf, both alive and writable for the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECONNRESET) => return Ok((0, Vec::new())),
                _ => return Err(e),
            }
        }
        // Take ownership first, so every descriptor that arrived is closed on any error.
        let fds = received_fds(&msg);
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a datagram longer than {} bytes was truncated", buf.len()),
            ));
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a datagram carried more than {MAX_FDS} descriptors"),
            ));
        }
        return Ok((n as usize, fds));
    }
}

/// The SCM_RIGHTS descriptors of a message recvmsg just filled in.
fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote within msg_controllen; the
    // CMSG_* macros never step outside it. Each SCM_RIGHTS descriptor is new in this
    // process and owned by nobody else.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*c).cmsg_len.saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    fds
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads until EOF (the writer closed or exec'ed with the end close-on-exec).
pub fn read_to_end(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is a valid writable buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstring).transpose()?;
    let target = path_cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })?;
    Ok(())
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2): unlike MS_REMOUNT it only touches the flags named, so flags the
/// kernel locked (nosuid/nodev/atime of host mounts) never need to be restated.
pub fn mount_setattr(
    dirfd: RawFd,
    path: &Path,
    at_flags: libc::c_int,
    attr_set: u64,
) -> io::Result<()> {
    let p = path_cstring(path)?;
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: p is NUL-terminated and attr is a correctly laid out mount_attr for the size passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            p.as_ptr(),
            at_flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// open_tree(OPEN_TREE_CLONE|AT_RECURSIVE): a detached copy of the mount at `path`.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let p = path_cstring(path)?;
    // SAFETY: p is NUL-terminated; the flags ask for a new detached mount fd.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
        )
    })?;
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a detached mount (from open_tree) at `target`.
pub fn move_mount(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let empty = cstring("")?;
    let t = path_cstring(target)?;
    // SAFETY: both strings are NUL-terminated; tree is a valid mount fd.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let p = path_cstring(path)?;
    // SAFETY: p is NUL-terminated.
    let fd = check(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn errno_msg(what: &str, e: io::Error) -> String {
    format!("{what}: {e}")
}

/// A close-on-exec descriptor of the directory `path`, for the *at calls below.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = path_cstring(path)?;
    // SAFETY: p is NUL-terminated.
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: &OwnedFd, name: &str, mode: libc::mode_t) -> io::Result<()> {
    let n = cstring(name)?;
    // SAFETY: n is NUL-terminated; dir is an open directory.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })?;
    Ok(())
}

pub fn rmdirat(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let n = cstring(name)?;
    // SAFETY: n is NUL-terminated; dir is an open directory.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(())
}

/// Opens `rel` below `dir` without following a symlink in its last component.
fn openat(dir: &OwnedFd, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstring(rel)?;
    // SAFETY: p is NUL-terminated; dir is an open directory.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            p.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    })?;
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One write(2) of `content` to `rel` below `dir`: cgroup files take a value per write.
pub fn write_at(dir: &OwnedFd, rel: &str, content: &[u8]) -> io::Result<()> {
    let f = openat(dir, rel, libc::O_WRONLY)?;
    write_all(f.as_raw_fd(), content)
}

pub fn read_at(dir: &OwnedFd, rel: &str) -> io::Result<Vec<u8>> {
    read_to_end(&openat(dir, rel, libc::O_RDONLY)?)
}

/// pidfd_open(2): a handle on the process `pid` of the caller's pid namespace that keeps
/// naming that process even if its number is reused.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: pidfd_open returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd is open; a null siginfo asks for the default SI_USER info.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    })?;
    Ok(())
}

/// SIGKILLs those of `pids` that `still` lists when asked after they are pinned with
/// pidfds: a number reused meanwhile by a process elsewhere is pinned, not listed, and
/// never hit. In chunks: the pinned pidfds count against the open-file limit. The
/// pids signalled are added to `signalled`.
pub fn kill_pinned<E>(
    pids: &[libc::pid_t],
    signalled: &mut std::collections::BTreeSet<libc::pid_t>,
    mut still: impl FnMut() -> Result<std::collections::BTreeSet<libc::pid_t>, E>,
) -> Result<(), E> {
    for chunk in pids.chunks(64) {
        let pinned: Vec<_> = chunk
            .iter()
            .filter_map(|&p| pidfd_open(p).ok().map(|fd| (p, fd)))
            .collect();
        let listed = still()?;
        for (p, fd) in pinned {
            if listed.contains(&p) && pidfd_send_signal(&fd, libc::SIGKILL).is_ok() {
                signalled.insert(p);
            }
        }
    }
    Ok(())
}

/// Sets only the effective uid (the real and saved ids unchanged: a saved 0 gets root
/// back).
pub fn set_effective_uid(uid: u32) -> io::Result<()> {
    // SAFETY: integer arguments; u32::MAX (-1) leaves the real and saved ids as they are.
    check(unsafe { libc::setresuid(u32::MAX, uid, u32::MAX) }).map(drop)
}

/// Sets only the effective gid, as [`set_effective_uid`] the uid.
pub fn set_effective_gid(gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments; u32::MAX (-1) leaves the real and saved ids as they are.
    check(unsafe { libc::setresgid(u32::MAX, gid, u32::MAX) }).map(drop)
}

/// Waits for the child `pid` (any kind: `__WALL`), through EINTR; its wait status.
pub fn wait_child(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer; pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return status;
        }
    }
}

/// A wait status in words: `exit status N` or `killed by signal N`.
pub fn describe_status(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on an open fd.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn fds_travel_and_arrive_close_on_exec() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_with_fds(a.as_raw_fd(), b"spawned", &[r.as_raw_fd(), w.as_raw_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"spawned");
        assert_eq!(fds.len(), 2);
        assert!(fds.iter().all(is_cloexec));
        // The received write end is the same pipe: a byte written there reaches r.
        write_all(fds[1].as_raw_fd(), b"x").unwrap();
        drop(fds);
        assert_eq!(read_to_end(&r).unwrap(), b"x");
    }

    #[test]
    fn a_truncated_datagram_is_an_error_and_its_fds_are_closed() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_with_fds(a.as_raw_fd(), &[7u8; 100], &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut small = [0u8; 10];
        let e = recv_with_fds(b.as_raw_fd(), &mut small).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // Had the received copy of w stayed open, this read would block, not see EOF.
        assert_eq!(read_to_end(&r).unwrap(), b"");
    }

    #[test]
    fn too_many_fds_are_refused_on_both_sides() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = pipe().unwrap();
        let many = vec![w.as_raw_fd(); MAX_FDS + 1];
        let e = send_with_fds(a.as_raw_fd(), b"x", &many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A peer that ignores the limit: the control data is cut, which is an error.
        sendmsg(a.as_raw_fd(), b"x", &many).unwrap();
        drop(w);
        let mut buf = [0u8; 8];
        let e = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(read_to_end(&r).unwrap(), b"", "a received fd stayed open");
        let e = send_with_fds(a.as_raw_fd(), &vec![0u8; MAX_MESSAGE_BYTES + 1], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn eagain_is_returned_and_eof_is_zero() {
        let (a, b) = seqpacket_pair().unwrap();
        // SAFETY: F_SETFL on an fd we own.
        check(unsafe { libc::fcntl(b.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }).unwrap();
        let mut buf = [0u8; 8];
        let e = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        send_with_fds(a.as_raw_fd(), b"hi", &[]).unwrap();
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"hi"[..], 0));
        drop(a);
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, fds.len()), (0, 0));
    }
}
