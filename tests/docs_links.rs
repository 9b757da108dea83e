//! Every relative link in `README.md` and `docs/*.md` resolves: the file (or
//! directory) it names exists inside the repository, and an `#anchor` into a
//! markdown file names one of its headings, slugged as GitHub slugs them.
//!
//! A small hand-written scan, not a markdown parser: inline links and images
//! `[text](target)` and reference definitions `[label]: target`, outside
//! fenced code blocks and inline code spans. Links with a scheme
//! (`https:`, `mailto:`) are not followed.

// An integration test has no public API for `unreachable_pub` to protect,
// and its helpers may fail the test as the tests themselves do.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The documentation pages checked: the README and every page in `docs/`.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let docs = root.join("docs");
    if let Ok(entries) = fs::read_dir(&docs) {
        let mut found: Vec<PathBuf> = entries
            .map(|e| e.expect("read docs/").path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        found.sort();
        pages.extend(found);
    }
    pages
}

/// One link found in a page: its 1-based line and its target as written.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    line: usize,
    target: String,
}

/// The markdown outside fenced code blocks, as paragraphs: (first line
/// number, text). Code spans may cross a line break but not a paragraph.
fn paragraphs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence_run = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        let opens = ['`', '~']
            .into_iter()
            .map(|c| (c, fence_run(c)))
            .find(|&(_, n)| n >= 3)
            .filter(|_| indent <= 3);
        match (fence, opens) {
            (None, Some(open)) => {
                fence = Some(open);
                out.extend(current.take());
                continue;
            }
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => {
                // A closing fence has nothing after its run.
                if trimmed.trim_end().chars().all(|x| x == c) {
                    fence = None;
                }
                continue;
            }
            (Some(_), _) => continue,
            (None, None) => {}
        }
        if trimmed.is_empty() {
            out.extend(current.take());
            continue;
        }
        match &mut current {
            Some((_, para)) => {
                para.push('\n');
                para.push_str(line);
            }
            None => current = Some((i + 1, line.to_string())),
        }
    }
    out.extend(current);
    out
}

/// Byte ranges of the inline code spans in a paragraph (CommonMark: a run
/// of backticks up to the next run of the same length; an unmatched run
/// is literal).
fn code_spans(para: &str) -> Vec<(usize, usize)> {
    let bytes = para.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                spans.push((i, j + n));
                i = j + n;
            }
            None => i += n,
        }
    }
    spans
}

/// Every link target in a page, with the line it is on.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (first_line, para) in paragraphs(text) {
        let spans = code_spans(&para);
        let in_code = |at: usize| spans.iter().any(|&(s, e)| s <= at && at < e);
        let line_of = |at: usize| first_line + para[..at].matches('\n').count();
        // Inline links and images: `](target)` or `](target "title")`.
        let mut from = 0;
        while let Some(found) = para[from..].find("](") {
            let at = from + found;
            from = at + 2;
            if in_code(at) {
                continue;
            }
            let rest = &para[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push(Link {
                line: line_of(at),
                target: target.to_string(),
            });
        }
        // Reference definitions: `[label]: target` at the start of a line.
        let mut offset = 0;
        for line in para.split('\n') {
            let definition = line
                .trim_start()
                .strip_prefix('[')
                .filter(|_| !in_code(offset))
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(_, after)| after.strip_prefix(':'))
                .and_then(|after| after.split_whitespace().next());
            if let Some(target) = definition {
                out.push(Link {
                    line: line_of(offset),
                    target: target.to_string(),
                });
            }
            offset += line.len() + 1;
        }
    }
    out
}

/// GitHub's anchor for a heading's text: inline markup reduced to its text,
/// lowercased, punctuation other than `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    // `[text](target)` reads as its text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](") {
            Some(mid) => match rest[open + mid..].find(')') {
                Some(close) => {
                    text.push_str(&rest[..open]);
                    text.push_str(&rest[open + 1..open + mid]);
                    rest = &rest[open + mid + close + 1..];
                }
                None => break,
            },
            None => break,
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings (ATX `#` headings outside fenced code),
/// with GitHub's `-1`, `-2` suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let mut in_fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        let level = t.chars().take_while(|&c| c == '#').count();
        if in_fence || level == 0 || level > 6 || line.len() - t.len() > 3 {
            continue;
        }
        let title = &t[level..];
        if !(title.is_empty() || title.starts_with(' ')) {
            continue;
        }
        // A closing run of `#` is not part of the heading.
        let title = title.trim().trim_end_matches('#').trim_end();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// Is this target a URL (with a scheme) rather than a path?
