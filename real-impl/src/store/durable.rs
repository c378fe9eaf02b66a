//! Making files and directories durable: fsync helpers and the atomic small-file write
//! used for the local version (write a temporary file, fsync it, rename it, fsync the
//! directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Fsyncs one file or directory.
pub fn fsync(path: &Path) -> io::Result<()> {
    // Directories can only be opened read-only; fsync works on such a handle on Linux.
    File::open(path)?.sync_all()
}

/// Fsyncs every directory under `dir` (and `dir` itself); with `files`, every regular file
/// too. A missing `dir` is not an error.
pub fn fsync_tree(dir: &Path, files: bool) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fsync_tree(&entry.path(), files)?;
        } else if files && kind.is_file() {
            fsync(&entry.path())?;
        }
    }
    fsync(dir)
}

/// Replaces `path`'s content atomically and durably.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_content_and_leave_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("R1.version");
        write_atomic(&p, b"3").expect("write");
        write_atomic(&p, b"4").expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"4");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
        fsync_tree(dir.path(), true).expect("fsync");
        fsync_tree(&dir.path().join("absent"), true).expect("absent is fine");
    }
}
