use super::*;
use redb::{Database, ReadableDatabase};

fn image(id: &str, tag: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        repo_tags: vec![tag.into()],
        size: 42,
        ..Default::default()
    }
}

#[test]
fn new_database_gets_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.list::<ImageRecord>().unwrap().is_empty());
    assert!(store.list::<SandboxRecord>().unwrap().is_empty());
    assert!(store.list::<ContainerRecord>().unwrap().is_empty());
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put(&image("sha256:a", "x:1")).unwrap();
        let sb = SandboxRecord {
            id: "p1".into(),
            name: "web".into(),
            state: SandboxState::NotReady,
            ..Default::default()
        };
        store.put(&sb).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.get::<ImageRecord>("sha256:a").unwrap(),
        Some(image("sha256:a", "x:1"))
    );
    let sb: SandboxRecord = store.get("p1").unwrap().unwrap();
    assert_eq!(sb.state, SandboxState::NotReady);
}

#[test]
fn put_replaces_and_delete_reports_existence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(&image("sha256:a", "x:1")).unwrap();
    store.put(&image("sha256:a", "x:2")).unwrap();
    let all = store.list::<ImageRecord>().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].repo_tags, vec!["x:2"]);
    assert!(store.delete::<ImageRecord>("sha256:a").unwrap());
    assert!(!store.delete::<ImageRecord>("sha256:a").unwrap());
    assert_eq!(store.get::<ImageRecord>("sha256:a").unwrap(), None);
}

#[test]
fn tables_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(&image("same", "x:1")).unwrap();
    assert_eq!(store.get::<ContainerRecord>("same").unwrap(), None);
}

#[test]
fn failed_write_transaction_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(&image("sha256:a", "x:1")).unwrap();
    let result: Result<(), StoreError> = store.write(|tx| {
        tx.put(&image("sha256:b", "y:1"))?;
        tx.delete::<ImageRecord>("sha256:a")?;
        Err(StoreError::InUse {
            path: "simulated failure".into(),
        })
    });
    assert!(result.is_err());
    let ids: Vec<String> = store
        .list::<ImageRecord>()
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["sha256:a"]);
}

#[test]
fn write_transaction_sees_its_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let n = store
        .write(|tx| {
            tx.put(&image("a", "x:1"))?;
            tx.put(&image("b", "x:2"))?;
            Ok(tx.list::<ImageRecord>()?.len())
        })
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn newer_schema_is_refused_without_changing_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put(&image("sha256:a", "x:1")).unwrap();
        let tx = store.db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(dir.path()).err().expect("must refuse");
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{msg}"
    );
    assert!(msg.contains("newer crustd"), "{msg}");
    // The refused database still holds its data and its version.
    let raw = Database::create(dir.path().join(DB_FILE)).unwrap();
    let tx = raw.begin_read().unwrap();
    let version = tx
        .open_table(META)
        .unwrap()
        .get(SCHEMA_KEY)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, SCHEMA_VERSION + 1);
    let images = tx.open_table(ImageRecord::TABLE).unwrap();
    assert!(images.get("sha256:a").unwrap().is_some());
}

#[test]
fn second_open_of_same_root_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("must refuse");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another crustd"), "{err}");
}

/// Writes raw bytes into a table behind the store's back, as an older
/// crust or a damaged disk would have left them.
fn write_raw(
    root: &Path,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    key: &str,
    bytes: &[u8],
) {
    let store = Store::open(root).unwrap();
    let tx = store.db.begin_write().unwrap();
    tx.open_table(table).unwrap().insert(key, bytes).unwrap();
    tx.commit().unwrap();
}

#[test]
fn old_records_missing_new_fields_still_decode() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(
        dir.path(),
        ImageRecord::TABLE,
        "sha256:old",
        br#"{"id":"sha256:old","size":7}"#,
    );
    let store = Store::open(dir.path()).unwrap();
    let img: ImageRecord = store.get("sha256:old").unwrap().unwrap();
    assert_eq!(img.size, 7);
    assert!(img.repo_tags.is_empty());
    assert!(store.quarantined().is_empty());
}

