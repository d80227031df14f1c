//! Batched, ordered writes to the store, off the actor hot path.
//!
//! A [`BatchWriter`] is a task that owns a channel of items (readings of one partition,
//! or alert history entries) and writes whatever has accumulated in one store call, in
//! order. [`BatchWriter::flush`] is a barrier: it resolves once everything sent before
//! it is written and made durable, which is what a checkpoint waits for. The readings
//! channel is bounded, so a slow store slows the pump down instead of growing memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gridpulse_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

enum WriterMessage<T> {
    Items(Vec<T>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Writes one batch of items to the store.
pub type WriteFn<T> = Arc<
    dyn for<'a> Fn(
            &'a dyn Store,
            &'a [T],
        ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>
        + Send
        + Sync,
>;

/// The sending side of a batch writer (cheap to clone).
pub struct BatchWriter<T> {
    sender: mpsc::Sender<WriterMessage<T>>,
}

impl<T> Clone for BatchWriter<T> {
    fn clone(&self) -> Self {
        BatchWriter {
            sender: self.sender.clone(),
        }
    }
}

impl<T> std::fmt::Debug for BatchWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter").finish_non_exhaustive()
    }
}

/// The writer was shut down or its store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store writer: {0}")]
pub struct WriterError(pub String);

impl<T: Send + 'static> BatchWriter<T> {
    /// Spawns the writer task on the current tokio runtime; at most `capacity` batches
    /// wait in its queue. `name` labels its log lines.
    pub fn spawn(
        name: &'static str,
        store: Arc<dyn Store>,
        capacity: usize,
        write: WriteFn<T>,
    ) -> BatchWriter<T> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(run(name, store, receiver, write));
        BatchWriter { sender }
    }

    /// Queues items, waiting while the queue is full (backpressure).
    pub async fn send(&self, items: Vec<T>) -> Result<(), WriterError> {
        self.sender
            .send(WriterMessage::Items(items))
            .await
            .map_err(|_| WriterError("stopped".into()))
    }

    /// Queues items without waiting; fails if the queue is full or closed.
    pub fn try_send(&self, items: Vec<T>) -> Result<(), WriterError> {
        self.sender
            .try_send(WriterMessage::Items(items))
            .map_err(|error| WriterError(error.to_string()))
    }

    /// Resolves once everything queued before it is written and durable.
    pub async fn flush(&self) -> Result<(), WriterError> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(WriterMessage::Flush(done))
            .await
            .map_err(|_| WriterError("stopped".into()))?;
        wait.await
            .map_err(|_| WriterError("stopped".into()))?
            .map_err(WriterError)
    }
}

async fn run<T: Send + 'static>(
    name: &'static str,
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<WriterMessage<T>>,
    write: WriteFn<T>,
) {
    let mut pending: Vec<T> = Vec::new();
    // A write failure is remembered and reported to the next flush, so a checkpoint never
    // claims durability for data that was not written.
    let mut failed: Option<String> = None;
    while let Some(message) = receiver.recv().await {
        let mut flushes = Vec::new();
        let mut next = Some(message);
        // Coalesce everything already queued into one store call.
        while let Some(message) = next.take() {
            match message {
                WriterMessage::Items(items) => pending.extend(items),
                WriterMessage::Flush(done) => flushes.push(done),
            }
            next = receiver.try_recv().ok();
        }
        if !pending.is_empty() {
            if let Err(error) = write(store.as_ref(), &pending).await {
                tracing::error!(writer = name, %error, n_items = pending.len(), "store write failed");
                failed = Some(error.to_string());
            }
            pending.clear();
        }
        if !flushes.is_empty() {
            let result = match failed.take() {
                Some(error) => Err(error),
                None => store.flush().await.map_err(|error| error.to_string()),
            };
            for done in flushes {
                let _ = done.send(result.clone());
            }
        }
    }
}
