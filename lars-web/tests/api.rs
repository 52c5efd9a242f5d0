//! REST API and page tests: auth, CSRF, validation, versions and changes.

use lars_core::{HostAddr, ModKey};
use lars_store::{CallStatusRow, HistoryRow, RouteAdmin, RouteRead, StatsStore};

use crate::common::{Console, FORM, JSON, enc};

#[test]
fn no_session_is_401_for_the_api_and_a_redirect_for_pages() {
    let c = Console::start();
    for (m, p) in [
        ("GET", "/api/routes"),
        ("GET", "/api/version"),
        ("POST", "/api/routes"),
        ("DELETE", "/api/routes/1/1"),
    ] {
        let r = c.req(m, p, &[JSON], "{}");
        assert_eq!(r.status, 401, "{m} {p}");
        assert_eq!(r.json()["error"], "unauthorized");
    }
    for (m, p) in [
        ("GET", "/"),
        ("GET", "/routes"),
        ("GET", "/status/1/1"),
        ("POST", "/routes"),
    ] {
        let r = c.req(m, p, &[FORM], "modid=1&cmdid=1&ip=10.0.0.1&port=80");
        assert_eq!(r.status, 303, "{m} {p}");
        assert_eq!(r.header("location"), Some("/login"));
    }
    // A made-up bearer token or cookie is no session either.
    let r = c.req(
        "GET",
        "/api/routes",
        &[("Authorization", "Bearer 00ff")],
        "",
    );
    assert_eq!(r.status, 401);
    let r = c.req("GET", "/routes", &[("Cookie", "lars_session=00ff")], "");
    assert_eq!(r.status, 303);
    assert_eq!(c.store.version().unwrap(), 0, "nothing written");
}

