use super::*;

#[tokio::test]
async fn records_and_checkpoints_append_once_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileAuditStore::open(dir.path(), None).unwrap();
        assert_eq!(store.last_audit_record().unwrap(), None);
        for seq in [1u64, 2, 3, 256] {
            assert_eq!(
                store
                    .append_audit_record(seq, format!("r{seq}").as_bytes())
                    .unwrap(),
                Appended::Appended
            );
        }
        assert_eq!(
            store.append_audit_record(2, b"forged").unwrap(),
            Appended::Exists
        );
        store.put_audit_checkpoint(3, b"c3").unwrap();
        assert!(store.put_audit_checkpoint(3, b"again").is_err());
        store.flush_audit().await.unwrap();
    }
    let store = FileAuditStore::open(dir.path(), None).unwrap();
    assert_eq!(store.audit_record(2).unwrap().unwrap(), b"r2");
    assert_eq!(
        store.last_audit_record().unwrap(),
        Some((256, b"r256".to_vec()))
    );
    let page = store.audit_records(2, 2).unwrap();
    assert_eq!(page, [(2, b"r2".to_vec()), (3, b"r3".to_vec())]);
    assert_eq!(store.audit_records(4, 10).unwrap().len(), 1);
    assert_eq!(
        store.last_audit_checkpoint().unwrap(),
        Some((3, b"c3".to_vec()))
    );
    assert_eq!(store.audit_checkpoints(4, 10).unwrap(), []);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(FileAuditStore::dir(dir.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

fn legacy_with_log(dir: &Path) -> SledStore {
    let sled = SledStore::open(dir).unwrap();
    for seq in 1..=5u64 {
        sled.legacy_insert_for_tests(RECORDS_TREE_NAME, seq, format!("r{seq}").as_bytes());
    }
    sled.legacy_insert_for_tests(CHECKPOINTS_TREE_NAME, 4, b"c4");
    sled
}

const RECORDS_TREE_NAME: &str = crate::store::LEGACY_AUDIT_RECORDS_TREE;
const CHECKPOINTS_TREE_NAME: &str = crate::store::LEGACY_AUDIT_CHECKPOINTS_TREE;

#[test]
fn a_log_kept_in_the_database_moves_to_the_files_once() {
    let dir = tempfile::tempdir().unwrap();
    let sled = legacy_with_log(dir.path());
    {
        let store = FileAuditStore::open(dir.path(), Some(&sled)).unwrap();
        assert_eq!(store.audit_records(1, 10).unwrap().len(), 5);
        assert_eq!(store.audit_record(3).unwrap().unwrap(), b"r3");
        assert_eq!(
            store.last_audit_checkpoint().unwrap(),
            Some((4, b"c4".to_vec()))
        );
        assert_eq!(sled.legacy_last_audit_record().unwrap(), None);
    }
    // Durable: the files hold them without a flush by the caller.
    let text = std::fs::read_to_string(FileAuditStore::dir(dir.path()).join(RECORDS_FILE)).unwrap();
    assert_eq!(text, "1 r1\n2 r2\n3 r3\n4 r4\n5 r5\n");
    // Reopening does not copy again.
    let store = FileAuditStore::open(dir.path(), Some(&sled)).unwrap();
    assert_eq!(store.audit_records(1, 10).unwrap().len(), 5);
}

#[test]
fn trees_left_behind_by_an_interrupted_move_are_emptied_not_copied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sled = legacy_with_log(dir.path());
    drop(FileAuditStore::open(dir.path(), Some(&sled)).unwrap());
    // As if the issuer had stopped after syncing the files but before
    // emptying the trees.
    for seq in 1..=5u64 {
        sled.legacy_insert_for_tests(RECORDS_TREE_NAME, seq, format!("r{seq}").as_bytes());
    }
    let store = FileAuditStore::open(dir.path(), Some(&sled)).unwrap();
    assert_eq!(store.audit_records(1, 10).unwrap().len(), 5);
    assert_eq!(sled.legacy_last_audit_record().unwrap(), None);
}

#[test]
fn a_database_log_longer_than_the_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    {
        let store = FileAuditStore::open(dir.path(), None).unwrap();
        store.append_audit_record(1, b"r1").unwrap();
        store.records.sync().unwrap();
    }
    for seq in 1..=3u64 {
        sled.legacy_insert_for_tests(RECORDS_TREE_NAME, seq, b"old");
    }
    let err = FileAuditStore::open(dir.path(), Some(&sled)).unwrap_err();
    assert!(
        err.to_string().contains("restore the data directory"),
        "{err}"
    );
    // Nothing was emptied.
    assert_eq!(sled.legacy_last_audit_record().unwrap().unwrap().0, 3);
}
