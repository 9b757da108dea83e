use super::*;

fn open(dir: &tempfile::TempDir) -> Journal {
    Journal::open(&dir.path().join("j.log")).unwrap()
}

fn entries(journal: &Journal, from: u64, limit: usize) -> Vec<(u64, String)> {
    journal
        .range(from, limit)
        .unwrap()
        .into_iter()
        .map(|(seq, e)| (seq, String::from_utf8(e).unwrap()))
        .collect()
}

#[test]
fn appends_in_order_and_refuses_a_sequence_number_not_above_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir);
    assert_eq!(journal.last().unwrap(), None);
    assert!(journal.append(1, b"one").unwrap());
    assert!(journal.append(2, b"two").unwrap());
    assert!(!journal.append(2, b"forged").unwrap());
    assert!(!journal.append(1, b"forged").unwrap());
    // A gap is allowed (the audit log skips numbers after removed records).
    assert!(journal.append(5, b"five").unwrap());
    assert_eq!(
        entries(&journal, 1, 10),
        [(1, "one".into()), (2, "two".into()), (5, "five".into())]
    );
    assert_eq!(journal.get(2).unwrap().unwrap(), b"two");
    assert_eq!(journal.get(3).unwrap(), None);
    assert_eq!(journal.last().unwrap(), Some((5, b"five".to_vec())));
}

#[test]
fn refuses_entries_with_a_newline_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir);
    assert!(journal.append(1, b"a\nb").is_err());
    assert!(journal.append(1, b"").is_err());
    assert_eq!(journal.last().unwrap(), None);
}

#[test]
fn only_synced_entries_are_in_the_file_format_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.log");
    {
        let journal = open(&dir);
        journal.append(1, b"{\"a\":1}").unwrap();
        journal.append(2, b"{\"b\":2}").unwrap();
        // Nothing is written before a sync (or a read).
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        journal.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1 {\"a\":1}\n2 {\"b\":2}\n");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let journal = open(&dir);
    assert_eq!(journal.last().unwrap(), Some((2, b"{\"b\":2}".to_vec())));
    assert!(!journal.append(2, b"again").unwrap());
    assert!(journal.append(3, b"three").unwrap());
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    let err = Journal::open(&dir.path().join("j.log")).unwrap_err();
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
}

#[test]
fn an_unterminated_last_line_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.log");
    std::fs::write(&path, b"1 one\n2 two\n3 thr").unwrap();
    let journal = open(&dir);
    assert_eq!(std::fs::read(&path).unwrap(), b"1 one\n2 two\n");
    assert_eq!(journal.last().unwrap(), Some((2, b"two".to_vec())));
    assert!(journal.append(3, b"three").unwrap());
    journal.sync().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"1 one\n2 two\n3 three\n");
}

#[test]
fn a_malformed_line_is_reported_as_corrupt_with_its_offset() {
    for bad in [
        &b"1 one\nx two\n"[..],
        b"1 one\n02 two\n",
        b"1 one\n2\n",
        b"1 one\n2 \n",
        b"1 one\n99999999999999999999 big\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("j.log"), bad).unwrap();
        let err = Journal::open(&dir.path().join("j.log")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key.ends_with("at byte 6")),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn ranges_across_the_index_and_chunk_boundaries_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir);
    // Entries long enough that lines straddle the 256 KiB read chunks.
    let entry = |seq: u64| format!("{seq:0>1000}");
    let count = 3 * INDEX_EVERY + 17;
    for seq in 1..=count {
        assert!(journal.append(seq, entry(seq).as_bytes()).unwrap());
        if seq == INDEX_EVERY {
            // Part written, part buffered.
            journal.sync().unwrap();
        }
    }
    for from in [
        1,
        2,
        INDEX_EVERY,
        INDEX_EVERY + 1,
        2 * INDEX_EVERY + 5,
        count,
    ] {
        let got = journal.range(from, 300).unwrap();
        let want: Vec<u64> = (from..=count).take(300).collect();
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), want);
        assert!(got.iter().all(|(s, e)| e == entry(*s).as_bytes()));
    }
    assert!(journal.range(count + 1, 10).unwrap().is_empty());
    journal.sync().unwrap();
    drop(journal);
    let journal = open(&dir);
    assert_eq!(
        journal.get(2 * INDEX_EVERY + 3).unwrap().unwrap(),
        entry(2 * INDEX_EVERY + 3).as_bytes()
    );
    assert_eq!(journal.last().unwrap().unwrap().0, count);
}

