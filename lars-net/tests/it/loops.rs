use std::sync::mpsc;
use std::time::Duration;

use lars_net::{EventLoop, LoopState, LoopThread, TaskQueue, ThreadPool};

/// Loop states without I/O just implement the trait's default.
#[derive(Debug, Default)]
struct Ticks(Vec<u32>);
impl LoopState for Ticks {}

#[derive(Debug, Default)]
struct Count(u64);
impl LoopState for Count {}

use super::common::WAIT;

#[test]
fn timers_once_and_periodic() {
    let (tx, rx) = mpsc::channel::<&'static str>();
    let mut lp = LoopThread::<Ticks>::spawn("timer-test", move |ctx| {
        let t = tx.clone();
        ctx.run_after(Duration::from_millis(5), move |_, _| {
            t.send("once").unwrap()
        });
        let t = tx.clone();
        ctx.run_every(Duration::from_millis(2), move |ticks, ctx| {
            ticks.0.push(1);
            if ticks.0.len() == 3 {
                t.send("three ticks").unwrap();
                ctx.stop();
            }
        });
        Ok(Ticks::default())
    })
    .unwrap();
    let mut got = vec![
        rx.recv_timeout(WAIT).unwrap(),
        rx.recv_timeout(WAIT).unwrap(),
    ];
    got.sort();
    assert_eq!(got, vec!["once", "three ticks"]);
    lp.join();
}

#[test]
fn a_cancelled_timer_never_runs() {
    let (tx, rx) = mpsc::channel::<u32>();
    let mut lp = EventLoop::new(Count(0)).unwrap();
    let (_, ctx) = lp.parts();
    let t = tx.clone();
    let id = ctx.run_after(Duration::from_millis(1), move |_, _| t.send(1).unwrap());
    ctx.cancel(id);
    let t = tx.clone();
    ctx.run_after(Duration::from_millis(3), move |_, _| t.send(2).unwrap());
    let every = ctx.run_every(Duration::from_millis(1), |n, _| n.0 += 1);
    while rx.try_recv().is_err() {
        lp.turn(Some(Duration::from_millis(10))).unwrap();
    }
    let (n, ctx) = lp.parts();
    assert!(n.0 >= 1);
    ctx.cancel(every);
    let before = lp.state().0;
    lp.turn(Some(Duration::from_millis(5))).unwrap();
    assert_eq!(lp.state().0, before);
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
fn task_queue_delivers_every_item_in_batches() {
    let mut lp = LoopThread::<Ticks>::spawn("queue-test", |_| Ok(Ticks::default())).unwrap();
    let (tx, rx) = mpsc::channel();
    let q = TaskQueue::new(lp.handle().clone(), move |seen: &mut Ticks, _, batch| {
        seen.0.extend(batch);
        if seen.0.len() == 4000 {
            let mut s = seen.0.clone();
            s.sort();
            tx.send(s).unwrap();
        }
    });
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || (0..1000).for_each(|i| q.push(p * 1000 + i)))
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        (0..4000).collect::<Vec<_>>()
    );
    lp.join();
}

#[test]
fn pool_broadcast_reaches_every_loop() {
    let mut pool = ThreadPool::<Count>::start("pool-test", 3, |i, _| Ok(Count(i as u64))).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    pool.broadcast(move |i, _| tx.lock().unwrap().send(i.0).unwrap());
    let mut got: Vec<u64> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    pool.join();
}
