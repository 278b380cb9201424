//! `measure autobahn-report`: judges Autobahn|Testsuite's `reports/index.json` against
//! the relay's pass criteria for `scripts/conformance.sh`, prints a summary, optionally
//! rewrites `docs/conformance.md`, and exits 1 unless every case run is OK, NON-STRICT
//! or INFORMATIONAL, or 2.10 answered for its latest ping only (see
//! [`latest_ping_only`]). (Python stays only where it runs the suite itself, which needs
//! Python 2.7.)
//!
//! Cases 12.* and 13.* (permessage-deflate) are excluded from the run; should any appear
//! they are left out of the counts and do not fail the check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::cli::AutobahnReportArgs;

/// Behaviours that pass.
const PASSING: [&str; 4] = [
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    LATEST_PING_ONLY_BEHAVIOR,
];
/// Case groups that are not run (compression: the relay negotiates no extensions).
const EXCLUDED_PREFIXES: [&str; 2] = ["12.", "13."];
/// The one place the wire contract asks for less than Autobahn checks: PROTOCOL §2.1
/// has the relay answer the most recent ping only (RFC 6455 §5.5.3 allows it) and hold
/// at most one pong, so that a client pinging without reading cannot make it queue
/// pongs. Cases 2.10 and 2.11 (the same, sent in 1-octet chops) send 10 pings and want 10 pongs ("not required by
/// the Spec", says its expectation). It counts as passing, as LATEST-PING-ONLY, when the
/// pongs that came are the suite's own payloads in order, the last ping's among them,
/// and the close is clean; anything else still fails.
const LATEST_PING_ONLY: [&str; 2] = ["2.10", "2.11"];
/// The behaviour such a case is counted as.
const LATEST_PING_ONLY_BEHAVIOR: &str = "LATEST-PING-ONLY";
/// What Python printed for a missing value; kept so the summary reads as before.
const MISSING: &str = "None";
/// Lines of the doc that change on every run; a doc differing only in them is left
/// alone so that `make test` does not dirty the tree.
const VOLATILE: [&str; 2] = ["| date |", "| wstest wall time |"];

/// Autobahn's top-level case groups, for the per-section table.
fn section_name(section: &str) -> &'static str {
    match section {
        "1" => "Framing (text and binary messages)",
        "2" => "Pings and pongs",
        "3" => "Reserved bits",
        "4" => "Opcodes",
        "5" => "Fragmentation",
        "6" => "UTF-8 handling",
        "7" => "Close handling",
        "9" => "Limits and performance (messages up to 16 MiB)",
        "10" => "Miscellaneous (auto-fragmentation)",
        "12" | "13" => "WebSocket compression (excluded)",
        _ => "",
    }
}

/// One case of `index.json` (other keys, such as `duration`, are ignored).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Entry {
    /// `OK`, `NON-STRICT`, `INFORMATIONAL`, `FAILED`, …
    #[serde(default)]
    pub behavior: Option<String>,
    /// The closing handshake's behaviour.
    #[serde(default, rename = "behaviorClose")]
    pub behavior_close: Option<String>,
    /// The close code the relay sent (a number, or null).
    #[serde(default, rename = "remoteCloseCode")]
    pub remote_close_code: Option<Value>,
    /// The case's HTML report, beside which its JSON report lies.
    #[serde(default)]
    pub reportfile: Option<String>,
}

impl Entry {
    /// `behavior`, as printed.
    fn behavior(&self) -> &str {
        self.behavior.as_deref().unwrap_or(MISSING)
    }

    /// `behaviorClose`, as printed.
    fn close(&self) -> &str {
        self.behavior_close.as_deref().unwrap_or(MISSING)
    }

    /// `remoteCloseCode`, as printed.
    fn close_code(&self) -> String {
        match &self.remote_close_code {
            None | Some(Value::Null) => MISSING.to_owned(),
            Some(v) => text(v),
        }
    }
}

