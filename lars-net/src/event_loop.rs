//! One event loop per thread: I/O readiness (mio), timers, a state deadline,
//! and a cross-thread task queue that wakes the loop through a
//! [`mio::Waker`].
//!
//! The loop owns a state `S` ([`LoopState`]); readiness events, timers,
//! the state's own deadline (a sans-IO core's `poll_timeout`) and posted tasks
//! all get `&mut S` plus the loop's [`LoopCtx`], so no locks are needed for
//! anything that lives on the loop.
//!
//! A loop exists before it runs: [`LoopBuilder::new`] creates its poll and
//! task queue, so its [`LoopHandle`] can be given to other threads (and tasks
//! posted to it queue up) before the state is built and the thread started.
//! Loops that talk to each other are wired that way, each complete when it
//! starts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::event::Event;
use mio::{Events, Poll, Registry, Token, Waker};

/// The token reserved for the loop's waker; never use it for a source.
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// How many posted tasks one loop iteration runs before polling I/O again.
const TASK_BATCH: usize = 1024;

/// A closure posted to a loop from any thread.
pub type Task<S> = Box<dyn FnOnce(&mut S, &mut LoopCtx<S>) + Send>;

type Timer<S> = Box<dyn FnOnce(&mut S, &mut LoopCtx<S>)>;

/// The state an [`EventLoop`] drives: it receives the readiness events of the
/// sources it registered through [`LoopCtx::registry`], and may ask to be
/// woken at a deadline of its own.
pub trait LoopState: Sized + 'static {
    /// Called for every readiness event whose token is not [`WAKER_TOKEN`].
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        let _ = (ctx, event);
    }

    /// When [`on_timeout`](Self::on_timeout) should run next (a sans-IO
    /// core's `poll_timeout`); asked before every sleep. `None`: no deadline.
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    /// The deadline of [`poll_timeout`](Self::poll_timeout) passed; `now` is
    /// the loop's clock. Must move the deadline past `now` (or clear it).
    fn on_timeout(&mut self, ctx: &mut LoopCtx<Self>, now: Instant) {
        let _ = (ctx, now);
    }

    /// One round of spinning before the loop would sleep (see
    /// [`LoopBuilder::spin`]): try to make progress without readiness (e.g.
    /// one non-blocking receive); true if something was done. The default
    /// does nothing, so a spinning loop only watches its task queue.
    fn on_spin(&mut self, ctx: &mut LoopCtx<Self>) -> bool {
        let _ = ctx;
        false
    }
}

/// Identifies a timer so it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

struct Shared<S> {
    tx: Sender<Task<S>>,
    waker: Waker,
    notified: AtomicBool,
    stopped: AtomicBool,
    thread: OnceLock<ThreadId>,
}

/// A cloneable, `Send` handle to a loop: posts closures to it and stops it.
pub struct LoopHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for LoopHandle<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> std::fmt::Debug for LoopHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl<S> LoopHandle<S> {
    /// Runs `f` on the loop's thread, soon (queued until the loop runs, when
    /// it has not started yet). Returns `false` if the loop has stopped (the
    /// task is then dropped without running).
    pub fn post(&self, f: impl FnOnce(&mut S, &mut LoopCtx<S>) + Send + 'static) -> bool {
        if self.is_stopped() || self.shared.tx.send(Box::new(f)).is_err() {
            return false;
        }
        // On the loop's own thread the task queue is drained before the next
        // poll, so no wake-up syscall is needed.
        if self.shared.thread.get() == Some(&thread::current().id()) {
            return true;
        }
        if !self.shared.notified.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.shared.waker.wake() {
                tracing::error!("event loop waker failed: {e}");
            }
        }
        true
    }

    /// Asks the loop to return from [`EventLoop::run`] after its current
    /// iteration. Idempotent.
    pub fn stop(&self) {
        if !self.shared.stopped.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.shared.waker.wake() {
                tracing::error!("event loop waker failed: {e}");
            }
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }
}

/// What a loop offers its state while running: the mio registry and
/// one-shot timers.
pub struct LoopCtx<S> {
    registry: Registry,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: HashMap<u64, (Instant, Timer<S>)>,
    next_timer: u64,
}

