//! The store on PostgreSQL: the sandbox cluster the tests build on, and a schema that matches
//! SQLite's column for column.

use crate::harness::postgres_cluster;
use passback::sandbox::Postgres;
use passback::store::Stmt;
use secrecy::ExposeSecret;
use sqlx::Connection;
use std::collections::BTreeSet;

#[tokio::test]
async fn a_sandbox_cluster_gives_each_test_its_own_database_behind_a_password() {
    let dir = std::env::temp_dir().join(format!("passback-pg-{}", uuid::Uuid::new_v4().simple()));
    let pg = Postgres::start(&dir).unwrap();
    let url = pg.database("first").await.unwrap();
    let mut conn = sqlx::PgConnection::connect(url.expose_secret()).await.unwrap();
    let (name,): (String,) = sqlx::query_as("SELECT current_database()").fetch_one(&mut conn).await.unwrap();
    assert_eq!(name, "first");
    assert!(pg.database("first").await.is_err(), "a name is given once");
    assert!(pg.database("first\"; DROP DATABASE first; --").await.is_err(), "only plain names");
    // Only with the password: the cluster trusts nobody by their address.
    let wrong = format!("postgres://passback:not-the-password@127.0.0.1:{}/first", pg.port);
    let refused = sqlx::PgConnection::connect(&wrong).await.expect_err("a wrong password is refused");
    assert!(refused.to_string().contains("password authentication failed"), "{refused}");
    conn.close().await.unwrap();
    drop(pg);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A database of the tests' cluster, migrated, under a new name.
pub async fn postgres_store(max_connections: u32) -> passback::store::Db {
    let name = format!("s_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_cluster().database(&name).await.unwrap();
    passback::store::connect(url.expose_secret(), max_connections).await.unwrap()
}

#[tokio::test]
async fn both_schemas_have_the_same_tables_and_columns() {
    let dir = std::env::temp_dir().join(format!("passback-schema-{}", uuid::Uuid::new_v4().simple()));
    let sqlite = passback::store::connect(&format!("sqlite://{}/s.db?mode=rwc", dir.display()), 1).await.unwrap();
    let postgres = postgres_store(1).await;
    let columns = |rows: Vec<(String, String)>| -> BTreeSet<(String, String)> { rows.into_iter().collect() };
    let in_sqlite = columns(
        Stmt::new(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
        )
        .fetch_all(&sqlite)
        .await
        .unwrap(),
    );
    let in_postgres = columns(
        Stmt::new(
            "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
        )
        .fetch_all(&postgres)
        .await
        .unwrap(),
    );
    assert!(in_sqlite.len() > 100, "{in_sqlite:?}");
    assert_eq!(
        in_sqlite.symmetric_difference(&in_postgres).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns only one database has"
    );
    sqlite.close().await;
    postgres.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}
