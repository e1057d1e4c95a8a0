//! Group commit for the audit events of reads (`payload.read`): requests hand their event to one
//! writer thread, which appends every event waiting at that moment in one transaction and then
//! answers each request. A response still waits until its own event is durably committed; many
//! responses share one commit.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use linklease_store::audit::NewEvent;
use linklease_store::{Store, StoreError};

/// Most events in one transaction.
const MAX_BATCH: usize = 512;

/// Where a job's answer goes: a blocked thread, or an awaiting request.
enum Done {
    Blocking(SyncSender<Result<(), StoreError>>),
    Awaiting(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

impl Done {
    fn send(self, answer: Result<(), StoreError>) {
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

type Job = (NewEvent, Done);

/// Hands events to the writer thread.
#[derive(Debug)]
pub struct AuditWriter {
    jobs: Sender<Job>,
}

impl AuditWriter {
    /// Starts the writer thread on `store`; it ends when the writer is dropped.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("linklease-audit-writer".into())
            .spawn(move || run(&store, &rx));
        if let Err(e) = spawned {
            log::error!("could not start the audit writer: {e}");
        }
        Self { jobs: tx }
    }

    fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))
    }

    /// Appends `event` and returns once it is committed. Blocks: call on a blocking thread.
    pub fn append(&self, event: NewEvent) -> Result<(), StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.submit((event, Done::Blocking(done)))?;
        wait.recv()
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?
    }

    /// Appends `event`; the future resolves once it is committed. Holds no thread meanwhile.
    pub async fn append_async(&self, event: NewEvent) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.submit((event, Done::Awaiting(done)))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?
    }
}

fn run(store: &Store, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (events, waiting): (Vec<NewEvent>, Vec<Done>) = batch.into_iter().unzip();
        let result = store.append_audit(&events);
        for done in waiting {
            done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            });
        }
    }
}
