//! The `lars-reporter` binary as an operator runs it: the config file and the
//! exit code.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_lars-reporter");

mod handoff;

fn conf(name: &str, text: &str) -> PathBuf {
    lars_testkit::temp_conf("lars-reporter-bin", name, text)
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    lars_testkit::run_bin(BIN, args)
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let missing = std::env::temp_dir().join("lars-reporter-bin-no-such-file.conf");
    let out = run(&["-c".as_ref(), missing.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lars-reporter-bin-no-such-file.conf"),
        "{stderr}"
    );
}

#[test]
fn strict_rejects_an_unknown_key_naming_file_section_and_key() {
    let path = conf("strict", "[reactor]\nprot = 1234\n[nosuch]\na = 1\n");
    let out = run(&["--strict".as_ref(), "-c".as_ref(), path.as_os_str()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("[reactor] prot: unknown key"), "{stderr}");
    assert!(stderr.contains("[nosuch]: unknown section"), "{stderr}");
}

#[test]
fn without_strict_an_unknown_key_is_a_plain_warning() {
    // The store cannot open, so the reporter exits after loading the config.
    let path = conf(
        "warn",
        "[reactor]\nport = 0\nprot = 1234\n[store]\nurl = mysql://root@127.0.0.1:1/lars\n",
    );
    let out = run(&["-c".as_ref(), path.as_os_str()]);
    std::fs::remove_file(&path).unwrap();
    // The logs go to stdout, the error to stderr.
    let stderr = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("[reactor] prot: unknown key"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour escapes off a terminal: {stderr:?}"
    );
}
