//! `Files`: a session's files. The rules are `codebay_core::Files`'; this file converts
//! JavaScript values to them and results back.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use codebay_core::{CodebayError, ErrorCode, ErrorKind, FileKind, Session};

use crate::errors::{self, is};

/// A session's files: `/home/user` (relative paths are under it) and `/tmp`.
#[napi]
pub struct Files {
    inner: codebay_core::Files,
}

/// One entry of `files.list()`.
#[napi(object)]
pub struct FileEntry {
    pub name: String,
    /// The absolute path inside the sandbox.
    pub path: String,
    #[napi(js_name = "type", ts_type = "'file' | 'dir'")]
    pub kind: String,
    /// Bytes (of a directory: what its file system says).
    pub size: f64,
}

impl From<codebay_core::FileEntry> for FileEntry {
    fn from(e: codebay_core::FileEntry) -> Self {
        FileEntry {
            name: e.name,
            path: e.path,
            kind: match e.kind {
                FileKind::File => "file",
                FileKind::Dir => "dir",
            }
            .into(),
            size: e.size as f64,
        }
    }
}

impl Files {
    pub(crate) fn wrap(session: Arc<dyn Session>) -> Files {
        Files {
            inner: codebay_core::Files::new(session),
        }
    }
}

#[napi]
impl Files {
    /// The files of any session: a LocalSession's directly, another's (with
    /// `callMcpTool`) through its `write_file`, `read_file`, `list_files` and
    /// `remove_file` tools.
    #[napi(constructor, ts_args_type = "session: SessionLike")]
    pub fn new(env: &Env, session: Unknown) -> Result<Self> {
        let session = crate::code::session_of(env, session, "Files")?;
        Ok(Files::wrap(session))
    }

    /// Replaces (or creates, with missing directories) the file. A string is written
    /// as UTF-8. Rejects with `ERR_CODEBAY_PATH_OUTSIDE` for a path outside
    /// `/home/user` and `/tmp` (or a symlink that leads out), `ERR_CODEBAY_NO_SPACE`
    /// when it does not fit; nothing is written then.
    #[napi(
        ts_args_type = "path: string, data: string | Buffer | Uint8Array",
        ts_return_type = "Promise<void>"
    )]
    pub fn write<'env>(
        &self,
        env: &'env Env,
        path: Unknown,
        data: Unknown,
    ) -> Result<PromiseRaw<'env, ()>> {
        let started = path_of(&path, "write").and_then(|path| {
            let bytes = bytes_of(&data)?;
            self.inner.write(&path, bytes)
        });
        errors::settle_started(env, started)
    }

    /// The file's bytes, or its text with `{ format: 'text' }` (UTF-8; invalid
    /// sequences become U+FFFD).
    #[napi(
        ts_generic_types = "F extends 'bytes' | 'text' = 'bytes'",
        ts_args_type = "path: string, options?: { format?: F }",
        ts_return_type = "Promise<F extends 'text' ? string : Buffer>"
    )]
    pub fn read<'env>(
        &self,
        env: &'env Env,
        path: Unknown,
        options: Unknown,
    ) -> Result<PromiseRaw<'env, Either<Buffer, String>>> {
        let started = path_of(&path, "read").and_then(|path| {
            let text = text_format(env, &options)?;
            Ok((self.inner.read(&path)?, text))
        });
        let reading = started.map(|(read, text)| async move {
            let bytes = read.await?;
            Ok(if text {
                Either::B(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                Either::A(Buffer::from(bytes))
            })
        });
        errors::settle_started(env, reading)
    }

    /// The entries of a directory (default `/home/user`), sorted by name.
    #[napi(
        ts_args_type = "path?: string",
        ts_return_type = "Promise<Array<FileEntry>>"
    )]
    pub fn list<'env>(
        &self,
        env: &'env Env,
        path: Unknown,
    ) -> Result<PromiseRaw<'env, Vec<FileEntry>>> {
        let path = if is(&path, ValueType::Undefined) {
            Ok(".".to_owned())
        } else {
            path_of(&path, "list")
        };
        let listing = path
            .and_then(|p| self.inner.list(&p))
            .map(|list| async move { Ok(list.await?.into_iter().map(FileEntry::from).collect()) });
        errors::settle_started(env, listing)
    }

    /// Removes a file, or a directory with everything in it.
    #[napi(ts_args_type = "path: string", ts_return_type = "Promise<void>")]
    pub fn remove<'env>(&self, env: &'env Env, path: Unknown) -> Result<PromiseRaw<'env, ()>> {
        errors::settle_started(
            env,
            path_of(&path, "remove").and_then(|p| self.inner.remove(&p)),
        )
    }

    /// Whether something is at the path (a symlink that leads out is refused, not false).
    #[napi(ts_args_type = "path: string", ts_return_type = "Promise<boolean>")]
    pub fn exists<'env>(&self, env: &'env Env, path: Unknown) -> Result<PromiseRaw<'env, bool>> {
        errors::settle_started(
            env,
            path_of(&path, "exists").and_then(|p| self.inner.exists(&p)),
        )
    }
}

fn invalid(message: String) -> CodebayError {
    CodebayError::new(ErrorCode::InvalidArgument, ErrorKind::TypeError, message)
}

fn path_of(value: &Unknown, method: &str) -> std::result::Result<String, CodebayError> {
    if !is(value, ValueType::String) {
        return Err(invalid(format!(
            "files.{method}: the path must be a string, got {}",
            crate::code::type_name(value.get_type().unwrap_or(ValueType::Unknown))
        )));
    }
    // SAFETY: just checked to be a string of its env.
    unsafe { String::from_napi_value(value.env(), value.raw()) }.map_err(errors::from_napi)
}

/// The bytes of a string (UTF-8), a Buffer or any Uint8Array.
fn bytes_of(value: &Unknown) -> std::result::Result<Vec<u8>, CodebayError> {
    if is(value, ValueType::String) {
        // SAFETY: just checked to be a string of its env.
        let s = unsafe { String::from_napi_value(value.env(), value.raw()) }
            .map_err(errors::from_napi)?;
        return Ok(s.into_bytes());
    }
    let mut typed = false;
    // SAFETY: a live value of its env; the out-pointer is a live bool.
    unsafe { napi::sys::napi_is_typedarray(value.env(), value.raw(), &mut typed) };
    if typed {
        // SAFETY: a typed array of its env; a non-Uint8Array fails to convert.
        if let Ok(array) = unsafe { Uint8Array::from_napi_value(value.env(), value.raw()) } {
            return Ok(array.to_vec());
        }
    }
    Err(invalid(
        "files.write: data must be a string, a Buffer or a Uint8Array".into(),
    ))
}

/// Whether `read`'s options ask for text.
fn text_format(env: &Env, options: &Unknown) -> std::result::Result<bool, CodebayError> {
    if is(options, ValueType::Undefined) || is(options, ValueType::Null) {
        return Ok(false);
    }
    // SAFETY: a live value of this env; converted as plain data.
    let value = unsafe { serde_json::Value::from_napi_value(env.raw(), options.raw()) }
        .map_err(errors::from_napi)?;
    let map = match value {
        serde_json::Value::Object(map) => map,
        _ => return Err(invalid("files.read: options must be an object".into())),
    };
    codebay_core::options::check_keys("files.read", &map, &["format"])?;
    match map.get("format") {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::String(f)) if f == "bytes" => Ok(false),
        Some(serde_json::Value::String(f)) if f == "text" => Ok(true),
        Some(other) => Err(invalid(format!(
            "files.read: format must be 'bytes' or 'text', got {other}"
        ))),
    }
}