#[test]
fn corrupt_record_is_quarantined_and_the_rest_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put(&ContainerRecord {
                id: "c2".into(),
                name: "good".into(),
                ..Default::default()
            })
            .unwrap();
    }
    write_raw(dir.path(), ContainerRecord::TABLE, "c1", b"not json");
    let store = Store::open(dir.path()).unwrap();
    let bad = store.quarantined();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].table, bad[0].key.as_str()), ("container", "c1"));
    assert!(bad[0].error.contains("container/c1"), "{bad:?}");
    // Lookups no longer trip over it; the good record still serves.
    assert_eq!(store.get::<ContainerRecord>("c1").unwrap(), None);
    assert!(matches!(store.lookup::<ContainerRecord>("c"), Lookup::Found(c) if c.id == "c2"));
    assert_eq!(store.list::<ContainerRecord>().unwrap().len(), 1);
    // Its bytes are kept, under quarantine, and it is reported once only.
    let tx = store.db.begin_read().unwrap();
    let kept = tx.open_table(QUARANTINE).unwrap();
    assert_eq!(
        kept.get("containers/c1").unwrap().unwrap().value(),
        b"not json"
    );
    drop(kept);
    drop(tx);
    drop(store);
    assert!(Store::open(dir.path()).unwrap().quarantined().is_empty());
}

#[test]
fn lookup_by_prefix_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (id, name) in [("abc123", "web_0"), ("abd456", "db_0"), ("abc", "short_0")] {
        store
            .put(&SandboxRecord {
                id: id.into(),
                name: name.into(),
                ..Default::default()
            })
            .unwrap();
    }
    let found = |p: &str| match store.lookup::<SandboxRecord>(p) {
        Lookup::Found(r) => Some(r.id),
        Lookup::Missing => None,
        Lookup::Ambiguous(n) => Some(format!("ambiguous {n}")),
    };
    assert_eq!(found("abd").as_deref(), Some("abd456"));
    assert_eq!(found("abc1").as_deref(), Some("abc123"));
    // A full id wins over the longer ids it prefixes.
    assert_eq!(found("abc").as_deref(), Some("abc"));
    assert_eq!(found("ab").as_deref(), Some("ambiguous 3"));
    assert_eq!(found("zz"), None);
    assert_eq!(
        store
            .by_name::<SandboxRecord>("db_0")
            .map(|r| r.id)
            .as_deref(),
        Some("abd456")
    );
    // Names follow puts and deletes.
    store
        .put(&SandboxRecord {
            id: "abd456".into(),
            name: "db_1".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(store.by_name::<SandboxRecord>("db_0").is_none());
    assert!(store.delete::<SandboxRecord>("abd456").unwrap());
    assert!(store.by_name::<SandboxRecord>("db_1").is_none());
    assert_eq!(found("abd"), None);
}

#[test]
fn changes_reach_readers_only_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put(&image("sha256:a", "x:1")).unwrap();
    let _ = store.write(|tx| {
        tx.delete::<ImageRecord>("sha256:a")?;
        assert_eq!(tx.get::<ImageRecord>("sha256:a")?, None);
        assert!(tx.list::<ImageRecord>()?.is_empty());
        // Outside the transaction the record is still there.
        assert!(store.get::<ImageRecord>("sha256:a").unwrap().is_some());
        Err::<(), _>(StoreError::InUse {
            path: "abort".into(),
        })
    });
    assert!(store.get::<ImageRecord>("sha256:a").unwrap().is_some());
}

/// Writes from an async worker hand the worker's other tasks off while
/// the commit waits for the disk, and work the same as from a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_async_workers_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.put(&image(&format!("sha256:{i}"), "x:1")).unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.list::<ImageRecord>().unwrap().len(), 8);
}