/// A JSON value as text: a string as it is, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The case's own JSON report (description, expectation, result), or an empty object
/// when it cannot be read.
fn load_case(reports_dir: &Path, entry: &Entry) -> Value {
    let report = entry.reportfile.as_deref().unwrap_or("");
    let path = reports_dir.join(Path::new(report).with_extension("json"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Object(Default::default()))
}

/// True when a FAILED 2.10 differs from OK only by missing pongs for earlier pings:
/// every frame received is a pong the suite expected, in the expected order, the last
/// expected one among them, and the close was clean.
pub fn latest_ping_only(detail: &Value, entry: &Entry) -> bool {
    let empty = Vec::new();
    let expected = detail
        .pointer("/expected/OK")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let received = detail
        .get("received")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if expected.is_empty() || received.is_empty() || entry.behavior_close.as_deref() != Some("OK") {
        return false;
    }
    let is_pong = |e: &Value| matches!(e.as_array(), Some(a) if a.len() == 2 && a[0] == "pong");
    if !received.iter().all(is_pong) || received.last() != expected.last() {
        return false;
    }
    let positions: Vec<usize> = received
        .iter()
        .filter_map(|e| expected.iter().position(|x| x == e))
        .collect();
    positions.len() == received.len() && positions.windows(2).all(|w| w[0] < w[1])
}

/// A case id's sort key: its numbers (`9.10.2` after `9.2.1`).
fn case_key(id: &str) -> Result<Vec<u64>, String> {
    id.split('.')
        .map(|p| {
            p.parse()
                .map_err(|_| format!("case id `{id}` is not numbers joined by dots"))
        })
        .collect()
}

/// The counts and the cases worth naming.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Cases run (excluded groups left out) by behaviour.
    pub by_behavior: BTreeMap<String, u64>,
    /// The same cases by closing behaviour.
    pub by_close: BTreeMap<String, u64>,
    /// By section (the case id's first number), then by behaviour.
    pub per_section: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Passing cases that are not plain OK, in case order.
    pub notable: Vec<(String, Entry)>,
    /// Cases that do not pass, in case order.
    pub failing: Vec<(String, Entry)>,
}

impl Verdict {
    /// Cases run.
    pub fn total(&self) -> u64 {
        self.by_behavior.values().sum()
    }
}

/// Judges one agent's cases; `detail` reads a case's own report.
pub fn judge(
    cases: &BTreeMap<String, Entry>,
    detail: &dyn Fn(&Entry) -> Value,
) -> Result<Verdict, String> {
    let mut ids: Vec<(Vec<u64>, &String)> = cases
        .keys()
        .map(|id| case_key(id).map(|k| (k, id)))
        .collect::<Result<_, _>>()?;
    ids.sort();
    let mut v = Verdict::default();
    for (key, id) in ids {
        let mut entry = cases[id].clone();
        let behavior = entry.behavior.clone().unwrap_or_else(|| "?".to_owned());
        if LATEST_PING_ONLY.contains(&id.as_str())
            && behavior == "FAILED"
            && latest_ping_only(&detail(&entry), &entry)
        {
            entry.behavior = Some(LATEST_PING_ONLY_BEHAVIOR.to_owned());
        }
        if EXCLUDED_PREFIXES.iter().any(|p| id.starts_with(p)) {
            continue;
        }
        let behavior = entry.behavior.clone().unwrap_or_else(|| "?".to_owned());
        let close = entry
            .behavior_close
            .clone()
            .unwrap_or_else(|| "?".to_owned());
        *v.by_behavior.entry(behavior.clone()).or_default() += 1;
        *v.by_close.entry(close).or_default() += 1;
        *v.per_section
            .entry(key[0])
            .or_default()
            .entry(behavior.clone())
            .or_default() += 1;
        if !PASSING.contains(&behavior.as_str()) {
            v.failing.push((id.clone(), entry));
        } else if behavior != "OK" {
            v.notable.push((id.clone(), entry));
        }
    }
    Ok(v)
}

