//! The session's files, through the sandbox's file agent (docs/internals.md §6): the
//! helper binary run by init as the code's user, with the code's confinement, in a
//! cgroup of its own (`f-<n>`), started at the first file operation and kept. One
//! operation at a time; each has a deadline, past which the agent is killed and the
//! next operation starts another.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use codebay_protocol::files::{FILE_AGENT_ARG, FILE_AGENT_INSIDE, MAX_FILE_LINE_BYTES};
use codebay_protocol::helper::HOME;
use codebay_protocol::{FileEntry, FileReply, FileRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

use super::context::Shared;
use super::interpreter::random_id;
use crate::error::{CodebayError, ErrorCode};
use crate::files::file_error;

/// The longest a file operation may take, whatever its size (100 MiB takes ~0.3 s here).
const OPERATION_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct FileAgent {
    running: Mutex<Option<Running>>,
}

struct Running {
    cgroup: String,
    requests: pipe::Sender,
    replies: BufReader<pipe::Receiver>,
}

/// What an operation answered: its reply, and the file's bytes for a read.
type Answer = (FileReply, Vec<u8>);

impl FileAgent {
    pub async fn write(
        &self,
        shared: &Arc<Shared>,
        path: String,
        data: Vec<u8>,
    ) -> Result<(), CodebayError> {
        let size = data.len() as u64;
        let answer = self.call(shared, |id| FileRequest::Write { id, path, size }, &data);
        done(answer.await?)
    }

    pub async fn read(&self, shared: &Arc<Shared>, path: String) -> Result<Vec<u8>, CodebayError> {
        match self
            .call(shared, |id| FileRequest::Read { id, path }, &[])
            .await?
        {
            (FileReply::Done { .. }, data) => Ok(data),
            (other, _) => Err(refused(other)),
        }
    }

    pub async fn list(
        &self,
        shared: &Arc<Shared>,
        path: String,
    ) -> Result<Vec<FileEntry>, CodebayError> {
        match self
            .call(shared, |id| FileRequest::List { id, path }, &[])
            .await?
        {
            (FileReply::Entries { entries, .. }, _) => Ok(entries),
            (other, _) => Err(refused(other)),
        }
    }

    pub async fn remove(&self, shared: &Arc<Shared>, path: String) -> Result<(), CodebayError> {
        done(
            self.call(shared, |id| FileRequest::Remove { id, path }, &[])
                .await?,
        )
    }

    pub async fn exists(&self, shared: &Arc<Shared>, path: String) -> Result<bool, CodebayError> {
        match self
            .call(shared, |id| FileRequest::Exists { id, path }, &[])
            .await?
        {
            (FileReply::Exists { exists, .. }, _) => Ok(exists),
            (other, _) => Err(refused(other)),
        }
    }

    /// Sends the request `make` builds around a fresh id (with `data` after it) and
    /// waits for its answer.
    async fn call(
        &self,
        shared: &Arc<Shared>,
        make: impl FnOnce(u64) -> FileRequest,
        data: &[u8],
    ) -> Result<Answer, CodebayError> {
        let request = make(random_id());
        if shared.is_closed() {
            return Err(CodebayError::error(
                ErrorCode::SessionClosed,
                "The session is closed.",
            ));
        }
        let mut running = self.running.lock().await;
        if running.is_none() {
            *running = Some(start(shared).await?);
        }
        let agent = running.as_mut().expect("just started");
        let exchanged =
            tokio::time::timeout(OPERATION_DEADLINE, exchange(agent, &request, data)).await;
        match exchanged {
            Ok(Ok(answer)) => Ok(answer),
            failed => {
                // Its pipes may hold half a message: it cannot serve another. The next
                // operation starts a new one.
                let agent = running.take().expect("running");
                let _ = shared.sandbox.kill(random_id(), &agent.cgroup, None).await;
                let why = match failed {
                    Err(_) => format!(
                        "it did not answer within {} s",
                        OPERATION_DEADLINE.as_secs()
                    ),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => unreachable!("matched above"),
                };
                Err(if shared.sandbox.is_gone() {
                    CodebayError::error(
                        ErrorCode::FileFailed,
                        "The sandbox is gone: its helper exited.",
                    )
                } else {
                    CodebayError::error(
                        ErrorCode::FileFailed,
                        format!("The file operation failed: {why}."),
                    )
                })
            }
        }
    }
}

async fn start(shared: &Arc<Shared>) -> Result<Running, CodebayError> {
    let number = shared.spawns.fetch_add(1, Ordering::SeqCst) + 1;
    let cgroup = format!("f-{number}");
    let argv = vec![FILE_AGENT_INSIDE.to_owned(), FILE_AGENT_ARG.to_owned()];
    let failed = |why: String| {
        CodebayError::error(
            ErrorCode::FileFailed,
            format!("The file agent did not start: {why}"),
        )
    };
    let spawned = shared
        .sandbox
        .spawn(number, &cgroup, argv, BTreeMap::new(), HOME)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let fds = spawned.fds;
    let requests = pipe::Sender::from_owned_fd(fds.request_w).map_err(|e| failed(e.to_string()))?;
    let replies = pipe::Receiver::from_owned_fd(fds.reply_r).map_err(|e| failed(e.to_string()))?;
    // Its stdout, stderr and pidfd are not needed: it writes nothing else, and a dead
    // agent shows as a closed reply pipe.
    Ok(Running {
        cgroup,
        requests,
        replies: BufReader::with_capacity(1 << 20, replies),
    })
}

async fn exchange(
    agent: &mut Running,
    request: &FileRequest,
    data: &[u8],
) -> std::io::Result<Answer> {
    let mut line = serde_json::to_vec(request).expect("serialises");
    line.push(b'\n');
    agent.requests.write_all(&line).await?;
    if !data.is_empty() {
        agent.requests.write_all(data).await?;
    }
    let id = request.id();
    let reply = read_reply(&mut agent.replies, id).await?;
    let FileReply::Data { size, .. } = reply else {
        return Ok((reply, Vec::new()));
    };
    let size =
        usize::try_from(size).map_err(|_| broken("a file larger than this process can hold"))?;
    let mut content = vec![0; size];
    agent.replies.read_exact(&mut content).await?;
    // After the bytes: done, or an error (the file shrank while it was read).
    Ok((read_reply(&mut agent.replies, id).await?, content))
}

async fn read_reply(
    replies: &mut BufReader<pipe::Receiver>,
    id: u64,
) -> std::io::Result<FileReply> {
    let mut line = Vec::new();
    let n = (&mut *replies)
        .take(MAX_FILE_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(broken("the file agent exited"));
    }
    let reply: FileReply = serde_json::from_slice(&line)
        .map_err(|e| broken(&format!("its answer is not a file reply: {e}")))?;
    let got = reply.id();
    if got != id {
        return Err(broken(&format!("it answered request {got}, not {id}")));
    }
    Ok(reply)
}

fn broken(why: &str) -> std::io::Error {
    std::io::Error::other(why.to_owned())
}

fn done(answer: Answer) -> Result<(), CodebayError> {
    match answer {
        (FileReply::Done { .. }, _) => Ok(()),
        (other, _) => Err(refused(other)),
    }
}

/// The error of a reply that is not the operation's answer: the agent's refusal.
fn refused(reply: FileReply) -> CodebayError {
    match reply {
        FileReply::Error { code, message, .. } => file_error(code, message),
        other => CodebayError::error(
            ErrorCode::FileFailed,
            format!("The file agent answered {other:?}."),
        ),
    }
}
