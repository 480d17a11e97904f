//! The reads that may touch many blocks (listings, a snapshot's scans) run off the async workers,
//! on a few threads of their own. On tokio's blocking pool, which adds a thread whenever none is
//! idle, 64 concurrent store listings grew the process from 6 to 149 threads in 15 s, each with its
//! own stack and allocator heap: RSS went from 29 to 129 MiB (see docs/architecture.md, "The
//! embedded engine: fjall"). Point lookups do not come here (`EmbeddedStore::read_now` runs them
//! on the calling task).

use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::sync::oneshot;

use crate::storage::{Result, StorageError};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of reader threads taking reads from one queue, first come first served. The
/// queue holds at most one read per request in flight (which `--max-connections` bounds). The
/// threads end when the last handle is dropped.
#[derive(Debug)]
pub(super) struct Readers {
    queue: flume::Sender<Job>,
}

impl Readers {
    /// The default number of reader threads: twice the cores this process may use (a cold read
    /// waits on the disk part of the time), 4 to 32.
    pub(super) fn default_limit() -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (2 * cores).clamp(4, 32)
    }

    pub(super) fn start(threads: usize) -> std::io::Result<Self> {
        let (queue, jobs) = flume::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("kvstore-read-{i}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        job();
                    }
                })?;
        }
        Ok(Self { queue })
    }

    /// Runs `read` on a reader thread and waits for its answer. A read whose caller stopped
    /// waiting still runs to its end on that thread (so the threads, not the waiters, are what
    /// is bounded); a read that panics fails alone, without its thread.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(result) = catch_unwind(AssertUnwindSafe(read)) {
                let _ = answer.send(result);
            }
        });
        self.queue
            .send(job)
            .map_err(|_| StorageError::Engine("the reader threads have stopped".into()))?;
        answered
            .await
            .map_err(|_| StorageError::Engine("a read failed (panicked)".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// 32 reads on 3 threads: never more than 3 run at once, and 3 do run together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_reads_run_at_once_than_the_limit() {
        let readers = Arc::new(Readers::start(3).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (readers, running, most) = (readers.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                readers
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    /// A read whose caller stopped waiting keeps its thread until it ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_read_keeps_its_thread_until_it_ends() {
        let readers = Arc::new(Readers::start(1).unwrap());
        let (started_tx, started) = std::sync::mpsc::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let readers = readers.clone();
            tokio::spawn(async move {
                readers
                    .run(move || {
                        started_tx.send(()).unwrap();
                        finish_rx.recv().unwrap();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let second = readers.run(|| Ok(()));
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut second)
                .await
                .is_err(),
            "a second read ran while the abandoned one still held the only thread"
        );
        finish.send(()).unwrap();
        second.await.unwrap();
    }

    /// A read that panics is answered with an error, and the only thread goes on with the next.
    #[tokio::test]
    async fn a_read_that_panics_fails_alone() {
        let readers = Readers::start(1).unwrap();
        let failed = readers
            .run(|| -> Result<()> { panic!("a bug in a read") })
            .await;
        assert!(matches!(failed, Err(StorageError::Engine(_))), "{failed:?}");
        assert_eq!(readers.run(|| Ok(7)).await.unwrap(), 7);
    }
}