impl<S> std::fmt::Debug for LoopCtx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopCtx")
            .field("timers", &self.timers.len())
            .finish()
    }
}

impl<S> LoopCtx<S> {
    /// The registry to (re/de)register sources with. Tokens are the state's
    /// business, except [`WAKER_TOKEN`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `f` once, `after` from now (never, if that is past the clock's
    /// range).
    pub fn run_after(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut S, &mut LoopCtx<S>) + 'static,
    ) -> TimerId {
        self.next_timer += 1;
        let id = self.next_timer;
        let Some(at) = Instant::now().checked_add(after) else {
            return TimerId(id);
        };
        self.heap.push(Reverse((at, id)));
        self.timers.insert(id, (at, Box::new(f)));
        TimerId(id)
    }

    /// Cancels a timer; a no-op if it already ran or was cancelled.
    pub fn cancel(&mut self, id: TimerId) {
        self.timers.remove(&id.0);
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            match self.timers.get(&id) {
                Some((due, _)) if *due == at => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }
}

/// A loop that exists but does not run yet: its [`handle`](Self::handle)
/// accepts tasks (they queue up) before the state is built, so loops that
/// post to each other can all be created first and each started complete.
pub struct LoopBuilder<S> {
    poll: Poll,
    registry: Registry,
    rx: Receiver<Task<S>>,
    handle: LoopHandle<S>,
    spin: u32,
}

impl<S> std::fmt::Debug for LoopBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopBuilder")
            .field("spin", &self.spin)
            .finish_non_exhaustive()
    }
}

impl<S: LoopState> LoopBuilder<S> {
    /// Creates the loop's poll, waker and task queue.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = LoopHandle {
            shared: Arc::new(Shared {
                tx,
                waker,
                notified: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                thread: OnceLock::new(),
            }),
        };
        Ok(Self {
            poll,
            registry,
            rx,
            handle,
            spin: 0,
        })
    }

    /// The loop's handle, usable before the loop runs.
    pub fn handle(&self) -> &LoopHandle<S> {
        &self.handle
    }

    /// Before sleeping, the loop spins up to `rounds` times: each round calls
    /// [`LoopState::on_spin`], checks the task queue and yields the CPU. Work
    /// found ends the spin (and the next sleep spins again); after `rounds`
    /// empty rounds it sleeps in `epoll_wait`. Default 0 (never spins): spin
    /// only where the next event usually follows within microseconds (a
    /// request/response peer on the same machine).
    pub fn spin(mut self, rounds: u32) -> Self {
        self.spin = rounds;
        self
    }

    /// Builds the state with `init` (which may register sources and timers)
    /// and returns the loop, to be run on this thread.
    pub fn build(
        self,
        init: impl FnOnce(&mut LoopCtx<S>) -> io::Result<S>,
    ) -> io::Result<EventLoop<S>> {
        let mut ctx = LoopCtx {
            registry: self.registry,
            heap: BinaryHeap::new(),
            timers: HashMap::new(),
            next_timer: 0,
        };
        let state = init(&mut ctx)?;
        Ok(EventLoop {
            poll: self.poll,
            events: Events::with_capacity(1024),
            rx: self.rx,
            handle: self.handle,
            state,
            ctx,
            spin: self.spin,
        })
    }

    /// Starts a thread named `name` that builds the state with `init` and runs
    /// the loop until stopped. Returns once `init` has succeeded, or with its
    /// error.
    pub fn spawn(
        self,
        name: &str,
        init: impl FnOnce(&mut LoopCtx<S>) -> io::Result<S> + Send + 'static,
    ) -> io::Result<LoopThread<S>> {
        let handle = self.handle.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let join =
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || -> io::Result<()> {
                    let mut lp = match self.build(init) {
                        Ok(lp) => lp,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = tx.send(Ok(()));
                    lp.run()
                })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(LoopThread {
                handle,
                join: Some(join),
            }),
            Ok(Err(e)) => {
                let _ = join.join();
                Err(e)
            }
            Err(_) => {
                let _ = join.join();
                Err(io::Error::other("event loop thread died during init"))
            }
        }
    }
}

