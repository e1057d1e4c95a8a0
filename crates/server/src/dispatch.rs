//! Code delivery off the database's threads.
//!
//! A courier may take seconds (an SMS gateway under load) or hang until its timeout. Deliveries
//! therefore run on a few threads of their own, never on the blocking pool that every store call
//! needs, and a request awaits its delivery without holding any thread. The queue in front of
//! those threads is bounded: when it is full a delivery fails at once ([`DeliveryError::Busy`])
//! and is recorded like any other failed delivery, so a storm of sends can slow only other
//! sends, never `/readyz`, a lease read or a grant creation.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use linklease_courier::{Courier, CourierError, OtpMessage};
use tokio::sync::oneshot;

/// Threads that call the courier.
pub const COURIER_THREADS: usize = 8;
/// Deliveries that may wait for a courier thread before new ones are refused.
pub const COURIER_QUEUE: usize = 64;

/// Why a code was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Every courier thread is busy and the queue is full.
    #[error("too many deliveries are waiting")]
    Busy,
    /// The courier said no.
    #[error(transparent)]
    Courier(#[from] CourierError),
    /// The courier thread went away before it answered.
    #[error("the courier thread stopped")]
    Stopped,
}

impl DeliveryError {
    /// A short, stable name for audit details and metrics (never the courier's own text).
    pub fn class(&self) -> &'static str {
        match self {
            DeliveryError::Busy => "busy",
            DeliveryError::Stopped => "stopped",
            DeliveryError::Courier(CourierError::Unsupported { .. }) => "unsupported",
            DeliveryError::Courier(CourierError::Invalid { .. }) => "invalid",
            DeliveryError::Courier(CourierError::Rejected { .. }) => "rejected",
            DeliveryError::Courier(CourierError::Transport { .. }) => "transport",
            DeliveryError::Courier(CourierError::Io(_)) => "io",
        }
    }
}

struct Job {
    message: OtpMessage,
    done: oneshot::Sender<Result<(), CourierError>>,
}

/// Hands codes to the courier on its own threads.
#[derive(Debug)]
pub struct Dispatcher {
    courier: Arc<dyn Courier>,
    /// The threads' queue, started at the first delivery.
    queue: OnceLock<SyncSender<Job>>,
}

impl Dispatcher {
    /// A dispatcher delivering through `courier`. Its [`COURIER_THREADS`] threads start at the
    /// first delivery and stop when the dispatcher is dropped.
    pub fn new(courier: Arc<dyn Courier>) -> Self {
        Self {
            courier,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &SyncSender<Job> {
        self.queue.get_or_init(|| {
            let (queue, jobs) = sync_channel::<Job>(COURIER_QUEUE);
            let jobs = Arc::new(Mutex::new(jobs));
            for n in 0..COURIER_THREADS {
                let courier = self.courier.clone();
                let jobs = jobs.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("linklease-courier-{n}"))
                    .spawn(move || work(courier.as_ref(), &jobs));
                if let Err(e) = spawned {
                    log::error!(target: "linklease::courier", "cannot start a courier thread: {e}");
                }
            }
            queue
        })
    }

    /// Delivers `message`, awaiting the courier without holding a thread.
    pub async fn deliver(&self, message: OtpMessage) -> Result<(), DeliveryError> {
        let (done, answer) = oneshot::channel();
        match self.queue().try_send(Job { message, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(DeliveryError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(DeliveryError::Stopped),
        }
        match answer.await {
            Ok(result) => result.map_err(DeliveryError::from),
            Err(_) => Err(DeliveryError::Stopped),
        }
    }
}

fn work(courier: &dyn Courier, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // The requester may have gone (a closed connection); the code was delivered anyway.
        let _ = job.done.send(courier.deliver(&job.message));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use linklease_grant::{GrantId, OtpChannel, SecretString};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A courier that takes its time and counts what it delivered.
    #[derive(Debug, Default)]
    struct Slow(AtomicUsize);

    impl Courier for Slow {
        fn deliver(&self, _: &OtpMessage) -> Result<(), CourierError> {
            std::thread::sleep(Duration::from_millis(200));
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn kind(&self) -> &'static str {
            "slow"
        }
    }

    fn message() -> OtpMessage {
        OtpMessage::new(
            time::OffsetDateTime::UNIX_EPOCH,
            OtpChannel::Sms,
            "+15550100",
            GrantId(uuid::Uuid::nil()),
            SecretString::new("123456"),
            10,
        )
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_the_rest_are_delivered() {
        let courier = Arc::new(Slow::default());
        let dispatcher = Arc::new(Dispatcher::new(courier.clone()));
        let runtime = actix_web::rt::System::new();
        let results = runtime.block_on(async {
            let tries = (0..COURIER_THREADS + COURIER_QUEUE + 20).map(|_| {
                let d = dispatcher.clone();
                actix_web::rt::spawn(async move { d.deliver(message()).await })
            });
            let mut results = Vec::new();
            for handle in tries.collect::<Vec<_>>() {
                results.push(handle.await.unwrap());
            }
            results
        });
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(DeliveryError::Busy)))
            .count();
        let delivered = results.iter().filter(|r| r.is_ok()).count();
        assert!(busy > 0, "the queue is bounded");
        assert_eq!(delivered + busy, results.len());
        assert_eq!(courier.0.load(Ordering::SeqCst), delivered);
    }
}
