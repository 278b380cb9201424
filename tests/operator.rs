//! Operator-facing behaviour (issue #18), black-box against the real relay binary:
//! logging that never panics or blocks, no secrets in logs at any level, `--log-level`
//! validation and colours (a1), SIGHUP (a2), the Prometheus exposition, promtool and the
//! Grafana dashboard (a3), the `shardrelay stats` screen under tmux (a4), packaging:
//! sd_notify, the systemd unit, completions, man page, Containerfile, toolchain check
//! (a5), and one short bounded `shardrelay-load` run on loopback (a6). Test names carry
//! the issue's acceptance point numbers. Tools (promtool, prometheus, tmux, systemd-analyze) come
//! from `scripts/install-test-tools.sh`; a test whose tool is missing says SKIPPED loudly (under `CI` it fails).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tungstenite::Message;

/// Start the relay with stderr piped but *not* read by the harness: the caller owns the
/// read end (to close it, or to leave it unread until the pipe is full).
fn start_with_raw_stderr(args: &[&str]) -> (Relay, ChildStderr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardrelay");
    let stderr = child.stderr.take().expect("stderr piped");
    let relay = adopt(child);
    (relay, stderr)
}

/// Read the ready line of a started relay and wrap it in the harness type.
fn adopt(child: Child) -> Relay {
    Relay::adopt(child, Arc::new(Mutex::new(String::new())))
}

