//! The dns's RouteTable and Subscriptions.

use std::sync::Arc;

use lars_lb::{ModKey, RouteTable, Subscriptions};
use proptest::prelude::*;

use crate::host;

const A: ModKey = ModKey::new(1, 1);
const B: ModKey = ModKey::new(1, 2);
const C: ModKey = ModKey::new(2, 1);

#[test]
fn reload_reports_added_removed_and_changed_keys() {
    let mut t = RouteTable::new(RouteTable::build([
        (A, host(1)),
        (A, host(2)),
        (B, host(1)),
    ]));
    assert_eq!(t.version(), 1);
    let old = t.current();
    // Same hosts in another order with a duplicate: unchanged.
    let same = RouteTable::build([(B, host(1)), (A, host(2)), (A, host(1)), (A, host(2))]);
    assert!(t.reload(same).is_empty());
    assert!(Arc::ptr_eq(&old, &t.current()));
    assert_eq!(t.version(), 1);
    // A changes, B goes, C comes.
    let next = RouteTable::build([(A, host(1)), (C, host(3))]);
    assert_eq!(t.reload(next), vec![A, B, C]);
    assert_eq!(t.version(), 2);
    assert_eq!(t.hosts(A).as_deref(), Some(&[host(1)][..]));
    assert!(t.hosts(B).is_none());
    // The reader's old snapshot is untouched.
    assert_eq!(old.get(&A).map(|h| h.len()), Some(2));
    assert_eq!(old.get(&B).map(|h| h.len()), Some(1));
}

#[test]
fn reload_normalises_unsorted_lists() {
    let mut t = RouteTable::default();
    let mut routes = lars_lb::Routes::new();
    routes.insert(A, Arc::from(vec![host(2), host(1), host(2)]));
    assert_eq!(t.reload(routes), vec![A]);
    assert_eq!(t.hosts(A).as_deref(), Some(&[host(1), host(2)][..]));
}

#[test]
fn table_snapshots_cross_threads() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<RouteTable>();
    is_send_sync::<Subscriptions>();
    is_send_sync::<lars_lb::RouteLb>();
    is_send_sync::<lars_lb::LoadBalance>();
}

#[test]
fn subscriptions_publish_per_connection() {
    let mut s = Subscriptions::default();
    assert!(s.subscribe(1, A));
    assert!(!s.subscribe(1, A));
    s.subscribe(1, B);
    s.subscribe(2, B);
    s.subscribe(3, C);
    assert_eq!(
        s.publish(&[A, B, C]),
        vec![(1, vec![A, B]), (2, vec![B]), (3, vec![C])]
    );
    assert_eq!(s.publish(&[ModKey::new(9, 9)]), vec![]);
    assert!(s.unsubscribe(3, C));
    assert!(!s.unsubscribe(3, C));
    assert_eq!(s.unsubscribe_all(1), 2);
    assert_eq!(s.unsubscribe_all(1), 0);
    assert_eq!(s.publish(&[A, B, C]), vec![(2, vec![B])]);
    assert_eq!((s.connections(), s.keys()), (1, 1));
    assert!(s.is_subscribed(2, B));
    assert_eq!(s.subscribers(B).collect::<Vec<_>>(), vec![2]);
    assert_eq!(s.keys_of(2).collect::<Vec<_>>(), vec![B]);
    s.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
enum SubOp {
    Sub(u64, u32),
    Unsub(u64, u32),
    UnsubAll(u64),
}

fn sub_op() -> impl Strategy<Value = SubOp> {
    prop_oneof![
        4 => (0..6u64, 0..6u32).prop_map(|(c, k)| SubOp::Sub(c, k)),
        1 => (0..6u64, 0..6u32).prop_map(|(c, k)| SubOp::Unsub(c, k)),
        1 => (0..6u64).prop_map(SubOp::UnsubAll),
    ]
}

proptest! {
    #[test]
    fn subscriptions_agree_with_a_model(ops in prop::collection::vec(sub_op(), 0..60)) {
        let mut s = Subscriptions::default();
        let mut model = std::collections::BTreeSet::<(u64, u32)>::new();
        for op in ops {
            match op {
                SubOp::Sub(c, k) => {
                    prop_assert_eq!(s.subscribe(c, ModKey::new(k, 0)), model.insert((c, k)));
                }
                SubOp::Unsub(c, k) => {
                    prop_assert_eq!(s.unsubscribe(c, ModKey::new(k, 0)), model.remove(&(c, k)));
                }
                SubOp::UnsubAll(c) => {
                    let n = model.iter().filter(|(mc, _)| *mc == c).count();
                    model.retain(|(mc, _)| *mc != c);
                    prop_assert_eq!(s.unsubscribe_all(c), n);
                }
            }
            prop_assert!(s.check_invariants().is_ok());
        }
        let all: Vec<ModKey> = (0..6).map(|k| ModKey::new(k, 0)).collect();
        let mut want: std::collections::BTreeMap<u64, Vec<ModKey>> = Default::default();
        for (c, k) in &model {
            want.entry(*c).or_default().push(ModKey::new(*k, 0));
        }
        prop_assert_eq!(s.publish(&all), want.into_iter().collect::<Vec<_>>());
    }
}
