//! The README's layout names every source file of every crate (`src/`,
//! `bindings/c/src/`, `bindings/python/src/`, `cli/src/`), and nothing
//! that is not there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else {
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// The paths the layout's block names: a line at the margin names a path
/// (a directory ends in `/`); an indented line names an entry of the
/// directory two spaces to its left.
fn layout(readme: &str) -> BTreeSet<String> {
    let section = &readme[readme.find("## Layout").expect("a Layout section")..];
    let block = section.split("```").nth(1).expect("a code block");
    let mut dirs: Vec<String> = Vec::new();
    let mut named = BTreeSet::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        assert_eq!(indent % 2, 0, "two spaces a level: {line:?}");
        let level = indent / 2;
        let name = line.split_whitespace().next().unwrap();
        let path = if level == 0 {
            name.to_string()
        } else {
            let parent = dirs
                .get(level - 1)
                .unwrap_or_else(|| panic!("no directory above {line:?}"));
            format!("{parent}{name}")
        };
        dirs.truncate(level);
        if path.ends_with('/') {
            dirs.push(path);
        } else {
            named.insert(path);
        }
    }
    named
}

#[test]
fn the_readme_layout_names_every_source_file() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let named = layout(&readme);
    const SOURCES: [&str; 4] = [
        "src/",
        "bindings/c/src/",
        "bindings/python/src/",
        "cli/src/",
    ];
    let mut actual = BTreeSet::new();
    for dir in SOURCES {
        sources(&root.join(dir), &root, &mut actual);
    }
    let missing: Vec<_> = actual.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "not in the README's layout: {missing:?}"
    );
    let stale: Vec<_> = named
        .iter()
        .filter(|p| SOURCES.iter().any(|d| p.starts_with(d)) && !actual.contains(*p))
        .collect();
    assert!(
        stale.is_empty(),
        "in the layout, not in the sources: {stale:?}"
    );
    for top in named
        .iter()
        .filter(|p| !SOURCES.iter().any(|d| p.starts_with(d)))
    {
        assert!(root.join(top).exists(), "in the layout, not here: {top}");
    }
}
