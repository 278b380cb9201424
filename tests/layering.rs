//! The layering lint (issue 17, acceptance 1): no cycle among the top-level modules of
//! the relay (`src/`) or of the load generator (`loadtest/src/`), and no import into a
//! higher layer. Reads the source text (no build of anything) and follows every
//! `crate::…` path, `use crate::{…}` group and `super::…` path out of each file; a
//! module's `#[cfg(test)]` part may reach anywhere and is not read.
//!
//! The layer tables below are the allowed order, lowest first. A module may import its
//! own layer and the layers below it; the cycle check keeps a layer's members from
//! importing each other both ways. A new top-level module must be placed in a table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The relay's layers, lowest first (see docs/architecture.md, "Layers").
const RELAY_LAYERS: &[(&str, &[&str])] = &[
    // The operating system, the allocator, the connection count, and the client
    // address behind a balancer (PROXY header, trusted proxies), the TLS record layer,
    // the timing wheel, the cross-thread channel with a wake (`wake`).
    (
        "platform",
        &[
            "sys",
            "alloc_count",
            "memory",
            "tls",
            "net",
            "proxy",
            "timer",
            "wake",
        ],
    ),
    // Settings, counters, logs, per-address state, the listeners' setup.
    (
        "settings and counters",
        &[
            "cluster", "config", "stats", "logging", "process", "per_ip", "listen",
        ],
    ),
    // Wire protocols: WebSocket frames and connections, HTTP heads and
    // responses.
    ("protocols", &["ws", "http"]),
    // The rendezvous styles.
    ("styles", &["modes"]),
    // One shard: registries, dispatch, accept, inbox, tick, admin endpoints.
    ("shard", &["shard"]),
    // The process: start-up, the CLI's other commands.
    ("process", &["server", "watch", "manual", "haproxy"]),
];

/// Upward edges still being removed on another branch (`from`, `to`, who). They are
/// allowed (and left out of the cycle check) until that branch lands; a stale entry is
/// reported on stderr so that it gets deleted. None now: the styles see their shard
/// through `modes::StyleHost`, which the shard implements.
const RELAY_PENDING: &[(&str, &str, &str)] = &[];

/// The load generator's layers, lowest first.
const LOADTEST_LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "sys", "clock", "seq", "hgrm", "http", "ws", "local", "procfs", "compare", "tls",
        ],
    ),
    ("connections", &["net", "probe", "stats", "conn"]),
    ("figures", &["relay_stats", "direct", "figure", "threshold"]),
    ("plan", &["cli", "plan"]),
    ("traffic", &["stream", "ctx", "scenario", "worker"]),
    ("results", &["report", "measure"]),
    ("driver", &["run"]),
];

/// One rule broken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Violation {
    /// `from` imports `to`, which sits in a higher layer.
    Upward {
        /// The importing module.
        from: String,
        /// The module in a higher layer.
        to: String,
    },
    /// These modules import each other (a strongly connected component).
    Cycle(Vec<String>),
    /// A top-level module no layer lists.
    Unplaced(String),
}

/// The top-level module a file belongs to (`None` for the crate roots and `bin/`), and
/// its module path.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The part of a file the lint reads: everything before its test module
/// (`#[cfg(test)] mod …`), without comments.
fn code_of(text: &str) -> String {
    let cut = text
        .match_indices("#[cfg(test)]")
        .map(|(at, attr)| at + attr.len())
        .find(|&after| {
            let rest = text[after..].trim_start();
            ["mod ", "pub mod ", "pub(crate) mod "]
                .iter()
                .any(|m| rest.starts_with(m))
        })
        .map_or(text.len(), |after| after - "#[cfg(test)]".len());
    let mut out = String::with_capacity(cut);
    for line in text[..cut].lines() {
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Is `c` part of an identifier?
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `::`-separated identifiers starting at `s` (stops at anything else).
fn path_at(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !ident_char(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        parts.push(&rest[..end]);
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with(ident_char) => rest = next,
            _ => break,
        }
    }
    parts
}

/// The first path segment of every item of a `{…}` group starting at `s` (just after
/// the `{`), nested groups skipped.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && ident_char(c) => {
                item_start = false;
                let head = path_at(&s[i..]).first().copied().unwrap_or("");
                if head != "self" {
                    heads.push(head);
                }
            }
            _ => {}
        }
    }
    heads
}

/// The module paths a file's code names, resolved against the file's own module path
/// `here`: `crate::a::…` → `[a, …]`, `super::b` → the parent's `b`.
fn referenced(here: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| ident_char(c) || c == '$') || code[..at].ends_with("::") {
            continue; // `$crate::` in a macro, part of a longer name or of a longer path
        }
        let path = path_at(&code[at..]);
        let mut base: Vec<String> = Vec::new();
        let mut rest = path.as_slice();
        if rest.first() == Some(&"crate") {
            rest = &rest[1..];
        } else {
            // Each leading `super` steps out of one module (a `mod.rs` is its module).
            base = here.to_vec();
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        let tail_end = at + path.iter().map(|p| p.len() + 2).sum::<usize>();
        let group = code.get(tail_end..).filter(|t| t.starts_with('{'));
        match (rest.first(), group) {
            (Some(_), _) => {
                let mut full = base.clone();
                full.extend(rest.iter().map(|s| s.to_string()));
                found.push(full);
            }
            (None, Some(group)) => {
                for head in group_heads(&group[1..]) {
                    let mut full = base.clone();
                    full.push(head.to_string());
                    found.push(full);
                }
            }
            (None, None) => {}
        }
    }
    found
}

