//! A pool of event-loop threads, and a many-producer queue consumed in
//! batches by one loop.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread};

/// `n` event loops, one thread each, all with a state of type `S`.
/// Stopped and joined on drop.
pub struct ThreadPool<S> {
    loops: Vec<LoopThread<S>>,
    handles: Vec<LoopHandle<S>>,
    next: AtomicUsize,
}

impl<S> std::fmt::Debug for ThreadPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("loops", &self.handles.len())
            .finish()
    }
}

impl<S: LoopState> ThreadPool<S> {
    /// Starts `n` loops (at least one) named `{name}-{i}`; loop `i` builds its
    /// state with `init(i, ctx)`.
    pub fn start(
        name: &str,
        n: usize,
        init: impl Fn(usize, &mut LoopCtx<S>) -> io::Result<S> + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let init = Arc::new(init);
        let mut loops = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let init = Arc::clone(&init);
            loops.push(LoopThread::spawn(&format!("{name}-{i}"), move |ctx| {
                init(i, ctx)
            })?);
        }
        let handles = loops.iter().map(|l| l.handle().clone()).collect();
        Ok(Self {
            loops,
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Number of loops.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: a pool has at least one loop.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Handles of all loops, by index.
    pub fn handles(&self) -> &[LoopHandle<S>] {
        &self.handles
    }

    /// The next loop in round-robin order.
    pub fn next_handle(&self) -> &LoopHandle<S> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Runs `f` once on every loop.
    pub fn broadcast(&self, f: impl Fn(&mut S, &mut LoopCtx<S>) + Send + Sync + 'static) {
        let f = Arc::new(f);
        for h in &self.handles {
            let f = Arc::clone(&f);
            h.post(move |s, ctx| f(s, ctx));
        }
    }

    /// Stops every loop (does not wait).
    pub fn stop(&self) {
        for h in &self.handles {
            h.stop();
        }
    }

    /// Stops every loop and joins every thread.
    pub fn join(&mut self) {
        self.stop();
        for l in &mut self.loops {
            l.join();
        }
    }
}

type Consumer<S, T> = Box<dyn FnMut(&mut S, &mut LoopCtx<S>, Vec<T>) + Send>;

struct QueueInner<T> {
    items: Mutex<Vec<T>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

/// A queue with many producers (any thread) and one consumer: a closure on an
/// event loop, woken on the first push after a drain and handed every item
/// queued so far as one batch. Cloning gives another producer.
pub struct TaskQueue<T> {
    inner: Arc<QueueInner<T>>,
}

impl<T> Clone for TaskQueue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for TaskQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueue").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> TaskQueue<T> {
    /// A queue consumed on the loop behind `handle` by `consumer`, which gets
    /// the loop's state and each batch in push order.
    pub fn new<S: 'static>(
        handle: LoopHandle<S>,
        consumer: impl FnMut(&mut S, &mut LoopCtx<S>, Vec<T>) + Send + 'static,
    ) -> Self {
        let consumer: Arc<Mutex<Consumer<S, T>>> = Arc::new(Mutex::new(Box::new(consumer)));
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<QueueInner<T>>| {
            let weak = weak.clone();
            QueueInner {
                items: Mutex::new(Vec::new()),
                wake: Box::new(move || {
                    let weak = weak.clone();
                    let consumer = Arc::clone(&consumer);
                    handle.post(move |s, ctx| {
                        let Some(inner) = weak.upgrade() else { return };
                        let batch = std::mem::take(
                            &mut *inner.items.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        if !batch.is_empty() {
                            let mut c = consumer.lock().unwrap_or_else(PoisonError::into_inner);
                            (c)(s, ctx, batch);
                        }
                    });
                }),
            }
        });
        Self { inner }
    }

    /// Queues `item`; wakes the consumer if the queue was empty.
    pub fn push(&self, item: T) {
        let first = {
            let mut items = self
                .inner
                .items
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            items.push(item);
            items.len() == 1
        };
        if first {
            (self.inner.wake)();
        }
    }

    /// Items queued and not yet handed to the consumer.
    pub fn len(&self) -> usize {
        self.inner
            .items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
