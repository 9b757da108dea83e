#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure is a test failure with a backtrace"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::process::Command;

use proptest::prelude::*;

use super::*;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

fn digest(root: &Path) -> String {
    digest_tree(root, &TreeLimits::default()).unwrap().digest
}

/// The tree of the known-answer vector.
fn kat_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "hello.txt", b"hello\n");
    write(dir.path(), "sub/data.bin", b"abc");
    write(dir.path(), "empty file", b"");
    symlink("hello.txt", dir.path().join("link")).unwrap();
    dir
}

#[test]
fn known_answer() {
    // Computed once in a shell with sha256sum/stat/readlink over the same
    // tree, lines sorted by path:
    //   e3b0...b855  0  empty file
    //   5891...be03  6  hello.txt
    //   symlink  hello.txt  link
    //   ba78...15ad  3  sub/data.bin
    let dir = kat_tree();
    let tree = digest_tree(dir.path(), &TreeLimits::default()).unwrap();
    assert_eq!(
        tree.digest,
        "sha256:cad3af17f56da530466ab6dcdeea66cb26337c36470bdfd7921b47baa167ecc6"
    );
    let paths: Vec<_> = tree.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["empty file", "hello.txt", "link", "sub/data.bin"]);
    assert_eq!(tree.files[1].size(), Some(6));
    assert_eq!(
        tree.files[1].sha256_hex().unwrap(),
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    assert_eq!(
        tree.files[2].kind,
        EntryKind::Symlink {
            target: "hello.txt".into()
        }
    );
    assert_eq!(tree.files[2].line(), "symlink  hello.txt  link\n");
}

#[test]
fn empty_directory_is_the_digest_of_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("only-a-dir")).unwrap();
    assert_eq!(
        digest(dir.path()),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn changes_with_content_name_and_symlink_target() {
    let base = digest(kat_tree().path());

    let dir = kat_tree();
    write(dir.path(), "sub/data.bin", b"abd");
    assert_ne!(digest(dir.path()), base, "content change");

    let dir = kat_tree();
    fs::rename(dir.path().join("hello.txt"), dir.path().join("hello.txu")).unwrap();
    assert_ne!(digest(dir.path()), base, "file rename");

    let dir = kat_tree();
    fs::rename(dir.path().join("sub"), dir.path().join("sub2")).unwrap();
    assert_ne!(digest(dir.path()), base, "directory rename");

    let dir = kat_tree();
    fs::remove_file(dir.path().join("link")).unwrap();
    symlink("empty file", dir.path().join("link")).unwrap();
    assert_ne!(digest(dir.path()), base, "symlink target change");

    let dir = kat_tree();
    write(dir.path(), "new", b"");
    assert_ne!(digest(dir.path()), base, "added empty file");

    assert_eq!(digest(kat_tree().path()), base, "same tree, same digest");
}

#[test]
fn symlink_is_recorded_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"v1");
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
    symlink(outside.path(), dir.path().join("d")).unwrap();
    let before = digest_tree(dir.path(), &TreeLimits::default()).unwrap();
    assert_eq!(before.files.len(), 2, "the linked directory is not walked");
    write(outside.path(), "secret", b"v2 changed");
    assert_eq!(
        digest(dir.path()),
        before.digest,
        "target content does not count"
    );
    // A dangling link is fine too: it is never opened.
    fs::remove_dir_all(outside.path()).unwrap();
    assert_eq!(digest(dir.path()), before.digest);
}

#[test]
fn root_symlink_is_refused() {
    let dir = kat_tree();
    let parent = tempfile::tempdir().unwrap();
    let link = parent.path().join("link");
    symlink(dir.path(), &link).unwrap();
    let err = digest_tree(&link, &TreeLimits::default()).unwrap_err();
    assert!(matches!(err, TreeError::NotADirectory { .. }), "{err}");
}

#[test]
fn fifo_is_refused_with_its_path() {
    let dir = kat_tree();
    let fifo = dir.path().join("sub/pipe");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let err = digest_tree(dir.path(), &TreeLimits::default()).unwrap_err();
    match &err {
        TreeError::UnsupportedFileType { path, kind } => {
            assert_eq!(path, &fifo);
            assert_eq!(*kind, "fifo");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("sub/pipe"), "{err}");
}

#[test]
fn socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let err = digest_tree(dir.path(), &TreeLimits::default()).unwrap_err();
    assert!(
        matches!(err, TreeError::UnsupportedFileType { kind: "socket", .. }),
        "{err}"
    );
}