#[test]
fn concurrent_appends_and_syncs_lose_and_reorder_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = std::sync::Arc::new(open(&dir));
    let next = std::sync::Arc::new(Mutex::new(1u64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let journal = journal.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    {
                        // The audit log appends under its own lock, in order.
                        let mut next = next.lock().unwrap();
                        assert!(
                            journal
                                .append(*next, format!("r{next}").as_bytes())
                                .unwrap()
                        );
                        *next += 1;
                    }
                    journal.sync().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(journal);
    let text = std::fs::read_to_string(dir.path().join("j.log")).unwrap();
    let want: String = (1..=1000).map(|s| format!("{s} r{s}\n")).collect();
    assert_eq!(text, want);
}

#[test]
fn before_finds_the_entry_below_a_sequence_number_across_index_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir);
    assert_eq!(journal.before(1).unwrap(), None);
    for seq in 1..=(INDEX_EVERY * 2 + 5) {
        assert!(journal.append(seq * 2, b"x").unwrap());
    }
    assert_eq!(journal.before(2).unwrap(), None);
    assert_eq!(journal.before(3).unwrap().unwrap().0, 2);
    let block_start = INDEX_EVERY * 2 + 2; // the first entry of the second block
    assert_eq!(
        journal.before(block_start).unwrap().unwrap().0,
        block_start - 2
    );
    assert_eq!(
        journal.before(block_start + 1).unwrap().unwrap().0,
        block_start
    );
    assert_eq!(
        journal.before(u64::MAX).unwrap().unwrap().0,
        (INDEX_EVERY * 2 + 5) * 2
    );
}

#[test]
fn a_removed_or_replaced_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.log");
    let journal = Journal::open(&path).unwrap();
    journal.check_linked().unwrap();
    std::fs::remove_file(&path).unwrap();
    let why = journal.check_linked().unwrap_err();
    assert!(
        why.contains("was removed under the running issuer"),
        "{why}"
    );
    std::fs::write(&path, b"").unwrap();
    let why = journal.check_linked().unwrap_err();
    assert!(why.contains("was removed"), "{why}");
    let other = Journal::open(&dir.path().join("k.log")).unwrap();
    std::fs::rename(dir.path().join("k.log"), dir.path().join("moved.log")).unwrap();
    std::fs::write(dir.path().join("k.log"), b"").unwrap();
    let why = other.check_linked().unwrap_err();
    assert!(
        why.contains("was replaced under the running issuer"),
        "{why}"
    );
}

/// Makes the next write fail (as a full disk would), by swapping the open
/// file for a read-only handle on the same file.
fn break_writes(journal: &Journal) {
    let mut written = journal.file.lock().unwrap();
    written.file = File::open(&journal.path).unwrap();
}

fn mend_writes(journal: &Journal) {
    let mut written = journal.file.lock().unwrap();
    written.file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&journal.path)
        .unwrap();
}

#[test]
fn a_failed_write_refuses_appends_until_recovery_writes_every_byte_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.log");
    let journal = Journal::open(&path).unwrap();
    assert!(journal.append(1, b"one").unwrap());
    journal.sync().unwrap();
    assert!(journal.append(2, b"two").unwrap());
    assert!(journal.append(3, b"three").unwrap());
    break_writes(&journal);
    assert!(journal.sync().is_err());
    let why = journal.failure().unwrap();
    assert!(why.contains("write failed"), "{why}");
    assert!(journal.append(4, b"four").is_err(), "fails closed");
    assert!(journal.range(1, 10).is_err());
    // The disk still refuses: recovery fails and keeps the bytes.
    assert!(journal.recover().is_err());
    assert!(journal.failure().is_some());
    mend_writes(&journal);
    assert!(journal.recover().unwrap());
    assert_eq!(journal.failure(), None);
    assert!(!journal.recover().unwrap(), "nothing to recover");
    assert!(journal.append(4, b"four").unwrap());
    journal.sync().unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "1 one\n2 two\n3 three\n4 four\n"
    );
    drop(journal);
    let reopened = Journal::open(&path).unwrap();
    assert_eq!(entries(&reopened, 1, 10).len(), 4);
    assert_eq!(reopened.get(3).unwrap().unwrap(), b"three");
}

#[test]
fn a_failed_sync_rewrites_what_was_written_since_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.log");
    let journal = Journal::open(&path).unwrap();
    assert!(journal.append(1, b"one").unwrap());
    journal.sync().unwrap();
    assert!(journal.append(2, b"two").unwrap());
    // Written, not synced; then the journal is poisoned as a failed
    // fdatasync would leave it.
    assert_eq!(journal.range(1, 10).unwrap().len(), 2);
    journal.poison("fdatasync failed: simulated");
    mend_writes(&journal);
    assert!(journal.recover().unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1 one\n2 two\n");
}
