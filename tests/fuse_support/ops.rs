//! Small system-call wrappers shared by the FUSE overlay tests (errors as strings that
//! name the call and the path, as the tests report them).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `r`, its error prefixed with `what`.
pub fn sys<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// mknod(2) of `p`.
pub fn mknod(p: &Path, mode: u32, dev: u64) -> Result<(), String> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(format!(
            "mknod {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// lsetxattr(2) of `name` on `p` (the link itself).
pub fn setxattr(p: &Path, name: &str, v: &[u8]) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid C strings and buffer.
    if unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// lremovexattr(2) of `name` on `p` (the link itself).
pub fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid C strings.
    if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The raw value of extended attribute `name` of `p` (the link itself), if it has one.
pub fn xattrs_raw(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut v = vec![0u8; 256];
    // SAFETY: buffer and length match.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if r < 0 {
        return None;
    }
    v.truncate(r as usize);
    Some(v)
}
