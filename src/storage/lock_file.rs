//! Where LMDB keeps its lock file.
//!
//! The lock file holds LMDB's reader table, and every read transaction writes its slot there
//! through a shared mapping. On the data directory's filesystem such a write is a page fault that
//! can wait for the disk (dirty-page throttling, the journal, a frozen filesystem). Reads run on
//! the runtime's workers, which also send Raft's heartbeats: with the disk frozen for 400 ms,
//! every worker of a busy leader waited in such a fault, its followers heard nothing and elected
//! another leader, and the writes on the old one failed with `ERR_NOT_LEADER` from then on.
//!
//! Nothing in the lock file outlives the processes that have the environment open, so it can
//! live in memory: where a tmpfs is at hand (`/dev/shm`), `lock.mdb` in the data directory is a
//! symbolic link to a file of this process's own there, removed when the store closes. Without
//! one, LMDB keeps its lock file in the data directory as before.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARED_MEMORY: &str = "/dev/shm";
const LOCK_NAME: &str = "lock.mdb";

/// A lock file in memory, removed when dropped (after the environment that used it closed).
#[derive(Debug)]
pub(super) struct MemoryLockFile {
    path: PathBuf,
}

impl Drop for MemoryLockFile {
    fn drop(&mut self) {
        // Already gone is fine: a new start of this process cleans up after a crash as well.
        let _ = fs::remove_file(&self.path);
    }
}

/// Points `dir/lock.mdb` at a new lock file in memory. The caller holds the directory's own lock,
/// so no other process has this environment open and the old lock file holds nothing of use.
/// `None` when no private place in memory could be made (LMDB then uses the data directory).
pub(super) fn place_in_memory(dir: &Path) -> Option<MemoryLockFile> {
    place_under(Path::new(SHARED_MEMORY), dir).ok()
}

fn place_under(shared: &Path, dir: &Path) -> io::Result<MemoryLockFile> {
    let mine = private_dir(shared)?;
    remove_abandoned(&mine);
    let placed = MemoryLockFile {
        path: claim_new(&mine)?,
    };
    let link = dir.join(LOCK_NAME);
    match fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    symlink(&placed.path, &link)?;
    Ok(placed)
}

/// The number in the name of this copy's next lock file.
static NEXT_LOCK_FILE: AtomicU64 = AtomicU64::new(0);

/// A lock file's name: the process that made it, which `lock_file_pid` reads back for
/// `remove_abandoned`, and the number of the copy's counter.
fn lock_file_name(pid: u32, number: u64) -> String {
    format!("{pid}-{number}.lock")
}

/// The process that made the lock file `name`: what `lock_file_name` put before the number.
fn lock_file_pid(name: &str) -> Option<u32> {
    name.strip_suffix(".lock")?.split('-').next()?.parse().ok()
}

/// Creates a lock file of a name no one else holds. The counter is this copy of the library's
/// own, and a process can hold two copies (two versions of the package in one application), so
/// a name may be taken by the other's live environment: it is passed over, never truncated.
fn claim_new(mine: &Path) -> io::Result<PathBuf> {
    const ATTEMPTS: usize = 10_000;
    for _ in 0..ATTEMPTS {
        let target = mine.join(lock_file_name(
            std::process::id(),
            NEXT_LOCK_FILE.fetch_add(1, Ordering::Relaxed),
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
        {
            Ok(_) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free lock file name in {}", mine.display()),
    ))
}

/// This user's directory under the shared tmpfs, readable by nobody else. One that exists
/// already must be a real directory of this user's with no access for others, so that no other
/// user can swap a lock file under a node.
fn private_dir(shared: &Path) -> io::Result<PathBuf> {
    let uid = fs::metadata("/proc/self")?.uid();
    let mine = shared.join(format!("unrdf-consensus-{uid}"));
    match DirBuilder::new().mode(0o700).create(&mine) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&mine)?;
    let private = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0;
    if !private {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of this user", mine.display()),
        ));
    }
    Ok(mine)
}

/// Lock files of processes that are gone (killed before they could remove theirs).
fn remove_abandoned(mine: &Path) {
    let Ok(entries) = fs::read_dir(mine) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(lock_file_pid) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_moves_to_memory_and_goes_when_dropped() {
        let shared = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        fs::write(data.path().join(LOCK_NAME), b"an old lock file").expect("old lock");
        let placed = place_under(shared.path(), data.path()).expect("placed");
        let link = data.path().join(LOCK_NAME);
        assert!(fs::symlink_metadata(&link).expect("link").is_symlink());
        assert_eq!(fs::read_link(&link).expect("target"), placed.path);
        assert!(placed.path.starts_with(shared.path()));
        let target = placed.path.clone();
        drop(placed);
        assert!(!target.exists());
    }

    #[test]
    fn a_lock_file_another_copy_of_the_library_holds_is_left_alone() {
        let shared = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        let mine = private_dir(shared.path()).expect("dir");
        // The names this copy would take next, held as another copy's would be.
        let next = NEXT_LOCK_FILE.load(Ordering::Relaxed);
        let taken: Vec<PathBuf> = (next..next + 64)
            .map(|n| mine.join(lock_file_name(std::process::id(), n)))
            .collect();
        for path in &taken {
            fs::write(path, b"held by another copy").expect("held");
        }
        let placed = place_under(shared.path(), data.path()).expect("placed");
        assert!(!taken.contains(&placed.path));
        for path in &taken {
            assert_eq!(
                fs::read(path).expect("still there"),
                b"held by another copy"
            );
        }
    }

    #[test]
    fn a_directory_open_to_others_is_not_used() {
        let shared = tempfile::tempdir().expect("tempdir");
        let uid = fs::metadata("/proc/self").expect("proc").uid();
        let mine = shared.path().join(format!("unrdf-consensus-{uid}"));
        DirBuilder::new().mode(0o777).create(&mine).expect("dir");
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o777)).expect("chmod");
        let data = tempfile::tempdir().expect("tempdir");
        let err = place_under(shared.path(), data.path()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(!data.path().join(LOCK_NAME).exists());
    }

    #[test]
    fn lock_files_of_gone_processes_are_removed() {
        let shared = tempfile::tempdir().expect("tempdir");
        let mine = private_dir(shared.path()).expect("dir");
        // Beyond the kernel's largest pid (4194304), so no process has it.
        let gone = mine.join(lock_file_name(u32::MAX, 0));
        let alive = mine.join(lock_file_name(std::process::id(), 999));
        fs::write(&gone, b"").expect("gone");
        fs::write(&alive, b"").expect("alive");
        remove_abandoned(&mine);
        assert!(!gone.exists());
        assert!(alive.exists());
    }
}
