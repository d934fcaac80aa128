//! crust's metadata store.
//!
//! One redb file under the root dir holds every image, sandbox and container
//! record. Records are JSON values keyed by id, so adding a field (with
//! `#[serde(default)]`) needs no migration; changing the meaning of one does,
//! and bumps [`SCHEMA_VERSION`]. A database written by a newer crust is
//! refused before anything is written to it.

mod records;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{
    ContainerRecord, ContainerState, ImageConfig, ImageRecord, LayerRecord, SandboxRecord,
    SandboxState,
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
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    const NAME: &'static str;
    fn id(&self) -> &str;
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `root`, migrating it to
    /// [`SCHEMA_VERSION`].
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let path = root.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            other => db(other),
        })?;
        let store = Store { db, path };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let table = tx.open_table(R::TABLE).map_err(db)?;
        let value = table.get(id).map_err(db)?;
        value.map(|v| decode::<R>(id, v.value())).transpose()
    }

    /// Every record of a kind, in id order.
    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let table = tx.open_table(R::TABLE).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.push(decode::<R>(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        self.write(|tx| tx.put(record))
    }

    /// Deletes a record; true if it existed.
    pub fn delete<R: Record>(&self, id: &str) -> Result<bool, StoreError> {
        self.write(|tx| tx.delete::<R>(id))
    }

    /// Runs `f` in one write transaction: all its changes land, or none
    /// (an `Err` from `f` aborts the transaction).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let mut wtx = WriteTx { tx: &tx };
        let out = f(&mut wtx)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

/// The view of a write transaction that [`Store::write`] hands out.
pub struct WriteTx<'a> {
    tx: &'a redb::WriteTransaction,
}

impl WriteTx<'_> {
    pub fn get<R: Record>(&self, id: &str) -> Result<Option<R>, StoreError> {
        let table = self.tx.open_table(R::TABLE).map_err(db)?;
        let value = table.get(id).map_err(db)?;
        value.map(|v| decode::<R>(id, v.value())).transpose()
    }

    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let table = self.tx.open_table(R::TABLE).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)? {
            let (k, v) = entry.map_err(db)?;
            out.push(decode::<R>(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn put<R: Record>(&mut self, record: &R) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Encode(e, R::NAME))?;
        let mut table = self.tx.open_table(R::TABLE).map_err(db)?;
        table.insert(record.id(), bytes.as_slice()).map_err(db)?;
        Ok(())
    }

    pub fn delete<R: Record>(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.tx.open_table(R::TABLE).map_err(db)?;
        let removed = table.remove(id).map_err(db)?.is_some();
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
