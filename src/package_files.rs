//! Where the package's files are: beside the `.node` file this code was loaded from.

use std::path::PathBuf;

/// The directory of the loaded addon, found with dladdr on one of its own functions.
pub fn package_dir() -> PathBuf {
    // SAFETY: Dl_info is plain old data; all zeroes is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads a code address of this library and fills `info`; the
    // returned file name points into the loader's own tables and is copied at once.
    let found = unsafe { libc::dladdr(package_dir as *const libc::c_void, &mut info) } != 0;
    if found && !info.dli_fname.is_null() {
        // SAFETY: dli_fname is a NUL-terminated string owned by the dynamic loader.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        let path = PathBuf::from(std::ffi::OsStr::new(
            std::str::from_utf8(name.to_bytes()).unwrap_or(""),
        ));
        if let Some(dir) = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
        {
            return dir;
        }
    }
    PathBuf::from(".")
}
