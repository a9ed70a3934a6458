//! Copying into the store: one streaming pass that copies and hashes with a large buffer (sha2
//! picks the CPU's SHA extensions at run time), with the kernel asked to write back as it goes
//! so the final fsync is short; and the walk of a directory that `put` stores recursively.

use crate::host::HostContext;
use crate::options::HostResult;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Read/write chunk for copy-and-hash: large enough that syscalls and hashing calls amortise.
const CHUNK: usize = 1024 * 1024;

/// Buffers in flight between the copying thread and the hashing thread.
const POOL: usize = 4;

/// Every this many bytes written, the kernel is asked to start writing them to disk, so the
/// fsync at the end waits for the last few MiB instead of the whole file.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

/// Copies `reader` into `out` (when given) and hashes it in the same pass: each chunk is read
/// once, written by this thread and hashed by a helper thread meanwhile (a small pool of
/// buffers goes round), so hashing overlaps the write instead of adding to it.
pub(super) fn copy_hashed(
    ctx: &HostContext,
    reader: &mut (impl Read + Send),
    out: Option<&mut File>,
) -> HostResult<Result<(u64, String), std::io::Error>> {
    let token = ctx.current_token();
    let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(POOL);
    let (give_back, free) = std::sync::mpsc::sync_channel::<Vec<u8>>(POOL);
    for _ in 0..POOL {
        let _ = give_back.send(vec![0u8; CHUNK]);
    }
    let mut out = out;
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for (buffer, n) in chunks {
                hasher.update(&buffer[..n]);
                let _ = give_back.send(buffer);
            }
            hex::encode(hasher.finalize())
        });
        let mut size = 0u64;
        let mut flushed = 0u64;
        let copied = loop {
            if token.is_cancelled() {
                break Err(None);
            }
            let Ok(mut buffer) = free.recv() else {
                break Err(None);
            };
            let n = match reader.read(&mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    let _ = to_hasher.send((buffer, 0));
                    continue;
                }
                Err(e) => break Err(Some(e)),
            };
            if let Some(out) = out.as_deref_mut() {
                if let Err(e) = out.write_all(&buffer[..n]) {
                    break Err(Some(e));
                }
                if size + n as u64 - flushed >= WRITEBACK_EVERY {
                    start_writeback(out, flushed, size + n as u64 - flushed);
                    flushed = size + n as u64;
                }
            }
            size += n as u64;
            if to_hasher.send((buffer, n)).is_err() {
                break Err(None);
            }
        };
        drop(to_hasher);
        let sha256 = hasher.join().unwrap_or_default();
        match copied {
            Ok(()) => Ok(Ok((size, sha256))),
            Err(Some(e)) => Ok(Err(e)),
            Err(None) => Err(ctx.cancelled_error()),
        }
    })
}

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting (Linux
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works while the copy goes on, and the
/// final fsync, which still guarantees durability, has little left to do. A failure only
/// loses the head start.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor we own, with no pointers.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// One file of a `put`: its source and the name it gets in the store.
pub(super) struct SourceFile {
    pub(super) source: PathBuf,
    pub(super) name: String,
}

/// Lists the files under `dir` (sorted, recursive). Symlinks are followed only when they stay
/// inside `dir` and point at a file; the others are returned as skipped, with the reason.
pub(super) fn walk(
    dir: &Path,
    real_dir: &Path,
    prefix: &str,
    files: &mut Vec<SourceFile>,
    skipped: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, real_dir, &name, files, skipped)?;
        } else if kind.is_file() {
            files.push(SourceFile { source: path, name });
        } else if kind.is_symlink() {
            match std::fs::canonicalize(&path) {
                Ok(real) if real.starts_with(real_dir) && real.is_file() => {
                    files.push(SourceFile { source: real, name })
                }
                Ok(real) if !real.starts_with(real_dir) => {
                    skipped.push(format!(
                        "{} (a symlink out of the directory)",
                        path.display()
                    ));
                }
                _ => skipped.push(format!(
                    "{} (a symlink to a directory or nothing)",
                    path.display()
                )),
            }
        } else {
            skipped.push(format!("{} (not a regular file)", path.display()));
        }
    }
    Ok(())
}
