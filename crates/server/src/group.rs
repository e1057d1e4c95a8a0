//! Group commit and group read: requests hand a job to one worker thread, which does every job
//! waiting at that moment in one database call and then answers each request. A request still
//! waits for its own job (its event durably committed, its facts read after it arrived); many
//! requests share one round trip, and none holds a thread meanwhile.
//!
//! - [`AuditWriter`]: the `payload.read` events of reads, appended in one transaction.
//! - [`FactsReader`]: the mutable facts of the leases presented, read in one query. A query
//!   never answers a job handed over after it began, so every request is checked against the
//!   database as it was after the request arrived.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use linklease_grant::LeaseId;
use linklease_store::audit::NewEvent;
use linklease_store::leases::LeaseFacts;
use linklease_store::{Store, StoreError};

/// Most jobs in one call.
const MAX_BATCH: usize = 512;

/// Where a job's answer goes: a blocked thread, or an awaiting request.
enum Done<R> {
    Blocking(SyncSender<Result<R, StoreError>>),
    Awaiting(tokio::sync::oneshot::Sender<Result<R, StoreError>>),
}

impl<R> Done<R> {
    fn send(self, answer: Result<R, StoreError>) {
        match self {
            Done::Blocking(tx) => {
                let _ = tx.send(answer);
            }
            Done::Awaiting(tx) => {
                let _ = tx.send(answer);
            }
        }
    }
}

/// Hands jobs of type `J` to a worker thread that does them in groups, answering each with `R`.
pub struct Group<J, R> {
    jobs: Sender<(J, Done<R>)>,
}

impl<J, R> std::fmt::Debug for Group<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<J: Send + 'static, R: Send + 'static> Group<J, R> {
    /// Starts the worker thread `name`; it ends when the group is dropped. `work` does the jobs
    /// of one group and answers each, in order.
    pub fn start<W>(name: &str, work: W) -> Self
    where
        W: FnMut(&[J]) -> Vec<Result<R, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&rx, work));
        if let Err(e) = spawned {
            log::error!("could not start {name}: {e}");
        }
        Self { jobs: tx }
    }

    fn submit(&self, job: J, done: Done<R>) -> Result<(), StoreError> {
        self.jobs.send((job, done)).map_err(|_| stopped())
    }

    /// Does `job`; returns its answer. Blocks: call on a blocking thread.
    pub fn call(&self, job: J) -> Result<R, StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.submit(job, Done::Blocking(done))?;
        wait.recv().map_err(|_| stopped())?
    }

    /// Does `job`; the future resolves to its answer. Holds no thread meanwhile.
    pub async fn call_async(&self, job: J) -> Result<R, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.submit(job, Done::Awaiting(done))?;
        wait.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("a worker thread stopped".into())
}

fn run<J, R>(
    rx: &Receiver<(J, Done<R>)>,
    mut work: impl FnMut(&[J]) -> Vec<Result<R, StoreError>>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (jobs, waiting): (Vec<J>, Vec<Done<R>>) = group.into_iter().unzip();
        let mut answers = work(&jobs).into_iter();
        for done in waiting {
            done.send(answers.next().unwrap_or_else(|| {
                Err(StoreError::Internal("a group left a job unanswered".into()))
            }));
        }
    }
}

/// Group commit of the `payload.read` events of reads.
pub type AuditWriter = Group<NewEvent, ()>;

/// Starts the group commit of read events on `store`.
pub fn audit_writer(store: Store) -> AuditWriter {
    Group::start("linklease-audit-writer", move |events: &[NewEvent]| {
        let result = store.append_audit(events);
        events
            .iter()
            .map(|_| match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            })
            .collect()
    })
}

/// Group read of the mutable facts of leases.
pub type FactsReader = Group<LeaseId, LeaseFacts>;

/// Starts the group read of lease facts on `store`.
pub fn facts_reader(store: Store) -> FactsReader {
    Group::start("linklease-facts-reader", move |ids: &[LeaseId]| {
        store.lease_facts_of(ids)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// Every job gets its own answer, in its own place in the group; jobs handed over while a
    /// call runs wait for the next call, and share it.
    #[test]
    fn jobs_handed_over_during_a_call_share_the_next_one() {
        let (open_gate, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let calls: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let seen = calls.clone();
        let group = Group::start("test-group", move |jobs: &[u32]| {
            seen.lock().unwrap().push(jobs.to_vec());
            if jobs == [1] {
                gate.lock().unwrap().recv().unwrap();
            }
            jobs.iter()
                .map(|&j| match j {
                    4 => Err(StoreError::NotFound),
                    j => Ok(j * 10),
                })
                .collect()
        });
        let handed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let first = scope.spawn(|| group.call(1));
            while calls.lock().unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let later: Vec<_> = (2..=6)
                .map(|j| {
                    let (group, handed) = (&group, &handed);
                    scope.spawn(move || {
                        handed.fetch_add(1, Ordering::SeqCst);
                        group.call(j)
                    })
                })
                .collect();
            while handed.load(Ordering::SeqCst) < 5 {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            open_gate.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap(), 10);
            for (j, answer) in (2..=6).zip(later) {
                match (j, answer.join().unwrap()) {
                    (4, Err(StoreError::NotFound)) => {}
                    (j, Ok(answer)) => assert_eq!(answer, j * 10),
                    (j, other) => panic!("job {j}: {other:?}"),
                }
            }
        });
        let calls = calls.lock().unwrap();
        assert_eq!(
            calls[0],
            [1],
            "the first call took only the job waiting then"
        );
        let mut rest: Vec<u32> = calls[1..].concat();
        rest.sort_unstable();
        assert_eq!(rest, [2, 3, 4, 5, 6]);
        assert_eq!(calls.len(), 2, "the later jobs shared one call: {calls:?}");
    }
}
