//! One event loop per thread: I/O readiness (mio), timers, and a cross-thread
//! task queue that wakes the loop through a [`mio::Waker`].
//!
//! The loop owns a state `S` ([`LoopState`]); readiness events, timers and
//! posted tasks all get `&mut S` plus the loop's [`LoopCtx`], so no locks are
//! needed for anything that lives on the loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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

type LocalTask<S> = Box<dyn FnOnce(&mut S, &mut LoopCtx<S>)>;
type Periodic<S> = Box<dyn FnMut(&mut S, &mut LoopCtx<S>)>;

/// The state an [`EventLoop`] drives: it receives the readiness events of the
/// sources it registered through [`LoopCtx::registry`].
pub trait LoopState: Sized + 'static {
    /// Called for every readiness event whose token is not [`WAKER_TOKEN`].
    fn on_ready(&mut self, ctx: &mut LoopCtx<Self>, event: &Event) {
        let _ = (ctx, event);
    }
}

impl LoopState for () {}

/// Identifies a timer so it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

enum TimerFn<S> {
    Once(LocalTask<S>),
    Every(Duration, Periodic<S>),
}

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
    /// Runs `f` on the loop's thread, soon. Returns `false` if the loop has
    /// stopped (the task is then dropped without running).
    pub fn post(&self, f: impl FnOnce(&mut S, &mut LoopCtx<S>) + Send + 'static) -> bool {
        self.post_boxed(Box::new(f))
    }

    /// [`post`](Self::post) for an already boxed task.
    pub fn post_boxed(&self, task: Task<S>) -> bool {
        if self.is_stopped() || self.shared.tx.send(task).is_err() {
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

    /// Whether the caller runs on this loop's thread.
    pub fn is_loop_thread(&self) -> bool {
        self.shared.thread.get() == Some(&thread::current().id())
    }
}

/// What a loop offers its state while running: the mio registry, timers,
/// deferred tasks, a handle to itself.
pub struct LoopCtx<S> {
    registry: Registry,
    handle: LoopHandle<S>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: HashMap<u64, (Instant, TimerFn<S>)>,
    next_timer: u64,
    running_timer: Option<(u64, bool)>,
    deferred: VecDeque<LocalTask<S>>,
}

impl<S> std::fmt::Debug for LoopCtx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopCtx")
            .field("timers", &self.timers.len())
            .field("deferred", &self.deferred.len())
            .finish()
    }
}

impl<S> LoopCtx<S> {
    /// The registry to (re/de)register sources with. Tokens are the state's
    /// business, except [`WAKER_TOKEN`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A handle to this loop (to give to other threads).
    pub fn handle(&self) -> &LoopHandle<S> {
        &self.handle
    }

    /// Stops the loop after this iteration.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Runs `f` once, `after` from now.
    pub fn run_after(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut S, &mut LoopCtx<S>) + 'static,
    ) -> TimerId {
        self.add_timer(Instant::now() + after, TimerFn::Once(Box::new(f)))
    }

    /// Runs `f` every `period` (first run one period from now) until
    /// cancelled. A zero period is raised to one millisecond.
    pub fn run_every(
        &mut self,
        period: Duration,
        f: impl FnMut(&mut S, &mut LoopCtx<S>) + 'static,
    ) -> TimerId {
        let period = period.max(Duration::from_millis(1));
        self.add_timer(Instant::now() + period, TimerFn::Every(period, Box::new(f)))
    }

    /// Cancels a timer; a no-op if it already ran (one-shot) or was cancelled.
    /// A periodic timer may cancel itself from its own callback.
    pub fn cancel(&mut self, id: TimerId) {
        if self.timers.remove(&id.0).is_none() {
            if let Some((running, cancelled)) = &mut self.running_timer {
                if *running == id.0 {
                    *cancelled = true;
                }
            }
        }
    }

    /// Runs `f` on this loop after the current callback, before the next poll.
    pub fn defer(&mut self, f: impl FnOnce(&mut S, &mut LoopCtx<S>) + 'static) {
        self.deferred.push_back(Box::new(f));
    }

    fn add_timer(&mut self, at: Instant, f: TimerFn<S>) -> TimerId {
        self.next_timer += 1;
        let id = self.next_timer;
        self.heap.push(Reverse((at, id)));
        self.timers.insert(id, (at, f));
        TimerId(id)
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

/// An event loop: a mio `Poll`, its state `S`, timers and a task queue.
/// Create it on the thread that runs it (or use [`LoopThread::spawn`]).
pub struct EventLoop<S> {
    poll: Poll,
    events: Events,
    rx: Receiver<Task<S>>,
    state: S,
    ctx: LoopCtx<S>,
}

impl<S> std::fmt::Debug for EventLoop<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("ctx", &self.ctx).finish()
    }
}

