//! Password checks on a few dedicated threads. Every argon2 verification
//! allocates its memory cost (~19 MiB with the default parameters); run on
//! tokio's blocking pool, a flood of logins ran one per pool thread and each
//! thread's allocator arena kept its 19 MiB (150 wrong logins: 3 GB). Here at
//! most `max_password_checks` run at once, always on the same threads, and a
//! login that cannot get a turn within `password_check_wait` is refused.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use argon2::Block;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A check, given the thread's argon2 working memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Why a check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckError {
    /// Every checker stayed busy for the whole wait.
    Busy,
    /// The checkers are stopped (the console is stopping) or one failed.
    Gone,
}

/// The checker threads and the turns at them.
#[derive(Debug)]
pub(crate) struct Checker {
    turns: Arc<Semaphore>,
    wait: Duration,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Checker {
    /// Starts `n` (at least 1) checker threads.
    pub(crate) fn start(n: usize, wait: Duration) -> std::io::Result<Checker> {
        let n = n.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let t = std::thread::Builder::new()
                .name(format!("lars-web-pw{i}"))
                .spawn(move || {
                    // Kept between checks: one argon2 buffer per thread.
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            rx.recv()
                        };
                        let Ok(job) = job else { break };
                        let check = AssertUnwindSafe(|| job(&mut memory));
                        if std::panic::catch_unwind(check).is_err() {
                            tracing::error!("a password check panicked");
                        }
                    }
                })?;
            threads.push(t);
        }
        Ok(Checker {
            turns: Arc::new(Semaphore::new(n)),
            wait,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Waits (at most the configured wait) for a turn at a checker.
    pub(crate) async fn turn(&self) -> Result<Turn, CheckError> {
        match tokio::time::timeout(self.wait, Arc::clone(&self.turns).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit }),
            Ok(Err(_)) => Err(CheckError::Gone),
            Err(_) => Err(CheckError::Busy),
        }
    }

    /// Runs `check` on a checker thread during `turn`, and hands the turn
    /// back with the result so the caller can record the outcome before the
    /// next check starts (a caller that stopped waiting gives it back
    /// right away).
    pub(crate) async fn run<T, F>(&self, turn: Turn, check: F) -> Result<(T, Turn), CheckError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let out = check(memory);
            let _ = done.send((out, turn));
        });
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(tx) = tx.as_ref() else {
                return Err(CheckError::Gone);
            };
            tx.send(job).map_err(|_| CheckError::Gone)?;
        }
        result.await.map_err(|_| CheckError::Gone)
    }

    /// Stops the threads once their queued checks are done, and joins them.
    pub(crate) fn stop(&self) {
        self.turns.close();
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a password check thread panicked");
            }
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A turn at a checker.
#[derive(Debug)]
pub(crate) struct Turn {
    _permit: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_checks_run_and_the_rest_are_busy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let c = Checker::start(2, Duration::from_millis(50))
                .unwrap_or_else(|e| panic!("start: {e}"));
            let a = c.turn().await;
            let b = c.turn().await;
            assert!(a.is_ok() && b.is_ok());
            assert_eq!(c.turn().await.err(), Some(CheckError::Busy));
            drop(a);
            let t = c.turn().await.unwrap_or_else(|e| panic!("{e:?}"));
            let (seven, t) = c.run(t, |_| 7).await.unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(seven, 7);
            // The turn is the caller's until it lets go.
            assert_eq!(c.turn().await.err(), Some(CheckError::Busy));
            drop(t);
            assert!(c.turn().await.is_ok());
            c.stop();
            assert_eq!(c.turn().await.err(), Some(CheckError::Gone));
        });
    }
}