/// `A 3, B 1`.
fn counts_inline(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whitespace runs collapsed to one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The summary on stdout.
pub fn summary(v: &Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Autobahn fuzzingclient: {} cases (12.*/13.* excluded)",
        v.total()
    );
    for (behavior, n) in &v.by_behavior {
        let _ = writeln!(out, "  {behavior:<14} {n}");
    }
    let _ = writeln!(out, "  close behaviour: {}", counts_inline(&v.by_close));
    for (id, e) in &v.notable {
        let _ = writeln!(out, "  {id} {} (close {})", e.behavior(), e.close());
    }
    out
}

/// The failing cases on stderr, each with its report's description and result.
pub fn failures(v: &Verdict, detail: &dyn Fn(&Entry) -> Value) -> String {
    let mut out = String::new();
    for (id, e) in &v.failing {
        let d = detail(e);
        let _ = writeln!(
            out,
            "FAILED {id}: {} / close {}, remote close code {}",
            e.behavior(),
            e.close(),
            e.close_code()
        );
        for field in ["description", "expectation", "result", "resultClose"] {
            let value = d.get(field).map(text).unwrap_or_default();
            if !value.is_empty() {
                let _ = writeln!(out, "    {field}: {}", one_line(&value));
            }
        }
    }
    out
}

/// What the doc's header names besides the counts.
pub struct DocFacts<'a> {
    /// The command's flags.
    pub args: &'a AutobahnReportArgs,
    /// `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
}

/// A case's description as the doc shows it: the first line before any `<br>`.
fn short_description(d: &Value) -> String {
    let full = d.get("description").map(text).unwrap_or_default();
    let first = full.split("<br>").next().unwrap_or("").trim();
    first.lines().next().unwrap_or("").replace('|', "\\|")
}

/// Appends each line of `text`.
fn push_all(lines: &mut Vec<String>, text: &[&str]) {
    lines.extend(text.iter().map(|l| (*l).to_owned()));
}

/// `docs/conformance.md`.
pub fn doc(v: &Verdict, facts: &DocFacts<'_>, detail: &dyn Fn(&Entry) -> Value) -> String {
    let mut lines = Vec::new();
    header_section(&mut lines, v, facts);
    counts_section(&mut lines, v);
    notable_section(&mut lines, v, detail);
    failing_section(&mut lines, v, detail);
    push_all(
        &mut lines,
        &[
            "",
            "The full per-case reports (HTML and JSON) are left in `target/conformance/reports/`",
            "after a run; open `target/conformance/reports/index.html`.",
            "",
        ],
    );
    lines.join("\n")
}

/// The doc's title, what the page is, and the run's facts.
fn header_section(lines: &mut Vec<String>, v: &Verdict, facts: &DocFacts<'_>) {
    let a = facts.args;
    let verdict = if v.failing.is_empty() && v.total() > 0 {
        "pass"
    } else {
        "FAIL"
    };
    push_all(
        lines,
        &[
            "# WebSocket conformance (Autobahn|Testsuite)",
            "",
            "Generated by `make conformance` (`scripts/conformance.sh`); rerun it to refresh this",
            "page. The Autobahn|Testsuite fuzzing client drives the relay's diagnostic echo route,",
            "`GET /v1/echo`, which is served only with `--enable-echo` and sends every message back",
            "through the same codec and connection code as every other route.",
            "",
            "| | |",
            "|---|---|",
        ],
    );
    lines.extend([
        format!("| result | **{verdict}**: {} cases run, every one OK, NON-STRICT, INFORMATIONAL or (2.10, 2.11) LATEST-PING-ONLY is required |", v.total()),
        format!("| relay version | {} |", a.relay_version),
        format!("| driver | {} (the relay's default choice on the machine that ran it) |", a.driver),
        format!("| date | {} |", facts.date),
        "| command | `make conformance` |".to_owned(),
        format!("| relay flags | `{}` (plus `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`) |", a.relay_flags),
        format!("| test suite | autobahntestsuite {}, `wstest -m fuzzingclient` (Python 2.7) |", a.wstest),
        "| cases | all (`\"*\"`) except `12.*` and `13.*` |".to_owned(),
        format!("| wstest wall time | {} s |", a.seconds),
    ]);
    push_all(
        lines,
        &[
            "",
            "`--max-message 16MiB --max-queue 64MiB` are needed because cases 9.* send messages",
            "of up to 16 MiB and the defaults (256 KiB, 4 MiB) would close those connections with",
            "1009. Cases 12.* and 13.* test permessage-deflate, which the relay does not",
            "negotiate, so they are not run.",
        ],
    );
}