impl<S: LoopState> EventLoop<S> {
    /// A loop around `state`.
    pub fn new(state: S) -> io::Result<Self> {
        Self::with_init(|_| Ok(state))
    }

    /// A handle to post tasks to this loop and stop it.
    pub fn handle(&self) -> LoopHandle<S> {
        self.ctx.handle.clone()
    }

    /// The loop's state and context, e.g. to register sockets before running.
    pub fn parts(&mut self) -> (&mut S, &mut LoopCtx<S>) {
        (&mut self.state, &mut self.ctx)
    }

    /// The loop's state.
    pub fn state(&mut self) -> &mut S {
        &mut self.state
    }

    /// Gives the state back (after [`run`](Self::run) returned).
    pub fn into_state(self) -> S {
        self.state
    }

    /// Runs until [`LoopHandle::stop`]. Tasks still queued at that point are
    /// dropped unrun.
    pub fn run(&mut self) -> io::Result<()> {
        let _ = self.ctx.handle.shared.thread.set(thread::current().id());
        while !self.ctx.handle.is_stopped() {
            self.turn(None)?;
        }
        // Drop queued tasks now: they may hold handles to this loop.
        while self.rx.try_recv().is_ok() {}
        Ok(())
    }

    /// One iteration: poll (at most `max_wait`, or until the next timer),
    /// dispatch events, run due timers and queued tasks.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let mut timeout = self
            .ctx
            .next_deadline()
            .map(|at| at.saturating_duration_since(now));
        if !self.ctx.deferred.is_empty() || !self.rx.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        if let Some(max) = max_wait {
            timeout = Some(timeout.map_or(max, |t| t.min(max)));
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            if event.token() == WAKER_TOKEN {
                continue;
            }
            self.state.on_ready(&mut self.ctx, event);
            while let Some(f) = self.ctx.deferred.pop_front() {
                f(&mut self.state, &mut self.ctx);
            }
        }
        self.run_timers();
        self.run_tasks();
        Ok(())
    }

    fn run_deferred(&mut self) {
        while let Some(f) = self.ctx.deferred.pop_front() {
            f(&mut self.state, &mut self.ctx);
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
            let Some((_, f)) = self.ctx.timers.remove(&id) else {
                continue;
            };
            match f {
                TimerFn::Once(f) => f(&mut self.state, &mut self.ctx),
                TimerFn::Every(period, mut f) => {
                    self.ctx.running_timer = Some((id, false));
                    f(&mut self.state, &mut self.ctx);
                    let cancelled = matches!(self.ctx.running_timer, Some((_, true)));
                    self.ctx.running_timer = None;
                    if !cancelled {
                        // Keep the cadence, but never schedule in the past.
                        let next = (at + period).max(now);
                        self.ctx.heap.push(Reverse((next, id)));
                        self.ctx
                            .timers
                            .insert(id, (next, TimerFn::Every(period, f)));
                    }
                }
            }
            self.run_deferred();
        }
    }

    fn run_tasks(&mut self) {
        self.ctx
            .handle
            .shared
            .notified
            .store(false, Ordering::Release);
        for _ in 0..TASK_BATCH {
            match self.rx.try_recv() {
                Ok(task) => {
                    task(&mut self.state, &mut self.ctx);
                    self.run_deferred();
                }
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
    /// Starts a thread named `name` that builds its state with `init` (which
    /// may register sources and timers) and runs the loop until stopped.
    /// Returns once `init` has succeeded, or with its error.
    pub fn spawn(
        name: &str,
        init: impl FnOnce(&mut LoopCtx<S>) -> io::Result<S> + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let join =
            thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || -> io::Result<()> {
                    let mut lp = match EventLoop::<S>::with_init(init) {
                        Ok(lp) => lp,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = tx.send(Ok(lp.handle()));
                    lp.run()
                })?;
        match rx.recv() {
            Ok(Ok(handle)) => Ok(Self {
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

impl<S: LoopState> EventLoop<S> {
    /// Builds a loop whose state is made by `init`, which can already use the
    /// loop's context (registry, timers) — the usual way to create a loop
    /// whose state owns registered sockets.
    pub fn with_init(init: impl FnOnce(&mut LoopCtx<S>) -> io::Result<S>) -> io::Result<Self> {
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
        let mut ctx = LoopCtx {
            registry,
            handle,
            heap: BinaryHeap::new(),
            timers: HashMap::new(),
            next_timer: 0,
            running_timer: None,
            deferred: VecDeque::new(),
        };
        let state = init(&mut ctx)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(1024),
            rx,
            state,
            ctx,
        })
    }
}
