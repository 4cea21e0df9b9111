//! `@unrdf/consensus`: Raft consensus for Node.js. The napi exports live in `binding`; the rest
//! of the crate is the engine, storage and transport.

// Unit tests run without Node.js, where napi's registration has nothing to bind to.
#[cfg(not(test))]
mod binding;
pub mod engine;
pub mod events;
pub mod log_forward;
pub mod ops;
pub mod registry_write;
pub mod stats;
pub mod storage;
pub mod transport;
pub mod types;

/// Milliseconds since the Unix epoch (0 on a clock set before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks a mutex, also after a thread panicked while holding it: every critical section here
/// leaves its data consistent, so the data behind a poisoned lock is still good to use.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Read access to an `RwLock`, also after a writer panicked (see `lock`).
pub(crate) fn read_lock<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Write access to an `RwLock`, also after a writer panicked (see `lock`).
pub(crate) fn write_lock<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