/// Some traffic of several kinds, each checked end to end (echo, pair, server-id).
fn drive_connections(relay: &Relay, rounds: usize) {
    for i in 0..rounds {
        let mut echo = relay.ws("/v1/echo", &[]).expect("echo upgrade");
        echo.send(Message::text(format!("e{i}"))).unwrap();
        assert_eq!(next_text(&mut echo), format!("e{i}"));
        close_with(&mut echo, 1000);
        let code = format!("drive-{i}");
        let mut a = relay.ws(&format!("/v1/pair?pair={code}"), &[]).unwrap();
        let mut b = relay.ws(&format!("/v1/pair?pair={code}"), &[]).unwrap();
        a.send(Message::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(next_message(&mut b), Message::binary(vec![1, 2, 3]));
        close_with(&mut a, 1000);
        let sid = format!("drive-sid-{i}");
        let mut binary = relay.binary(&sid);
        let phone = relay.phone(&sid, "t");
        drop(phone);
        close_with(&mut binary, 1000);
    }
}

/// SIGTERM, then the exit status must be success.
fn sigterm_exits_0(relay: &mut Relay) {
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status {status:?}");
}

// ------------------------------------------------------------------ 1. logging

#[test]
fn a1_a_closed_stderr_neither_kills_the_relay_nor_blocks_sigterm() {
    let (mut relay, stderr) = start_with_raw_stderr(&["--enable-echo", "--log-level", "trace"]);
    drop(stderr);
    drive_connections(&relay, 20);
    assert_eq!(relay.health()["status"], "ok");
    assert!(relay.child.try_wait().unwrap().is_none(), "relay died");
    sigterm_exits_0(&mut relay);
}

/// Bytes waiting in a pipe, by `FIONREAD`.
fn pipe_backlog(stderr: &ChildStderr) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY-free: FIONREAD on a pipe fd we own, writing one c_int.
    let rc = unsafe { libc::ioctl(stderr.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD failed");
    n as usize
}

#[test]
fn a1_a_full_stderr_nobody_reads_does_not_block_the_relay() {
    let (mut relay, stderr) = start_with_raw_stderr(&["--enable-echo", "--log-level", "trace"]);
    // Enough per-connection trace lines to fill a 64 KiB pipe several times over.
    let mut rounds = 0;
    while pipe_backlog(&stderr) < 60 * 1024 {
        drive_connections(&relay, 10);
        rounds += 10;
        assert!(rounds < 2000, "stderr pipe never filled");
    }
    // The pipe is full; the relay must still serve every kind of traffic.
    drive_connections(&relay, 20);
    assert_eq!(relay.health()["status"], "ok");
    sigterm_exits_0(&mut relay);
    drop(stderr);
}

#[test]
fn a1_an_invalid_log_level_is_a_start_up_error_exit_2() {
    for bad in ["warning", "verbos", "x=loud"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--log-level", bad])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shardrelay");
        let mut err = String::new();
        // Bounded: a relay that starts anyway keeps its stderr open, so read on a thread.
        let mut pipe = child.stderr.take().expect("stderr piped");
        let reader = std::thread::spawn(move || {
            let _ = pipe.read_to_string(&mut err);
            err
        });
        let status = wait_or_kill(&mut child, Duration::from_secs(10));
        let err = reader.join().unwrap();
        assert_eq!(status.code(), Some(2), "--log-level {bad}: {err}");
        assert!(err.contains("log level"), "{err}");
    }
}

/// Wait for a child to exit; kill it (and fail) after `limit`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a1_log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut relay = Relay::start(&["--log-level", "debug", "--enable-echo"]);
    drive_connections(&relay, 2);
    sigterm_exits_0(&mut relay);
    wait_until("shutdown logged", || relay.logs().contains("shutting down"));
    let logs = relay.logs();
    assert!(logs.contains("INFO"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape in piped logs: {logs:?}"
    );
}

#[test]
fn a1_per_connection_lines_are_debug_not_info() {
    let mut relay = Relay::start(&["--enable-echo"]);
    drive_connections(&relay, 5);
    sigterm_exits_0(&mut relay);
    wait_until("shutdown logged", || relay.logs().contains("shutting down"));
    let logs = relay.logs();
    // At the default level: start-up lines up to the listening line, then the shutdown
    // line, and nothing in between per connection (15 pair sides, binaries and phones
    // came and went).
    let lines: Vec<&str> = logs.lines().collect();
    let listening = lines
        .iter()
        .position(|l| l.contains("shardrelay listening"))
        .expect("listening line");
    let stopping = lines
        .iter()
        .position(|l| l.contains("shutting down"))
        .expect("shutdown line");
    assert_eq!(
        stopping,
        listening + 1,
        "per-connection lines at info: {logs}"
    );
    for line in lines {
        assert!(!line.contains("DEBUG"), "{line}");
    }
}

/// Secrets of every style, with known values, for the no-secrets test.
const PAIR_CODE: &str = "pair-s3cret-XQ7";
/// Phone token.
const PHONE_TOKEN: &str = "phone-t0ken-ZK4";
/// Admin bearer token.
const ADMIN_TOKEN: &str = "adm1n-t0ken-WW9";
/// A ticket the relay never minted (a guessed/bad ticket must not be logged either).
const BAD_TICKET: &str = "bad-t1cket-QQ2";

/// A `/ws` guess that is never a live code: its wrong `auth` must not be logged either.
const WS_GUESS: &str = "YYYYYY";
/// The `/ws` Mac's own id, sent in `register`.
const WS_CLIENT_ID: &str = "mac-cl1ent-id-RR5";

/// A `/ws` Mac and browser (issue 21's protocol): register, auth, binary both ways,
/// `close_session`, and a wrong `auth`. Returns the code, the browser id and the
/// `close_session` id, which must appear in no log line.
fn exercise_session_ws(relay: &Relay) -> Vec<String> {
    let mut mac = relay.ws("/ws", &[]).expect("/ws upgrade");
    let register = format!(r#"{{"type":"register","client_id":"{WS_CLIENT_ID}"}}"#);
    mac.send(Message::text(register)).unwrap();
    let reg: Value = serde_json::from_str(&next_text(&mut mac)).unwrap();
    let code = reg["code"].as_str().expect("code").to_owned();
    let mut browser = relay.ws("/ws", &[]).unwrap();
    let auth = format!(r#"{{"type":"auth","session_code":"{code}"}}"#);
    browser.send(Message::text(auth)).unwrap();
    let ok: Value = serde_json::from_str(&next_text(&mut browser)).unwrap();
    assert_eq!(ok["type"], "auth_success", "{ok}");
    let connected: Value = serde_json::from_str(&next_text(&mut mac)).unwrap();
    let browser_id = connected["browser_id"].as_str().expect("id").to_owned();
    mac.send(Message::binary(b"ws-mac-payload".to_vec()))
        .unwrap();
    let _ = next_message(&mut browser);
    browser
        .send(Message::binary(b"ws-browser-payload".to_vec()))
        .unwrap();
    let _ = next_message(&mut mac);
    let close = r#"{"type":"close_session","session_id":"ws-sess1on-id-PP3"}"#;
    browser.send(Message::text(close)).unwrap();
    let _ = next_message(&mut mac);
    let mut guesser = relay.ws("/ws", &[]).unwrap();
    let guess = format!(r#"{{"type":"auth","session_code":"{WS_GUESS}"}}"#);
    guesser.send(Message::text(guess)).unwrap();
    let _ = next_message(&mut guesser);
    close_with(&mut browser, 1000);
    close_with(&mut mac, 1000);
    vec![code, browser_id, "ws-sess1on-id-PP3".to_owned()]
}

/// A session host and a browser joined by the host's code (by message and by query).
fn exercise_sessions(relay: &Relay) -> Vec<String> {
    let mut codes = Vec::new();
    for by_query in [false, true] {
        let mut host = relay.ws("/mac", &[]).expect("host upgrade");
        let reg: Value = serde_json::from_str(&next_text(&mut host)).unwrap();
        let code = reg["code"].as_str().expect("code").to_owned();
        let mut browser = if by_query {
            relay.ws(&format!("/browser?code={code}"), &[]).unwrap()
        } else {
            let mut b = relay.ws("/browser", &[]).unwrap();
            let join = format!(r#"{{"type":"join","code":"{code}"}}"#);
            b.send(Message::text(join)).unwrap();
            b
        };
        let joined: Value = serde_json::from_str(&next_text(&mut browser)).unwrap();
        assert_eq!(joined["type"], "joined", "{joined}");
        let _ = next_text(&mut host);
        // A failed join with a wrong code.
        let mut stray = relay.ws("/browser", &[]).unwrap();
        stray
            .send(Message::text(r#"{"type":"join","code":"YYYYYY"}"#))
            .unwrap();
        let _ = next_text(&mut stray);
        close_with(&mut browser, 1000);
        codes.push(code);
    }
    codes
}

/// Mint a ticket with the admin token, run a PUT/GET transfer on it, and try a bad one.
fn exercise_tickets(relay: &Relay) -> String {
    let body = r#"{"workspace_id":"w","source_id":"s","dest_id":"d"}"#;
    let req = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = raw_http(relay.admin, req.as_bytes());
    assert_eq!(resp.status, 201, "{}", resp.body_text());
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    let ticket = v["ticket"].as_str().expect("ticket").to_owned();
    let put = format!(
        "PUT /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ticket}\r\n\
         Content-Length: 5\r\n\r\nhello"
    );
    let mut put_side = TcpStream::connect(relay.public).unwrap();
    put_side.write_all(put.as_bytes()).unwrap();
    let get =
        format!("GET /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ticket}\r\n\r\n");
    let got = raw_http(relay.public, get.as_bytes());
    assert_eq!(got.status, 200, "{}", got.body_text());
    let bad = format!(
        "GET /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {BAD_TICKET}\r\n\r\n"
    );
    let refused = raw_http(relay.public, bad.as_bytes()).status;
    assert!(refused == 401 || refused == 404, "bad ticket: {refused}");
    let wrong_admin =
        "GET /stats HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer wr0ng-adm1n\r\n\r\n";
    assert_eq!(raw_http(relay.admin, wrong_admin.as_bytes()).status, 401);
    ticket
}

#[test]
fn a1_no_pair_code_session_code_token_or_ticket_appears_in_trace_logs() {
    let token_file =
        std::env::temp_dir().join(format!("shardrelay-op-token-{}", std::process::id()));
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let mut relay = Relay::start(&[
        "--log-level",
        "trace",
        "--enable-echo",
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    // Pair, both paths.
    let mut a = relay.ws(&format!("/?pair={PAIR_CODE}"), &[]).unwrap();
    let mut b = relay
        .ws(&format!("/v1/pair?pair={PAIR_CODE}"), &[])
        .unwrap();
    a.send(Message::binary(b"pair-payload".to_vec())).unwrap();
    let _ = next_message(&mut b);
    close_with(&mut a, 1000);
    // Server-id with a phone token; the binary leaves and reclaims within grace.
    let mut binary = relay.binary("sid-op");
    let mut phone = relay.phone("sid-op", PHONE_TOKEN);
    phone.send(Message::text("phone-payload")).unwrap();
    let _ = next_message(&mut binary);
    close_with(&mut binary, 1000);
    let _reclaimer = relay.binary("sid-op");
    let _ = expect_close(&mut phone);
    let mut codes = exercise_sessions(&relay);
    codes.extend(exercise_session_ws(&relay));
    let ticket = exercise_tickets(&relay);
    sigterm_exits_0(&mut relay);
    wait_until("shutdown logged", || relay.logs().contains("shutting down"));
    let _ = std::fs::remove_file(&token_file);
    let logs = relay.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "no trace lines: {logs}"
    );
    let mut secrets = vec![
        PAIR_CODE,
        PHONE_TOKEN,
        ADMIN_TOKEN,
        BAD_TICKET,
        "wr0ng-adm1n",
        &ticket,
        WS_GUESS,
        WS_CLIENT_ID,
    ];
    secrets.extend(codes.iter().map(String::as_str));
    for (n, line) in logs.lines().enumerate() {
        for secret in &secrets {
            assert!(
                !line.contains(secret),
                "secret {secret:?} in log line {n}: {line}"
            );
        }
        for payload in [
            "pair-payload",
            "phone-payload",
            "hello",
            "ws-mac-payload",
            "ws-browser-payload",
        ] {
            assert!(!line.contains(payload), "payload in log line {n}: {line}");
        }
    }
}

// ------------------------------------------------------------------ 2. SIGHUP

#[test]
fn a2_sighup_is_logged_and_ignored_and_sigterm_still_exits_0() {
    let mut relay = Relay::start(&["--enable-echo"]);
    relay.signal(libc::SIGHUP);
    wait_until("SIGHUP logged", || relay.logs().contains("SIGHUP"));
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the relay"
    );
    drive_connections(&relay, 2);
    relay.signal(libc::SIGHUP);
    drive_connections(&relay, 1);
    sigterm_exits_0(&mut relay);
}

// ------------------------------------------------------------------ 6. load generator

/// The `shardrelay-load` binary beside the relay's, brought up to date first (this
/// package's tests do not build the other package's binary; a no-op when fresh).
fn load_binary() -> std::path::PathBuf {
    let relay_bin = std::path::Path::new(env!("CARGO_BIN_EXE_shardrelay"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "shardrelay-load"])
        .status()
        .expect("cargo build -p shardrelay-load");
    assert!(status.success(), "building shardrelay-load failed");
    relay_bin.with_file_name("shardrelay-load")
}

/// Run the load generator (bounded: its own duration plus a kill deadline).
fn run_load(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(load_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardrelay-load");
    let mut pipe = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    });
    let status = wait_or_kill(&mut child, Duration::from_secs(60));
    (status.code(), reader.join().unwrap())
}

#[test]
fn a6_a_short_load_run_by_url_writes_hgrm_window_rows_compares_and_fails_on_a_threshold() {
    let relay = Relay::start(&["--shards", "2"]);
    let dir = std::env::temp_dir().join(format!("shardrelay-op-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("first.json");
    let target = format!("ws://{}/", relay.public);
    let admin = format!("http://{}", relay.admin);
    let common = [
        "--target",
        &target,
        "--admin",
        &admin,
        "--workers",
        "1",
        "--rate",
        "200",
        "--warmup",
        "300ms",
        "--duration",
        "1s",
        "--drain",
        "1s",
    ];
    let mut first: Vec<&str> = vec!["pair", "--pairs", "2"];
    first.extend(common);
    first.extend(["--json", json.to_str().unwrap(), "--fail-if", "p99>10s"]);
    let (code, out) = run_load(&first);
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let window = &report["relay"]["window"];
    let relay_forward = window["histograms"]["forward"]["count"].as_u64().unwrap();
    let lifetime = report["relay"]["stats"]["totals"]["histograms"]["forward"]["count"]
        .as_u64()
        .unwrap();
    assert!(relay_forward > 0, "{window}");
    assert!(
        relay_forward < lifetime,
        "the window excludes the warm-up: {window}"
    );
    let hgrm = std::fs::read_to_string(dir.join("first.hgrm")).expect(".hgrm beside the JSON");
    assert!(
        hgrm.contains("Percentile") && hgrm.contains("Total count"),
        "{hgrm}"
    );
    // Second run: compared with the first, and failed by a threshold it cannot meet.
    let previous = json.to_str().unwrap();
    let mut second: Vec<&str> = vec!["pair", "--pairs", "2"];
    second.extend(common);
    second.extend(["--compare", previous, "--fail-if", "throughput>=0"]);
    let (code, out) = run_load(&second);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("compared with previous run"), "{out}");
    assert!(out.contains("latency p99"), "{out}");
    assert!(
        out.contains("threshold     crossed: throughput>=0"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 3. metrics

/// `promtool`, or `None` after a loud message (install it with
/// `scripts/install-test-tools.sh`, which `make test` runs).
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip_or_fail(
            "promtool checks: promtool is not installed. \
             Run scripts/install-test-tools.sh (Debian package `prometheus`).",
        );
    }
    found.then_some("promtool")
}

/// A tool a test needs is missing: under CI (`CI` set, as `.ci/run` is run) that is a
/// failure, since `make test` installs the tools first; elsewhere a loud skip.
fn skip_or_fail(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("missing test tool under CI: {what}");
    }
    eprintln!("\n*** SKIPPED {what} ***\n");
}

/// Run a promtool subcommand with `input` on stdin (or a file argument); returns
/// (success, combined output).
fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A relay that has seen traffic of a few kinds, a refusal and a drop, and its scrape.
fn busy_relay_metrics() -> (Relay, String) {
    let relay = Relay::start(&["--shards", "2", "--enable-echo"]);
    drive_connections(&relay, 3);
    assert_eq!(relay.raw_http(&upgrade_request("/nowhere", "")).status, 404);
    // A text frame on a pair is dropped (`text_in_pair`), so `dropped_total` has a series.
    let mut a = relay.ws("/v1/pair?pair=metrics-drop", &[]).unwrap();
    let _b = relay.ws("/v1/pair?pair=metrics-drop", &[]).unwrap();
    a.send(Message::text("not binary")).unwrap();
    relay.wait_total("/dropped/text_in_pair", 1);
    relay.wait_total("/messages_out", 6);
    let resp = relay.admin_get("/metrics");
    assert_eq!(resp.status, 200);
    let body = resp.body_text();
    (relay, body)
}

#[test]
fn a3_metrics_pass_promtool_check_metrics() {
    let (_relay, body) = busy_relay_metrics();
    let Some(_) = promtool() else { return };
    let (ok, out) = run_promtool(&["check", "metrics"], Some(&body));
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- scrape ---\n{body}"
    );
}

/// Samples of `metric` (exact name) in a scrape: (labels text, value).
fn samples<'a>(body: &'a str, metric: &str) -> Vec<(&'a str, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (name_labels, ""),
            };
            (name == metric).then(|| (labels, value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

#[test]
fn a3_latency_is_seconds_histograms_with_shared_buckets_and_reset_does_not_rewind_them() {
    let (relay, body) = busy_relay_metrics();
    assert!(
        !body.contains("microseconds"),
        "no microsecond metrics remain"
    );
    assert!(body.contains("# TYPE shardrelay_forward_latency_seconds histogram"));
    let buckets = samples(&body, "shardrelay_forward_latency_seconds_bucket");
    let les = |shard: &str| -> Vec<String> {
        buckets
            .iter()
            .filter(|(l, _)| l.contains(&format!("shard=\"{shard}\"")))
            .map(|(l, _)| {
                l.split("le=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(les("0"), les("1"), "every shard exports the same buckets");
    assert_eq!(les("0").last().map(String::as_str), Some("+Inf"));
    let count = |body: &str| -> f64 {
        samples(body, "shardrelay_forward_latency_seconds_count")
            .iter()
            .map(|(_, v)| v)
            .sum()
    };
    let before = count(&body);
    assert!(before >= 6.0, "{before}");
    // /stats?reset=1 restarts /stats' view only.
    assert_eq!(relay.admin_get("/stats?reset=1").status, 200);
    assert_eq!(relay.total("/histograms/forward/count"), 0);
    let after = relay.admin_get("/metrics").body_text();
    assert!(
        count(&after) >= before,
        "a reset rewound /metrics: {before} -> {}",
        count(&after)
    );
}

#[test]
fn a3_build_info_process_fds_memory_and_connection_cap_are_exported() {
    let relay = Relay::start(&["--max-connections", "777"]);
    let body = relay.admin_get("/metrics").body_text();
    let one = |metric: &str| -> f64 {
        let s = samples(&body, metric);
        assert_eq!(s.len(), 1, "{metric}: {s:?}\n{body}");
        s[0].1
    };
    assert_eq!(one("shardrelay_max_connections"), 777.0);
    assert_eq!(one("shardrelay_build_info"), 1.0);
    let info = samples(&body, "shardrelay_build_info")[0].0;
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.contains("driver=\""), "{info}");
    assert!(one("process_open_fds") >= 5.0, "listeners, pipes, io_uring");
    assert!(one("process_max_fds") >= one("process_open_fds"));
    assert!(one("process_resident_memory_bytes") > 1e6);
    assert_eq!(one("shardrelay_log_lines_dropped_total"), 0.0);
}

/// Every `shardrelay_*` / `process_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("shardrelay_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The labels of every `by (…)` in an expression, less Prometheus' own `instance`.
fn grouping_labels(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
        .flat_map(|(labels, _)| labels.split(',').map(|l| l.trim().to_owned()))
        .filter(|l| !l.is_empty() && l != "instance")
        .collect()
}

/// The metric names a scrape exports (histograms with their `_bucket`, `_sum`, `_count`).
fn exported_names(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.push(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.push(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn a3_every_dashboard_query_names_a_metric_the_relay_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/shardrelay.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (_relay, body) = busy_relay_metrics();
    let exported = exported_names(&body);
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr").to_owned();
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{}: no metric in {expr}", panel["title"]);
            for name in names {
                assert!(
                    exported.contains(&name),
                    "{}: {name} is not exported",
                    panel["title"]
                );
            }
            exprs.push(expr);
        }
    }
    assert!(exprs.len() >= 20, "{}", exprs.len());
    for expr in &exprs {
        for label in grouping_labels(expr) {
            for name in metric_names(expr) {
                let labelled = format!("{label}=\"");
                let has = body.lines().any(|l| {
                    (l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name}_bucket{{")))
                        && l.contains(&labelled)
                });
                assert!(has, "{expr}: no {name} series has the label {label}");
            }
        }
    }
    // With promtool: every query is valid PromQL (as a recording rule), Grafana's
    // variables replaced by values.
    let Some(_) = promtool() else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: '{}'\n",
            concrete.replace('\'', "''")
        ));
    }
    let file =
        std::env::temp_dir().join(format!("shardrelay-dash-rules-{}.yml", std::process::id()));
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", file.to_str().unwrap()], None);
    let _ = std::fs::remove_file(&file);
    assert!(ok, "promtool check rules:\n{out}\n{rules}");
}

/// A `prometheus` server of this test's own (temp config and storage), killed and its
/// directory removed on drop, so a panicking test leaves nothing running.
struct Prometheus {
    /// The server process.
    child: Child,
    /// Its web/API address.
    addr: SocketAddr,
    /// Config file and TSDB directory.
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Start scraping `target`'s `/metrics` every second, or `None` (after a loud
    /// message) when `prometheus` is not installed.
    fn start(target: SocketAddr) -> Option<Prometheus> {
        let found = Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip_or_fail(
                "dashboard queries in Prometheus: prometheus is not installed. \
                 Run scripts/install-test-tools.sh (Debian package `prometheus`).",
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("shardrelay-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: shardrelay\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port: bind port 0, read it, release it (Prometheus does not report the
        // port it bound for `:0`).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Some(Prometheus { child, addr, dir })
    }

    /// Evaluate `expr` now through `/api/v1/query`; `None` while the server is not up.
    fn query(&self, expr: &str) -> Option<Value> {
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!(
            "GET /api/v1/query?query={} HTTP/1.0\r\nHost: {}\r\n\r\n",
            percent_encode(expr),
            self.addr
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let response = parse_response(&raw);
        serde_json::from_slice(&response.body).ok()
    }

    /// Fail the test, with Prometheus' log, if the server has exited (say its port was
    /// taken between our probe and its bind).
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited ({status}):\n{log}");
        }
    }

    /// The series of an instant query that must succeed.
    fn series(&self, expr: &str) -> Vec<Value> {
        let answer = self
            .query(expr)
            .unwrap_or_else(|| panic!("no answer from prometheus for {expr}"));
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encode a query-string value (RFC 3986 unreserved characters pass).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Grafana's variables in a dashboard query replaced by concrete values: a rate window of
/// ten 1 s scrapes, and every instance.
fn concrete_query(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$__interval", "10s")
        .replace("$instance", ".*")
        .replace("${instance}", ".*")
}

/// The rendezvous styles a relayed message is timed under (`mode` of
/// `shardrelay_forward_by_mode_latency_seconds`), each shown by the dashboard.
const FORWARD_STYLES: [&str; 5] = ["echo", "pair", "server_id", "session", "session_ws"];

/// One relayed message in each style `drive_connections` does not relay: a phone to its
/// binary (server-id), a browser to its host (session), and `/ws` both ways.
fn relay_in_every_style(relay: &Relay) {
    let mut binary = relay.binary("dash-sid");
    let mut phone = relay.phone("dash-sid", "t");
    phone.send(Message::text(r#"{"hello":true}"#)).unwrap();
    assert!(next_text(&mut binary).contains(r#""frame":{"hello":true}"#));
    close_with(&mut phone, 1000);
    let mut host = relay.ws("/mac", &[]).expect("host upgrade");
    let reg: Value = serde_json::from_str(&next_text(&mut host)).unwrap();
    let code = reg["code"].as_str().expect("code");
    let mut browser = relay.ws(&format!("/browser?code={code}"), &[]).unwrap();
    let joined: Value = serde_json::from_str(&next_text(&mut browser)).unwrap();
    assert_eq!(joined["type"], "joined", "{joined}");
    let _ = next_text(&mut host);
    let data = r#"{"type":"data","payload":"dash"}"#;
    browser.send(Message::text(data)).unwrap();
    assert_eq!(next_text(&mut host), data);
    close_with(&mut browser, 1000);
    exercise_session_ws(relay);
}

#[test]
fn a3_every_dashboard_query_returns_data_from_a_running_relay_in_prometheus() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/shardrelay.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Traffic of every style (echo, pair, server-id), a refusal, a drop, on two shards.
    let (relay, _) = busy_relay_metrics();
    relay_in_every_style(&relay);
    for style in FORWARD_STYLES {
        relay.wait_total(&format!("/forward_by_mode/{style}/count"), 1);
    }
    let Some(mut prometheus) = Prometheus::start(relay.admin) else {
        return;
    };
    // Up, and at least three scrapes in the last 10 s, so every 10 s `rate()` has two
    // samples.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    loop {
        prometheus.assert_running();
        let scrapes = prometheus
            .query("count_over_time(up{job=\"shardrelay\"}[10s]) >= 3 and up == 1")
            .and_then(|a| a["data"]["result"].as_array().map(Vec::len));
        if scrapes == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prometheus never scraped the relay three times: {scrapes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut evaluated = 0;
    let mut empty = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = concrete_query(target["expr"].as_str().expect("expr"));
            assert!(!expr.contains('$'), "an unreplaced variable in {expr}");
            let series = prometheus.series(&expr).len();
            eprintln!("{series} series: {expr}");
            if series == 0 {
                empty.push(format!("{}: {expr}", panel["title"]));
            }
            evaluated += 1;
        }
    }
    assert!(evaluated >= 20, "{evaluated}");
    // The by-style panel shows every style, not just some.
    let by_style = "sum by (mode) (shardrelay_forward_by_mode_latency_seconds_count)";
    let mut styles: Vec<String> = prometheus
        .series(by_style)
        .iter()
        .filter_map(|s| s["metric"]["mode"].as_str().map(str::to_owned))
        .collect();
    styles.sort();
    assert_eq!(styles, FORWARD_STYLES, "{by_style}");
    assert!(
        empty.is_empty(),
        "queries with no data:\n{}",
        empty.join("\n")
    );
    eprintln!("{evaluated} dashboard queries returned data");
}

// ------------------------------------------------------------------ 4. shardrelay stats

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    /// The `-L` socket name.
    socket: String,
}

impl Tmux {
    /// `None` (after a loud message) when tmux is not installed.
    fn start(name: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            skip_or_fail(
                "tmux screen test: tmux is not installed. Run scripts/install-test-tools.sh.",
            );
            return None;
        }
        let socket = format!("shardrelay-op-{name}-{}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "50",
                command,
            ])
            .status()
            .expect("tmux new-session");
        assert!(status.success());
        Some(Tmux { socket })
    }

    /// The visible pane.
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the pane satisfies `cond`.
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    /// Kill the panes' processes, then the tmux server. `kill-server` alone only hangs
    /// up the panes, and the relay does not exit on `SIGHUP` (it reloads its TLS pair),
    /// so it used to outlive every run as an orphan.
    fn drop(&mut self) {
        if let Ok(out) = Command::new("tmux")
            .args(["-L", &self.socket, "list-panes", "-s", "-F", "#{pane_pid}"])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
            {
                // SAFETY: kill(2) on a pid tmux reported as its pane's process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Start a relay whose admin listener is on `admin` (for a restart on the same port).
fn start_with_admin(admin: &str, args: &[&str]) -> Relay {
    let child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", admin])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardrelay");
    adopt(child)
}

/// A line of the screen that starts with `prefix` (after trimming) and ends with `value`.
fn row_is(screen: &str, prefix: &str, value: &str) -> bool {
    screen.lines().any(|l| {
        let t = l.trim();
        t.starts_with(prefix) && t.split_whitespace().last() == Some(value)
    })
}

#[test]
fn a4_stats_redraws_in_place_shows_kinds_and_reasons_and_survives_a_relay_restart() {
    let token_file =
        std::env::temp_dir().join(format!("shardrelay-op-watch-{}", std::process::id()));
    std::fs::write(&token_file, "w4tch-t0ken\n").unwrap();
    let token_arg = token_file.to_str().unwrap().to_owned();
    let mut relay = Relay::start(&["--enable-echo", "--admin-token-file", &token_arg]);
    let port = relay.admin.port();
    let command = format!(
        "{} stats --admin localhost:{port} --interval 200ms --admin-token-file {token_arg}",
        env!("CARGO_BIN_EXE_shardrelay")
    );
    let Some(tmux) = Tmux::start("watch", &command) else {
        return;
    };
    let _echo = relay.ws("/v1/echo", &[]).unwrap();
    assert_eq!(relay.raw_http(&upgrade_request("/nowhere", "")).status, 404);
    let screen = tmux.wait_for("an echo connection and a not_found refusal", |s| {
        row_is(s, "echo", "1") && s.contains("not_found") && s.contains("last ")
    });
    assert!(row_is(&screen, "total", "1"), "{screen}");
    for part in [
        "connections",
        "per second",
        "rejected",
        "dropped",
        "forward",
        "p99",
    ] {
        assert!(screen.contains(part), "no {part}: {screen}");
    }
    assert!(!screen.contains('{'), "raw JSON on screen: {screen}");
    // Several intervals later the pane still holds one screen: redrawn, not appended.
    let screen = tmux.wait_for("a few redraws", |s| {
        s.contains("uptime 1s") || s.contains("uptime 2s")
    });
    assert_eq!(screen.matches("shardrelay stats").count(), 1, "{screen}");
    // The relay goes away: the watcher says so and keeps trying...
    relay.signal(libc::SIGTERM);
    assert!(relay.wait_exit(Duration::from_secs(8)).success());
    tmux.wait_for("unreachable", |s| s.contains("relay unreachable"));
    // ...and picks the restarted relay up on the same admin port.
    let admin = format!("127.0.0.1:{port}");
    let _again = start_with_admin(&admin, &["--admin-token-file", &token_arg]);
    let screen = tmux.wait_for("the restarted relay", |s| {
        !s.contains("unreachable") && row_is(s, "total", "0")
    });
    assert!(screen.contains("connections"), "{screen}");
    let _ = std::fs::remove_file(&token_file);
}

#[test]
fn a4_stats_prints_compact_lines_when_not_a_terminal() {
    let relay = Relay::start(&["--enable-echo"]);
    let _echo = relay.ws("/v1/echo", &[]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args([
            "stats",
            "--admin",
            &format!("localhost:{}", relay.admin.port()),
        ])
        .args(["--count", "3", "--interval", "100ms"])
        .output()
        .expect("run shardrelay stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        text.lines().all(|l| l.contains("conns 1 (echo 1)")),
        "{text}"
    );
}

// ------------------------------------------------------------------ 5. packaging

/// A file of the repository.
fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn a5_ready_and_stopping_are_sent_to_systemds_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("shardrelay-op-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardrelay");
    let mut relay = adopt(child);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a READY=1 datagram");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert_eq!(relay.health()["status"], "ok", "serving once ready");
    relay.signal(libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("a STOPPING=1 datagram");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(relay.wait_exit(Duration::from_secs(8)).success());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a5_the_systemd_unit_is_hardened_and_passes_systemd_analyze_verify() {
    let unit = repo_file("packaging/systemd/shardrelay.service");
    for line in [
        "Type=notify",
        "LimitNOFILE=1048576",
        "DynamicUser=yes",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "unit lacks {line:?}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail("systemd-analyze verify: not installed (scripts/install-test-tools.sh).");
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let local = unit.replace(
        "/usr/local/bin/shardrelay",
        env!("CARGO_BIN_EXE_shardrelay"),
    );
    let dir = std::env::temp_dir().join(format!("shardrelay-op-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shardrelay.service");
    std::fs::write(&file, local).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .expect("systemd-analyze verify");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn a5_completions_and_the_man_page_are_generated_from_the_cli() {
    let run = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
            .args(args)
            .output()
            .expect("run shardrelay");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("max-connections"), "{shell}: {script}");
        assert!(script.contains("stats"), "{shell} completes subcommands");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH shardrelay 1"), "{man}");
    assert!(man.contains("max\\-connections"), "{man}");
    let bad = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a5_the_containerfile_pins_the_declared_rust_version_and_runs_without_root() {
    let cargo = repo_file("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    let containerfile = repo_file("packaging/container/Containerfile");
    assert!(
        containerfile.contains(&format!("library/rust:{version}-")),
        "builder image is not Rust {version}"
    );
    assert!(containerfile.contains("cargo build --release --locked"));
    let user = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    assert!(containerfile.contains("ENTRYPOINT [\"/usr/local/bin/shardrelay\"]"));
}

#[test]
fn a5_an_old_rustc_gets_a_clear_message_from_the_toolchain_check() {
    let dir = std::env::temp_dir().join(format!("shardrelay-op-rustc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("rustc");
    std::fs::write(&fake, "#!/bin/sh\necho 'rustc 1.63.0 (debian)'\n").unwrap();
    let mut perms = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).unwrap();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-toolchain.sh"
        ))
        .env("RUSTC", &fake)
        .output()
        .expect("run check-toolchain.sh");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs Rust >= 1.89") && err.contains("1.63.0"),
        "{err}"
    );
    let ok = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-toolchain.sh"
        ))
        .status()
        .unwrap();
    assert!(ok.success(), "the toolchain running this test passes");
}

#[test]
fn a1_log_lines_are_coloured_when_stderr_is_a_terminal() {
    let command = format!(
        "exec {} --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_shardrelay")
    );
    let Some(tmux) = Tmux::start("colour", &command) else {
        return;
    };
    tmux.wait_for("the listening log line", |s| {
        s.contains("shardrelay listening")
    });
    let out = Command::new("tmux")
        .args(["-L", &tmux.socket, "capture-pane", "-p", "-e"])
        .output()
        .expect("tmux capture-pane -e");
    let screen = String::from_utf8_lossy(&out.stdout);
    let line = screen
        .lines()
        .find(|l| l.contains("shardrelay listening"))
        .expect("log line on screen");
    assert!(
        line.contains("\u{1b}["),
        "no colour on a terminal: {line:?}"
    );
}
