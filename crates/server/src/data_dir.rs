//! The data directory: the broker's secrets, created on first run with owner-only permissions.
//!
//! `master.key` holds 32 random bytes from which every hashing key is derived (see
//! `linklease_grant::SecretKeys`). Every instance sharing a database must share this directory's
//! contents; losing it invalidates every link, API key and client secret.

use ring::rand::SecureRandom;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use linklease_grant::SecretKeys;

/// The data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

const MASTER_KEY: &str = "master.key";

impl DataDir {
    /// Opens the directory, creating it (mode 0700) if missing.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        if !path.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            set_dir_mode(&mut builder);
            builder.create(&path)?;
            log::info!("created data directory {}", path.display());
        }
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hashing keys, from `master.key`; the file is made (mode 0600) on first use.
    pub fn secret_keys(&self, rng: &dyn SecureRandom) -> io::Result<SecretKeys> {
        let master = self.read_or_create(MASTER_KEY, 32, rng)?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&master);
        Ok(SecretKeys::from_master(&bytes))
    }

    /// Reads `name`, or creates it with `len` random bytes. Creation is atomic (write a temporary
    /// file, then hard-link it into place), so two instances starting at once agree on one key.
    fn read_or_create(
        &self,
        name: &str,
        len: usize,
        rng: &dyn SecureRandom,
    ) -> io::Result<Vec<u8>> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) if bytes.len() == len => {
                warn_if_exposed(&path);
                return Ok(bytes);
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not {len} bytes long", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes)
            .map_err(|_| io::Error::other("random generator failed"))?;
        let tmp = self
            .path
            .join(format!(".{name}.{}.tmp", std::process::id()));
        {
            let mut file = owner_only_file(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                log::info!("created {}", path.display());
                Ok(bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::read(&path),
            Err(e) => Err(e),
        }
    }
}

#[cfg(unix)]
fn set_dir_mode(builder: &mut fs::DirBuilder) {
    use std::os::unix::fs::DirBuilderExt;
    builder.mode(0o700);
}

#[cfg(not(unix))]
fn set_dir_mode(_: &mut fs::DirBuilder) {}

#[cfg(unix)]
fn owner_only_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn owner_only_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "{} is readable by other users; run chmod 600 on it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use linklease_grant::Purpose;
    use ring::rand::SystemRandom;

    #[test]
    fn first_use_creates_an_owner_only_key_that_later_uses_reuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path().join("data")).unwrap();
        let a = dir.secret_keys(&SystemRandom::new()).unwrap();
        let b = DataDir::open(tmp.path().join("data"))
            .unwrap()
            .secret_keys(&SystemRandom::new())
            .unwrap();
        assert_eq!(
            a.hash(Purpose::ApiKey, &[b"k"]),
            b.hash(Purpose::ApiKey, &[b"k"])
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = fs::metadata(dir.path().join(MASTER_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(file & 0o777, 0o600);
            let d = fs::metadata(dir.path()).unwrap().permissions().mode();
            assert_eq!(d & 0o777, 0o700);
        }
        fs::write(dir.path().join(MASTER_KEY), b"short").unwrap();
        assert!(
            dir.secret_keys(&SystemRandom::new()).is_err(),
            "a damaged key is an error, not replaced"
        );
    }
}
