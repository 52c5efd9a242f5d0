//! Concurrent edits of one key: two admins changing different hosts of the
//! same key at the same time both keep their change (the console edits a
//! host with one store operation that reads and writes the key inside the
//! version transaction).

use std::sync::{Arc, Barrier};

use lars_core::{HostAddr, ModKey};
use lars_store::{RouteAdmin, RouteRead};

use crate::common::{Console, JSON};

/// Edits per admin; each admin changes its own hosts one after the other.
const EDITS: u16 = 15;

fn host(admin: u16, i: u16, edited: bool) -> HostAddr {
    let port = 1000 * (admin + 1) + i + if edited { 500 } else { 0 };
    HostAddr::new(u32::from(std::net::Ipv4Addr::new(10, 7, 0, 1)), port)
}

fn two_admins_edit_one_key(c: &Console) {
    let key = ModKey::new(9, 9);
    let before: Vec<HostAddr> = (0..2)
        .flat_map(|a| (0..EDITS).map(move |i| host(a, i, false)))
        .collect();
    c.store.set_hosts(key, &before).unwrap();
    let v0 = c.store.version().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let admins: Vec<_> = (0..2u16)
        .map(|a| {
            let (token, _, _) = c.api_login();
            let (addr, barrier) = (c.addr, barrier.clone());
            std::thread::spawn(move || {
                let auth = format!("Bearer {token}");
                let mut versions = Vec::new();
                for i in 0..EDITS {
                    let (old, new) = (host(a, i, false), host(a, i, true));
                    barrier.wait();
                    let r = crate::common::request(
                        addr,
                        "PUT",
                        &format!("/api/routes/9/9/hosts/{old}"),
                        &[("Authorization", &auth), JSON],
                        format!(r#"{{"ip":"{}","port":{}}}"#, new.ipv4(), new.port).as_bytes(),
                    );
                    assert_eq!(r.status, 200, "{old} -> {new}: {}", r.text());
                    versions.push(r.json()["version"].as_u64().unwrap());
                }
                versions
            })
        })
        .collect();
    let mut versions: Vec<u64> = admins.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let after: Vec<HostAddr> = (0..2)
        .flat_map(|a| (0..EDITS).map(move |i| host(a, i, true)))
        .collect();
    assert_eq!(
        c.store.load_routes().unwrap().routes[&key],
        after,
        "every edit kept, each host in its place"
    );
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 2 * usize::from(EDITS), "one version each");
    assert!(versions[0] > v0);
    assert_eq!(c.store.version().unwrap(), versions[versions.len() - 1]);
}

#[test]
fn concurrent_host_edits_of_one_key_lose_nothing() {
    two_admins_edit_one_key(&Console::start());
}

#[test]
fn concurrent_host_edits_of_one_key_lose_nothing_over_mysql() {
    if let Some(c) = Console::start_mysql("edits") {
        two_admins_edit_one_key(&c);
    }
}
