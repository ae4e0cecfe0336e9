//! The helper's end of the control socket: [`HelperRequest`]s in, [`HelperReply`]s out,
//! one JSON object per SOCK_SEQPACKET datagram (the messages themselves are defined in
//! `codebay_protocol::helper`, once for the engine and the helper).

use std::os::fd::RawFd;

use codebay_protocol::helper::MAX_MESSAGE_BYTES;
use codebay_protocol::{HelperReply, HelperRequest};

use crate::{sys, SandboxError};

/// The helper's fd 0 is the control socket.
pub const CONTROL_FD: RawFd = 0;

pub fn error_reply(id: Option<u64>, e: &SandboxError) -> HelperReply {
    HelperReply::Error {
        id,
        step: e.step().into(),
        message: e.to_string(),
    }
}

/// Parses a request; on failure also returns the request's `id` when one can be read,
/// so the error reply still names the request it answers.
pub fn parse_request(bytes: &[u8]) -> Result<HelperRequest, (Option<u64>, SandboxError)> {
    serde_json::from_slice(bytes).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
        (id, SandboxError::Protocol(format!("invalid request: {e}")))
    })
}

/// A receive buffer for [`recv`], allocated once per reader.
pub fn buffer() -> Vec<u8> {
    vec![0u8; MAX_MESSAGE_BYTES]
}

/// Blocks for one datagram; `Ok(None)` on EOF (the engine closed its end). The engine
/// never sends descriptors to the helper; any that came are closed here.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> Result<Option<&[u8]>, SandboxError> {
    let (n, _fds) = sys::recv_with_fds(fd, buf)
        .map_err(|e| SandboxError::Protocol(format!("cannot read the control socket: {e}")))?;
    Ok((n > 0).then_some(&buf[..n]))
}

pub fn send(fd: RawFd, reply: &HelperReply, fds: &[RawFd]) -> Result<(), SandboxError> {
    let body = serde_json::to_vec(reply).expect("replies always serialise");
    sys::send_with_fds(fd, &body, fds)
        .map_err(|e| SandboxError::Protocol(format!("cannot write the control socket: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn error_replies_name_their_request() {
        let e = error_reply(Some(8), &SandboxError::Spawn("/x is not visible".into()));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type":"error","id":8,"step":"spawn","message":"/x is not visible"})
        );
        let e = error_reply(None, &SandboxError::KernelCheck("missing: Landlock".into()));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type":"error","step":"kernel_check","message":"missing: Landlock"})
        );
    }

    #[test]
    fn request_parsing() {
        assert_eq!(
            parse_request(br#"{"type":"kill","id":10,"context":"ctx-2","keepPid":12}"#).unwrap(),
            HelperRequest::Kill {
                id: 10,
                context: "ctx-2".into(),
                keep_pid: Some(12)
            }
        );
        // The old language-based spawn is gone; its id still reaches the error.
        let (id, e) = parse_request(br#"{"type":"spawn","id":8,"language":"python"}"#).unwrap_err();
        assert_eq!((id, e.step()), (Some(8), "protocol"));
        let (id, e) = parse_request(br#"{"type":"kill","pid":12}"#).unwrap_err();
        assert_eq!((id, e.step()), (None, "protocol"));
        assert_eq!(parse_request(b"\xff").unwrap_err().0, None);
    }

    #[test]
    fn replies_reach_the_peer_and_eof_is_none() {
        let (a, b) = sys::seqpacket_pair().unwrap();
        send(a.as_raw_fd(), &HelperReply::Killed { id: 3, count: 2 }, &[]).unwrap();
        let mut buf = buffer();
        let got = recv(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(got, br#"{"type":"killed","id":3,"count":2}"#);
        drop(a);
        assert_eq!(recv(b.as_raw_fd(), &mut buf).unwrap(), None);
    }
}