#[test]
fn login_checks_the_password_and_sets_a_strict_cookie() {
    let c = Console::start();
    let r = c.req(
        "POST",
        "/api/login",
        &[JSON],
        r#"{"username":"admin","password":"wrong-password"}"#,
    );
    assert_eq!(r.status, 401);
    let r = c.req(
        "POST",
        "/api/login",
        &[JSON],
        r#"{"username":"nobody","password":"wrong-password"}"#,
    );
    assert_eq!(r.status, 401);
    let (token, _, _) = c.api_login();
    assert_eq!(token.len(), 64);

    // The form login sets an HttpOnly, SameSite=Strict, Secure cookie.
    let r = c.req("GET", "/login", &[], "");
    let set = r.set_cookies().join("\n");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );
    let anon = format!("lars_session={}", r.cookie("lars_session").unwrap());
    let csrf = r.csrf();
    let r = c.req(
        "POST",
        "/login",
        &[("Cookie", &anon), FORM],
        &format!("csrf={csrf}&username=admin&password=nope"),
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Unknown user or wrong password"));
    let (cookie, _) = c.form_login();
    // The anonymous pre-login session does not become a login.
    let r = c.req("GET", "/routes", &[("Cookie", &anon)], "");
    assert_eq!(r.status, 303);
    let r = c.req("GET", "/routes", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200);

    // Logging out ends the session.
    let r = c.req(
        "POST",
        "/api/logout",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(r.status, 204);
    let r = c.req(
        "GET",
        "/api/version",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn writes_without_the_csrf_token_are_rejected_and_write_nothing() {
    let c = Console::start();
    let (token, csrf, cookie) = c.api_login();
    let body = r#"{"modid":1,"cmdid":1,"ip":"10.0.0.1","port":80}"#;
    // Cookie without header, with a wrong header: 403.
    let r = c.req("POST", "/api/routes", &[("Cookie", &cookie), JSON], body);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "csrf");
    let r = c.req(
        "POST",
        "/api/routes",
        &[("Cookie", &cookie), ("X-CSRF-Token", "0000"), JSON],
        body,
    );
    assert_eq!(r.status, 403);
    assert_eq!(c.store.version().unwrap(), 0);
    // Cookie with the header, or a bearer token: accepted.
    let r = c.req(
        "POST",
        "/api/routes",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), JSON],
        body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = c.req(
        "POST",
        "/api/routes",
        &[("Authorization", &format!("Bearer {token}")), JSON],
        r#"{"modid":1,"cmdid":1,"ip":"10.0.0.2","port":80}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = c.store.version().unwrap();

    // Forms: no token, a wrong token, another session's token: 403.
    let (fcookie, fcsrf) = c.form_login();
    let form = "modid=2&cmdid=2&ip=10.0.0.3&port=80";
    let bodies: Vec<String> = vec![
        String::from(form),
        format!("csrf=abc&{form}"),
        format!("csrf={csrf}&{form}"),
    ];
    for body in bodies {
        let r = c.req("POST", "/routes", &[("Cookie", &fcookie), FORM], &body);
        assert_eq!(r.status, 403, "{body}");
        assert!(r.text().contains("CSRF"));
    }
    let r = c.req("POST", "/mods/1/delete", &[("Cookie", &fcookie), FORM], "");
    assert_eq!(r.status, 403);
    assert_eq!(c.store.version().unwrap(), v, "nothing written");
    // The right token goes through.
    let r = c.req(
        "POST",
        "/routes",
        &[("Cookie", &fcookie), FORM],
        &format!("csrf={fcsrf}&{form}"),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(c.store.version().unwrap() > v);
}

#[test]
fn invalid_input_is_422_with_field_messages_and_writes_nothing() {
    let c = Console::start();
    let (token, _, _) = c.api_login();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str()), JSON];
    let r = c.req(
        "POST",
        "/api/routes",
        &h,
        r#"{"modid":0,"cmdid":"x","ip":"10.0.0","port":70000}"#,
    );
    assert_eq!(r.status, 422);
    let f = &r.json()["fields"];
    assert!(
        f["modid"].as_str().unwrap().contains("1 to 4294967295"),
        "{f}"
    );
    assert!(f["cmdid"].is_string());
    assert!(f["ip"].as_str().unwrap().contains("dotted-quad"), "{f}");
    assert!(f["port"].as_str().unwrap().contains("1 to 65535"), "{f}");
    for (ip, port) in [
        ("\"0.0.0.0\"", "80"),
        ("\"10.0.0.1\"", "0"),
        ("\"1.2.3.4.5\"", "80"),
        ("\"10.0.0.1\"", "-1"),
    ] {
        let r = c.req(
            "POST",
            "/api/routes",
            &h,
            &format!(r#"{{"modid":1,"cmdid":1,"ip":{ip},"port":{port}}}"#),
        );
        assert_eq!(r.status, 422, "{ip} {port}");
    }
    let r = c.req("POST", "/api/routes", &h, "{not json");
    assert_eq!(r.status, 400);
    let r = c.req(
        "POST",
        "/api/routes",
        &[("Authorization", auth.as_str()), FORM],
        "modid=1",
    );
    assert_eq!(r.status, 415);
    assert_eq!(c.store.version().unwrap(), 0);

    // Replacing a list with one bad host writes nothing.
    let r = c.req(
        "POST",
        "/api/routes",
        &h,
        r#"{"modid":5,"cmdid":6,"ip":"10.0.0.1","port":80}"#,
    );
    assert_eq!(r.status, 201);
    let v = c.store.version().unwrap();
    let r = c.req(
        "PUT",
        "/api/routes/5/6",
        &h,
        r#"{"hosts":[{"ip":"10.0.0.2","port":80},{"ip":"10.0.0.3","port":0}]}"#,
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()["fields"]["hosts[1].port"].is_string(),
        "{}",
        r.text()
    );
    assert_eq!(c.store.version().unwrap(), v);
    let r = c.req("GET", "/api/routes/5/6", &h, "");
    assert_eq!(r.json()["hosts"].as_array().unwrap().len(), 1);
    let r = c.req(
        "POST",
        "/api/routes",
        &h,
        r#"{"modid":5,"cmdid":6,"ip":"10.0.0.1","port":80}"#,
    );
    assert_eq!(r.status, 409, "duplicate host");

    // The page shows the message next to the field and keeps the input.
    let (cookie, csrf) = c.form_login();
    let r = c.req(
        "POST",
        "/routes",
        &[("Cookie", &cookie), FORM],
        &format!("csrf={csrf}&modid=1&cmdid=1&ip=10.0.0.1&port=99999"),
    );
    assert_eq!(r.status, 422);
    let t = r.text();
    assert!(
        t.contains(r#"data-field="port">port must be a whole number from 1 to 65535"#),
        "{t}"
    );
    assert!(t.contains(r#"value="99999""#));
    let r = c.req(
        "POST",
        "/routes/5/6/replace",
        &[("Cookie", &cookie), FORM],
        &format!("csrf={csrf}&hosts={}", enc("10.0.0.7:80\nbad:80")),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains("line 2"));
    assert_eq!(c.store.version().unwrap(), v);
}

/// The version after a change, checked against the pending changes.
fn assert_recorded(c: &Console, before: u64, key: ModKey, answer: &serde_json::Value) -> u64 {
    let v = answer["version"].as_u64().unwrap();
    assert!(v > before, "version {v} after {before}");
    assert_eq!(c.store.version().unwrap(), v);
    let pending = c.store.pending_changes().unwrap();
    assert!(
        pending.iter().any(|p| p.key == key && p.version == v),
        "{pending:?}"
    );
    v
}

#[test]
fn every_route_change_bumps_the_version_and_records_the_key() {
    let c = Console::start();
    api_change_flow(&c);
    form_change_flow(&c);
}

#[test]
fn every_route_change_bumps_the_version_and_records_the_key_over_mysql() {
    let Some(c) = Console::start_mysql("changes") else {
        return;
    };
    api_change_flow(&c);
    form_change_flow(&c);
}

/// Add, edit, replace, remove, delete through the API; each bumps the
/// version and records the key.
fn api_change_flow(c: &Console) {
    let (token, _, _) = c.api_login();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str()), JSON];
    let key = ModKey::new(7, 3);
    let ok = |r: crate::common::Resp| {
        assert!(
            r.status == 200 || r.status == 201,
            "{} {}",
            r.status,
            r.text()
        );
        r.json()
    };
    let v0 = c.store.version().unwrap();
    let v1 = assert_recorded(
        c,
        v0,
        key,
        &ok(c.req(
            "POST",
            "/api/routes",
            &h,
            r#"{"modid":7,"cmdid":3,"ip":"10.1.0.1","port":8001}"#,
        )),
    );
    let v2 = assert_recorded(
        c,
        v1,
        key,
        &ok(c.req(
            "POST",
            "/api/routes",
            &h,
            r#"{"modid":"7","cmdid":"3","ip":"10.1.0.2","port":"8002"}"#,
        )),
    );
    let v3 = assert_recorded(
        c,
        v2,
        key,
        &ok(c.req(
            "PUT",
            "/api/routes/7/3/hosts/10.1.0.1:8001",
            &h,
            r#"{"ip":"10.1.0.9","port":9009}"#,
        )),
    );
    let hosts = c.store.load_routes().unwrap().routes[&key].clone();
    assert_eq!(
        hosts,
        vec![
            "10.1.0.9:9009".parse::<HostAddr>().unwrap(),
            "10.1.0.2:8002".parse().unwrap()
        ]
    );
    let v4 = assert_recorded(
        c,
        v3,
        key,
        &ok(c.req(
            "PUT",
            "/api/routes/7/3",
            &h,
            r#"{"hosts":[{"ip":"10.2.0.1","port":1},{"ip":"10.2.0.2","port":65535}]}"#,
        )),
    );
    let v5 = assert_recorded(
        c,
        v4,
        key,
        &ok(c.req("DELETE", "/api/routes/7/3/hosts/10.2.0.1:1", &h, "")),
    );
    let r = ok(c.req("GET", "/api/routes?modid=7", &h, ""));
    assert_eq!(r["version"], v5);
    assert_eq!(r["routes"].as_array().unwrap().len(), 1);
    assert_eq!(r["routes"][0]["ip"], "10.2.0.2");
    let r = ok(c.req("GET", "/api/changes", &h, ""));
    assert_eq!(r["changes"].as_array().unwrap().len(), 5);
    let v6 = assert_recorded(c, v5, key, &ok(c.req("DELETE", "/api/routes/7/3", &h, "")));
    assert!(!c.store.load_routes().unwrap().routes.contains_key(&key));
    let r = ok(c.req("GET", "/api/version", &h, ""));
    assert_eq!(r["version"], v6);
    assert_eq!(r["pending_changes"], 6);
    // Missing things are 404 and change nothing.
    assert_eq!(c.req("DELETE", "/api/routes/7/3", &h, "").status, 404);
    assert_eq!(
        c.req("DELETE", "/api/routes/7/3/hosts/10.2.0.2:65535", &h, "")
            .status,
        404
    );
    assert_eq!(
        c.req(
            "PUT",
            "/api/routes/7/3/hosts/10.2.0.2:65535",
            &h,
            r#"{"ip":"10.0.0.1","port":1}"#
        )
        .status,
        404
    );
    assert_eq!(c.store.version().unwrap(), v6);
}

/// The same through the pages' forms.
fn form_change_flow(c: &Console) {
    let v6 = c.store.version().unwrap();
    let (cookie, csrf) = c.form_login();
    let fh = [("Cookie", cookie.as_str()), FORM];
    let r = c.req(
        "POST",
        "/routes",
        &fh,
        &format!("csrf={csrf}&modid=8&cmdid=1&ip=10.3.0.1&port=81"),
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/routes/8/1?done=added&v=")
    );
    let v7 = c.store.version().unwrap();
    assert!(v7 > v6);
    let steps = [
        ("/routes/8/1/add", "ip=10.3.0.2&port=82".to_owned()),
        (
            "/routes/8/1/edit",
            format!("old={}&ip=10.3.0.3&port=83", enc("10.3.0.1:81")),
        ),
        ("/routes/8/1/remove", format!("host={}", enc("10.3.0.2:82"))),
        (
            "/routes/8/1/replace",
            format!("hosts={}", enc("10.3.0.4:84\r\n10.3.0.5:85\r\n")),
        ),
        ("/routes/8/1/delete", String::new()),
    ];
    let mut last = v7;
    for (path, body) in steps {
        let r = c.req("POST", path, &fh, &format!("csrf={csrf}&{body}"));
        assert_eq!(r.status, 303, "{path}: {}", r.text());
        let v = c.store.version().unwrap();
        assert!(v > last, "{path}");
        assert!(
            c.store
                .pending_changes()
                .unwrap()
                .iter()
                .any(|p| p.key == ModKey::new(8, 1) && p.version == v)
        );
        last = v;
        let r = c.req(
            "GET",
            r.header("location").unwrap(),
            &[("Cookie", &cookie)],
            "",
        );
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains(&format!("Route version is now {v}")),
            "{path}"
        );
    }
}

#[test]
fn descriptions_crud() {
    let c = Console::start();
    let (token, _, _) = c.api_login();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str()), JSON];
    assert_eq!(
        c.req(
            "POST",
            "/api/mods",
            &h,
            r#"{"modid":10,"content":"payments"}"#
        )
        .status,
        200
    );
    assert_eq!(
        c.req(
            "POST",
            "/api/mods",
            &h,
            r#"{"modid":11,"content":"search"}"#
        )
        .status,
        200
    );
    assert_eq!(
        c.req("POST", "/api/cmds", &h, r#"{"cmdid":1,"content":"charge"}"#)
            .status,
        200
    );
    let r = c.req("POST", "/api/mods", &h, r#"{"modid":-3,"content":"x"}"#);
    assert_eq!(r.status, 422);
    assert!(r.json()["fields"]["modid"].is_string());
    let r = c.req("GET", "/api/mods?q=pay", &h, "");
    assert_eq!(
        r.json(),
        serde_json::json!([{"modid": 10, "content": "payments"}])
    );
    assert_eq!(
        c.req(
            "POST",
            "/api/mods",
            &h,
            r#"{"modid":10,"content":"payments v2"}"#
        )
        .status,
        200
    );
    assert_eq!(
        c.req("GET", "/api/mods?q=10", &h, "").json()[0]["content"],
        "payments v2"
    );
    assert_eq!(c.req("DELETE", "/api/mods/10", &h, "").status, 204);
    assert_eq!(c.req("DELETE", "/api/mods/10", &h, "").status, 404);
    assert_eq!(
        c.req("GET", "/api/mods", &h, "")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(c.req("GET", "/api/cmds", &h, "").json()[0]["cmdid"], 1);

    // Pages.
    let (cookie, csrf) = c.form_login();
    let fh = [("Cookie", cookie.as_str()), FORM];
    let r = c.req(
        "POST",
        "/cmds",
        &fh,
        &format!("csrf={csrf}&cmdid=2&content={}", enc("refund <b>")),
    );
    assert_eq!(r.status, 303);
    let r = c.req("GET", "/cmds?q=refund", &[("Cookie", &cookie)], "");
    assert!(r.text().contains("refund &lt;b&gt;"), "escaped");
    let r = c.req(
        "POST",
        "/cmds",
        &fh,
        &format!("csrf={csrf}&cmdid=0&content=x"),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains(r#"data-field="cmdid""#));
    let r = c.req("POST", "/cmds/2/delete", &fh, &format!("csrf={csrf}"));
    assert_eq!(r.status, 303);
    assert_eq!(
        c.req("GET", "/api/cmds", &h, "")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Status rows and an hour of history for key 1/1 (the demo hosts
/// 127.0.0.1:9001-9003): 9002 overloaded.
pub fn seed_status(c: &Console) {
    let key = ModKey::new(1, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let hosts: [HostAddr; 3] = [
        "10.0.0.1:9001".parse().unwrap(),
        "10.0.0.2:9002".parse().unwrap(),
        "10.0.0.3:9003".parse().unwrap(),
    ];
    let caller = u32::from(std::net::Ipv4Addr::new(10, 9, 0, 1));
    let rows: Vec<CallStatusRow> = hosts
        .iter()
        .enumerate()
        .map(|(i, &host)| CallStatusRow {
            key,
            host,
            caller,
            succ_cnt: 500 - 200 * i as u64,
            err_cnt: if i == 1 { 120 } else { 3 },
            ts: now - 5,
            overload: i == 1,
        })
        .collect();
    c.store.upsert_call_status(&rows).unwrap();
    let mut hist = Vec::new();
    for m in 0..60i64 {
        let minute = now - m * 60;
        for (i, &host) in hosts.iter().enumerate() {
            let wave = ((m as f64) / 6.0).sin().abs();
            let succ = (40.0 + 30.0 * wave) as u64 / (i as u64 + 1);
            let err = if i == 1 && (10..25).contains(&m) {
                20 + (m as u64 % 7)
            } else {
                m as u64 % 3
            };
            hist.push(HistoryRow {
                key,
                host,
                minute,
                succ,
                err,
            });
        }
    }
    c.store.append_history(&hist).unwrap();
}

#[test]
fn call_status_shows_counters_overload_and_history() {
    status_flow(&Console::start());
}

#[test]
fn call_status_over_mysql() {
    if let Some(c) = Console::start_mysql("status") {
        status_flow(&c);
    }
}

fn status_flow(c: &Console) {
    seed_status(c);
    let (token, _, _) = c.api_login();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let r = c.req("GET", "/api/status/1/1", &h, "").json();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let over: Vec<&str> = rows
        .iter()
        .filter(|x| x["overload"] == true)
        .map(|x| x["ip"].as_str().unwrap())
        .collect();
    assert_eq!(over, ["10.0.0.2"]);
    assert_eq!(rows[0]["caller"], "10.9.0.1");
    let hist = r["history"].as_array().unwrap();
    assert_eq!(hist.len(), 60);
    let succ: u64 = hist.iter().map(|p| p["succ"].as_u64().unwrap()).sum();
    let (total_s, _) = c.store.history_totals(Some(ModKey::new(1, 1)), 0).unwrap();
    assert!(succ > 0 && succ <= total_s, "{succ} of {total_s}");
    assert_eq!(
        c.req("GET", "/api/status?modid=2", &h, "").json()["rows"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        c.req("GET", "/api/status/1/1?minutes=0", &h, "").status,
        422
    );

    let (cookie, _) = c.form_login();
    let t = c
        .req("GET", "/status/1/1", &[("Cookie", &cookie)], "")
        .text();
    assert!(t.contains("<svg"), "chart");
    assert!(t.contains("polyline"));
    assert_eq!(
        t.matches(r#"class="overload""#).count(),
        1,
        "one overloaded row"
    );
    assert!(t.contains("overloaded"));
    // Clipped once the reporters' trust limits rejected a report of the key.
    assert!(!t.contains("id=\"clipped\""));
    assert_eq!(
        c.req("GET", "/api/status/1/1", &h, "").json()["clipped"],
        false
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let rejected = lars_store::RejectedRow {
        key: ModKey::new(1, 1),
        minute: now - now % 60,
        reports: 1,
        calls: 8_589_934_590,
    };
    assert!(
        c.store
            .write_flush_once(7, now, &[], &[], &[rejected])
            .unwrap()
    );
    let r = c.req("GET", "/api/status/1/1", &h, "").json();
    assert_eq!(r["clipped"], true);
    assert_eq!(r["rejected"][0]["calls"], 8_589_934_590u64);
    let t = c
        .req("GET", "/status/1/1", &[("Cookie", &cookie)], "")
        .text();
    assert!(t.contains("id=\"clipped\""), "{t}");
    assert!(t.contains("8589934590 calls"), "{t}");
    let t = c.req("GET", "/status", &[("Cookie", &cookie)], "").text();
    assert!(t.contains("/status/1/1"));
    let t = c.req("GET", "/", &[("Cookie", &cookie)], "").text();
    assert!(t.contains("Overloaded now"));
}

#[test]
fn versions_page_lists_pending_changes() {
    let c = Console::start();
    c.store
        .add_host(ModKey::new(3, 4), "10.0.0.1:80".parse().unwrap())
        .unwrap();
    let v = c
        .store
        .add_host(ModKey::new(3, 5), "10.0.0.1:80".parse().unwrap())
        .unwrap();
    let (cookie, _) = c.form_login();
    let t = c.req("GET", "/versions", &[("Cookie", &cookie)], "").text();
    assert!(t.contains(&format!(r#"<b id="version">{v}</b>"#)), "{t}");
    assert!(t.contains(r#"<b id="pending">2</b>"#));
    assert!(t.contains("/routes/3/5"));
    c.store.delete_changes(None).unwrap();
    let t = c.req("GET", "/versions", &[("Cookie", &cookie)], "").text();
    assert!(t.contains(r#"<b id="pending">0</b>"#));
}

#[test]
fn add_user_validates_and_rejects_duplicates() {
    let c = Console::start();
    assert!(lars_web::add_user(&c.store, "admin", "another-password").is_err());
    assert!(lars_web::add_user(&c.store, "bob", "short").is_err());
    assert!(lars_web::add_user(&c.store, " ", "long-enough-password").is_err());
    lars_web::add_user(&c.store, "bob", "long-enough-password").unwrap();
    let r = c.req(
        "POST",
        "/api/login",
        &[JSON],
        r#"{"username":"bob","password":"long-enough-password"}"#,
    );
    assert_eq!(r.status, 200);
}

#[test]
fn set_password_resets_or_creates_a_user() {
    set_password_over(&Console::start());
    if let Some(c) = Console::start_mysql("set_password") {
        set_password_over(&c);
    }
}

fn set_password_over(c: &Console) {
    let login = |user: &str, password: &str| {
        let body = format!(r#"{{"username":"{user}","password":"{password}"}}"#);
        c.req("POST", "/api/login", &[JSON], &body).status
    };
    assert_eq!(
        lars_web::set_password(&c.store, "admin", "a brand new password").unwrap(),
        lars_web::PasswordSet::Changed
    );
    assert_eq!(login("admin", crate::common::PASSWORD), 401);
    assert_eq!(login("admin", "a brand new password"), 200);
    assert_eq!(
        lars_web::set_password(&c.store, "carol", "carol's password").unwrap(),
        lars_web::PasswordSet::Created
    );
    assert_eq!(login("carol", "carol's password"), 200);
    assert!(lars_web::set_password(&c.store, "admin", "short").is_err());
    assert!(lars_web::set_password(&c.store, "", "long enough password").is_err());
}

#[test]
fn failed_logins_back_off_per_name_and_address_only() {
    use crate::common::{PASSWORD, request_from};
    use std::net::{IpAddr, Ipv4Addr};
    let c = Console::start();
    lars_web::add_user(&c.store, "bob", "long-enough-password").unwrap();
    let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let login = |from: IpAddr, user: &str, password: &str| {
        let body = format!(r#"{{"username":"{user}","password":"{password}"}}"#);
        request_from(from, c.addr, "POST", "/api/login", &[JSON], body.as_bytes())
    };
    // The first failures (5 by default) are free, then address A is blocked
    // for `admin`: even the right password is refused, without a check.
    for _ in 0..6 {
        assert_eq!(login(a, "admin", "guess-guess").status, 401);
    }
    let r = login(a, "admin", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "throttled");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    // The same name from another address logs in: nobody locks `admin` out.
    let r = login(b, "admin", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    // Other names from A are not affected either.
    assert_eq!(login(a, "bob", "long-enough-password").status, 200);
    let stats = c.web.as_ref().unwrap().stats();
    assert_eq!(stats.logins_throttled, 1, "{stats:?}");
    assert_eq!(stats.logins_failed, 6, "{stats:?}");
    assert_eq!(stats.logins_ok, 2, "{stats:?}");
    // The form login answers a throttled name with the page and Retry-After.
    let r = c.req("GET", "/login", &[], "");
    let anon = format!("lars_session={}", r.cookie("lars_session").unwrap());
    let body = format!("csrf={}&username=admin&password=x", r.csrf());
    let r = c.req("POST", "/login", &[("Cookie", &anon), FORM], &body);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("Too many failed logins"), "{}", r.text());
}

#[test]
fn a_busy_port_is_an_error_and_stop_ends_idle_connections() {
    let mut c = Console::start();
    let config = lars_web::WebConfig {
        addr: c.addr,
        ..lars_web::WebConfig::default()
    };
    let err = lars_web::serve(config, c.store.clone()).unwrap_err();
    assert!(matches!(err, lars_web::WebError::Bind { .. }), "{err}");
    // The message names the address; the OS error is the source, said once
    // when a caller prints the chain.
    let os = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(err.to_string(), format!("cannot listen on {}", c.addr));
    assert!(!err.to_string().contains(&os), "{err}");

    // A browser-like keep-alive connection left open does not hold the stop.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(c.addr).unwrap();
    s.write_all(format!("GET /login HTTP/1.1\r\nHost: {}\r\n\r\n", c.addr).as_bytes())
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(s.read(&mut buf).unwrap() > 0);
    c.web.take().unwrap().stop();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        std::net::TcpStream::connect(c.addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn key_page_and_api_errors_are_answered_in_place() {
    let c = Console::start();
    let key = ModKey::new(6, 1);
    let (a, b): (HostAddr, HostAddr) = (
        "10.6.0.1:80".parse().unwrap(),
        "10.6.0.2:80".parse().unwrap(),
    );
    let v = c.store.set_hosts(key, &[a, b]).unwrap();
    let (cookie, csrf) = c.form_login();
    let fh = [("Cookie", cookie.as_str()), FORM];
    let post = |path: &str, body: String| c.req("POST", path, &fh, &format!("csrf={csrf}&{body}"));

    // Editing a host into one the key has: 409, the message next to the
    // edited host's ip field, the typed value kept.
    let r = post(
        "/routes/6/1/edit",
        format!("old={}&ip=10.6.0.2&port=80", enc("10.6.0.1:80")),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let t = r.text();
    assert!(
        t.contains(r#"data-field="ip">10.6.0.2:80 is already a route of 6/1"#),
        "{t}"
    );
    // Editing or removing a host that is gone: 404 with a note.
    let r = post(
        "/routes/6/1/edit",
        format!("old={}&ip=10.6.0.9&port=80", enc("10.6.0.7:80")),
    );
    assert_eq!(r.status, 404);
    assert!(
        r.text()
            .contains(r#"id="alert">10.6.0.7:80 is not a route of 6/1"#)
    );
    let r = post("/routes/6/1/remove", format!("host={}", enc("10.6.0.7:80")));
    assert_eq!(r.status, 404);
    // A bad new host stays next to its field; a bad hidden host is 422.
    let r = post(
        "/routes/6/1/edit",
        format!("old={}&ip=10.6.0&port=80", enc("10.6.0.1:80")),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains(r#"value="10.6.0""#));
    let r = post("/routes/6/1/edit", "old=nope&ip=10.6.0.3&port=80".into());
    assert_eq!(r.status, 422);
    assert!(r.text().contains("no valid host to change"));
    // A duplicate add: 409 next to the add form's ip.
    let r = post("/routes/6/1/add", "ip=10.6.0.1&port=80".into());
    assert_eq!(r.status, 409);
    assert!(r.text().contains(r#"data-field="ip""#));
    // A path naming no key is no page; in the API it is a field error.
    let r = c.req("GET", "/routes/0/1", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 404);
    let r = c.req("GET", "/status/1/x", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 404);
    let (token, _, _) = c.api_login();
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str()), JSON];
    let r = c.req("GET", "/api/routes/0/1", &h, "");
    assert_eq!(r.status, 422);
    assert!(r.json()["fields"]["modid"].is_string());
    let r = c.req("DELETE", "/api/routes/6/1/hosts/10.6.0.1", &h, "");
    assert_eq!(r.status, 422);
    assert!(r.json()["fields"]["host"].is_string());
    let r = c.req("DELETE", "/api/mods/x", &h, "");
    assert_eq!(r.status, 422);
    assert!(r.json()["fields"]["modid"].is_string());
    let r = c.req(
        "PUT",
        "/api/routes/6/1/hosts/10.6.0.1:80",
        &h,
        r#"{"ip":"10.6.0.2","port":80}"#,
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"], "conflict");
    let r = c.req("GET", "/api/nothing", &h, "");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(c.store.version().unwrap(), v, "nothing written");
    assert_eq!(c.store.load_routes().unwrap().routes[&key], vec![a, b]);
}

#[test]
fn requests_for_other_host_names_are_refused() {
    use std::io::{Read, Write};
    let c = Console::start();
    let with_host = |addr: std::net::SocketAddr, host: &str, path: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        crate::common::parse_response(&raw)
    };
    let port = c.addr.port();
    // A DNS rebinding page reaches the console under the attacker's name.
    let r = with_host(c.addr, &format!("rebind.example:{port}"), "/api/version");
    assert_eq!(r.status, 421, "{}", r.text());
    assert_eq!(r.json()["error"], "host");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("rebind.example"),
        "{}",
        r.text()
    );
    let r = with_host(c.addr, &format!("rebind.example:{port}"), "/login");
    assert_eq!(r.status, 421);
    assert!(r.text().contains("allowed host"), "{}", r.text());
    // The names it is reached under directly are answered.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(with_host(c.addr, &host, "/login").status, 200, "{host}");
    }
    // A loopback name on another port is someone else's origin.
    let r = with_host(
        c.addr,
        &format!("localhost:{}", port.wrapping_add(1)),
        "/login",
    );
    assert_eq!(r.status, 421);
    assert_eq!(c.web.as_ref().unwrap().stats().hosts_rejected, 3);

    // Configured names are answered (on any port, or the one given).
    let config = lars_web::WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        allowed_hosts: vec!["console.example.com".into(), "proxy.example:8443".into()],
        ..lars_web::WebConfig::default()
    };
    let web = lars_web::serve(config, c.store.clone()).unwrap();
    let addr = web.local_addr();
    assert_eq!(with_host(addr, "console.example.com", "/login").status, 200);
    assert_eq!(with_host(addr, "proxy.example:8443", "/login").status, 200);
    assert_eq!(with_host(addr, "proxy.example:8080", "/login").status, 421);
    assert_eq!(with_host(addr, "rebind.example", "/login").status, 421);
    web.stop();
}

#[test]
fn a_burst_of_guesses_is_checked_only_until_the_backoff_starts() {
    use std::sync::{Arc, Barrier};
    let c = Console::start();
    let config = lars_web::WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        max_password_checks: 1,
        password_check_wait: std::time::Duration::from_secs(60),
        // A block that outlasts any slow scheduling of the burst.
        login_throttle: lars_web::LoginThrottle {
            first_backoff: std::time::Duration::from_secs(60),
            ..lars_web::LoginThrottle::default()
        },
        ..lars_web::WebConfig::default()
    };
    let web = lars_web::serve(config, c.store.clone()).unwrap();
    let addr = web.local_addr();
    let n = 30;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let body = r#"{"username":"admin","password":"guess-guess"}"#;
                crate::common::request(addr, "POST", "/api/login", &[JSON], body.as_bytes()).status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let stats = web.stats();
    // The guesses queued for the one checker together; once the free
    // failures (5) and the first blocking one are spent, the rest are
    // refused without a check.
    assert_eq!(stats.logins_failed, 6, "{stats:?} {statuses:?}");
    assert_eq!(stats.logins_throttled, n as u64 - 6, "{stats:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), n - 6);
    web.stop();
}
