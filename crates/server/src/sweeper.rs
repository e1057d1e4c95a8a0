//! Deletes flows long over. Every visit opens a flow, so without this the flows table would
//! grow with every link scanner and every attacker's visit. A flow is deleted once it expired
//! more than [`SEND_WINDOW`] ago (so the count of codes sent per grant in any hour stays
//! exact) and only if it issued no lease (a lease's row names its flow). Its events stay in the
//! audit log.

use std::sync::Weak;
use std::time::Duration;

use linklease_lease::limits::SEND_WINDOW;
use linklease_store::{StoreError, flows};

use crate::AppState;

/// How often a serving process sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Flows deleted per transaction (the writer is never held for long).
const BATCH: u32 = 500;

/// Deletes every flow that ended long enough ago, in short transactions; returns how many.
pub fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    let before = state.clock.now() - SEND_WINDOW;
    let mut deleted = 0;
    loop {
        let n = state.store.write(|c| flows::sweep(c, before, BATCH))?;
        deleted += n;
        if n < BATCH as usize {
            return Ok(deleted);
        }
    }
}

/// Sweeps every [`SWEEP_EVERY`] on a thread of its own for as long as the server's state
/// lives (several instances on one PostgreSQL may all sweep: deleting twice is harmless).
pub fn start(state: Weak<AppState>) {
    let spawned = std::thread::Builder::new()
        .name("linklease-flow-sweeper".into())
        .spawn(move || {
            loop {
                // Wake often to notice that the server stopped; sweep once a period.
                for _ in 0..SWEEP_EVERY.as_secs() {
                    std::thread::sleep(Duration::from_secs(1));
                    if state.strong_count() == 0 {
                        return;
                    }
                }
                let Some(state) = state.upgrade() else { return };
                match sweep_once(&state) {
                    Ok(0) => {}
                    Ok(n) => log::info!(target: "linklease::sweeper", "deleted {n} ended flows"),
                    Err(e) => {
                        log::warn!(target: "linklease::sweeper", "sweeping flows failed: {e}")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!(target: "linklease::sweeper", "cannot start the flow sweeper: {e}");
    }
}
