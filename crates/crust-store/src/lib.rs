//! crust's metadata store.
//!
//! One redb file under the root dir holds every image, sandbox and container
//! record. Records are JSON values keyed by id, so adding a field (with
//! `#[serde(default)]`) needs no migration; changing the meaning of one does,
//! and bumps [`SCHEMA_VERSION`]. A database written by a newer crust is
//! refused before anything is written to it.
//!
//! Every record is decoded once, at open, into typed in-memory maps (by id,
//! by unique id prefix, by name): lookups never touch the file, and a record
//! that cannot be decoded is quarantined instead of failing every lookup.
//! Writes go to redb first and reach the maps only once committed.

#![forbid(unsafe_code)]

mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{
    ContainerRecord, ContainerState, ImageConfig, ImageMountRecord, ImageRecord, LayerRecord,
    SandboxRecord, SandboxState, VerificationRecord,
};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// File name of the database inside the root dir.
pub const DB_FILE: &str = "metadata.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// One migration per schema step: `MIGRATIONS[n]` moves a database from
/// version n to n + 1, inside the same write transaction as the version bump.
type Migration = fn(&redb::WriteTransaction) -> Result<(), redb::Error>;
const MIGRATIONS: &[Migration] = &[create_tables_v1];

fn create_tables_v1(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(ImageRecord::TABLE)?;
    tx.open_table(SandboxRecord::TABLE)?;
    tx.open_table(ContainerRecord::TABLE)?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "metadata database {path} is in use by another process (is another crustd running with the same root dir?)"
    )]
    InUse { path: PathBuf },
    #[error(
        "metadata database {path} has schema version {found}, newer than the {supported} this crustd supports; run a newer crustd (the database was not changed)"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("metadata database: {0}")]
    Db(#[from] redb::Error),
    #[error("metadata record {table}/{key} is corrupt: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {table} record: {0}", table = .1)]
    Encode(serde_json::Error, &'static str),
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// A kind of record with its own table, keyed by id.
pub trait Record: Serialize + DeserializeOwned + Clone {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    const NAME: &'static str;
    fn id(&self) -> &str;
    /// A name no two records of this kind share (pods and containers
    /// have one), indexed for [`Store::by_name`].
    fn unique_name(&self) -> Option<&str> {
        None
    }
    #[doc(hidden)]
    fn indexed(index: &Index) -> &Indexed<Self>;
    #[doc(hidden)]
    fn indexed_mut(index: &mut Index) -> &mut Indexed<Self>;
    #[doc(hidden)]
    fn staged(staged: &Staged) -> &Changes<Self>;
    #[doc(hidden)]
    fn staged_mut(staged: &mut Staged) -> &mut Changes<Self>;
}

/// One kind's records in memory: by id (ordered, so a unique id prefix is
/// a range scan) and by unique name.
#[doc(hidden)]
pub struct Indexed<R> {
    by_id: BTreeMap<String, R>,
    by_name: HashMap<String, BTreeSet<String>>,
}

impl<R> Default for Indexed<R> {
    fn default() -> Self {
        Indexed {
            by_id: BTreeMap::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<R: Record> Indexed<R> {
    fn insert(&mut self, record: R) {
        self.remove(record.id());
        if let Some(name) = record.unique_name() {
            self.by_name
                .entry(name.to_string())
                .or_default()
                .insert(record.id().to_string());
        }
        self.by_id.insert(record.id().to_string(), record);
    }

    fn remove(&mut self, id: &str) -> Option<R> {
        let old = self.by_id.remove(id)?;
        if let Some(name) = old.unique_name()
            && let Some(ids) = self.by_name.get_mut(name)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
        Some(old)
    }
}

/// Every record, decoded once at open and kept in step with redb.
#[doc(hidden)]
#[derive(Default)]
pub struct Index {
    images: Indexed<ImageRecord>,
    sandboxes: Indexed<SandboxRecord>,
    containers: Indexed<ContainerRecord>,
}

/// A write transaction's changes to one kind (None: deleted), applied to
/// the index once redb has committed them.
#[doc(hidden)]
pub type Changes<R> = BTreeMap<String, Option<R>>;

#[doc(hidden)]
#[derive(Default)]
pub struct Staged {
    images: Changes<ImageRecord>,
    sandboxes: Changes<SandboxRecord>,
    containers: Changes<ContainerRecord>,
}

impl Staged {
    fn apply_to(self, index: &mut Index) {
        fn apply<R: Record>(changes: Changes<R>, index: &mut Index) {
            let table = R::indexed_mut(index);
            for (id, change) in changes {
                match change {
                    Some(record) => table.insert(record),
                    None => {
                        table.remove(&id);
                    }
                }
            }
        }
        apply(self.images, index);
        apply(self.sandboxes, index);
        apply(self.containers, index);
    }
}

/// What a full id or id prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<R> {
    Found(R),
    Missing,
    /// The prefix starts this many ids, none of them equal to it.
    Ambiguous(usize),
}

/// A record that could not be decoded at open: moved out of its table
/// into the `quarantine` table (key `<table>/<key>`), bytes intact, so
/// that it neither breaks nor silently vanishes from every lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub table: &'static str,
    pub key: String,
    pub error: String,
}

const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");

pub struct Store {
    db: Database,
    path: PathBuf,
    index: RwLock<Index>,
    /// One writer at a time: it reads the index, stages its changes and
    /// applies them after redb commits, while readers go on reading.
    writer: Mutex<()>,
    quarantined: Vec<Quarantined>,
}

impl Store {
    /// Opens (creating if needed) the database in `root`, migrating it to
    /// [`SCHEMA_VERSION`], and loads every record into memory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let path = root.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            other => db(other),
        })?;
        let mut store = Store {
            db,
            path,
            index: RwLock::new(Index::default()),
            writer: Mutex::new(()),
            quarantined: Vec::new(),
        };
        store.migrate()?;
        store.load()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records found corrupt at open (see [`Quarantined`]).
    pub fn quarantined(&self) -> &[Quarantined] {
        &self.quarantined
    }

    /// The schema version recorded in the file (0 for a brand-new file).
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let table = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(db(e)),
        };
        Ok(table.get(SCHEMA_KEY).map_err(db)?.map_or(0, |v| v.value()))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(db)?;
        for step in &MIGRATIONS[found as usize..] {
            step(&tx)?;
        }
        tx.open_table(META)
            .map_err(db)?
            .insert(SCHEMA_KEY, SCHEMA_VERSION)
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let mut index = Index::default();
        let mut bad = Vec::new();
        load_kind::<ImageRecord>(&self.db, &mut index, &mut bad)?;
        load_kind::<SandboxRecord>(&self.db, &mut index, &mut bad)?;
        load_kind::<ContainerRecord>(&self.db, &mut index, &mut bad)?;
        if !bad.is_empty() {
            let tx = self.db.begin_write().map_err(db)?;
            {
                let mut quarantine = tx.open_table(QUARANTINE).map_err(db)?;
                for b in &bad {
                    let table_name = b.table.name();
                    quarantine
                        .insert(
                            format!("{table_name}/{}", b.key).as_str(),
                            b.bytes.as_slice(),
                        )
                        .map_err(db)?;
                    tx.open_table(b.table)
                        .map_err(db)?
                        .remove(b.key.as_str())
                        .map_err(db)?;
                    tracing::error!(
                        table = table_name,
                        key = %b.key,
                        error = %b.error,
                        "metadata record cannot be decoded; moved to the quarantine table"
                    );
                }
            }
            tx.commit().map_err(db)?;
        }
        self.quarantined = bad
            .into_iter()
            .map(|b| Quarantined {
                table: b.kind,
                key: b.key,
                error: b.error,
            })
            .collect();
        *self.index.get_mut().expect("store index") = index;
        Ok(())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while applying changes leaves the index as redb had it
        // before or after: both are whole records, so reading on is safe.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        Ok(R::indexed(&self.read_index()).by_id.get(id).cloned())
    }

    /// Every record of a kind, in id order.
    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        Ok(R::indexed(&self.read_index())
            .by_id
            .values()
            .cloned()
            .collect())
    }

    /// The records of a kind that `wanted` picks, in id order; only those
    /// are copied out of the index.
    pub fn select<R: Record>(&self, wanted: impl Fn(&R) -> bool) -> Vec<R> {
        R::indexed(&self.read_index())
            .by_id
            .values()
            .filter(|r| wanted(r))
            .cloned()
            .collect()
    }

    /// The record with this full id, or the only one whose id starts with
    /// it (a full id wins over longer ids it prefixes, as in containerd).
    pub fn lookup<R: Record>(&self, id_or_prefix: &str) -> Lookup<R> {
        let index = self.read_index();
        let by_id = &R::indexed(&index).by_id;
        if let Some(exact) = by_id.get(id_or_prefix) {
            return Lookup::Found(exact.clone());
        }
        let mut matches = by_id
            .range::<str, _>((Bound::Included(id_or_prefix), Bound::Unbounded))
            .take_while(|(id, _)| id.starts_with(id_or_prefix));
        match (matches.next(), matches.count()) {
            (None, _) => Lookup::Missing,
            (Some((_, one)), 0) => Lookup::Found(one.clone()),
            (Some(_), more) => Lookup::Ambiguous(more + 1),
        }
    }

    /// The record holding a unique name ([`Record::unique_name`]).
    pub fn by_name<R: Record>(&self, name: &str) -> Option<R> {
        let index = self.read_index();
        let indexed = R::indexed(&index);
        let id = indexed.by_name.get(name)?.first()?;
        indexed.by_id.get(id).cloned()
    }

    pub fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        self.write(|tx| tx.put(record))
    }

    /// Deletes a record; true if it existed.
    pub fn delete<R: Record>(&self, id: &str) -> Result<bool, StoreError> {
        self.write(|tx| tx.delete::<R>(id))
    }

    /// Runs `f` in one write transaction: all its changes land, or none
    /// (an `Err` from `f` aborts the transaction). Reads inside `f` see
    /// its own changes; other readers see them once redb has committed.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A commit waits for the disk (fsync): never on an async worker.
        off_async_workers(|| self.write_now(f))
    }

    fn write_now<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.db.begin_write().map_err(db)?;
        let (out, staged) = {
            let index = self.read_index();
            let mut wtx = WriteTx {
                tx: &tx,
                index: &index,
                staged: Staged::default(),
            };
            let out = f(&mut wtx)?;
            (out, wtx.staged)
        };
        tx.commit().map_err(db)?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        staged.apply_to(&mut index);
        Ok(out)
    }
}

