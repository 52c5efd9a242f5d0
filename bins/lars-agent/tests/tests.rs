//! The `lars-agent` binary as an operator runs it: the config file and the
//! exit code.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_lars-agent");

fn conf(name: &str, text: &str) -> PathBuf {
    lars_testkit::temp_conf("lars-agent-bin", name, text)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    lars_testkit::run_bin(BIN, args)
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let missing = std::env::temp_dir().join("lars-agent-bin-no-such-file.conf");
    let out = run(&["-c".as_ref(), missing.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lars-agent-bin-no-such-file.conf"),
        "{stderr}"
    );
}

#[test]
fn strict_rejects_an_unknown_key_naming_file_section_and_key() {
    let path = conf("strict", "[loadbalance]\nprot = 1234\n[nosuch]\na = 1\n");
    let out = run(&["--strict".as_ref(), "-c".as_ref(), path.as_os_str()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
    assert!(
        stderr.contains("[loadbalance] prot: unknown key"),
        "{stderr}"
    );
    assert!(stderr.contains("[nosuch]: unknown section"), "{stderr}");
}
