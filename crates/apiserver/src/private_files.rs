//! Files only the user running shoal may read: the data directory (mode 0700) and what it
//! holds — the store (every Secret), the admin kubeconfig, TLS keys (mode 0600).
//!
//! ```text
//!  create_dir(DIR)            mkdir 0700 (each missing component)
//!  write(DIR/NAME, text)      DIR/.NAME.tmp-PID  open(O_CREAT|O_EXCL, 0600) ─ write ─ fsync
//!                                  └── rename ──▶ DIR/NAME (replaces any older, wider file)
//!  restrict(PATH)             chmod 0600 if it exists (files made by an older shoal)
//!  too_open(DIR)              Some(mode) when group or others have any access
//! ```
//!
//! The key decision: a file is created with its final mode by `open(2)` itself, never
//! chmod-ed after it was written, so there is no moment at which another user can open
//! it (the process umask can only take permissions away from 0600). Writing to a fresh
//! file and renaming it over the old one also keeps a reader that opened an older, wider
//! file from seeing the new contents.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;
/// The mode of a private directory.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700; an existing directory is left
/// as it is (see [`too_open`]).
///
/// # Errors
/// The directory cannot be created.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Writes `contents` to `path` as a file of mode 0600 from its creation, replacing
/// whatever was there.
///
/// # Errors
/// The file cannot be created, written or renamed into place.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover of a crashed write would make O_EXCL fail.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `path` empty with mode 0600 if it does not exist, and takes group and others'
/// access away if it does (a file made by an older shoal). For files another library
/// creates later with the mode of this one (SQLite's `-wal` and `-shm` copy the
/// database file's).
///
/// # Errors
/// The file cannot be created or its mode changed.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict_existing(path),
        Err(e) => Err(e),
    }
}

/// Takes group and others' access away from `path` if it exists.
///
/// # Errors
/// Its mode cannot be read or changed.
pub fn restrict_existing(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(m.permissions().mode() & !0o077 & 0o7777),
        ),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The mode of `dir` when group or others have any access to it (`None`: private, or
/// it does not exist).
pub fn too_open(dir: &Path) -> Option<u32> {
    let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_are_0600_and_directories_0700_from_creation() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700, "parents too");
        assert_eq!(too_open(&dir), None);

        let file = dir.join("kubeconfig");
        write(&file, b"one").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"one");
        // Replacing a world-readable file leaves a private one, and no temporary file.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&file, b"two").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn restrict_creates_a_private_file_or_closes_an_open_one() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("shoal.db");
        restrict(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);

        let old = root.path().join("old.db");
        std::fs::write(&old, b"data").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o664)).unwrap();
        restrict(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"data", "the contents stay");
        restrict_existing(&root.path().join("absent")).unwrap();
    }

    #[test]
    fn a_directory_others_can_enter_is_too_open() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(too_open(root.path()), Some(0o755));
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(too_open(root.path()), None);
        assert_eq!(too_open(&root.path().join("absent")), None);
    }
}