/// Top-level module edges of a crate: `files` are (path relative to `src`, text).
fn edges(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let top_level: BTreeSet<String> = files
        .iter()
        .filter_map(|(rel, _)| module_path(rel).first().cloned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let here = module_path(rel);
        let Some(from) = here.first().cloned() else {
            continue; // a crate root
        };
        graph.entry(from.clone()).or_default();
        for path in referenced(&here, &code_of(text)) {
            let Some(to) = path.first() else { continue };
            if *to != from && top_level.contains(to) {
                graph.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    graph
}

/// Strongly connected components with more than one member (Tarjan, iterative enough
/// for a few dozen modules).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    /// Tarjan's bookkeeping.
    struct Walk<'a> {
        /// The graph walked.
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        /// Visit order of each module seen.
        index: BTreeMap<&'a str, usize>,
        /// Lowest visit order reachable from each module.
        low: BTreeMap<&'a str, usize>,
        /// Modules of components not yet closed.
        stack: Vec<&'a str>,
        /// Members of `stack`.
        on_stack: BTreeSet<&'a str>,
        /// Components of more than one module.
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// Every rule `graph` breaks against `layers`, ignoring the `pending` edges.
fn check(
    graph: &BTreeMap<String, BTreeSet<String>>,
    layers: &[(&str, &[&str])],
    pending: &[(&str, &str, &str)],
) -> Vec<Violation> {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect();
    let is_pending = |from: &str, to: &str| pending.iter().any(|(f, t, _)| *f == from && *t == to);
    let mut found = Vec::new();
    let mut kept: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        let Some(&own) = layer_of.get(from.as_str()) else {
            found.push(Violation::Unplaced(from.clone()));
            continue;
        };
        for to in tos {
            if is_pending(from, to) {
                continue;
            }
            kept.entry(from.clone()).or_default().insert(to.clone());
            match layer_of.get(to.as_str()) {
                Some(&theirs) if theirs > own => found.push(Violation::Upward {
                    from: from.clone(),
                    to: to.clone(),
                }),
                Some(_) => {}
                None => found.push(Violation::Unplaced(to.clone())),
            }
        }
    }
    found.extend(cycles(&kept).into_iter().map(Violation::Cycle));
    found.sort();
    found.dedup();
    found
}

/// Every `.rs` file under `src` except `bin/` (separate binaries), relative to `src`.
fn read_crate(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let rel = path.strip_prefix(src).expect("under src").to_path_buf();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file");
                files.push((rel, text));
            }
        }
    }
    files
}

/// Lint one crate of the workspace; panics with every violation.
fn lint(src: &str, layers: &[(&str, &[&str])], pending: &[(&str, &str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let graph = edges(&read_crate(&root));
    assert!(graph.len() > 5, "{src}: found only {graph:?}");
    for (from, to, who) in pending {
        if !graph.get(*from).is_some_and(|tos| tos.contains(*to)) {
            eprintln!("{src}: the pending edge {from} -> {to} ({who}) is gone: delete it");
        }
    }
    let violations = check(&graph, layers, pending);
    assert!(
        violations.is_empty(),
        "{src}: layering broken:\n{violations:#?}\n(graph: {graph:#?})"
    );
}

#[test]
fn the_relay_has_no_module_cycle_and_no_upward_import() {
    lint("src", RELAY_LAYERS, RELAY_PENDING);
}

#[test]
fn the_load_generator_has_no_module_cycle_and_no_upward_import() {
    lint("loadtest/src", LOADTEST_LAYERS, &[]);
}

/// A fake crate: (path under src, text).
fn fake(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect()
}

const FAKE_LAYERS: &[(&str, &[&str])] = &[("low", &["a", "b"]), ("high", &["c"])];

#[test]
fn the_lint_fails_on_a_cycle() {
    let files = fake(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::b::Thing;"),
        ("b/mod.rs", "pub mod inner;"),
        ("b/inner.rs", "fn f() { super::super::a::g(); }"),
    ]);
    let graph = edges(&files);
    assert_eq!(
        check(&graph, FAKE_LAYERS, &[]),
        vec![Violation::Cycle(vec!["a".into(), "b".into()])]
    );
}

#[test]
fn the_lint_fails_on_an_upward_import_and_an_unplaced_module() {
    let files = fake(&[
        ("a.rs", "use crate::{b, c::X};"),
        ("b.rs", ""),
        ("c.rs", ""),
        ("d.rs", "use crate::a;"),
    ]);
    let graph = edges(&files);
    assert_eq!(
        check(&graph, FAKE_LAYERS, &[]),
        vec![
            Violation::Upward {
                from: "a".into(),
                to: "c".into()
            },
            Violation::Unplaced("d".into()),
        ]
    );
    // A pending (known, being removed) edge is allowed.
    assert_eq!(
        check(&graph, FAKE_LAYERS, &[("a", "c", "someone")]),
        vec![Violation::Unplaced("d".into())]
    );
}

#[test]
fn the_lint_ignores_tests_comments_macros_and_its_own_module() {
    let files = fake(&[
        (
            "a/mod.rs",
            "mod x; use self::x::Y; use super::b; // crate::c\n",
        ),
        (
            "a/x.rs",
            "use super::Z; macro_rules! m { () => { $crate::c::f() } }",
        ),
        ("b.rs", "#[cfg(test)]\nmod tests { use crate::c; }"),
        ("c.rs", "/// crate::a in a doc comment\nfn f() {}"),
    ]);
    let graph = edges(&files);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert!(graph["b"].is_empty() && graph["c"].is_empty());
    assert!(check(&graph, FAKE_LAYERS, &[]).is_empty());
}

#[test]
fn grouped_and_nested_imports_are_followed() {
    let files = fake(&[
        ("c.rs", "use crate::{a::{self, P}, b::Q as R};"),
        ("a.rs", ""),
        ("b.rs", ""),
    ]);
    let graph = edges(&files);
    assert_eq!(
        graph["c"],
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}