/// An event loop: a mio `Poll`, its state `S`, timers and a task queue.
/// Made by a [`LoopBuilder`], run on one thread.
pub struct EventLoop<S> {
    poll: Poll,
    events: Events,
    rx: Receiver<Task<S>>,
    handle: LoopHandle<S>,
    state: S,
    ctx: LoopCtx<S>,
    spin: u32,
}

impl<S> std::fmt::Debug for EventLoop<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("ctx", &self.ctx)
            .field("spin", &self.spin)
            .finish_non_exhaustive()
    }
}

impl<S: LoopState> EventLoop<S> {
    /// Runs until [`LoopHandle::stop`]. Tasks still queued at that point are
    /// dropped unrun.
    pub fn run(&mut self) -> io::Result<()> {
        let _ = self.handle.shared.thread.set(thread::current().id());
        while !self.handle.is_stopped() {
            self.turn(None)?;
        }
        // Drop queued tasks now: they may hold handles to this loop.
        while self.rx.try_recv().is_ok() {}
        Ok(())
    }

    /// One iteration: spin or poll (at most `max_wait`, or until the next
    /// timer or state deadline), dispatch events, then run the state's
    /// deadline, due timers and queued tasks.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        self.wait(max_wait)?;
        self.run_state_timeout();
        self.run_timers();
        self.run_tasks();
        Ok(())
    }

    /// How long the loop may sleep now.
    fn timeout(&mut self, max_wait: Option<Duration>) -> Option<Duration> {
        if !self.rx.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = match (self.ctx.next_deadline(), self.state.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        match max_wait {
            Some(max) => Some(timeout.map_or(max, |t| t.min(max))),
            None => timeout,
        }
    }

    /// Spins (at most `self.spin` empty rounds) while the loop would sleep,
    /// then polls and dispatches readiness events.
    fn wait(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let mut rounds = 0;
        let timeout = loop {
            let timeout = self.timeout(max_wait);
            if rounds >= self.spin || timeout == Some(Duration::ZERO) {
                break timeout;
            }
            if self.state.on_spin(&mut self.ctx) {
                return Ok(());
            }
            rounds += 1;
            thread::yield_now();
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            if event.token() != WAKER_TOKEN {
                self.state.on_ready(&mut self.ctx, event);
            }
        }
        Ok(())
    }

    fn run_state_timeout(&mut self) {
        let Some(at) = self.state.poll_timeout() else {
            return;
        };
        let now = Instant::now();
        if at <= now {
            self.state.on_timeout(&mut self.ctx, now);
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(at) = self.ctx.next_deadline() {
            if at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.ctx.heap.pop() else {
                break;
            };
            if let Some((_, f)) = self.ctx.timers.remove(&id) {
                f(&mut self.state, &mut self.ctx);
            }
        }
    }

    fn run_tasks(&mut self) {
        self.handle.shared.notified.store(false, Ordering::Release);
        for _ in 0..TASK_BATCH {
            match self.rx.try_recv() {
                Ok(task) => task(&mut self.state, &mut self.ctx),
                Err(_) => break,
            }
        }
    }
}

/// An [`EventLoop`] running on its own thread; stopped and joined on drop.
pub struct LoopThread<S> {
    handle: LoopHandle<S>,
    join: Option<JoinHandle<io::Result<()>>>,
}

impl<S> std::fmt::Debug for LoopThread<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopThread")
            .field("handle", &self.handle)
            .finish()
    }
}

impl<S: LoopState> LoopThread<S> {
    /// [`LoopBuilder::new`] then [`LoopBuilder::spawn`]: a loop thread whose
    /// handle nobody needed before it started.
    pub fn spawn(
        name: &str,
        init: impl FnOnce(&mut LoopCtx<S>) -> io::Result<S> + Send + 'static,
    ) -> io::Result<Self> {
        LoopBuilder::new()?.spawn(name, init)
    }
}

