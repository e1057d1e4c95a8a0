//! The lease-signing key set as this instance sees it: loaded from the database (where every
//! instance finds the same keys), reloaded every 30 seconds and at once when a token names a
//! key this instance has not seen, so a rotation on any instance reaches all of them.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use linklease_lease::KeySet;
use linklease_store::{StoreError, signing_keys};

use crate::AppState;

/// How long a loaded key set is used before it is read again.
const REFRESH: Duration = Duration::from_secs(30);
/// Least time between two reloads forced by an unknown `kid` (so forged kids cannot hammer
/// the database).
const FORCED_RELOAD_GAP: Duration = Duration::from_secs(1);

/// The cached key set.
#[derive(Debug, Default)]
pub struct Keyring {
    cached: RwLock<Option<(Arc<KeySet>, Instant)>>,
    last_forced: Mutex<Option<Instant>>,
}

impl Keyring {
    /// The key set, read from the database if the cached one is older than `max_age`. Blocks:
    /// call on a blocking thread.
    fn get(&self, state: &AppState, max_age: Duration) -> Result<Arc<KeySet>, StoreError> {
        if let Ok(guard) = self.cached.read()
            && let Some((set, at)) = guard.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(set.clone());
        }
        // A read first: a write would drop the single-node copy of lease facts every reload.
        let set = match state
            .store
            .read(|c| signing_keys::current(c, &state.keys))?
        {
            Some(set) => Arc::new(set),
            None => {
                let now = state.clock.now();
                Arc::new(
                    state
                        .store
                        .write(|c| signing_keys::ensure(c, &state.keys, now, &state.rng))?,
                )
            }
        };
        if let Ok(mut guard) = self.cached.write() {
            *guard = Some((set.clone(), Instant::now()));
        }
        Ok(set)
    }

    /// The current key set. Blocks.
    pub fn current(&self, state: &AppState) -> Result<Arc<KeySet>, StoreError> {
        self.get(state, REFRESH)
    }

    /// The key set read again, unless a reload was already forced within the last second: for
    /// a token whose `kid` the cached set does not know. Blocks.
    pub fn reloaded(&self, state: &AppState) -> Result<Arc<KeySet>, StoreError> {
        let force = match self.last_forced.lock() {
            Ok(mut last) if last.is_none_or(|at| at.elapsed() >= FORCED_RELOAD_GAP) => {
                *last = Some(Instant::now());
                true
            }
            _ => false,
        };
        self.get(state, if force { Duration::ZERO } else { REFRESH })
    }
}
