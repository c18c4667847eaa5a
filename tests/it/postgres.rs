//! The sandbox's PostgreSQL, which the tests of the store on PostgreSQL build on: a real cluster,
//! started from nothing, one database per test.

use passback::sandbox::Postgres;
use secrecy::ExposeSecret;
use sqlx::Connection;

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
