//! The module layout's rules, checked against the sources: no two sibling modules import each
//! other, however indirectly, and the lines of `lib.rs` are not crossed. Test code (`tests.rs`
//! files and `mod tests` blocks) is left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's path below the crate, e.g. `["portal", "staff", "helpdesk"]`.
type ModPath = Vec<String>;

/// Every module of the crate, with its source (test code and comments removed).
fn modules() -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: ModPath = rel.iter().map(|p| p.to_string_lossy().to_string()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts, code_of(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// `text` without its test module and its comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The module paths `code` (of module `at`) names through `crate::` or `super::`, braces of a
/// `use` included.
fn named(at: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let (mut base, rest) = if code[i..].starts_with("crate::") {
            (Vec::new(), &code[i + 7..])
        } else {
            (at[..at.len().saturating_sub(1)].to_vec(), &code[i + 7..])
        };
        let mut rest = rest;
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let mut segments: ModPath = path.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        base.append(&mut segments);
        let after = &rest[path.len()..];
        if (path.is_empty() || path.ends_with("::")) && after.starts_with('{') {
            let inner = &after[1..after.find('}').unwrap_or(after.len())];
            for item in inner.split(',') {
                let first = item.trim().split("::").next().unwrap_or_default().split(' ').next().unwrap_or_default();
                if !first.is_empty() && first != "self" {
                    out.push([base.clone(), vec![first.to_string()]].concat());
                }
            }
        }
        out.push(base);
    }
    out
}

/// The module `path` names: the longest of its beginnings that is a module.
fn resolve<'m>(mods: &'m BTreeMap<ModPath, String>, path: &[String]) -> Option<&'m ModPath> {
    (1..=path.len()).rev().find_map(|n| mods.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// Which module imports which, module by module.
fn imports() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mods = modules();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (at, code) in &mods {
        for path in named(at, code) {
            if let Some(to) = resolve(&mods, &path).filter(|to| *to != at) {
                edges.entry(at.clone()).or_default().insert(to.clone());
            }
        }
    }
    edges
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    // Each import, lifted to the two siblings under the modules' nearest common parent.
    let mut siblings: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (a, tos) in imports() {
        for b in tos {
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            if common < a.len() && common < b.len() {
                siblings.entry(a[..=common].to_vec()).or_default().insert(b[..=common].to_vec());
            }
        }
    }
    // A module that reaches itself through its siblings is in a circle.
    let mut circles = Vec::new();
    for start in siblings.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&ModPath> = siblings[start].iter().collect();
        while let Some(m) = todo.pop() {
            if m == start {
                circles.push(start.join("/"));
                break;
            }
            if seen.insert(m.clone()) {
                todo.extend(siblings.get(m).into_iter().flatten());
            }
        }
    }
    assert!(circles.is_empty(), "modules in an import circle: {circles:?}");
}

#[test]
fn the_lines_between_where_code_runs_are_not_crossed() {
    // (from, to): `from` may not import `to`.
    let rules: [(&str, &str); 14] = [
        // The portal host never talks to a directory itself.
        ("portal", "directory"),
        ("relay", "directory"),
        ("usecase", "directory"),
        // The use cases know nothing of pages, sessions or forms.
        ("usecase", "portal"),
        // The agent host never touches the portal's database or pages.
        ("agent", "store"),
        ("agent", "portal"),
        ("agent", "usecase"),
        ("directory", "store"),
        ("directory", "portal"),
        ("directory", "usecase"),
        // The shared vocabulary stands on its own.
        ("domain", "store"),
        ("domain", "portal"),
        ("envelope", "store"),
        ("envelope", "relay"),
    ];
    let mut crossed = Vec::new();
    for (from, tos) in imports() {
        for to in tos {
            for (a, b) in rules {
                if from[0] == a && to[0] == b {
                    crossed.push(format!("{} -> {}", from.join("/"), to.join("/")));
                }
            }
            // The agent knows the relay only by its wire protocol, never the hub.
            if ["agent", "directory"].contains(&from[0].as_str())
                && to[0] == "relay"
                && to.get(1).is_none_or(|m| m != "protocol")
            {
                crossed.push(format!("{} -> {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(crossed.is_empty(), "imports across the lines of lib.rs: {crossed:?}");
}

#[test]
fn the_checks_see_imports() {
    let at: ModPath = vec!["portal".into(), "staff".into(), "admin".into()];
    let found = named(&at, "use super::{pages::X, Staff};\nlet x = crate::store::staff::get(db);");
    assert!(found.contains(&vec!["portal".into(), "staff".into(), "pages".into()]), "{found:?}");
    assert!(found.contains(&vec!["store".into(), "staff".into(), "get".into()]), "{found:?}");
    let edges = imports();
    let usecase: ModPath = vec!["usecase".into(), "account".into()];
    assert!(edges[&usecase].contains(&vec!["store".into(), "audit".into()]), "{:?}", edges[&usecase]);
}
