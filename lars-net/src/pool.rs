//! A pool of event-loop threads (the TCP server's workers).

use std::io;
use std::sync::Arc;

use crate::event_loop::{LoopCtx, LoopHandle, LoopState, LoopThread};

/// `n` event loops, one thread each, all with a state of type `S`.
/// Stopped and joined on drop.
pub struct ThreadPool<S> {
    loops: Vec<LoopThread<S>>,
    handles: Vec<LoopHandle<S>>,
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
        Ok(Self { loops, handles })
    }

    /// Number of loops.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Handles of all loops, by index.
    pub fn handles(&self) -> &[LoopHandle<S>] {
        &self.handles
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
