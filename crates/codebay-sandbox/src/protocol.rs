//! Control-socket messages (internals §1–§2): one JSON object per SOCK_SEQPACKET
//! datagram; `spawned` carries five fds as SCM_RIGHTS.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SandboxError;

pub const CONTROL_FD: RawFd = 0;
const MAX_DATAGRAM: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CgroupInfo {
    pub version: u8,
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Reply {
    #[serde(rename_all = "camelCase")]
    Ready {
        cgroup: CgroupInfo,
        memory_events: PathBuf,
    },
    Spawned {
        id: serde_json::Value,
        pid: i32,
    },
    Killed {
        pid: i32,
        count: u32,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        step: String,
        message: String,
    },
}

impl Reply {
    pub fn error(id: Option<serde_json::Value>, e: &SandboxError) -> Reply {
        Reply::Error {
            id,
            step: e.step().into(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Request {
    Spawn {
        id: serde_json::Value,
        language: Language,
    },
    /// Kill every process of the session led by driver `pid` (validated by init).
    Kill { pid: i64 },
}

/// Parses a request; on failure returns the request's `id` if one could be found so the
/// error can still be matched to it.
pub fn parse_request(bytes: &[u8]) -> Result<Request, (Option<serde_json::Value>, SandboxError)> {
    serde_json::from_slice(bytes).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("id").cloned());
        (id, SandboxError::Protocol(format!("invalid request: {e}")))
    })
}

/// Blocks for one datagram; Ok(None) on EOF (the addon closed its end).
pub fn recv(fd: RawFd) -> Result<Option<Vec<u8>>, SandboxError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if e.raw_os_error() == Some(libc::ECONNRESET) {
                return Ok(None);
            }
            return Err(SandboxError::Protocol(format!(
                "cannot read the control socket: {e}"
            )));
        }
        if n == 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(SandboxError::Protocol(format!(
                "message of {n} bytes exceeds {MAX_DATAGRAM}"
            )));
        }
        buf.truncate(n);
        return Ok(Some(buf));
    }
}

pub fn send(fd: RawFd, reply: &Reply, fds: &[RawFd]) -> Result<(), SandboxError> {
    let body = serde_json::to_vec(reply).expect("replies always serialise");
    send_raw(fd, &body, fds)
        .map_err(|e| SandboxError::Protocol(format!("cannot write the control socket: {e}")))
}

pub fn send_raw(fd: RawFd, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut cmsg_buf = vec![0u64; space.div_ceil(8)]; // u64 keeps cmsghdr alignment
                                                      // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points to a buffer of CMSG_SPACE(fd_bytes) bytes, enough
        // for one header plus the fd array copied below.
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
        // SAFETY: msg references iov/cmsg_buf, both alive for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(());
    }
}

/// Receives one datagram plus any SCM_RIGHTS fds (used by tests and tools acting as the addon).
pub fn recv_with_fds(fd: RawFd) -> io::Result<(Vec<u8>, Vec<RawFd>)> {
    let mut buf = vec![0u8; 65536];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg_buf = vec![0u64; 64];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_buf.len() * 8;
    // SAFETY: msg references live buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: iterating the control messages the kernel just wrote within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count =
                    ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..count {
                    fds.push(std::ptr::read_unaligned(data.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    buf.truncate(n as usize);
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shapes() {
        let r = Reply::Ready {
            cgroup: CgroupInfo {
                version: 1,
                dirs: vec!["/a".into()],
            },
            memory_events: "/a/memory.oom_control".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"type":"ready","cgroup":{"version":1,"dirs":["/a"]},"memoryEvents":"/a/memory.oom_control"})
        );
        let e = Reply::error(None, &SandboxError::KernelCheck("missing: Landlock".into()));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type":"error","step":"kernel_check","message":"missing: Landlock"})
        );
        let s = Reply::Spawned {
            id: 7.into(),
            pid: 12,
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"type":"spawned","id":7,"pid":12})
        );
        let k = Reply::Killed { pid: 12, count: 3 };
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!({"type":"killed","pid":12,"count":3})
        );
    }

    #[test]
    fn request_parsing() {
        assert_eq!(
            parse_request(br#"{"type":"spawn","id":7,"language":"python"}"#).unwrap(),
            Request::Spawn {
                id: 7.into(),
                language: Language::Python
            }
        );
        let (id, e) = parse_request(br#"{"type":"spawn","id":8,"language":"ruby"}"#).unwrap_err();
        assert_eq!(id, Some(8.into()));
        assert_eq!(e.step(), "protocol");
        assert_eq!(
            parse_request(br#"{"type":"kill","pid":12}"#).unwrap(),
            Request::Kill { pid: 12 }
        );
        assert_eq!(
            parse_request(br#"{"type":"kill","pid":-3}"#).unwrap(),
            Request::Kill { pid: -3 }
        );
        assert_eq!(
            parse_request(br#"{"type":"kill","pid":"x"}"#)
                .unwrap_err()
                .1
                .step(),
            "protocol"
        );
    }

    #[test]
    fn fds_travel_over_seqpacket() {
        let (a, b) = crate::sys::seqpacket_pair().unwrap();
        let (r, w) = crate::sys::pipe().unwrap();
        use std::os::fd::AsRawFd;
        send(
            a.as_raw_fd(),
            &Reply::Spawned {
                id: 1.into(),
                pid: 2,
            },
            &[r.as_raw_fd(), w.as_raw_fd()],
        )
        .unwrap();
        let (body, fds) = recv_with_fds(b.as_raw_fd()).unwrap();
        assert_eq!(fds.len(), 2);
        assert!(String::from_utf8(body).unwrap().contains("spawned"));
        // SAFETY: closing fds we received and own.
        unsafe {
            for f in fds {
                libc::close(f);
            }
        }
    }
}
