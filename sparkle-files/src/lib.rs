//! # sparkle-files
//!
//! Files the way a tool that must not lose data handles them, shared by every Sparkle crate that
//! touches the file system: the one atomic-write helper (every file Sparkle writes goes through
//! [`write_atomic`]: outputs, the juggler's model, the Vulkan pipeline cache and tuning),
//! [`open_regular`] for inputs, and [`cache_dir`], the one place the cache folder is looked up.
//!
//! [`write_atomic`] writes into a new temporary file in the target's folder, created with
//! `O_CREAT | O_EXCL` under a short random name (the `tempfile` crate: a planted file or symlink of
//! that name is never opened or followed, and a long target name cannot push it past `NAME_MAX`),
//! gives it the old file's permissions (or the umask's for a new file), syncs it, renames it over
//! the target and syncs the folder. On any error the temporary file is removed and the target is
//! untouched; [`remove_pending`] removes those still being written (the CLI calls it on SIGINT and
//! SIGTERM).

#![deny(missing_docs)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Sparkle's cache folder: `SPARKLE_CACHE_DIR` if set, else the user cache folder of the platform
/// (`~/.cache/sparkle` on Linux), if one is known.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("SPARKLE_CACHE_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => Some(directories::ProjectDirs::from("", "", "sparkle")?.cache_dir().to_path_buf()),
    }
}

/// Temporary files being written right now, for [`remove_pending`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file [`write_atomic`] is writing at this moment (for signal handlers:
/// the process is about to exit, and no half-written file may stay behind).
pub fn remove_pending() {
    for p in pending().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// Writes `path` atomically: `fill` writes the whole content into a buffered writer; the file at
/// `path` then holds exactly that, or (on any error before the rename) is untouched. An error
/// syncing the folder after the rename is reported too, though the new file is then in place
/// (only its durability across a power loss is in doubt). See the module docs.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"));
    }
    let old_permissions = std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.permissions());
    let mut builder = tempfile::Builder::new();
    builder.prefix(".sparkle-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Created as a new file would be (the umask applies); an existing file's mode is copied below.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir)?;
    let tmp_path = tmp.path().to_path_buf();
    pending().push(tmp_path.clone());
    let result = (|| {
        if let Some(p) = old_permissions {
            tmp.as_file().set_permissions(p)?;
        }
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        // The rename is durable once the folder's entry is.
        File::open(dir)?.sync_all()
    })();
    // On error `tmp` was dropped inside the closure (or by `persist`'s error), which deleted it.
    pending().retain(|p| p != &tmp_path);
    result
}

/// Opens an input file for reading, refusing anything that is not a regular file: a FIFO with no
/// writer would block forever and `/dev/zero` never ends. Opened non-blocking (so a FIFO cannot
/// hang the open itself), then checked with `fstat` on the open file (no race with a swap).
/// Returns the file and its length.
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, kind));
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sparkle-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_write_replaces_keeps_mode_and_leaves_nothing_on_error() {
        let d = dir();
        let p = d.join("out.bin");
        write_atomic(&p, |w| w.write_all(b"one")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            write_atomic(&p, |w| w.write_all(b"two")).unwrap();
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two", "a failed write must leave the old file");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")], "temporary files left");
        assert!(!pending().iter().any(|t| t.starts_with(&d)), "a temporary file still registered");
        // A legal 255-byte name: the temporary name does not grow with it.
        let long = d.join("x".repeat(251) + ".npy");
        write_atomic(&long, |w| w.write_all(b"ok")).unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"ok");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The red team's attack on the old scheme (a predictable `.<name>.tmp-<pid>` opened through
    /// symlinks): a symlink and a folder planted at that name change nothing now.
    #[cfg(unix)]
    #[test]
    fn planted_temporary_names_are_neither_followed_nor_in_the_way() {
        let d = dir().join("planted");
        std::fs::create_dir_all(&d).unwrap();
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(format!(".y.npy.tmp-{}", std::process::id()))).unwrap();
        std::fs::create_dir(d.join(format!(".z.npy.tmp-{}", std::process::id()))).unwrap();
        write_atomic(&d.join("y.npy"), |w| w.write_all(b"y")).unwrap();
        write_atomic(&d.join("z.npy"), |w| w.write_all(b"z")).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(d.join("y.npy")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(d.join("z.npy")).unwrap(), b"z");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn inputs_must_be_regular_files() {
        let d = dir();
        let fifo = d.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let t = std::time::Instant::now();
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "opening a FIFO blocked");
        assert!(open_regular(Path::new("/dev/zero")).is_err());
        assert!(open_regular(&d).unwrap_err().to_string().contains("directory"));
        std::fs::write(d.join("f"), b"1234").unwrap();
        assert_eq!(open_regular(&d.join("f")).unwrap().1, 4);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