/// Runs work that waits for the disk from async code without stalling the
/// worker: on a multi-threaded tokio runtime the worker hands its other
/// tasks to the rest of the pool first (`block_in_place`); elsewhere (a
/// plain thread, a current-thread runtime) it just runs.
fn off_async_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A record that failed to decode at open, with its bytes.
struct Undecodable {
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    kind: &'static str,
    key: String,
    bytes: Vec<u8>,
    error: String,
}

/// Decodes one table into the index; records that fail go to `bad`.
type Bad = Vec<Undecodable>;

fn load_kind<R: Record>(db: &Database, index: &mut Index, bad: &mut Bad) -> Result<(), StoreError> {
    let tx = db.begin_read().map_err(self::db)?;
    let table = tx.open_table(R::TABLE).map_err(self::db)?;
    let indexed = R::indexed_mut(index);
    for entry in table.iter().map_err(self::db)? {
        let (k, v) = entry.map_err(self::db)?;
        match decode::<R>(k.value(), v.value()) {
            Ok(record) => indexed.insert(record),
            Err(e) => bad.push(Undecodable {
                table: R::TABLE,
                kind: R::NAME,
                key: k.value().to_string(),
                bytes: v.value().to_vec(),
                error: e.to_string(),
            }),
        }
    }
    Ok(())
}

