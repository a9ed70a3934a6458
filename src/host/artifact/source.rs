//! What `put` reads and how its copy is made. `put` of a symlink to `/etc` used to copy
//! `/etc/shadow` (0640) into a store file of 0644, and `put("/dev/zero")` read for ever:
//! - only regular files are read (a FIFO, a device or a socket is refused, without blocking
//!   on it), and a file larger than [`PUT_CAP`] is refused;
//! - a stored file never has wider permissions than its source (at most 0644, and only the
//!   bits the source has);
//! - names (and so the store's paths, the manifest and a bundle's members) are redacted: a
//!   secret in a file name becomes `[redacted]`.

use super::HostContext;
use crate::options::{HostResult, host_error};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The largest single file `artifact::put` stores.
pub const PUT_CAP: u64 = 16 * 1024 * 1024 * 1024;

/// Opens a source file of `put`: a regular file no larger than the cap.
pub fn open(path: &Path) -> HostResult<File> {
    let refuse = |why: String| {
        host_error(format!(
            "artifact::put: cannot read '{}': {why}",
            path.display()
        ))
    };
    let file = crate::regular_file::open(path).map_err(|e| refuse(e.to_string()))?;
    let size = file.metadata().map_err(|e| refuse(e.to_string()))?.len();
    if size > PUT_CAP {
        return Err(refuse(format!(
            "{} is larger than the {} a stored file may be",
            bytesize::ByteSize(size),
            bytesize::ByteSize(PUT_CAP)
        )));
    }
    Ok(file)
}

/// Narrows the permissions of the store's copy to the bits its source has.
pub fn narrow_permissions(copy: &File, source: &File) -> std::io::Result<()> {
    let source_mode = source.metadata()?.permissions().mode();
    let copy_mode = copy.metadata()?.permissions().mode();
    let mode = copy_mode & source_mode & 0o777;
    copy.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// An artifact name with any secret in it masked.
pub fn redacted_name(ctx: &HostContext, name: &str) -> String {
    ctx.redact(name)
}
