//! The file agent: this binary run inside the sandbox (`codebay-sandbox file-agent`) by
//! init, as the code's user and with the code's confinement, so a file operation can do
//! nothing the code could not. It serves `codebay_protocol::files` requests on fd 3 and
//! answers on fd 4.
//!
//! Every path is resolved with openat2(RESOLVE_BENEATH) from its root (`/home/user` or
//! `/tmp`): the kernel refuses a `..` or a symlink that leads out, whatever the code
//! made of the tree between two operations. A write goes to a temporary file beside
//! the target and is renamed over it, so a refused or failed write leaves nothing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use codebay_protocol::files::{place, MAX_FILE_LINE_BYTES, MAX_LIST_ENTRIES};
use codebay_protocol::{FileEntry, FileErrorCode, FileKind, FileReply, FileRequest};

use crate::sys;

const REQUEST_FD: RawFd = 3;
const REPLY_FD: RawFd = 4;

type Refusal = (FileErrorCode, String);

/// Serves until the engine closes the request pipe. Non-zero when the pipes broke.
pub fn serve() -> i32 {
    // SAFETY: init hands the agent these two descriptors (docs/internals.md §3) and
    // nothing else owns them in this process.
    let (input, output) = unsafe { (File::from_raw_fd(REQUEST_FD), File::from_raw_fd(REPLY_FD)) };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut output = BufWriter::with_capacity(1 << 20, output);
    loop {
        let mut line = Vec::new();
        match (&mut input)
            .take(MAX_FILE_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return 0,
            Ok(_) if line.last() == Some(&b'\n') => {}
            _ => return 2,
        }
        let Ok(request) = serde_json::from_slice::<FileRequest>(&line) else {
            // Its data, if any, cannot be told from the next request: stop.
            let _ = reply(&mut output, &failed(0, "the request is not a file request"));
            return 2;
        };
        if serve_one(request, &mut input, &mut output).is_err() {
            return 2;
        }
    }
}

fn serve_one(
    request: FileRequest,
    input: &mut impl Read,
    output: &mut BufWriter<File>,
) -> io::Result<()> {
    let id = request.id();
    let answer = match request {
        FileRequest::Write { path, size, .. } => {
            let mut data = Read::by_ref(input).take(size);
            let done = write(&path, &mut data, size, id);
            // The whole payload is read whatever happened, or the next request is lost.
            io::copy(&mut data, &mut io::sink())?;
            done.map(|()| FileReply::Done { id })
        }
        FileRequest::Read { path, .. } => match open_file(&path) {
            Ok((file, size)) => return send_file(id, file, size, output),
            Err(refused) => Err(refused),
        },
        FileRequest::List { path, .. } => {
            list(&path).map(|entries| FileReply::Entries { id, entries })
        }
        FileRequest::Remove { path, .. } => remove(&path).map(|()| FileReply::Done { id }),
        FileRequest::Exists { path, .. } => {
            exists(&path).map(|exists| FileReply::Exists { id, exists })
        }
    };
    let answer = answer.unwrap_or_else(|(code, message)| FileReply::Error { id, code, message });
    reply(output, &answer)
}

fn reply(output: &mut BufWriter<File>, message: &FileReply) -> io::Result<()> {
    serde_json::to_writer(&mut *output, message)?;
    output.write_all(b"\n")?;
    output.flush()
}

fn failed(id: u64, message: &str) -> FileReply {
    FileReply::Error {
        id,
        code: FileErrorCode::Failed,
        message: message.into(),
    }
}

/// `data` with `size` bytes of the file, then `done`, or an `error` if the file
/// shrank meanwhile (what is missing was sent as zeros: the byte count is the frame).
fn send_file(id: u64, file: File, size: u64, output: &mut BufWriter<File>) -> io::Result<()> {
    reply(output, &FileReply::Data { id, size })?;
    let sent = io::copy(&mut file.take(size), output)?;
    if sent < size {
        io::copy(&mut io::repeat(0).take(size - sent), output)?;
        return reply(output, &failed(id, "the file shrank while it was read"));
    }
    reply(output, &FileReply::Done { id })
}

// ------------------------------------------------------------------ resolution

/// The root directory of a placed path, and the rest below it.
struct Placed {
    root: OwnedFd,
    root_path: &'static str,
    rest: String,
    shown: String,
}

fn placed(path: &str) -> Result<Placed, Refusal> {
    let (root_path, rest) = place(path)?;
    let root = open_dir_path(root_path).map_err(|e| refusal(path, e))?;
    let shown = if rest.is_empty() {
        root_path.to_owned()
    } else {
        format!("{root_path}/{rest}")
    };
    Ok(Placed {
        root,
        root_path,
        rest,
        shown,
    })
}

