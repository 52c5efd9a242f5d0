//! The checked-in C header is what cbindgen makes of the Rust side today.

use std::path::PathBuf;

#[test]
fn the_c_header_matches_the_rust_side() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../clients/cpp/include/lars.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("lars-capi/cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    if std::env::var_os("LARS_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write clients/cpp/include/lars.h");
        return;
    }
    let checked_in = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        checked_in == generated,
        "clients/cpp/include/lars.h differs from the Rust side (lars-capi/src/ffi.rs).\n\
         Regenerate it with: LARS_BLESS=1 cargo test -p lars-capi --test header\n\
         --- generated ---\n{generated}"
    );
}
