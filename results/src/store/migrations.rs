//! The schema history, compiled into the binary with `include_str!` and applied by sqlx's
//! `Migrator`, built at run time from it.
//!
//! This replaces `sqlx::migrate!`, which needs sqlx's proc-macro crate. Versions, descriptions
//! and checksums are exactly what `migrate!` derived from the same files (a test checks it
//! against sqlx's own reading of the directories), so databases migrated by earlier builds
//! are recognized as up to date, and a changed migration is still refused.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One step of the schema history, in both dialects.
struct Step {
    /// The number in the file name (`0001_init.sql` → 1).
    version: i64,
    /// The rest of the file name without `.sql`, underscores as spaces (as sqlx reads it).
    description: &'static str,
    /// `migrations/sqlite/<file>`.
    sqlite: &'static str,
    /// `migrations/postgres/<file>`.
    postgres: &'static str,
}

/// Every migration, oldest first. A new one is a `NNNN_name.sql` file in both
/// `migrations/sqlite` and `migrations/postgres` plus one entry here; a test fails until the
/// list and the directories agree.
const STEPS: &[Step] = &[
    Step {
        version: 1,
        description: "init",
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Step {
        version: 2,
        description: "shared studies",
        sqlite: include_str!("../../migrations/sqlite/0002_shared_studies.sql"),
        postgres: include_str!("../../migrations/postgres/0002_shared_studies.sql"),
    },
];

/// The migrator for SQLite databases.
pub(crate) static SQLITE: LazyLock<Migrator> = LazyLock::new(|| migrator(|s| s.sqlite));

/// The migrator for PostgreSQL databases.
pub(crate) static POSTGRES: LazyLock<Migrator> = LazyLock::new(|| migrator(|s| s.postgres));

fn migrator(sql_of: fn(&Step) -> &'static str) -> Migrator {
    let migrations = STEPS
        .iter()
        .map(|step| {
            let sql = sql_of(step);
            Migration::new(
                step.version,
                Cow::Borrowed(step.description),
                MigrationType::Simple,
                sql.into_sql_str(),
                // The opt-out sqlx honours in a migration file's first line.
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What identifies an applied migration, as sqlx compares it.
    fn identity(m: &Migration) -> (i64, String, MigrationType, Vec<u8>, bool, String) {
        (
            m.version,
            m.description.to_string(),
            m.migration_type,
            m.checksum.to_vec(),
            m.no_tx,
            m.sql.as_str().to_string(),
        )
    }

    /// sqlx's own reading of a migrations directory: what `migrate!` embedded.
    async fn from_directory(dir: &str) -> Vec<Migration> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
        let resolved = Migrator::new(path.as_path()).await;
        let migrator = resolved.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        migrator.iter().cloned().collect()
    }

    #[tokio::test]
    async fn embedded_migrations_match_the_directories() {
        for (dir, embedded) in [("sqlite", &*SQLITE), ("postgres", &*POSTGRES)] {
            let want: Vec<_> = from_directory(dir).await.iter().map(identity).collect();
            let got: Vec<_> = embedded.iter().map(identity).collect();
            assert!(!want.is_empty(), "no migrations in migrations/{dir}");
            assert_eq!(got, want, "STEPS and migrations/{dir} disagree");
        }
    }
}
