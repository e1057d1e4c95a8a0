//! `serve` refuses database files that other users may read: they hold payloads.

use linklease_store::Backend;

use crate::commands::{Failure, fail};

/// Fails, naming the files and the fix, if group or others have any access to the SQLite
/// database file or its `-wal`/`-shm` (missing files are fine: they are created 0600). With
/// `allow_shared` it only warns. PostgreSQL has no such files.
pub fn check_private(database_url: &str, allow_shared: bool) -> Result<(), Failure> {
    let shared: Vec<(String, u32)> = Backend::from_url(database_url)?
        .sqlite_files()
        .into_iter()
        .filter_map(|path| {
            let mode = mode_of(&path)?;
            (mode & 0o077 != 0).then(|| (path.display().to_string(), mode))
        })
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    let listed = shared
        .iter()
        .map(|(path, mode)| format!("{path} (mode {mode:04o})"))
        .collect::<Vec<_>>()
        .join(", ");
    let paths = shared
        .iter()
        .map(|(path, _)| path.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if allow_shared {
        log::warn!(
            "--allow-shared-files: group or others may read the database, which holds payloads: {listed}"
        );
        return Ok(());
    }
    Err(fail(format!(
        "group or others may read the database, which holds payloads: {listed}; \
         run `chmod 600 {paths}`, or pass --allow-shared-files to start anyway"
    )))
}

/// The permission bits of `path`, if it exists.
#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// No Unix permission bits to check.
#[cfg(not(unix))]
fn mode_of(_: &std::path::Path) -> Option<u32> {
    None
}