/// The counts by behaviour, by closing behaviour and by section.
fn counts_section(lines: &mut Vec<String>, v: &Verdict) {
    push_all(
        lines,
        &[
            "",
            "## Counts by behaviour",
            "",
            "| behaviour | cases |",
            "|---|---:|",
        ],
    );
    lines.extend(v.by_behavior.iter().map(|(b, n)| format!("| {b} | {n} |")));
    push_all(
        lines,
        &[
            "",
            "Closing handshake (`behaviorClose`):",
            "",
            "| behaviour | cases |",
            "|---|---:|",
        ],
    );
    lines.extend(v.by_close.iter().map(|(b, n)| format!("| {b} | {n} |")));
    push_all(
        lines,
        &[
            "",
            "## By section",
            "",
            "| section | what | cases | behaviours |",
            "|---|---|---:|---|",
        ],
    );
    for (section, counts) in &v.per_section {
        let s = section.to_string();
        lines.push(format!(
            "| {s} | {} | {} | {} |",
            section_name(&s),
            counts.values().sum::<u64>(),
            counts_inline(counts)
        ));
    }
}

/// The doc's "Cases not plain OK" section, when there are any.
fn notable_section(lines: &mut Vec<String>, v: &Verdict, detail: &dyn Fn(&Entry) -> Value) {
    if v.notable.is_empty() {
        return;
    }
    push_all(
        lines,
        &[
            "",
            "## Cases not plain OK",
            "",
            "| case | behaviour | close | what the suite does | relay's close code |",
            "|---|---|---|---|---|",
        ],
    );
    for (id, e) in &v.notable {
        lines.push(format!(
            "| {id} | {} | {} | {} | {} |",
            e.behavior(),
            e.close(),
            short_description(&detail(e)),
            e.close_code()
        ));
    }
    push_all(
        lines,
        &[
            "",
            "NON-STRICT: allowed, but not the strictest reading. In 6.4.* the invalid UTF-8",
            "arrives in the middle of a message and the suite would like the connection failed",
            "at that very frame or chop; the relay fails it (1007) once it validates the",
            "message, which the suite accepts. INFORMATIONAL: the spec leaves the outcome open",
            "(7.1.6: a close right behind a large message; 7.13.*: close codes 5000 and 65535,",
            "which the relay answers with 1002). LATEST-PING-ONLY (2.10, 2.11): ten pings in one",
            "burst get one pong, for the last; PROTOCOL §2.1 asks exactly that (RFC 6455",
            "§5.5.3 allows it) so that a client cannot make the relay queue pongs; the suite",
            "itself says answering every ping is not required by the spec.",
        ],
    );
}

/// The doc's "Failing cases" section, when there are any.
fn failing_section(lines: &mut Vec<String>, v: &Verdict, detail: &dyn Fn(&Entry) -> Value) {
    if v.failing.is_empty() {
        return;
    }
    push_all(
        lines,
        &[
            "",
            "## Failing cases",
            "",
            "| case | behaviour | close | description |",
            "|---|---|---|---|",
        ],
    );
    for (id, e) in &v.failing {
        let d = detail(e);
        let desc = one_line(&d.get("description").map(text).unwrap_or_default());
        lines.push(format!(
            "| {id} | {} | {} | {} |",
            e.behavior(),
            e.close(),
            desc.replace('|', "\\|")
        ));
    }
}