impl<S> LoopThread<S> {
    /// A handle to the loop.
    pub fn handle(&self) -> &LoopHandle<S> {
        &self.handle
    }

    /// Stops the loop (does not wait).
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Stops the loop and waits for its thread.
    pub fn join(&mut self) {
        self.handle.stop();
        if let Some(join) = self.join.take() {
            match join.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("event loop ended with error: {e}"),
                Err(_) => tracing::error!("event loop thread panicked"),
            }
        }
    }
}

impl<S> Drop for LoopThread<S> {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Debug, Default)]
    struct Count(u64);
    impl LoopState for Count {}

    #[test]
    fn a_cancelled_timer_never_runs() {
        let (tx, rx) = mpsc::channel::<u32>();
        let mut lp = LoopThread::<Count>::spawn("timer-test", move |ctx| {
            let t = tx.clone();
            let id = ctx.run_after(Duration::from_millis(1), move |_, _| t.send(1).unwrap());
            ctx.cancel(id);
            ctx.run_after(Duration::from_millis(3), move |_, _| tx.send(2).unwrap());
            Ok(Count(0))
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), 2);
        lp.join();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn posted_tasks_run_on_the_loop_from_many_threads() {
        let mut lp = LoopThread::<Count>::spawn("post-test", |_| Ok(Count(0))).unwrap();
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = lp.handle().clone();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let tx = tx.clone();
                        h.post(move |n, _| {
                            n.0 += 1;
                            if n.0 == 4000 {
                                tx.send(()).unwrap();
                            }
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        rx.recv_timeout(WAIT).unwrap();
        lp.join();
        assert!(!lp.handle().post(|_, _| {}));
    }

    #[test]
    fn tasks_posted_before_the_loop_runs_wait_for_it() {
        let b = LoopBuilder::<Count>::new().unwrap();
        let (tx, rx) = mpsc::channel();
        assert!(b.handle().post(move |n, _| tx.send(n.0).unwrap()));
        // The state does not exist yet; the task runs once it does.
        let mut lp = b.spawn("early-post", |_| Ok(Count(7))).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), 7);
        lp.join();
    }

    /// A state with a deadline of its own and a spin that counts its rounds.
    #[derive(Debug)]
    struct Deadline {
        at: Option<Instant>,
        fired: Vec<Instant>,
        spins: u32,
    }

    impl LoopState for Deadline {
        fn poll_timeout(&mut self) -> Option<Instant> {
            self.at
        }

        fn on_timeout(&mut self, _ctx: &mut LoopCtx<Self>, now: Instant) {
            self.fired.push(now);
            self.at = None;
        }

        fn on_spin(&mut self, _ctx: &mut LoopCtx<Self>) -> bool {
            self.spins += 1;
            false
        }
    }

    #[test]
    fn the_state_deadline_runs_on_time_and_spinning_is_bounded_per_sleep() {
        let start = Instant::now();
        let at = start + Duration::from_millis(30);
        let mut lp = LoopBuilder::new()
            .unwrap()
            .spin(5)
            .build(|_| {
                Ok(Deadline {
                    at: Some(at),
                    fired: Vec::new(),
                    spins: 0,
                })
            })
            .unwrap();
        // One turn: 5 empty spins, then a sleep until the deadline.
        lp.turn(Some(WAIT)).unwrap();
        assert_eq!(lp.state.spins, 5);
        assert_eq!(lp.state.fired.len(), 1);
        assert!(lp.state.fired[0] >= at);
        // No deadline left: the next turn spins 5 times again and sleeps
        // the full max_wait, without firing.
        lp.turn(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(lp.state.spins, 10);
        assert_eq!(lp.state.fired.len(), 1);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn pool_loops_get_their_index() {
        let mut pool =
            crate::pool::ThreadPool::<Count>::start("pool-test", 3, |i, _| Ok(Count(i as u64)))
                .unwrap();
        let (tx, rx) = mpsc::channel();
        for h in pool.handles() {
            let tx = tx.clone();
            h.post(move |n, _| tx.send(n.0).unwrap());
        }
        let mut got: Vec<u64> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        pool.join();
    }
}
