//! Keeps the library's modules layered (see docs/architecture.md): reads the `crate::`,
//! `super::` and `self::` paths of `src/**/*.rs` (production code: comments and unit-test
//! modules left out), builds the module graph at two granularities, top-level modules and the
//! files of `proxy/`, and fails naming a cycle if there is one. It also checks the intended
//! direction: routing and auth know nothing of the data plane or the admin server, discovery
//! nothing of the data plane, and nothing in the library imports the admin server except
//! `server`, the composition root that wires every part.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["proxy", "relay", "head"]`; the crate root is empty.
type ModPath = Vec<String>;

/// Module path -> modules it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file's production code: no comment lines, nothing from a `#[cfg(test)]` module on.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<ModPath>) {
    let tree = tree.trim().trim_start_matches("::");
    let Some(open) = tree.find('{') else {
        let mut path = prefix.to_vec();
        let tree = tree.split(" as ").next().unwrap_or(tree);
        path.extend(
            tree.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        out.push(path);
        return;
    };
    let mut path = prefix.to_vec();
    path.extend(
        tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&path, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand(&path, &inner[start..], out);
    }
}

/// Every path in `code` that may name a module of the crate: use trees, and inline paths
/// starting with `crate::`, `super::` or one of `children` (the file's own submodules).
fn paths_in(code: &str, children: &[String]) -> Vec<ModPath> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let starts_word = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let tail = &rest[at + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        let tree = tail[..end].trim();
        if starts_word && tree.contains("::") {
            expand(&[], tree, &mut out);
        }
        rest = &tail[end.min(tail.len())..];
    }
    // Inline paths: `crate::proxy::conn_limit::X`, `super::relay::RawConn`.
    let bytes = code.as_bytes();
    let roots = ["crate::".to_string(), "super::".to_string()]
        .into_iter()
        .chain(children.iter().map(|c| format!("{c}::")));
    for root in roots {
        let root = root.as_str();
        let mut from = 0;
        while let Some(found) = code[from..].find(root) {
            let at = from + found;
            from = at + root.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b':'))
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| at + n);
            out.push(
                code[at..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    out
}

/// The module a path from module `from` refers to: the longest prefix that is a module.
fn resolve(from: &ModPath, path: &ModPath, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut base = from.clone();
    let mut segments = path.iter().peekable();
    match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            base.clear();
            segments.next();
        }
        Some("super" | "self") => {}
        // A submodule of `from` named without `self::`; anything else is another crate.
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    while let Some(s) = segments.peek() {
        match s.as_str() {
            "super" => {
                base.pop();
                segments.next();
            }
            "self" => {
                segments.next();
            }
            _ => break,
        }
    }
    let mut target = base;
    for s in segments {
        let mut next = target.clone();
        next.push(s.clone());
        if !modules.contains(&next) {
            break;
        }
        target = next;
    }
    Some(target)
}

/// The library's module graph: module path -> module paths it refers to.
fn module_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // The binary's files (main.rs and the modules it declares) are not the library.
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let binary: BTreeSet<String> = main
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .chain(["main".to_string()])
        .collect();
    let files: Vec<(ModPath, PathBuf)> = files
        .into_iter()
        .map(|f| (module_of(src, &f), f))
        .filter(|(m, _)| !(m.len() == 1 && binary.contains(&m[0])))
        // Unit-test files (`#[cfg(test)] mod tests;`).
        .filter(|(m, _)| m.last().map(String::as_str) != Some("tests"))
        .collect();
    let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        let targets: &mut BTreeSet<ModPath> = graph.entry(module.clone()).or_default();
        let children: Vec<String> = modules
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        for path in paths_in(&code, &children) {
            if let Some(target) = resolve(module, &path, &modules) {
                if &target != module && !target.is_empty() {
                    targets.insert(target);
                }
            }
        }
    }
    graph
}

/// The graph with each module mapped to a node by `node` (edges inside a node dropped).
fn collapse(
    graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
    node: impl Fn(&ModPath) -> Option<String>,
) -> Graph {
    let mut out = Graph::new();
    for (from, targets) in graph {
        let Some(a) = node(from) else { continue };
        out.entry(a.clone()).or_default();
        for to in targets {
            if let Some(b) = node(to) {
                if a != b {
                    out.get_mut(&a).unwrap().insert(b);
                }
            }
        }
    }
    out
}

/// A cycle of `graph`, if there is one, as `a -> b -> ... -> a`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn top_level(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Graph {
    collapse(graph, |m| m.first().cloned())
}

fn proxy_files(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Graph {
    collapse(graph, |m| (m.first()? == "proxy").then(|| m.join("/")))
}

fn describe(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, to)| {
            format!(
                "  {from} -> {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_have_no_cycle() {
    let graph = top_level(&module_graph(&src()));
    assert!(
        graph.contains_key("proxy") && graph.contains_key("routing"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a cycle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            describe(&graph)
        );
    }
}

#[test]
fn files_of_the_data_plane_have_no_cycle() {
    let graph = proxy_files(&module_graph(&src()));
    assert!(graph.contains_key("proxy/http1/head"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "files of proxy/ import each other in a cycle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            describe(&graph)
        );
    }
}

#[test]
fn data_flows_one_way() {
    let graph = top_level(&module_graph(&src()));
    let imports = |from: &str, to: &str| graph.get(from).is_some_and(|t| t.contains(to));
    let mut wrong = Vec::new();
    for (from, to) in [
        ("routing", "proxy"),
        ("routing", "admin"),
        ("routing", "discovery"),
        ("auth", "proxy"),
        ("auth", "admin"),
        ("discovery", "proxy"),
        ("discovery", "admin"),
        ("source", "proxy"),
        ("proxy", "server"),
        ("admin", "server"),
        ("routing", "server"),
        ("auth", "server"),
        ("discovery", "server"),
        ("source", "server"),
        ("portal", "server"),
        // The portal is the browser side of auth: it reads routing and asks auth, and the
        // data plane calls it, never the other way round.
        ("portal", "proxy"),
        ("portal", "admin"),
        ("portal", "discovery"),
        ("routing", "portal"),
        ("auth", "portal"),
        ("discovery", "portal"),
        ("source", "portal"),
    ] {
        if imports(from, to) {
            wrong.push(format!("{from} imports {to}"));
        }
    }
    for (from, to) in &graph {
        if from != "admin" && from != "server" && to.contains("admin") {
            wrong.push(format!(
                "{from} imports admin (the admin server only reads)"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nthe graph:\n{}",
        wrong.join("\n"),
        describe(&graph)
    );
}

#[test]
fn the_reader_sees_use_trees_and_inline_paths() {
    let code = "use super::{a::{B, c}, d as e};\nuse crate::x::Y;\nfn f() { crate::z::w(); }\n";
    let paths = paths_in(code, &[]);
    for want in [
        vec!["super", "a", "B"],
        vec!["super", "a", "c"],
        vec!["super", "d"],
        vec!["crate", "x", "Y"],
        vec!["crate", "z", "w"],
    ] {
        let want: ModPath = want.into_iter().map(String::from).collect();
        assert!(paths.contains(&want), "{want:?} not in {paths:?}");
    }
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "a"]);
}