/// True when `old` and `new` differ in more than the [`VOLATILE`] lines.
pub fn doc_changed(old: &str, new: &str) -> bool {
    let stable = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !VOLATILE.iter().any(|v| l.starts_with(v)))
            .map(str::to_owned)
            .collect()
    };
    stable(old) != stable(new)
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch.
pub fn utc_minute(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let (h, m) = ((unix_s % 86_400) / 3600, (unix_s % 3600) / 60);
    // Howard Hinnant's days-to-civil: eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02} UTC")
}

/// Writes the doc unless only its volatile lines would change; true when written.
fn write_doc(path: &PathBuf, text: &str) -> Result<bool, String> {
    if let Ok(old) = std::fs::read_to_string(path) {
        if !doc_changed(&old, text) {
            return Ok(false);
        }
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

/// `measure autobahn-report`.
pub fn autobahn_report(args: &AutobahnReportArgs) -> Result<i32, String> {
    let raw = std::fs::read_to_string(&args.index)
        .map_err(|e| format!("{}: {e}", args.index.display()))?;
    let mut index: BTreeMap<String, BTreeMap<String, Entry>> =
        serde_json::from_str(&raw).map_err(|e| format!("{}: {e}", args.index.display()))?;
    let Some(cases) = index.remove(&args.agent) else {
        eprintln!(
            "no results for agent '{}' in {}",
            args.agent,
            args.index.display()
        );
        return Ok(1);
    };
    let reports_dir = std::path::absolute(&args.index)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let detail = |e: &Entry| load_case(&reports_dir, e);
    let v = judge(&cases, &detail)?;
    print!("{}", summary(&v));
    eprint!("{}", failures(&v, &detail));
    if let Some(path) = &args.doc {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let facts = DocFacts {
            args,
            date: utc_minute(now),
        };
        if write_doc(path, &doc(&v, &facts, &detail))? {
            println!("wrote {}", path.display());
        } else {
            println!(
                "{} unchanged (only the date or wall time would differ)",
                path.display()
            );
        }
    }
    if v.total() == 0 {
        eprintln!("no cases ran");
        return Ok(1);
    }
    if !v.failing.is_empty() {
        let ids: Vec<&str> = v.failing.iter().map(|(id, _)| id.as_str()).collect();
        eprintln!(
            "{} case(s) not OK/NON-STRICT/INFORMATIONAL/LATEST-PING-ONLY: {}",
            ids.len(),
            ids.join(" ")
        );
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small `index.json` for agent `shardrelay`: plain OK cases (out of numeric
    /// order), the allowed kinds, 2.10 FAILED, and an excluded compression case.
    fn sample_index() -> Value {
        json!({"shardrelay": {
            "9.10.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 3, "remoteCloseCode": 1000, "reportfile": "shardrelay_case_9_10_1.html"},
            "9.2.1": {"behavior": "OK", "behaviorClose": "OK", "remoteCloseCode": 1000, "reportfile": "shardrelay_case_9_2_1.html"},
            "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "remoteCloseCode": 1000, "reportfile": "shardrelay_case_1_1_1.html"},
            "2.10": {"behavior": "FAILED", "behaviorClose": "OK", "remoteCloseCode": 1000, "reportfile": "shardrelay_case_2_10.html"},
            "6.4.1": {"behavior": "NON-STRICT", "behaviorClose": "OK", "remoteCloseCode": 1007, "reportfile": "shardrelay_case_6_4_1.html"},
            "7.13.1": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL", "remoteCloseCode": 1002, "reportfile": "shardrelay_case_7_13_1.html"},
            "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK", "remoteCloseCode": null, "reportfile": "shardrelay_case_12_1_1.html"}
        }})
    }

    /// Case 2.10's report: ten pings expected, the last one answered.
    fn ping_detail(received: Value) -> Value {
        let expected: Vec<Value> = (0..10)
            .map(|i| json!(["pong", format!("payload-{i}")]))
            .collect();
        json!({"description": "Send 10 Pings with payload.", "expected": {"OK": expected}, "received": received})
    }

    /// Per-case reports by case id.
    fn details(case: &str) -> Value {
        match case {
            "2_10" => ping_detail(json!([["pong", "payload-9"]])),
            "6_4_1" => {
                json!({"description": "Send invalid UTF-8 in 3 fragments.<br>More.", "result": "Fail | late"})
            }
            "7_13_1" => json!({"description": "Send close with close code 5000"}),
            _ => json!({}),
        }
    }

    fn detail_of(e: &Entry) -> Value {
        let file = e.reportfile.as_deref().unwrap_or("");
        let case = file
            .trim_start_matches("shardrelay_case_")
            .trim_end_matches(".html");
        details(case)
    }

    fn cases(index: &Value) -> BTreeMap<String, Entry> {
        serde_json::from_value(index["shardrelay"].clone()).unwrap()
    }

    #[test]
    fn the_summary_counts_cases_in_numeric_order_without_the_excluded_groups() {
        let v = judge(&cases(&sample_index()), &detail_of).unwrap();
        assert_eq!(v.total(), 6);
        assert!(v.failing.is_empty());
        assert_eq!(
            summary(&v),
            "Autobahn fuzzingclient: 6 cases (12.*/13.* excluded)\n\
             \x20 INFORMATIONAL  1\n\
             \x20 LATEST-PING-ONLY 1\n\
             \x20 NON-STRICT     1\n\
             \x20 OK             3\n\
             \x20 close behaviour: INFORMATIONAL 1, OK 5\n\
             \x20 2.10 LATEST-PING-ONLY (close OK)\n\
             \x20 6.4.1 NON-STRICT (close OK)\n\
             \x20 7.13.1 INFORMATIONAL (close INFORMATIONAL)\n"
        );
        let sections: Vec<u64> = v.per_section.keys().copied().collect();
        assert_eq!(sections, [1, 2, 6, 7, 9]);
    }

    #[test]
    fn case_2_10_passes_only_with_the_suites_pongs_in_order_ending_with_the_last() {
        let entry = Entry {
            behavior: Some("FAILED".into()),
            behavior_close: Some("OK".into()),
            ..Entry::default()
        };
        let ok = |received: Value| latest_ping_only(&ping_detail(received), &entry);
        assert!(ok(json!([["pong", "payload-9"]])));
        assert!(ok(json!([["pong", "payload-2"], ["pong", "payload-9"]])));
        // Out of order, a repeat, the last missing, a stranger's payload, not a pong.
        assert!(!ok(json!([
            ["pong", "payload-9"],
            ["pong", "payload-2"],
            ["pong", "payload-9"]
        ])));
        assert!(!ok(json!([["pong", "payload-9"], ["pong", "payload-9"]])));
        assert!(!ok(json!([["pong", "payload-2"]])));
        assert!(!ok(json!([["pong", "other"], ["pong", "payload-9"]])));
        assert!(!ok(json!([["message", "payload-9"]])));
        assert!(!ok(json!([])));
        let unclean = Entry {
            behavior_close: Some("FAILED".into()),
            ..entry.clone()
        };
        assert!(!latest_ping_only(
            &ping_detail(json!([["pong", "payload-9"]])),
            &unclean
        ));
    }

    #[test]
    fn a_failing_case_is_named_with_its_report() {
        let mut index = sample_index();
        index["shardrelay"]["2.10"]["behaviorClose"] = json!("FAILED");
        index["shardrelay"]["5.1"] = json!({"behavior": "FAILED", "behaviorClose": "OK", "reportfile": "shardrelay_case_6_4_1.html"});
        let v = judge(&cases(&index), &detail_of).unwrap();
        let ids: Vec<&str> = v.failing.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["2.10", "5.1"]);
        let text = failures(&v, &detail_of);
        assert!(text.starts_with("FAILED 2.10: FAILED / close FAILED, remote close code 1000\n    description: Send 10 Pings with payload.\n"), "{text}");
        assert!(
            text.contains("FAILED 5.1: FAILED / close OK, remote close code None\n"),
            "{text}"
        );
        assert!(text.contains("    result: Fail | late\n"), "{text}");
        assert!(judge(&cases(&json!({"shardrelay": {"x.1": {}}})), &detail_of).is_err());
    }

    fn args(dir: &Path) -> AutobahnReportArgs {
        AutobahnReportArgs {
            index: dir.join("index.json"),
            agent: "shardrelay".into(),
            relay_version: "0.1.0".into(),
            relay_flags: "--enable-echo".into(),
            driver: "io_uring".into(),
            wstest: "25.10.1".into(),
            seconds: 18,
            doc: Some(dir.join("conformance.md")),
        }
    }

    /// A fresh directory holding the sample report files.
    fn sample_dir(name: &str, index: &Value) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("autobahn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        for case in ["2_10", "6_4_1", "7_13_1"] {
            let path = dir.join(format!("shardrelay_case_{case}.json"));
            std::fs::write(path, details(case).to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn a_passing_report_exits_0_and_writes_the_doc_once() {
        let dir = sample_dir("pass", &sample_index());
        let a = args(&dir);
        assert_eq!(autobahn_report(&a).unwrap(), 0);
        let doc = std::fs::read_to_string(dir.join("conformance.md")).unwrap();
        assert!(doc.contains("| result | **pass**: 6 cases run,"), "{doc}");
        assert!(
            doc.contains("| 2.10 | LATEST-PING-ONLY | OK | Send 10 Pings with payload. | 1000 |"),
            "{doc}"
        );
        assert!(
            doc.contains("| 6.4.1 | NON-STRICT | OK | Send invalid UTF-8 in 3 fragments. | 1007 |"),
            "{doc}"
        );
        assert!(
            doc.contains("| 9 | Limits and performance (messages up to 16 MiB) | 2 | OK 2 |"),
            "{doc}"
        );
        assert!(
            doc.ends_with("open `target/conformance/reports/index.html`.\n"),
            "{doc}"
        );
        assert!(!doc.contains("## Failing cases"));
        // Only the date and wall time differ: the page is left alone.
        let rerun = doc.replace("| wstest wall time | 18 s |", "| wstest wall time | 19 s |");
        assert!(!doc_changed(&doc, &rerun));
        assert!(doc_changed(&doc, &doc.replace("| OK | 3 |", "| OK | 4 |")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_report_or_a_missing_agent_or_no_cases_exits_1() {
        let mut index = sample_index();
        index["shardrelay"]["1.1.1"]["behavior"] = json!("FAILED");
        let dir = sample_dir("fail", &index);
        let a = args(&dir);
        assert_eq!(autobahn_report(&a).unwrap(), 1);
        let doc = std::fs::read_to_string(dir.join("conformance.md")).unwrap();
        assert!(doc.contains("| result | **FAIL**: 6 cases run,"), "{doc}");
        assert!(doc.contains("## Failing cases\n\n| case | behaviour | close | description |\n|---|---|---|---|\n| 1.1.1 | FAILED | OK |  |"), "{doc}");
        let other = AutobahnReportArgs {
            agent: "someone-else".into(),
            doc: None,
            ..args(&dir)
        };
        assert_eq!(autobahn_report(&other).unwrap(), 1);
        std::fs::write(dir.join("index.json"), r#"{"shardrelay": {}}"#).unwrap();
        assert_eq!(
            autobahn_report(&AutobahnReportArgs {
                doc: None,
                ..args(&dir)
            })
            .unwrap(),
            1
        );
        std::fs::write(dir.join("index.json"), "not json").unwrap();
        assert!(autobahn_report(&a).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates_are_utc_to_the_minute() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_796_510_348), "2026-12-05 22:39 UTC");
    }
}