#[test]
fn limits_are_enforced_before_hashing() {
    struct NoHash;
    impl FileHasher for NoHash {
        fn sha256(&self, _: &Path, _: &Metadata) -> Result<[u8; 32], io::Error> {
            panic!("no file may be hashed when a limit is exceeded")
        }
    }
    let dir = kat_tree(); // files of 0, 6 and 3 bytes; 5 entries with `sub`
    let limits = TreeLimits {
        max_file_size: 5,
        ..TreeLimits::default()
    };
    let err = digest_tree_with(dir.path(), &limits, &NoHash).unwrap_err();
    assert!(
        matches!(
            err,
            TreeError::FileTooLarge {
                size: 6,
                limit: 5,
                ..
            }
        ),
        "{err}"
    );

    let limits = TreeLimits {
        max_total_bytes: 8,
        ..TreeLimits::default()
    };
    let err = digest_tree_with(dir.path(), &limits, &NoHash).unwrap_err();
    assert!(
        matches!(err, TreeError::TotalTooLarge { limit: 8, .. }),
        "{err}"
    );

    let limits = TreeLimits {
        max_entries: 4,
        ..TreeLimits::default()
    };
    let err = digest_tree_with(dir.path(), &limits, &NoHash).unwrap_err();
    assert!(
        matches!(err, TreeError::TooManyEntries { limit: 4, .. }),
        "{err}"
    );

    // Exactly at the limits is fine.
    let limits = TreeLimits {
        max_file_size: 6,
        max_total_bytes: 9,
        max_entries: 5,
    };
    assert!(digest_tree(dir.path(), &limits).is_ok());
}

#[test]
fn custom_hasher_is_used() {
    struct Fixed;
    impl FileHasher for Fixed {
        fn sha256(&self, _: &Path, _: &Metadata) -> Result<[u8; 32], io::Error> {
            Ok([7; 32])
        }
    }
    let dir = kat_tree();
    let tree = digest_tree_with(dir.path(), &TreeLimits::default(), &Fixed).unwrap();
    assert_eq!(tree.files[0].sha256_hex().unwrap(), hex::encode([7u8; 32]));
}

#[test]
fn newline_in_name_is_refused() {
    // "a\n<hex>  3  b" would otherwise forge a second line.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a\nb", b"x");
    let err = digest_tree(dir.path(), &TreeLimits::default()).unwrap_err();
    assert!(matches!(err, TreeError::Ambiguous { .. }), "{err}");
}

#[test]
fn ambiguous_symlink_target_is_refused() {
    // `x  y` -> `z` and `x` -> `y  z` would give the same line.
    for target in ["x  y", "x "] {
        let dir = tempfile::tempdir().unwrap();
        symlink(target, dir.path().join("z")).unwrap();
        let err = digest_tree(dir.path(), &TreeLimits::default()).unwrap_err();
        assert!(
            matches!(err, TreeError::Ambiguous { .. }),
            "{target:?}: {err}"
        );
    }
}

#[test]
fn non_utf8_name_is_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"bad\xff");
    if fs::write(dir.path().join(name), b"x").is_err() {
        return; // the file system refuses such names itself
    }
    let err = digest_tree(dir.path(), &TreeLimits::default()).unwrap_err();
    assert!(matches!(err, TreeError::NonUtf8 { .. }), "{err}");
}

#[test]
fn missing_root_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = digest_tree(&missing, &TreeLimits::default()).unwrap_err();
    assert!(matches!(err, TreeError::Io { .. }));
    assert!(err.to_string().contains("nope"));
}

/// A random small tree: relative path -> file content or symlink target.
#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Link(String),
}

fn arb_tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let segment = prop::sample::select(vec!["a", "b", "a.b", "a-b", "B", "z", "0", "ab"]);
    let path = prop::collection::vec(segment, 1..4).prop_map(|s| s.join("/"));
    let node = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Node::File),
        "[a-z./]{1,8}".prop_map(Node::Link),
    ];
    prop::collection::vec((path, node), 0..12).prop_map(|pairs| {
        let mut tree = BTreeMap::new();
        for (path, node) in pairs {
            // Keep only paths that are neither a directory of another path
            // nor below another file.
            let clash = tree.keys().any(|p: &String| {
                p.starts_with(&format!("{path}/")) || path.starts_with(&format!("{p}/"))
            });
            if !clash {
                tree.insert(path, node);
            }
        }
        tree
    })
}

/// The digest computed the obvious way from the sorted listing.
fn reference(tree: &BTreeMap<String, Node>) -> String {
    let mut lines: Vec<(String, String)> = tree
        .iter()
        .map(|(path, node)| {
            let line = match node {
                Node::File(c) => {
                    format!("{}  {}  {path}\n", hex::encode(Sha256::digest(c)), c.len())
                }
                Node::Link(t) => format!("symlink  {t}  {path}\n"),
            };
            (path.clone(), line)
        })
        .collect();
    lines.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let all: String = lines.into_iter().map(|(_, l)| l).collect();
    format!("sha256:{}", hex::encode(Sha256::digest(all.as_bytes())))
}

fn build(tree: &BTreeMap<String, Node>, reverse: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut items: Vec<_> = tree.iter().collect();
    if reverse {
        items.reverse();
    }
    for (path, node) in items {
        match node {
            Node::File(c) => write(dir.path(), path, c),
            Node::Link(t) => {
                let p = dir.path().join(path);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                symlink(t, p).unwrap();
            }
        }
    }
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn digest_matches_sorted_reference_whatever_the_walk_order(tree in arb_tree()) {
        let expected = reference(&tree);
        let forward = build(&tree, false);
        let backward = build(&tree, true);
        prop_assert_eq!(digest(forward.path()), expected.clone());
        prop_assert_eq!(digest(backward.path()), expected);
    }
}
