//! Sender to store, through everything that can go wrong: counter resets
//! (first sight, 2^31, silence), agent restarts, reporter restarts that
//! resume from the stored counters, lost messages resent, and store writes
//! whose acknowledgement is lost. The history always holds exactly the calls
//! recorded.

use lars_stats::COUNTER_LIMIT;
use proptest::prelude::*;

use crate::world::{Fault, Op, World, host, key};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u8, 0..3u8, 0..50u32, 0..10u32)
            .prop_map(|(key, host, succ, err)| Op::Calls { key, host, succ, err }),
        1 => (0..2u8, 0..3u8, (COUNTER_LIMIT / 4)..=COUNTER_LIMIT)
            .prop_map(|(key, host, succ)| Op::Calls { key, host, succ, err: 1 }),
        5 => prop_oneof![1..120u32, 1700..8000u32].prop_map(|secs| Op::Tick { secs }),
        1 => any::<u32>().prop_map(|lose| Op::Disconnect { lose }),
        1 => Just(Op::Connect),
        1 => Just(Op::AgentRestart),
        1 => any::<u32>().prop_map(|lose| Op::ReporterRestart { lose }),
    ]
}

/// At most 12 faults, at most 4 of them statement errors: never enough to
/// give rows up (that loses them by design) or to pass the stop timeout.
fn faults() -> impl Strategy<Value = Vec<Fault>> {
    prop::collection::vec(
        prop_oneof![
            Just(Fault::Unavailable),
            Just(Fault::LostAck),
            Just(Fault::Rejected)
        ],
        0..12,
    )
    .prop_map(|mut v| {
        let mut rejected = 0;
        v.retain(|f| {
            rejected += usize::from(*f == Fault::Rejected);
            *f != Fault::Rejected || rejected <= 4
        });
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn stored_totals_match_the_calls_recorded(
        ops in prop::collection::vec(op(), 1..80),
        faults in faults(),
        tail_loss in any::<u32>(),
    ) {
        let mut w = World::new(faults);
        for op in &ops {
            w.apply(op);
        }
        // The last interval's counters lost, and no call after them to
        // carry their calls again: only the resend can.
        w.apply(&Op::Disconnect { lose: tail_loss });
        w.finish();
        let mut expected = w.expected.clone();
        expected.retain(|_, t| *t != (0, 0));
        prop_assert_eq!(&w.store.history, &expected, "after {:?}", ops);
        prop_assert_eq!(w.sender.counters().calls_dropped, 0);
    }
}

/// Each rule the proptest relies on, once, by hand.
#[test]
fn a_walk_through_every_rule() {
    // The first store call is the prune, the second the first history chunk.
    let mut w = World::new(vec![Fault::Unavailable, Fault::LostAck]);
    let calls = |k, h, succ| Op::Calls {
        key: k,
        host: h,
        succ,
        err: 0,
    };
    w.apply(&calls(0, 0, 5));
    w.apply(&Op::Tick { secs: 1 });
    w.apply(&calls(0, 0, 2));
    w.apply(&Op::Tick { secs: 1 });
    // The last interval's message is lost with the connection.
    w.apply(&Op::Disconnect { lose: u32::MAX });
    assert_eq!(w.lost, 1);
    w.apply(&calls(0, 2, 1));
    w.apply(&Op::Connect);
    w.apply(&Op::Tick { secs: 1 }); // resent
    w.apply(&calls(0, 1, COUNTER_LIMIT));
    w.apply(&Op::Tick { secs: 1 });
    w.apply(&calls(0, 1, 3)); // restarts the counters of host 1
    w.apply(&Op::Tick { secs: 1 });
    w.apply(&Op::ReporterRestart { lose: 0 });
    w.apply(&Op::Connect);
    w.apply(&calls(0, 0, 4));
    w.apply(&Op::Tick { secs: 1 });
    w.apply(&Op::AgentRestart);
    w.apply(&calls(0, 0, 6));
    w.apply(&Op::Tick { secs: 4000 }); // silent long enough to be forgotten
    w.apply(&calls(0, 0, 7));
    w.apply(&Op::Tick { secs: 4000 });
    w.finish();
    assert_eq!(
        w.store.history.get(&(key(0), host(0))),
        Some(&(5 + 2 + 4 + 6 + 7, 0))
    );
    assert_eq!(
        w.store.history.get(&(key(0), host(1))),
        Some(&(u64::from(COUNTER_LIMIT) + 3, 0))
    );
    assert_eq!(w.store.already_applied, 1, "the lost acknowledgement");
    let c = w.sender.counters();
    assert_eq!(c.idle_restarts, 1);
}
