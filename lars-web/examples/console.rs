//! Runs the console alone, for trying it and its API with curl:
//!
//! ```text
//! cargo run -p lars-web --example console -- sqlite:///tmp/lars.db 127.0.0.1:8080
//! ```
//!
//! Creates the user `admin` with password `admin-password` when the store
//! has no user yet, and the demo routes when it has no route. Serves until
//! killed. (`lars web` is the real command.)
#![allow(clippy::unwrap_used)]

use lars_store::{RouteAdmin, RouteFilter, UserStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "sqlite://./lars.db".into());
    let addr = args.next().unwrap_or_else(|| lars_web::DEFAULT_ADDR.into());
    let store = lars_store::open(&url)?;
    if store.list_users()?.is_empty() {
        lars_web::add_user(&store, "admin", "admin-password")?;
        println!("created user admin / admin-password");
    }
    if store.list_routes(RouteFilter::default())?.is_empty() {
        store.seed_demo()?;
    }
    let config = lars_web::WebConfig {
        addr: addr.parse()?,
        ..lars_web::WebConfig::default()
    };
    let web = lars_web::serve(config, store)?;
    println!("console on http://{}", web.local_addr());
    web.wait();
    Ok(())
}