fn is_external(target: &str) -> bool {
    match target.find(':') {
        Some(colon) => {
            let scheme = &target[..colon];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// `path` with `.` and `..` resolved lexically, or `None` if it climbs out
/// of `root` (a link GitHub could not follow either).
fn normalize(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root).then_some(out)
}

/// Every broken relative link in the given pages, one message each.
fn broken_links(root: &Path, pages: &[PathBuf]) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in pages {
        let text = fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        let shown = page
            .strip_prefix(root)
            .unwrap_or(page)
            .display()
            .to_string();
        for link in links(&text) {
            if link.target.is_empty() {
                broken.push(format!("{shown}:{}: empty link target", link.line));
                continue;
            }
            if is_external(&link.target) {
                continue;
            }
            checked += 1;
            let (path, anchor) = match link.target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.target.as_str(), None),
            };
            let file = if path.is_empty() {
                Some(page.clone())
            } else {
                let dir = page.parent().unwrap_or(root);
                normalize(root, &dir.join(path))
            };
            let Some(file) = file else {
                broken.push(format!(
                    "{shown}:{}: {} leaves the repository",
                    link.line, link.target
                ));
                continue;
            };
            if !file.exists() {
                broken.push(format!(
                    "{shown}:{}: {} does not exist",
                    link.line, link.target
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if file.extension().is_none_or(|e| e != "md") {
                continue; // GitHub's line anchors (#L10) and the like.
            }
            let target_text = fs::read_to_string(&file).unwrap_or_default();
            if !anchors(&target_text).contains(anchor) {
                broken.push(format!(
                    "{shown}:{}: {} names no heading of {}",
                    link.line,
                    link.target,
                    file.strip_prefix(root).unwrap_or(&file).display()
                ));
            }
        }
    }
    (checked, broken)
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pages = pages(root);
    assert!(
        pages.len() > 1,
        "expected README.md and pages in docs/, found {pages:?}"
    );
    let (checked, broken) = broken_links(root, &pages);
    assert!(
        checked > pages.len(),
        "only {checked} relative links found in {} pages: is the scan broken?",
        pages.len()
    );
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_readme_links_every_docs_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.target.split('#').next().unwrap_or("").to_string())
        .collect();
    let missing: Vec<String> = pages(root)
        .iter()
        .skip(1)
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .filter(|p| !linked.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "docs pages the README does not link: {missing:?}"
    );
}

#[test]
fn a_broken_link_or_anchor_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("docs")).unwrap();
    fs::write(
        root.join("README.md"),
        "# Top\n\nSee [the page](docs/page.md#a-heading), [gone](docs/gone.md),\n\
         [bad anchor](docs/page.md#nope), [out](../outside.md) and [here](#top).\n\n\
         ```sh\n[not a link](nowhere.md)\n```\n\n`[code](nowhere.md)` [web](https://example.org/x)\n",
    )
    .unwrap();
    fs::write(
        root.join("docs/page.md"),
        "# Page\n\n## A heading\n\nBack to [the README](../README.md#top).\n",
    )
    .unwrap();
    let (checked, broken) = broken_links(root, &pages(root));
    assert_eq!(checked, 6, "{broken:?}");
    assert_eq!(broken.len(), 3, "{broken:?}");
    assert!(broken[0].starts_with("README.md:3: docs/gone.md does not exist"));
    assert!(broken[1].starts_with("README.md:4: docs/page.md#nope names no heading"));
    assert!(broken[2].starts_with("README.md:4: ../outside.md leaves the repository"));
}

#[test]
fn links_are_found_outside_code_only() {
    let text = "A [`hallmark::policy`](src/policy/mod.rs) and [Security\n\
                model](#security-model), not `[x](y.md)` nor `audit\n\
                verify [x](z.md)`.\n\n```\n[a](b.md)\n```\n\n[ref]: docs/cli.md\n";
    let links = links(text);
    let targets: Vec<(usize, &str)> = links.iter().map(|l| (l.line, l.target.as_str())).collect();
    assert_eq!(
        targets,
        [
            (1, "src/policy/mod.rs"),
            (2, "#security-model"),
            (9, "docs/cli.md")
        ]
    );
}

#[test]
fn headings_slug_as_github_does() {
    assert_eq!(
        slug("Relying parties: the `hallmark` library"),
        "relying-parties-the-hallmark-library"
    );
    assert_eq!(
        slug("The binding against a local attacker, attack by attack"),
        "the-binding-against-a-local-attacker-attack-by-attack"
    );
    assert_eq!(
        slug("Set-up (a fresh machine with only the Rust toolchain)"),
        "set-up-a-fresh-machine-with-only-the-rust-toolchain"
    );
    assert_eq!(slug("x509pop_ca and [links](a.md)"), "x509pop_ca-and-links");
    let a = anchors("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n## Notes ##\n");
    assert_eq!(
        a,
        BTreeSet::from(["notes".into(), "notes-1".into(), "notes-2".into()])
    );
}