fn open_dir_path(path: &str) -> io::Result<OwnedFd> {
    let c = sys::cstring(path)?;
    // SAFETY: c is NUL-terminated; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    sys::check(fd)?;
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 below `dir`: no `..` or symlink may lead out of it, no magic links.
fn open_beneath(dir: &OwnedFd, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = sys::cstring(if rel.is_empty() { "." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: c is NUL-terminated and `how` is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    sys::check_long(fd)?;
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `struct open_how` (linux/openat2.h); libc's is non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a failed call means for the path it was about.
fn refusal(path: &str, e: io::Error) -> Refusal {
    let code = match e.raw_os_error() {
        // RESOLVE_BENEATH: a `..` or a symlink (absolute, or relative and leading out).
        Some(libc::EXDEV) | Some(libc::ELOOP) => {
            return (
                FileErrorCode::PathOutside,
                format!("{path:?} leads outside /home/user and /tmp (through a symlink or ..)"),
            )
        }
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
            return (FileErrorCode::NotFound, format!("{path:?} does not exist"))
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => FileErrorCode::NoSpace,
        Some(libc::EISDIR) | Some(libc::ENXIO) => FileErrorCode::NotAFile,
        _ => FileErrorCode::Failed,
    };
    (code, format!("{path:?}: {e}"))
}

fn stat_at(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let c = sys::cstring(name)?;
    // SAFETY: zeroed is a valid stat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid buffer.
    sys::check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn kind_of(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// The parent directory of a placed path (made, with its parents, when `make`), and
/// the last name.
fn parent(p: &Placed, make: bool) -> Result<(OwnedFd, String), Refusal> {
    let (dir, name) = match p.rest.rsplit_once('/') {
        Some((dir, name)) => (dir.to_owned(), name.to_owned()),
        None => (String::new(), p.rest.clone()),
    };
    let fd = if make {
        make_dirs(&p.root, &dir)
    } else {
        open_beneath(&p.root, &dir, libc::O_PATH | libc::O_DIRECTORY, 0)
    }
    .map_err(|e| refusal(&p.shown, e))?;
    Ok((fd, name))
}

/// `mkdir -p` below `root`, each level resolved from the root.
fn make_dirs(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    match open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !rel.is_empty() => {
            let (up, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let up = make_dirs(root, up)?;
            let c = sys::cstring(name)?;
            // SAFETY: c is NUL-terminated.
            let made = unsafe { libc::mkdirat(up.as_raw_fd(), c.as_ptr(), 0o755) };
            if made < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
            open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY, 0)
        }
        other => other,
    }
}

// ------------------------------------------------------------------ operations

fn write(path: &str, data: &mut dyn Read, size: u64, id: u64) -> Result<(), Refusal> {
    let p = placed(path)?;
    if p.rest.is_empty() {
        return Err(not_a_file(&p.shown, "is a directory"));
    }
    let (dir, name) = parent(&p, true)?;
    match stat_at(&dir, &name) {
        Ok(st) if kind_of(&st) == libc::S_IFREG => {}
        Ok(st) if kind_of(&st) == libc::S_IFLNK => {
            return Err(match open_beneath(&p.root, &p.rest, libc::O_PATH, 0) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP)) => {
                    refusal(&p.shown, e)
                }
                _ => not_a_file(&p.shown, "is a symbolic link: write to the path it names"),
            })
        }
        Ok(st) if kind_of(&st) == libc::S_IFDIR => {
            return Err(not_a_file(&p.shown, "is a directory"))
        }
        Ok(_) => {
            return Err(not_a_file(
                &p.shown,
                "is not a regular file (a fifo, socket or device)",
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(refusal(&p.shown, e)),
    }
    let free = free_bytes(&dir).map_err(|e| refusal(&p.shown, e))?;
    let needed = size.div_ceil(4096) * 4096;
    if needed > free {
        return Err((
            FileErrorCode::NoSpace,
            format!(
                "{size} bytes do not fit: {} has {free} bytes free",
                p.root_path
            ),
        ));
    }
    let temp = format!(".{name}.codebay-{}-{id}", std::process::id());
    let temp_c = sys::cstring(&temp).map_err(|e| refusal(&p.shown, e))?;
    // SAFETY: temp_c is NUL-terminated; the fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            temp_c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    sys::check(fd).map_err(|e| refusal(&p.shown, e))?;
    // SAFETY: fd was just opened and is owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = io::copy(data, &mut file).and_then(|n| {
        if n == size {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the data ended early",
            ))
        }
    });
    let name_c = sys::cstring(&name).map_err(|e| refusal(&p.shown, e))?;
    let renamed = written.and_then(|()| {
        // SAFETY: both names are NUL-terminated, both in `dir`.
        sys::check(unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                temp_c.as_ptr(),
                dir.as_raw_fd(),
                name_c.as_ptr(),
            )
        })
        .map(drop)
    });
    if let Err(e) = renamed {
        // SAFETY: temp_c is NUL-terminated.
        unsafe { libc::unlinkat(dir.as_raw_fd(), temp_c.as_ptr(), 0) };
        return Err(refusal(&p.shown, e));
    }
    Ok(())
}

