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
pub(crate) static SQLITE: LazyLock<Migrator> = LazyLock::new(|| migrator(STEPS, |s| s.sqlite));

/// The migrator for PostgreSQL databases.
pub(crate) static POSTGRES: LazyLock<Migrator> = LazyLock::new(|| migrator(STEPS, |s| s.postgres));

/// A migrator applying `steps` in one dialect.
fn migrator(steps: &[Step], sql_of: fn(&Step) -> &'static str) -> Migrator {
    let migrations = steps
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

    /// Apply version 1, store three studies, two of them with one name, then migrate to the
    /// latest version: the unique index on names must not fail, the oldest keeps the name.
    macro_rules! upgrade_with_duplicate_names {
        ($pool:expr, $dialect:ident, $latest:expr) => {{
            let pool = $pool;
            migrator(&STEPS[..1], |s| s.$dialect).run(&pool).await.expect("version 1");
            for name in ["tune", "other", "tune"] {
                sqlx::query(
                    "INSERT INTO studies (name, objective, search_space, status, created_at) \
                     VALUES ($1, 'max', '{}', 'running', 0)",
                )
                .bind(name)
                .execute(&pool)
                .await
                .expect("insert a study");
            }
            $latest.run(&pool).await.expect("latest version");
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, name FROM studies ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .expect("studies");
            let third = rows[2].0;
            let names: Vec<&str> = rows.iter().map(|(_, n)| n.as_str()).collect();
            assert_eq!(names, ["tune", "other", format!("tune#{third}").as_str()]);
            pool.close().await;
        }};
    }

    #[tokio::test]
    async fn upgrade_renames_duplicate_study_names() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        upgrade_with_duplicate_names!(pool, sqlite, SQLITE);

        let Ok(base) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
            eprintln!("PostgreSQL part skipped: DYNO_TEST_POSTGRES_URL is not set");
            return;
        };
        let schema = "t_upgrade_renames_duplicate_study_names";
        let admin = sqlx::PgPool::connect(&base).await.expect("connect to test PostgreSQL");
        for sql in
            [format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), format!("CREATE SCHEMA {schema}")]
        {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await.expect("schema");
        }
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let pool = sqlx::PgPool::connect(&url).await.expect("connect to the test schema");
        upgrade_with_duplicate_names!(pool, postgres, POSTGRES);
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
