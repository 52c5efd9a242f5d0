//! `lars sim`: the simulator's command line, and `--replay` against a SQLite
//! store filled through lars-store's API. Virtual time only: nothing sleeps.

use std::process::{Command, Output};

use lars_core::{HostAddr, ModKey};
use lars_store::{HistoryRow, StatsStore};

fn lars(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lars"))
        .args(args)
        .env_remove("LARS_STORE_URL")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failure(o: &Output) -> String {
    assert!(!o.status.success(), "should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn rows(json: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["rows"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [serde_json::Value], policy: &str) -> &'a serde_json::Value {
    rows.iter().find(|r| r["policy"] == policy).unwrap()
}

#[test]
fn sim_dead1_prints_one_json_row_per_policy() {
    let out = ok(&lars(&["sim", "dead1", "--calls", "2000", "--json"]));
    let rows = rows(&out);
    let policies: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["rr", "classic", "adaptive", "envoy", "p2c"]);
    assert!(
        rows.iter()
            .all(|r| r["scenario"] == "dead1" && r["calls"] == 2000.0)
    );
    // 20 s at 100 calls/s, h0 dead from 10 s: round robin fails 100 calls.
    assert_eq!(row(&rows, "rr")["failed"], 100.0);
    assert_eq!(row(&rows, "rr")["failed_pct"], 5.0);
    for p in ["envoy", "p2c"] {
        assert!(row(&rows, p)["failed_pct"].as_f64().unwrap() < 1.0, "{p}");
    }
}

#[test]
fn sim_prints_a_table_and_draws_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flap.svg");
    let out = ok(&lars(&[
        "sim",
        "flap1:5/5",
        "healthy",
        "--policy",
        "rr,envoy",
        "--hosts",
        "4",
        "--calls",
        "1500",
        "--plot",
        svg.to_str().unwrap(),
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("scenario") && lines[0].contains("fail%"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("flap1:5/5") && lines[1].contains("rr"),
        "{out}"
    );
    assert!(out.contains("up share"), "{out}");
    assert!(out.contains("spread"), "{out}");
    assert!(
        out.contains("4 host(s), 100 calls/s, 1500 calls per run"),
        "{out}"
    );
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
    assert_eq!(doc.matches("<polyline").count(), 2 * 2 * 4);
}

#[test]
fn sim_rejects_bad_input_with_a_clear_message() {
    assert!(failure(&lars(&["sim", "bogus", "--calls", "10"])).contains("unknown scenario"));
    assert!(failure(&lars(&["sim", "dead11", "--calls", "10"])).contains("bad scenario"));
    assert!(
        failure(&lars(&[
            "sim",
            "dead1",
            "--policy",
            "rr,random",
            "--calls",
            "10"
        ]))
        .contains("unknown policy")
    );
    assert!(failure(&lars(&["sim", "dead1", "--hosts", "0"])).contains("hosts"));
    assert!(failure(&lars(&["sim", "dead1", "--rate=0"])).contains("rate 0"));
    assert!(
        failure(&lars(&[
            "sim",
            "dead1",
            "--config",
            "/nonexistent/lars.conf"
        ]))
        .contains("/nonexistent/lars.conf")
    );
    // --replay needs its key and period.
    assert!(!lars(&["sim", "--replay", "--key", "1/1"]).status.success());
    assert!(
        failure(&lars(&[
            "sim", "--replay", "--key", "1/x", "--from", "0", "--to", "60"
        ]))
        .contains("MODID/CMDID")
    );
}

#[test]
fn sim_reads_the_loadbalance_section_of_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lb.conf");
    // No probes at all and no way back: classic then never sends to h0 again.
    std::fs::write(
        &conf,
        "[loadbalance]\nprobe_num = 1000000\noverload_timeout = 100000\ncontin_err_limit = 1\n",
    )
    .unwrap();
    let args = [
        "sim", "dead1", "--policy", "classic", "--calls", "3000", "--json",
    ];
    let default = rows(&ok(&lars(&args)));
    let mut with_conf = args.to_vec();
    with_conf.extend(["--config", conf.to_str().unwrap()]);
    let tuned = rows(&ok(&lars(&with_conf)));
    let f = |r: &[serde_json::Value]| r[0]["failed"].as_f64().unwrap();
    assert!(f(&tuned) < f(&default), "{} vs {}", f(&tuned), f(&default));
    std::fs::write(&conf, "[loadbalance]\nerr_rate = 2\n").unwrap();
    assert!(failure(&lars(&with_conf)).contains("err_rate"));
}

#[test]
fn sim_replays_the_history_of_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/lars.db", dir.path().display());
    let key = ModKey::new(7, 1);
    let a: HostAddr = "10.7.0.1:80".parse().unwrap();
    let b: HostAddr = "10.7.0.2:80".parse().unwrap();
    // 2023-11-14 22:13:00 UTC, five minutes: b fails every call in the last three.
    let t0 = 1_699_999_980;
    let mut history = Vec::new();
    for m in 0..5 {
        let minute = t0 + 60 * m;
        history.push(HistoryRow {
            key,
            host: a,
            minute,
            succ: 600,
            err: 0,
        });
        let (succ, err) = if m < 2 { (600, 0) } else { (0, 600) };
        history.push(HistoryRow {
            key,
            host: b,
            minute,
            succ,
            err,
        });
    }
    // Another key's rows are not replayed.
    history.push(HistoryRow {
        key: ModKey::new(7, 2),
        host: a,
        minute: t0,
        succ: 0,
        err: 999,
    });
    let store = lars_store::open(&url).unwrap();
    store.append_history(&history).unwrap();
    drop(store);

    let out = ok(&lars(&[
        "sim",
        "--replay",
        "--store",
        &url,
        "--key",
        "7/1",
        "--from",
        "2023-11-14 22:13",
        "--to",
        &(t0 + 300).to_string(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recorded"]["calls"], 6000);
    assert_eq!(v["recorded"]["failed"], 1800);
    assert_eq!(v["hosts"], 2);
    assert_eq!(v["rate"], 20.0);
    assert_eq!(v["calls"], 6000);
    let rows = rows(&out);
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["scenario"] == "replay 7/1"));
    // Round robin keeps sending half the calls to b while it fails: 30%.
    let rr = row(&rows, "rr")["failed_pct"].as_f64().unwrap();
    assert!((rr - 30.0).abs() < 1.0, "{rr}");
    for p in ["envoy", "p2c"] {
        let f = row(&rows, p)["failed_pct"].as_f64().unwrap();
        assert!(f < rr / 2.0, "{p}: {f}");
    }

    // The table form says what really happened.
    let table = ok(&lars(&[
        "sim",
        "--replay",
        "--store",
        &url,
        "--key",
        "7/1",
        "--from",
        "1699999980",
        "--to",
        "1700000280",
        "--policy",
        "rr",
    ]));
    assert!(table.contains("replay 7/1"), "{table}");
    assert!(
        table.contains("recorded: 6000 calls, 1800 failed (30.00%)"),
        "{table}"
    );

    // Nothing recorded for that key or period: a clear error.
    let none = failure(&lars(&[
        "sim",
        "--replay",
        "--store",
        &url,
        "--key",
        "9/9",
        "--from",
        "1699999980",
        "--to",
        "1700000280",
    ]));
    assert!(none.contains("nothing to replay"), "{none}");
    // A store that does not exist is not created.
    let missing = format!("sqlite://{}/none.db", dir.path().display());
    let err = failure(&lars(&[
        "sim", "--replay", "--store", &missing, "--key", "7/1", "--from", "0", "--to", "60",
    ]));
    assert!(err.contains("no store at"), "{err}");
    assert!(!dir.path().join("none.db").exists());
}
