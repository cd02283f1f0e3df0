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