fn not_a_file(shown: &str, why: &str) -> Refusal {
    (FileErrorCode::NotAFile, format!("{shown:?} {why}"))
}

fn free_bytes(dir: &OwnedFd) -> io::Result<u64> {
    // SAFETY: zeroed is a valid statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid buffer.
    sys::check(unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut st) })?;
    Ok(st.f_bavail * st.f_frsize)
}

/// A regular file opened for reading, and its size. O_NONBLOCK: a fifo opens at once
/// (and is then refused) instead of waiting for a writer.
fn open_file(path: &str) -> Result<(File, u64), Refusal> {
    let p = placed(path)?;
    let fd = open_beneath(
        &p.root,
        &p.rest,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )
    .map_err(|e| refusal(&p.shown, e))?;
    let file = File::from(fd);
    let md = file.metadata().map_err(|e| refusal(&p.shown, e))?;
    if md.is_dir() {
        return Err(not_a_file(&p.shown, "is a directory"));
    }
    if !md.is_file() {
        return Err(not_a_file(
            &p.shown,
            "is not a regular file (a fifo, socket or device)",
        ));
    }
    Ok((file, md.len()))
}

fn list(path: &str) -> Result<Vec<FileEntry>, Refusal> {
    let p = placed(path)?;
    let fd =
        open_beneath(&p.root, &p.rest, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                not_a_file(&p.shown, "is not a directory")
            } else {
                refusal(&p.shown, e)
            }
        })?;
    let mut entries = Vec::new();
    for entry in names(&fd).map_err(|e| refusal(&p.shown, e))? {
        if entries.len() == MAX_LIST_ENTRIES {
            return Err((
                FileErrorCode::Failed,
                format!("{:?} has more than {MAX_LIST_ENTRIES} entries", p.shown),
            ));
        }
        let Ok(st) = stat_at(&fd, &entry) else {
            continue;
        };
        entries.push(FileEntry {
            path: format!("{}/{entry}", p.shown),
            name: entry,
            kind: if kind_of(&st) == libc::S_IFDIR {
                FileKind::Dir
            } else {
                FileKind::File
            },
            size: st.st_size as u64,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The names in a directory (without `.` and `..`), read through the fd itself.
fn names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    let mut v = Vec::new();
    for entry in listing {
        let name = entry?.file_name();
        v.push(String::from_utf8_lossy(name.as_bytes()).into_owned());
    }
    Ok(v)
}

fn remove(path: &str) -> Result<(), Refusal> {
    let p = placed(path)?;
    if p.rest.is_empty() {
        return Err((
            FileErrorCode::Failed,
            format!("{} itself cannot be removed", p.root_path),
        ));
    }
    let (dir, name) = parent(&p, false)?;
    let st = stat_at(&dir, &name).map_err(|e| refusal(&p.shown, e))?;
    let done = if kind_of(&st) == libc::S_IFDIR {
        remove_tree(&dir, &name)
    } else {
        unlink(&dir, &name, 0)
    };
    done.map_err(|e| refusal(&p.shown, e))
}

fn unlink(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<()> {
    let c = sys::cstring(name)?;
    // SAFETY: c is NUL-terminated.
    sys::check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// Removes the directory `name` of `dir` and everything in it, never following a symlink.
fn remove_tree(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let c = sys::cstring(name)?;
    // SAFETY: c is NUL-terminated; the fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    sys::check(fd)?;
    // SAFETY: fd was just opened and is owned by nothing else.
    let sub = unsafe { OwnedFd::from_raw_fd(fd) };
    for entry in names(&sub)? {
        let st = stat_at(&sub, &entry)?;
        if kind_of(&st) == libc::S_IFDIR {
            remove_tree(&sub, &entry)?;
        } else {
            unlink(&sub, &entry, 0)?;
        }
    }
    unlink(dir, name, libc::AT_REMOVEDIR)
}

fn exists(path: &str) -> Result<bool, Refusal> {
    let p = placed(path)?;
    match open_beneath(&p.root, &p.rest, libc::O_PATH, 0) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(false),
        Err(e) => Err(refusal(&p.shown, e)),
    }
}
