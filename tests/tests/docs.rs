//! SECURITY.md names, for every threat, the test that proves its defence: each name must
//! be a test function in the file it is attributed to.

use statuslist_tests::repo_root;

/// `(file, function)` pairs of the threat table: cells of the form
/// `` `path.rs: name` `` or `` `path.rs: name`, `other_name` ``.
fn named_tests(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for row in text.lines().filter(|l| l.starts_with('|')) {
        let Some(cell) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for part in cell.split(';') {
            let names: Vec<&str> = part
                .split('`')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != ",")
                .collect();
            let Some((file, first)) = names.first().and_then(|n| n.split_once(": ")) else {
                continue;
            };
            if !file.ends_with(".rs") {
                continue;
            }
            found.push((file.to_owned(), first.to_owned()));
            for other in &names[1..] {
                found.push((file.to_owned(), (*other).to_owned()));
            }
        }
    }
    found
}

#[test]
fn every_test_security_md_names_exists() {
    let text = std::fs::read_to_string(repo_root().join("SECURITY.md")).expect("SECURITY.md");
    let named = named_tests(&text);
    assert!(named.len() >= 20, "only {} tests named", named.len());
    for (file, name) in &named {
        let source = std::fs::read_to_string(repo_root().join(file))
            .unwrap_or_else(|e| panic!("SECURITY.md names {file}: {e}"));
        assert!(
            source.contains(&format!("fn {name}(")),
            "SECURITY.md names {file}: {name}, which is not a function there"
        );
    }
}

/// The README stays an entry point (at most 300 lines), and every relative link of the
/// README, `docs/`, SECURITY.md and CHANGELOG.md names a file that exists.
#[test]
fn the_readme_is_short_and_every_relative_link_resolves() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.lines().count() <= 300,
        "README.md has {} lines",
        readme.lines().count()
    );
    let mut files = vec![
        root.join("README.md"),
        root.join("SECURITY.md"),
        root.join("CHANGELOG.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        files.push(entry.expect("an entry").path());
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a document");
        for (_, rest) in text.match_indices("](").map(|(i, _)| text.split_at(i + 2)) {
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or(target);
            let dir = file.parent().expect("a folder");
            assert!(
                dir.join(path).exists(),
                "{} links to {target}, which does not exist",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} links checked");
}
