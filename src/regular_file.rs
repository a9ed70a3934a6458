//! Opening a path only when it is a regular file, and reading it with a size cap. A path that
//! is (or is a symlink to) `/dev/zero`, a FIFO or a terminal would make a plain read hang or
//! fill memory: glow.toml, `fs::read` and `artifact::put` refuse those instead.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest `glow.toml` read.
pub const CONFIG_CAP: u64 = 1024 * 1024;
/// The largest file `fs::read` returns.
pub const READ_CAP: u64 = 64 * 1024 * 1024;

/// Opens `path` for reading if it is a regular file (after following symlinks). The open does
/// not block on a FIFO (`O_NONBLOCK`), and the check is made on the opened file, so the file
/// read is the file checked.
pub fn open(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file ({})",
            kind_of(&meta)
        )));
    }
    Ok(file)
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// The bytes of a regular file of at most `cap` bytes.
pub fn read(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let file = open(path)?;
    let size = file.metadata()?.len();
    if size > cap {
        return Err(too_large(size, cap));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows while it is read.
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64, cap));
    }
    Ok(bytes)
}

/// The text of a regular UTF-8 file of at most `cap` bytes.
pub fn read_to_string(path: &Path, cap: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, cap)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

fn too_large(size: u64, cap: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "{} is larger than the {} this reads",
        bytesize::ByteSize(size),
        bytesize::ByteSize(cap)
    ))
}
