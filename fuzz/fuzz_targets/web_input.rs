//! The console's form and JSON parsing and its validators
//! (`lars_web::fuzzing::web_input`: urlencoded form fields, JSON bodies,
//! host lists, ids, ports, descriptions, user names) on arbitrary bytes.
//!
//! Invariants (checked inside): no panic; an accepted value is in its
//! documented range.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lars_web::fuzzing::web_input(data);
});
