//! Test (only): xtask's modules depend on each other one way. It reads every source file under
//! `src/`, collects the module paths each one names (`use crate::…`, `use super::…`, `use
//! self::…`, use-groups expanded, and `crate::…` paths inside code), and fails on any cycle
//! between modules.
//!
//! A module and its own ancestors are not counted against each other: a parent declares and
//! re-exports its children, and children use their parent's items; that is the façade of one
//! module, not two modules importing each other. Every other reference counts, lifted to the
//! children of the two modules' closest common ancestor: `demo::run` naming `lab::state` is an
//! edge `demo` → `lab`, and `demo::run` naming `demo::present` is `demo::run` →
//! `demo::present`. Test code does not count (a file's `#[cfg(test)] mod tests { … }`, and
//! `tests.rs` files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path from the crate root (`["demo", "run"]`; the root is empty).
type Module = Vec<String>;

/// The module a source file (relative to `src/`) defines; `None` for the binary's `main.rs`
/// and for test-only files.
fn module_of(rel: &str) -> Option<Module> {
    let rel = rel.strip_suffix(".rs")?;
    if matches!(rel, "main" | "import_graph") || rel == "tests" || rel.ends_with("/tests") {
        return None;
    }
    if rel == "lib" {
        return Some(Vec::new());
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// The tokens of Rust source that paths are made of: identifiers (`$crate` included), `::`,
/// and single punctuation characters. Comments, strings and character literals are skipped.
fn tokens(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if (ch == 'r' || (ch == 'b' && next == Some('r'))) && {
            let j = if ch == 'b' { i + 2 } else { i + 1 };
            let k = (j..c.len()).find(|&k| c[k] != '#').unwrap_or(c.len());
            c.get(k) == Some(&'"') && (i == 0 || !ident(c[i - 1]))
        } {
            let j = if ch == 'b' { i + 2 } else { i + 1 };
            let hashes = (j..c.len()).take_while(|&k| c[k] == '#').count();
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i = j + hashes + 1;
            while i < c.len() && !c[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && ident(c[i]) {
                    i += 1;
                }
            }
        } else if ident(ch) || (ch == '$' && next.is_some_and(ident)) {
            let start = i;
            i += 1;
            while i < c.len() && ident(c[i]) {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if ch == ':' && next == Some(':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
            i += 1;
        }
    }
    out
}

/// `src` without its test module (`#[cfg(test)] mod tests { … }` and everything after it).
fn without_tests(src: &str) -> &str {
    let mut at = 0;
    while let Some(i) = src[at..].find("#[cfg(test)]") {
        let start = at + i;
        let rest = src[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests {") || rest.starts_with("mod tests{") {
            return &src[..start];
        }
        at = start + 1;
    }
    src
}

/// Every path that `module`'s source names from `crate`, `super` or `self`, absolute from the
/// root, with use-groups expanded (`use crate::{a, b::c}` names `a` and `b::c`).
fn named_paths(module: &Module, src: &str) -> Vec<Vec<String>> {
    let t = tokens(without_tests(src));
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < t.len() {
        let starts = matches!(t[i].as_str(), "crate" | "$crate" | "super" | "self")
            && t[i + 1] == "::"
            && (i == 0 || t[i - 1] != "::");
        i = if starts {
            path_at(&t, i, module, Vec::new(), true, &mut out)
        } else {
            i + 1
        };
    }
    out
}

/// Reads one path (or use-group) at `t[i]` after `prefix`, pushing every complete path onto
/// `out`; returns the index after it. `top`: the path starts there (with `crate`, `super` or
/// `self`, resolved against `module`), rather than inside a group.
fn path_at(
    t: &[String],
    mut i: usize,
    module: &Module,
    prefix: Vec<String>,
    top: bool,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    let mut first = top;
    while let Some(tok) = t.get(i).map(String::as_str) {
        match tok {
            "{" => {
                i += 1;
                while let Some(tok) = t.get(i).map(String::as_str) {
                    match tok {
                        "}" => return i + 1,
                        "," => i += 1,
                        "self" => {
                            out.push(path.clone());
                            i += 1;
                        }
                        _ if is_ident(tok) => {
                            i = path_at(t, i, module, path.clone(), false, out);
                            // An `as name` rename.
                            if t.get(i).is_some_and(|x| x == "as") {
                                i += 2;
                            }
                        }
                        _ => i += 1,
                    }
                }
                return i;
            }
            "*" => {
                out.push(path);
                return i + 1;
            }
            "crate" | "$crate" if first => path.clear(),
            "self" if first => path.clone_from(module),
            "super" => {
                if first {
                    path.clone_from(module);
                }
                path.pop();
            }
            _ if is_ident(tok) => path.push(tok.to_owned()),
            _ => break,
        }
        first = false;
        if t.get(i + 1).is_some_and(|x| x == "::") {
            i += 2;
        } else {
            i += 1;
            break;
        }
    }
    out.push(path);
    i
}

fn is_ident(tok: &str) -> bool {
    tok.chars().all(|ch| ch.is_alphanumeric() || ch == '_')
}

/// The module a path belongs to: its longest prefix that is a module.
fn module_named<'a>(path: &[String], modules: &'a BTreeSet<Module>) -> Option<&'a Module> {
    (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

/// The dependency edges between modules, lifted as the header says, each with an example of
/// the path that makes it: `sources` maps a file under `src/` to its text.
fn edges(sources: &BTreeMap<String, String>) -> BTreeMap<(Module, Module), String> {
    let files: Vec<(Module, &String)> = sources
        .iter()
        .filter_map(|(rel, text)| Some((module_of(rel)?, text)))
        .collect();
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut out = BTreeMap::new();
    for (from, text) in &files {
        for path in named_paths(from, text) {
            let Some(to) = module_named(&path, &modules) else {
                continue;
            };
            if from.starts_with(to) || to.starts_with(from) {
                continue;
            }
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            let key = (from[..=common].to_vec(), to[..=common].to_vec());
            out.entry(key)
                .or_insert_with(|| format!("{} names {}", from.join("::"), path.join("::")));
        }
    }
    out
}

/// Every cycle of the graph (as module names, the first repeated at the end), one per strongly
/// connected group found by a depth-first search.
fn cycles(edges: &BTreeMap<(Module, Module), String>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    let mut done: BTreeSet<&Module> = BTreeSet::new();
    let mut found = Vec::new();
    fn visit<'a>(
        m: &'a Module,
        next: &BTreeMap<&'a Module, Vec<&'a Module>>,
        stack: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|s| *s == m) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.join("::")).collect();
            cycle.push(m.join("::"));
            found.push(cycle);
            return;
        }
        if done.contains(m) {
            return;
        }
        stack.push(m);
        for n in next.get(m).into_iter().flatten() {
            visit(n, next, stack, done, found);
        }
        stack.pop();
        done.insert(m);
    }
    for m in next.keys() {
        visit(m, &next, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn sources_under(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("readable src dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(dir).expect("under src").to_string_lossy();
                let text = std::fs::read_to_string(&p).expect("readable source");
                out.insert(rel.replace('\\', "/"), text);
            }
        }
    }
    out
}

/// Each cycle as `a -> b -> a (why a names b; why b names a)`.
fn explain_cycles(edges: &BTreeMap<(Module, Module), String>) -> Vec<String> {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    cycles(edges)
        .iter()
        .map(|c| {
            let steps: Vec<String> = c
                .windows(2)
                .map(|w| edges[&(m(&w[0]), m(&w[1]))].clone())
                .collect();
            format!("{} ({})", c.join(" -> "), steps.join("; "))
        })
        .collect()
}

fn graph_of(files: &[(&str, &str)]) -> BTreeMap<(Module, Module), String> {
    edges(
        &files
            .iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect(),
    )
}

#[test]
fn no_two_xtask_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = sources_under(&src);
    assert!(sources.contains_key("ci.rs") && sources.contains_key("vmtest.rs"));
    let edges = edges(&sources);
    // The graph is not empty: the reader finds the imports it is meant to find.
    let edge = |a: &str, b: &str| {
        let m = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
        edges.contains_key(&(m(a), m(b)))
    };
    assert!(edge("ci", "vmtest") && edge("ci", "packages") && edge("vmtest", "packages"));
    assert!(edge("demo", "harness") && edge("bench", "harness") && edge("harness", "lab"));
    assert!(edge("demo::run", "demo::present") && edge("bench::run", "bench::agent"));
    let why = explain_cycles(&edges);
    assert!(why.is_empty(), "import cycles:\n{}", why.join("\n"));
}

#[test]
fn finds_cycles_and_ignores_a_module_and_its_ancestors() {
    // Two modules naming each other, one with a path in code, one with a use-group.
    let g = graph_of(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::{b::X, util};"),
        (
            "b.rs",
            "fn f() { let s = \"crate::c\"; crate::a::g(); } // crate::c",
        ),
    ]);
    assert_eq!(cycles(&g), [["a", "b", "a"]]);
    // Siblings through `super`, a cycle of three, and the lifting across subtrees.
    let g = graph_of(&[
        ("d/mod.rs", "mod x; mod y; mod z; pub use x::F;"),
        ("d/x.rs", "use super::y::Y;"),
        ("d/y.rs", "use super::{self, z};"),
        ("d/z.rs", "use super::super::e::q::Q; use super::x;"),
        ("e/mod.rs", ""),
        (
            "e/q.rs",
            "fn f(c: char) -> bool { c == '\"' && crate::d::G }",
        ),
    ]);
    assert_eq!(
        cycles(&g),
        [vec!["d", "e", "d"], vec!["d::x", "d::y", "d::z", "d::x"]]
    );
    // A parent re-exporting its child, the child using the parent's items, tests: no cycle.
    let g = graph_of(&[
        ("lib.rs", "pub mod p; pub fn root() {}"),
        (
            "p/mod.rs",
            "mod c; pub use c::f; pub const K: u8 = 1; use crate::root;",
        ),
        (
            "p/c.rs",
            "use super::K; #[cfg(test)]\nmod tests { use crate::q::Z; }",
        ),
        ("p/tests.rs", "use crate::q::Z;"),
        ("q.rs", "use crate::p::K;"),
    ]);
    assert!(cycles(&g).is_empty(), "{g:?}");
    assert_eq!(g.len(), 1, "{g:?}");
}

