//! The agent's route snapshot file loader (`lars_agent::snapshot::parse`)
//! on arbitrary text, and the writer's format read back.
//!
//! Invariants: no panic; what parses renders to a file that parses to the
//! same routes (the writer sorts by key and leaves out keys without hosts,
//! which a restore ignores anyway).
#![no_main]

use std::path::Path;

use lars_agent::snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.snapshot");
    match snapshot::parse(path, text) {
        Ok(routes) => {
            let again = snapshot::render(&routes);
            let back = snapshot::parse(path, &again).expect("a rendered snapshot parses");
            assert_eq!(normal(back), normal(routes));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

fn normal(mut routes: snapshot::Routes) -> snapshot::Routes {
    routes.retain(|(_, hosts)| !hosts.is_empty());
    routes.sort();
    routes
}