/// The view of a write transaction that [`Store::write`] hands out.
pub struct WriteTx<'a> {
    tx: &'a redb::WriteTransaction,
    index: &'a Index,
    staged: Staged,
}

impl WriteTx<'_> {
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        if let Some(change) = R::staged(&self.staged).get(id) {
            return Ok(change.clone());
        }
        Ok(R::indexed(self.index).by_id.get(id).cloned())
    }

    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let mut all: BTreeMap<&str, &R> = R::indexed(self.index)
            .by_id
            .iter()
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        for (id, change) in R::staged(&self.staged) {
            match change {
                Some(r) => all.insert(id.as_str(), r),
                None => all.remove(id.as_str()),
            };
        }
        Ok(all.into_values().cloned().collect())
    }

    pub fn put<R: Record>(&mut self, record: &R) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Encode(e, R::NAME))?;
        let mut table = self.tx.open_table(R::TABLE).map_err(db)?;
        table.insert(record.id(), bytes.as_slice()).map_err(db)?;
        R::staged_mut(&mut self.staged).insert(record.id().to_string(), Some(record.clone()));
        Ok(())
    }

    pub fn delete<R: Record>(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.tx.open_table(R::TABLE).map_err(db)?;
        let removed = table.remove(id).map_err(db)?.is_some();
        R::staged_mut(&mut self.staged).insert(id.to_string(), None);
        Ok(removed)
    }
}

fn decode<R: Record>(key: &str, bytes: &[u8]) -> Result<R, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: R::NAME,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