/// The same rule for every other crate of the workspace: the monitor's role crates, the
/// binary's library, the shared kernel/user types and the lab tests' harness.
#[test]
fn no_module_circles_in_the_other_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![
        root.join("monitor/src"),
        root.join("monitor-common/src"),
        root.join("tests/src"),
    ];
    let crates = root.join("monitor/crates");
    for e in std::fs::read_dir(&crates).expect("monitor/crates is readable") {
        dirs.push(e.expect("dir entry").path().join("src"));
    }
    assert!(dirs.len() >= 8, "found only {dirs:?}");
    let mut why = Vec::new();
    let mut total_edges = 0;
    for dir in &dirs {
        let edges = edges(&sources_under(dir));
        total_edges += edges.len();
        for c in explain_cycles(&edges) {
            why.push(format!("{}: {c}", dir.display()));
        }
    }
    // The reader finds imports there too (an empty graph would pass vacuously).
    assert!(total_edges > 50, "only {total_edges} edges found");
    assert!(why.is_empty(), "import cycles:\n{}", why.join("\n"));
}

/// The roles' boundaries, as dependencies between the workspace's crates (Cargo keeps them
/// acyclic; this keeps the direction the architecture promises). Checked on `[dependencies]`
/// of each manifest; dev-dependencies are free.
#[test]
fn crate_boundaries_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = [
        "monitor",
        "monitor-record",
        "monitor-policy",
        "monitor-wire",
        "monitor-agent",
        "monitor-collector",
        "monitor-l7",
        "monitor-common",
        "monitor-ebpf",
        "xtask",
    ];
    let deps_of = |manifest: &str| -> BTreeSet<String> {
        let text = std::fs::read_to_string(root.join(manifest)).expect("readable manifest");
        let mut out = BTreeSet::new();
        let mut in_deps = false;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                in_deps = l == "[dependencies]";
                continue;
            }
            if in_deps && let Some((name, _)) = l.split_once('=') {
                let name = name.trim();
                if workspace.contains(&name) {
                    out.insert(name.to_owned());
                }
            }
        }
        out
    };
    let allowed: &[(&str, &[&str])] = &[
        ("monitor/crates/record/Cargo.toml", &[]),
        ("monitor/crates/l7/Cargo.toml", &[]),
        ("monitor/crates/policy/Cargo.toml", &["monitor-record"]),
        ("monitor/crates/wire/Cargo.toml", &["monitor-record"]),
        (
            "monitor/crates/collector/Cargo.toml",
            &["monitor-record", "monitor-wire"],
        ),
        (
            "monitor/crates/agent/Cargo.toml",
            &[
                "monitor-record",
                "monitor-policy",
                "monitor-wire",
                "monitor-l7",
                "monitor-common",
            ],
        ),
        ("xtask/Cargo.toml", &["monitor-record"]),
    ];
    let mut bad = Vec::new();
    for (manifest, ok) in allowed {
        for d in deps_of(manifest) {
            if !ok.contains(&d.as_str()) {
                bad.push(format!("{manifest} depends on {d}"));
            }
        }
    }
    // Nothing imports the binary crate.
    for manifest in [
        "monitor/crates/agent/Cargo.toml",
        "monitor/crates/collector/Cargo.toml",
        "tests/Cargo.toml",
        "xtask/Cargo.toml",
    ] {
        if deps_of(manifest).contains("monitor") {
            bad.push(format!("{manifest} depends on the binary crate `monitor`"));
        }
    }
    // The checker reads what it should: the agent's manifest names the policy.
    assert!(deps_of("monitor/crates/agent/Cargo.toml").contains("monitor-policy"));
    assert!(
        bad.is_empty(),
        "crate boundaries broken:\n{}",
        bad.join("\n")
    );
}
