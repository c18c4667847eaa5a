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

/// The limits count under READ COMMITTED: a database whose default is stricter does not change
/// the portal's connections (a count would then not see what the statement before it wrote).
#[tokio::test]
async fn on_postgresql_the_portal_counts_under_read_committed_whatever_the_default() {
    use sqlx::Connection;
    let name = format!("s_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_cluster().database(&name).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(url.expose_secret()).await.unwrap();
    let stricter = format!("ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'");
    sqlx::query(&stricter).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let db = passback::store::connect(url.expose_secret(), 1).await.unwrap();
    let level: String = Stmt::new("SELECT current_setting('transaction_isolation')").scalar_one(&db).await.unwrap();
    assert_eq!(level, "read committed");
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

/// A change form's attempt taken with the claim of its key, and on its own (a form sent again),
/// within an allowance of two: on either database.
async fn a_counted_claim_is_made_only_within_the_allowance(db: &passback::store::Db) {
    use passback::store::{attempts::Reservation, writebacks};
    let (subject, now, limits) = ("corp|counted", 100, (2, 10));
    let c = |msg_id| writebacks::Claim {
        msg_id,
        directory: "corp",
        anchor: "counted",
        op: "change",
        support_code: "S-1",
        agent_id: None,
        instance: "instance-a",
        now,
    };
    let counted = |msg_id: &'static str, r: Reservation| async move {
        (writebacks::claim_counted(db, &c(msg_id), &r, now, limits).await.unwrap(), r)
    };
    assert_eq!(counted("once-1", Reservation::new(subject)).await.0, (true, true));
    let (taken_claimed, again) = counted("once-1", Reservation::new(subject)).await;
    assert_eq!(taken_claimed, (true, false), "the same form sent again is counted, and not claimed twice");
    assert_eq!(counted("once-2", Reservation::new(subject)).await.0, (false, false), "past the allowance");
    assert!(writebacks::claim(db, &c("once-2")).await.unwrap(), "nothing was claimed past the allowance");
    assert!(!Reservation::new(subject).take_alone(db, now, limits).await.unwrap(), "nor taken on its own");
    again.release().run(db).await.unwrap();
    let alone = Reservation::new(subject);
    assert!(alone.take_alone(db, now, limits).await.unwrap(), "one given back is taken again");
    alone.release().run(db).await.unwrap();
    assert_eq!(counted("once-3", Reservation::new(subject)).await.0, (true, true));
}

/// Statements pushed together (one statement on PostgreSQL) all run or none, the batch counts
/// the rows the last of them changed, and a statement pushed after them sees what they wrote.
async fn a_group_pushed_together_runs_whole(db: &passback::store::Db) {
    use passback::store::{Batch, Stmt};
    let frame = |id: &str| {
        Stmt::new("INSERT INTO relay_frames (agent_id, frame_id, expires_at) VALUES ('grouped', ?, 0)").bind(id)
    };
    let limit = |bucket: &str| Stmt::new("INSERT INTO rate_limits (bucket, tat) VALUES (?, 0)").bind(bucket);
    let push_back = |tat: i64| Stmt::new("UPDATE rate_limits SET tat = ? WHERE bucket LIKE 'grouped-%'").bind(tat);
    let mut before = Batch::new();
    before.push(limit("grouped-x"));
    before.push(limit("grouped-y"));
    before.run(db).await.unwrap();

    let mut b = Batch::new();
    b.push_together(frame("a"));
    b.push_together(push_back(5));
    assert_eq!(b.run_counting_last(db).await.unwrap(), 2, "the rows the group's last statement changed");
    let mut b = Batch::new();
    b.push_together(push_back(6));
    b.push_together(frame("c"));
    b.push(Stmt::new("UPDATE relay_frames SET expires_at = 7 WHERE agent_id = 'grouped'"));
    assert_eq!(b.run_counting_last(db).await.unwrap(), 2, "a statement after the group sees all it wrote");
    let mut b = Batch::new();
    b.push_together(push_back(8));
    b.push_together(frame("a"));
    assert!(b.run(db).await.is_err(), "the second breaks the key");
    let frames: Vec<(String, i64)> =
        Stmt::new("SELECT frame_id, expires_at FROM relay_frames WHERE agent_id = 'grouped' ORDER BY 1")
            .fetch_all(db)
            .await
            .unwrap();
    assert_eq!(frames, [("a".to_string(), 7), ("c".to_string(), 7)]);
    let tats: Vec<i64> =
        Stmt::new("SELECT tat FROM rate_limits WHERE bucket LIKE 'grouped-%' ORDER BY 1").scalar_all(db).await.unwrap();
    assert_eq!(tats, [6, 6], "none of the group that failed");

    // A read with the group (on PostgreSQL, all of it one statement): its rows, and all or nothing.
    let read = || Stmt::new("SELECT tat FROM rate_limits WHERE bucket = ?").bind("grouped-x");
    let mut b = Batch::new();
    b.push_together(frame("d"));
    let ran: passback::store::Ran<(i64,)> = b.run_then_together(db, read()).await.unwrap();
    assert_eq!((ran.rows, ran.last_changed), (vec![(6,)], 0), "the rows read; a group's parts are not counted");
    let spent = "SELECT COUNT(*) FROM spent_challenges WHERE nonce = 'grouped'";
    let mut b = Batch::new();
    b.push_together(Stmt::new("INSERT INTO spent_challenges (nonce, expires_at) VALUES ('grouped', 0)"));
    b.push_together(frame("d"));
    assert!(b.run_then_together::<(i64,)>(db, read()).await.is_err(), "the second breaks the key");
    assert_eq!(Stmt::new(spent).scalar_one::<i64>(db).await.unwrap(), 0, "none of the group that failed");
    let frames: i64 =
        Stmt::new("SELECT COUNT(*) FROM relay_frames WHERE agent_id = 'grouped'").scalar_one(db).await.unwrap();
    assert_eq!(frames, 3);
    // A group, then a statement on its own that reads what the group wrote (on PostgreSQL, the
    // read goes with the group): the rows read, the last statement counted, all or nothing.
    let challenge =
        |nonce: &str| Stmt::new("INSERT INTO spent_challenges (nonce, expires_at) VALUES (?, 0)").bind(nonce);
    let mut b = Batch::new();
    b.push_together(challenge("mixed-1"));
    b.push_together(frame("f"));
    b.push(Stmt::new("UPDATE relay_frames SET expires_at = 10 WHERE agent_id = 'grouped'"));
    let ran: passback::store::Ran<(i64,)> = b.run_then_together(db, read()).await.unwrap();
    assert_eq!((ran.rows, ran.last_changed), (vec![(6,)], 4), "the rows read; the last statement's count");
    let mut b = Batch::new();
    b.push_together(challenge("mixed-2"));
    b.push(Stmt::new("INSERT INTO relay_frames (agent_id, frame_id, expires_at) VALUES ('grouped', 'a', 0)"));
    assert!(b.run_then_together::<(i64,)>(db, read()).await.is_err(), "the last breaks the key");
    let mixed = "SELECT COUNT(*) FROM spent_challenges WHERE nonce LIKE 'mixed-%'";
    assert_eq!(Stmt::new(mixed).scalar_one::<i64>(db).await.unwrap(), 1, "none of the batch that failed");
    let mut b = Batch::new();
    b.push(Stmt::new("UPDATE relay_frames SET expires_at = 12 WHERE agent_id = 'grouped'"));
    b.push_together(frame("g"));
    let ran: passback::store::Ran<(i64,)> = b.run_then_together(db, read()).await.unwrap();
    assert_eq!((ran.rows, ran.last_changed), (vec![(6,)], 0), "a batch that ends with a group counts nothing");
    // A part counted though another follows it, with and without a lock (on PostgreSQL, one
    // statement, or one in a transaction): what it changed; what it reads of a table a later
    // part writes is as it was before that part, on either database.
    let frames = || Stmt::new("SELECT COUNT(*) FROM relay_frames WHERE agent_id = 'grouped'");
    let unclaimed = || Stmt::new("SELECT COUNT(*) FROM writebacks WHERE msg_id = 'none'");
    for (frame_id, locked) in [("h", false), ("i", true)] {
        let before: i64 = frames().scalar_one(db).await.unwrap();
        let counting = Stmt::new(
            "UPDATE rate_limits SET tat = (SELECT COUNT(*) FROM relay_frames WHERE agent_id = 'grouped') \
             WHERE bucket LIKE 'grouped-%'",
        );
        let mut b = Batch::new();
        b.push_together(challenge(&format!("counted-{frame_id}")));
        b.push_together_counted(if locked { counting.serialized_on("grouped") } else { counting });
        b.push_together(frame(frame_id));
        let ran: passback::store::Ran<(i64,)> = b.run_then_together(db, unclaimed()).await.unwrap();
        assert_eq!((ran.rows, ran.last_changed), (vec![(0,)], 2), "the read's row; the counted part's rows");
        let tats: Vec<i64> =
            Stmt::new("SELECT tat FROM rate_limits WHERE bucket LIKE 'grouped-%'").scalar_all(db).await.unwrap();
        assert_eq!(tats, [before, before], "the frames before the group's own, locked: {locked}");
        assert_eq!(frames().scalar_one::<i64>(db).await.unwrap(), before + 1);
    }
    // Its count comes with the read's rows, each of them, in their order, NULLs and all.
    let mut b = Batch::new();
    b.push_together_counted(Stmt::new("UPDATE rate_limits SET tat = 1 WHERE bucket LIKE 'grouped-%'"));
    let several =
        Stmt::new("SELECT nonce, CAST(NULL AS TEXT) FROM spent_challenges WHERE nonce LIKE 'counted-%' ORDER BY nonce");
    let ran = b.run_then_together::<(String, Option<String>)>(db, several).await.unwrap();
    let read = vec![("counted-h".to_string(), None), ("counted-i".to_string(), None)];
    assert_eq!((ran.rows, ran.last_changed), (read, 2));
    // Or alone when there are none.
    for (bucket, changed) in [("grouped-x", 1), ("none", 0)] {
        let mut b = Batch::new();
        b.push_together_counted(Stmt::new("UPDATE rate_limits SET tat = 0 WHERE bucket = ?").bind(bucket));
        let none = Stmt::new("SELECT nonce FROM spent_challenges WHERE nonce = 'none'");
        let ran = b.run_then_together::<(String,)>(db, none).await.unwrap();
        assert_eq!((ran.rows, ran.last_changed), (vec![], changed), "no row read; {bucket} counted");
    }
    // A read of what the group writes could not see it on PostgreSQL: refused on either database.
    let mut b = Batch::new();
    b.push_together(frame("e"));
    let reads_it = Stmt::new("SELECT COUNT(*) FROM relay_frames");
    let db2 = db.clone();
    let refused = tokio::spawn(async move { b.run_then_together::<(i64,)>(&db2, reads_it).await });
    assert!(refused.await.unwrap_err().is_panic(), "a read of a table the group writes");
}

#[tokio::test]
async fn on_sqlite_counted_claims_groups_and_staged_sessions_behave_as_on_postgresql() {
    let db = passback::store::connect("sqlite::memory:", 1).await.unwrap();
    a_counted_claim_is_made_only_within_the_allowance(&db).await;
    a_group_pushed_together_runs_whole(&db).await;
    a_session_staged_into_a_batch_is_written_by_it_and_not_again(&db).await;
}

/// A session's save staged into a batch (as a reset's outcome does) is written by the batch and
/// not again after the handler, unless the session changed since; one never pushed into a batch
/// is saved as ever.
async fn a_session_staged_into_a_batch_is_written_by_it_and_not_again(db: &passback::store::Db) {
    use passback::store::sessions::{self, Sessions};
    use tower_sessions::{Session, SessionStore};
    let store = std::sync::Arc::new(Sessions::of(db).await.unwrap());
    let made = Session::new(None, store.clone(), None);
    made.insert("flow", "started").await.unwrap();
    made.save().await.unwrap();
    let id = made.id().unwrap();
    let stored = || async { store.load(&id).await.unwrap().map(|r| r.data["flow"].clone()) };

    sessions::request_scope(async {
        let session = Session::new(Some(id), store.clone(), None);
        session.insert("flow", "ended").await.unwrap();
        let mut staged = sessions::stage(&session).await.unwrap();
        assert_eq!(stored().await, Some("started".into()), "staging writes nothing");
        run_as_an_outcome(db, &mut staged, "staged-1").await;
        staged.committed();
        assert_eq!(stored().await, Some("ended".into()), "the batch wrote it");
        session.insert("flow", "changed before its save").await.unwrap();
        session.save().await.unwrap();
        assert_eq!(stored().await, Some("changed before its save".into()), "changed since it was staged: written");

        let mut staged = sessions::stage(&session).await.unwrap();
        run_as_an_outcome(db, &mut staged, "staged-2").await;
        staged.committed();
        // Gone from the store, it stays gone: the save after the handler writes nothing.
        store.delete(&id).await.unwrap();
        session.save().await.unwrap();
        assert_eq!(stored().await, None, "not written again");
        session.insert("flow", "changed after").await.unwrap();
        session.save().await.unwrap();
        assert_eq!(stored().await, Some("changed after".into()), "a later change is written");

        // Staged but never pushed (the act did not end the flow): saved after the handler.
        let staged = sessions::stage(&session).await.unwrap();
        staged.committed();
        store.delete(&id).await.unwrap();
        session.save().await.unwrap();
        assert_eq!(stored().await, Some("changed after".into()));
    })
    .await;
}

/// Runs `staged` as a reset's outcome carries it: in a group, with a statement on its own after
/// it, and a read.
async fn run_as_an_outcome(db: &passback::store::Db, staged: &mut passback::store::sessions::Staged, bucket: &str) {
    use passback::store::{Batch, Stmt};
    let mut batch = Batch::new();
    batch.push_together(Stmt::new("INSERT INTO rate_limits (bucket, tat) VALUES (?, 0)").bind(bucket));
    staged.push_into(&mut batch);
    batch.push(Stmt::new("UPDATE rate_limits SET tat = 1 WHERE bucket = ?").bind(bucket));
    let ran = batch.run_then_together::<(i64,)>(db, Stmt::new("SELECT COUNT(*) FROM relay_frames")).await.unwrap();
    assert_eq!(ran.last_changed, 1);
}

/// A limit's count takes the same advisory lock in PostgreSQL (migration 0011) as the portal
/// takes before a transaction of several statements: else the two would not wait for each other.
async fn a_count_takes_the_lock_the_portal_takes(db: &passback::store::Db) {
    for key in ["gate_events:corp|a-1", "change_attempts:corp|ü-2", "verification_codes:corp|x", ""] {
        let theirs: i64 =
            passback::store::Stmt::new("SELECT passback_lock_key(?)").bind(key).scalar_one(db).await.unwrap();
        assert_eq!(theirs, passback::store::batch::lock_key(key), "{key:?}");
    }
}

/// Each count that takes its lock in the statement takes the one the portal takes before a
/// transaction of several statements: while a transaction elsewhere holds it, the statement
/// waits, and goes on once that transaction ends.
async fn a_count_waits_for_the_lock_the_portal_takes(db: &passback::store::Db) {
    use passback::store::{attempts, codes, security};
    let now = 2_000_000;
    type Count = Box<dyn Fn(passback::store::Db) -> tokio::task::JoinHandle<bool>>;
    // Each function on its own, in a statement that asks for no lock, and each statement that
    // runs with no transaction because its count takes the lock.
    let function = |key: &'static str, count: fn() -> passback::store::Stmt| -> (&'static str, Count) {
        (key, Box::new(move |db| tokio::spawn(async move { count().scalar_one::<i64>(&db).await.unwrap() >= 0 })))
    };
    use passback::store::Stmt as S;
    let counts: [(&str, Count); 6] = [
        function("gate_events:corp|w-1", || {
            S::new("SELECT passback_gate_events_of(?, ?, ?)").bind("corp|w-1").bind("reset").bind(0_i64)
        }),
        function("change_attempts:corp|w-2", || {
            S::new("SELECT passback_change_attempts_of(?, ?)").bind("corp|w-2").bind(0_i64)
        }),
        function("verification_codes:corp|w-3", || {
            S::new("SELECT passback_verification_codes_of(?, ?, ?)").bind("corp").bind("w-3").bind(0_i64)
        }),
        (
            "gate_events:corp|w-1",
            Box::new(move |db| {
                tokio::spawn(async move {
                    // No event yet, so no block: it went on, and that is all it tells.
                    !security::block_if_reached(&db, "corp|w-1", "reset", now, 1, now + 60).await.unwrap()
                })
            }),
        ),
        (
            "change_attempts:corp|w-2",
            Box::new(move |db| {
                tokio::spawn(async move { attempts::reserve(&db, "corp|w-2", now, (5, 10)).await.unwrap().is_some() })
            }),
        ),
        (
            "verification_codes:corp|w-3",
            Box::new(move |db| {
                tokio::spawn(async move {
                    let c = codes::NewCode {
                        id: "waits",
                        directory: "corp",
                        anchor: "w-3",
                        code_hash: "h",
                        now,
                        expires_at: now + 600,
                    };
                    codes::insert_within_limit(&db, &c, 3).await.unwrap()
                })
            }),
        ),
    ];
    for (key, count) in counts {
        let mut held = db.begin().await.unwrap();
        passback::store::Stmt::new("SELECT pg_advisory_xact_lock(?)::text")
            .bind(passback::store::batch::lock_key(key))
            .run_in(&mut held)
            .await
            .unwrap();
        let waiting = count(db.clone());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "{key}: counted while the lock was held elsewhere");
        held.commit().await.unwrap();
        assert!(waiting.await.unwrap(), "{key}: went on once the lock was free");
    }
}

/// Runs `each` 64 times at once on `db`: how many of them got through.
async fn at_once<F, Fut>(db: &passback::store::Db, each: F) -> usize
where
    F: Fn(passback::store::Db, usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..64).map(|i| tokio::spawn(each(db.clone(), i))).collect();
    let mut through = 0;
    for t in tasks {
        through += usize::from(t.await.unwrap());
    }
    through
}

/// Every guarantee that a count or a one-use key gives, hammered by 64 requests at once on
/// PostgreSQL, where nothing serializes them but the statements themselves (constraints, row
/// locks, advisory locks): no more get through than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgresql_no_limit_or_one_use_key_lets_more_through_under_parallel_requests() {
    use passback::store::{attempts, codes, security, staff, writebacks};
    let db = postgres_store(16).await;
    let now = 1_000_000;

    // Change-form attempts (and staff sign-in attempts, the same statement): 5 an hour.
    let n =
        at_once(&db, |db, _| async move { attempts::reserve(&db, "corp|a-1", now, (5, 10)).await.unwrap().is_some() });
    assert_eq!(n.await, 5, "change attempts");

    // A change form's attempt taken with the claim of its key, in one statement: 5 claimed, and
    // no key claimed past the allowance.
    let n = at_once(&db, |db, i| async move {
        let (msg_id, reservation) = (format!("counted-{i}"), attempts::Reservation::new("corp|a-3"));
        let c = writebacks::Claim {
            msg_id: &msg_id,
            directory: "corp",
            anchor: "a-3",
            op: "change",
            support_code: "S-1",
            agent_id: None,
            instance: "i",
            now,
        };
        let (taken, claimed) = writebacks::claim_counted(&db, &c, &reservation, now, (5, 10)).await.unwrap();
        assert_eq!(taken, claimed, "a new key is claimed exactly when the attempt was taken");
        claimed
    });
    assert_eq!(n.await, 5, "counted claims");
    let claimed: i64 = passback::store::Stmt::new("SELECT COUNT(*) FROM writebacks WHERE anchor = 'a-3'")
        .scalar_one(&db)
        .await
        .unwrap();
    assert_eq!(claimed, 5);
    a_counted_claim_is_made_only_within_the_allowance(&db).await;
    a_count_takes_the_lock_the_portal_takes(&db).await;
    a_count_waits_for_the_lock_the_portal_takes(&db).await;
    a_group_pushed_together_runs_whole(&db).await;
    a_session_staged_into_a_batch_is_written_by_it_and_not_again(&db).await;

    // Codes mailed: 3 an hour per person.
    let n = at_once(&db, |db, i| async move {
        let id = format!("code-{i}");
        let c =
            codes::NewCode { id: &id, directory: "corp", anchor: "a-1", code_hash: "h", now, expires_at: now + 600 };
        codes::insert_within_limit(&db, &c, 3).await.unwrap()
    });
    assert_eq!(n.await, 3, "codes sent");

    // Tries at one code: 5.
    let c = codes::NewCode { id: "one", directory: "corp", anchor: "a-2", code_hash: "h", now, expires_at: now + 600 };
    assert!(codes::insert_within_limit(&db, &c, 3).await.unwrap());
    let owner = || security::Person { directory: "corp", anchor: "a-2" };
    let n =
        at_once(&db, |db, _| async move { codes::take_attempt(&db, "one", owner(), now, 5).await.unwrap().is_some() });
    assert_eq!(n.await, 5, "attempts at one code");
    let n = at_once(&db, |db, _| async move { codes::mark_used(&db, "one", now).await.unwrap() });
    assert_eq!(n.await, 1, "a code used once");

    // Failed verifications: 5 an hour per account, 10 per client address.
    let n = at_once(&db, |db, i| async move {
        let client = format!("10.0.0.{i}");
        security::reserve_failure(&db, "corp|a-3", &client, "email", now, (5, 10)).await.unwrap().is_ok()
    });
    assert_eq!(n.await, 5, "failures per account");
    let n = at_once(&db, |db, i| async move {
        let subject = format!("corp|b-{i}");
        security::reserve_failure(&db, &subject, "192.0.2.1", "email", now, (5, 10)).await.unwrap().is_ok()
    });
    assert_eq!(n.await, 10, "failures per address");

    // Resets: the one that reaches the limit blocks, however many run at once. Each round's
    // resets all see the ones before; without serializing, each would count only itself. They
    // take turns: one counts after the event, in a transaction that takes the lock first; the
    // next counts it in the group before it, as an outcome does, in one statement whose count
    // takes the lock. Both must take the same lock.
    for round in 0..8 {
        let subject = format!("corp|r-{round}");
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let (db, subject) = (db.clone(), subject.clone());
                tokio::spawn(async move {
                    let mut b = passback::store::Batch::new();
                    if (round + i) % 2 == 0 {
                        b.push_together(security::record_reset(&subject, now));
                        b.push(security::block_when_reached(&subject, "reset", now, 5, now + 3600));
                        return b.run_counting_last(&db).await.unwrap();
                    }
                    b.push_together_counted(security::block_when_this_reaches(&subject, "reset", now, 5, now + 3600));
                    b.push_together(security::record_reset(&subject, now));
                    let read = passback::store::Stmt::new("SELECT COUNT(*) FROM writebacks WHERE msg_id = 'none'");
                    b.run_then_together::<(i64,)>(&db, read).await.unwrap().last_changed
                })
            })
            .collect();
        let mut blocks = 0;
        for t in tasks {
            blocks += t.await.unwrap();
        }
        assert_eq!(blocks, 1, "the fifth reset of round {round} blocks");
        assert!(security::blocked_until(&db, &subject, now).await.unwrap().is_some());
    }
    // One after the other, as an outcome counts: the count taken under the lock does not see the
    // event its own statement writes, so it is the fifth that blocks, not the fourth.
    for n in 1..=5 {
        let mut b = passback::store::Batch::new();
        b.push_together_counted(security::block_when_this_reaches("corp|r-seq", "reset", now, 5, now + 3600));
        b.push_together(security::record_reset("corp|r-seq", now));
        let read = passback::store::Stmt::new("SELECT COUNT(*) FROM writebacks WHERE msg_id = 'none'");
        let blocked = b.run_then_together::<(i64,)>(&db, read).await.unwrap().last_changed;
        assert_eq!(blocked, u64::from(n == 5), "reset {n}");
    }

    // One-use keys: a form's writeback, a proof-of-work challenge, an alert, made credentials.
    let n = at_once(&db, |db, _| async move {
        let c = writebacks::Claim {
            msg_id: "m-1",
            directory: "corp",
            anchor: "a-4",
            op: "reset",
            support_code: "S-1",
            agent_id: None,
            instance: "stopped",
            now,
        };
        writebacks::claim(&db, &c).await.unwrap()
    });
    assert_eq!(n.await, 1, "a form written once");
    // Sent again on every instance at once after the one that took it stopped: one carries it on.
    let n = at_once(&db, |db, k| async move {
        writebacks::take_over(&db, "m-1", Some("stopped"), &format!("instance-{k}")).await.unwrap().is_some()
    });
    assert_eq!(n.await, 1, "a writeback carried on by one instance");
    let n = at_once(&db, |db, _| async move { security::spend_challenge(&db, "nonce-1", now + 60).await.unwrap() });
    assert_eq!(n.await, 1, "a challenge spent once");
    let n = at_once(&db, |db, _| async move { security::claim_alert(&db, "attack", now, 3600).await.unwrap() });
    assert_eq!(n.await, 1, "an alert sent once");
    use passback::store::reminders::claim;
    let n = at_once(&db, |db, _| async move { claim(&db, ("corp", "a-1"), "expiry:7", now, now, None).await.unwrap() });
    assert_eq!(n.await, 1, "a reminder sent once");
    // The campaign's claim, every 150 s: once, not again within the period, once again after it.
    let period = 150;
    let campaign = |at: i64| {
        at_once(&db, move |db, _| async move {
            claim(&db, ("corp", "a-1"), "campaign", 0, at, Some(at - period)).await.unwrap()
        })
    };
    assert_eq!(campaign(now).await, 1, "an invitation sent once");
    assert_eq!(campaign(now + 100).await, 0, "not again within its period");
    assert_eq!(campaign(now + 200).await, 1, "once again after it, by one instance");
    Stmt::new(
        "INSERT INTO staff (id, username, display_name, role, password_hash, totp_enc, created_at, updated_at) \
         VALUES ('s-1', 'newcomer', 'New Comer', 'helpdesk', 'x', ?, 0, 0)",
    )
    .bind(vec![0_u8])
    .run(&db)
    .await
    .unwrap();
    let n = at_once(&db, move |db, _| async move {
        staff::begin_enrolment(&db, "s-1", 0, now, now - 600).await.unwrap().is_some()
    });
    assert_eq!(n.await, 1, "one enrolment starts at a time");
    db.close().await;
}

/// Statements run on connections the portal lends itself, given back without sqlx's ping (a
/// round trip to the server for every statement): one whose caller went away half way is closed
/// instead, and one the server ended is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_lent_connections_are_reused_closed_when_left_half_way_and_replaced_when_ended() {
    use std::collections::HashSet;
    let db = postgres_store(2).await;
    let pid =
        |db: passback::store::Db| async move { Stmt::new("SELECT pg_backend_pid()").scalar_one::<i32>(&db).await };
    // Many at once: all through, on the connections lent (two at a time).
    let tasks: Vec<_> = (0..40).map(|_| tokio::spawn(pid(db.clone()))).collect();
    let mut seen = HashSet::new();
    for t in tasks {
        seen.insert(t.await.unwrap().unwrap());
    }
    assert!((1..=2).contains(&seen.len()), "{} connections for 40 statements", seen.len());
    // Within what the README says an instance opens: max_connections, two for transactions made
    // by hand, one that listens (none here), one that stamps (none here).
    let backends: i64 = Stmt::new("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()")
        .scalar_one(&db)
        .await
        .unwrap();
    assert!(backends <= 2 + 2 + 1, "{backends} connections open");
    // One after the other: the same connection each time, the last given back.
    let mut serial = HashSet::new();
    for _ in 0..10 {
        serial.insert(pid(db.clone()).await.unwrap());
    }
    assert_eq!(serial.len(), 1, "{serial:?}");
    let used = *serial.iter().next().unwrap();

    // A statement whose caller gives up on it: its connection (the one just used) still has the
    // server's answer to come, and is closed rather than lent again.
    let slow = Stmt::new("SELECT CAST(pg_sleep(30) AS TEXT)").scalar_one::<String>(&db);
    assert!(tokio::time::timeout(std::time::Duration::from_millis(200), slow).await.is_err());
    let next = pid(db.clone()).await.unwrap();
    assert_ne!(next, used, "the connection left half way is not lent again");
    for _ in 0..3 {
        assert_eq!(pid(db.clone()).await.unwrap(), next);
    }
    // One given up on that ends soon after: pinged once it has, then lent again (asked until it
    // is, for as long as a slow machine may need; meanwhile another connection serves).
    let brief = Stmt::new("SELECT CAST(pg_sleep(0.3) AS TEXT)").scalar_one::<String>(&db);
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), brief).await.is_err());
    let waiting = std::time::Instant::now();
    while pid(db.clone()).await.unwrap() != next {
        assert!(waiting.elapsed() < std::time::Duration::from_secs(20), "never given back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The server ends the idle connection (a restart, a failover, an administrator). Lent again
    // after more than a second idle, it is pinged first, found gone, and replaced.
    let admin = postgres_admin(&db).await;
    end_backend(&admin, next).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let replaced = pid(db.clone()).await.expect("a connection the server ended is replaced, not used");
    assert_ne!(replaced, next);
    // Ended while in use (no ping before it is lent again within the second): the statement on
    // it fails, and the connection is closed, not given back to fail another.
    end_backend(&admin, replaced).await;
    let _ = pid(db.clone()).await;
    let after = pid(db.clone()).await.expect("the next statement finds a live connection");
    assert_ne!(after, replaced);
    admin.close().await;
    db.close().await;
}

/// Ends the server's backend `pid` and waits until it has gone.
async fn end_backend(admin: &passback::store::Db, pid: i32) {
    let end = Stmt::new("SELECT pg_terminate_backend(CAST($1 AS INTEGER))").bind(i64::from(pid));
    assert!(end.scalar_one::<bool>(admin).await.unwrap());
    let waiting = std::time::Instant::now();
    loop {
        let left =
            Stmt::new("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = CAST($1 AS INTEGER)").bind(i64::from(pid));
        if left.scalar_one::<i64>(admin).await.unwrap() == 0 {
            return;
        }
        assert!(waiting.elapsed() < std::time::Duration::from_secs(20), "backend {pid} did not end");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A second handle on the same database, for acting on the first one's connections.
async fn postgres_admin(db: &passback::store::Db) -> passback::store::Db {
    let name: String = Stmt::new("SELECT current_database()").scalar_one(db).await.unwrap();
    let url = postgres_cluster().url().expose_secret().to_string();
    let url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    passback::store::connect(&url, 1).await.unwrap()
}

/// Sessions on PostgreSQL go through the portal's own statements: one written by
/// `tower-sessions-sqlx-store` before still loads, an expired one does not, and the expired go.
#[tokio::test]
async fn on_postgresql_sessions_written_before_still_load_and_expired_ones_neither_load_nor_stay() {
    use time::{Duration, OffsetDateTime};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::{ExpiredDeletion, SessionStore};
    let name = format!("s_{}", uuid::Uuid::new_v4().simple());
    let url = postgres_cluster().database(&name).await.unwrap();
    let db = passback::store::connect(url.expose_secret(), 2).await.unwrap();
    let ours = passback::store::sessions::Sessions::of(&db).await.unwrap();
    let pool = sqlx::PgPool::connect(url.expose_secret()).await.unwrap();
    let theirs = tower_sessions_sqlx_store::PostgresStore::new(pool.clone());
    let record = |minutes: i64, value: &str| Record {
        id: Id::default(),
        data: [("flow".to_string(), serde_json::json!(value))].into_iter().collect(),
        // Whole microseconds, as PostgreSQL keeps them.
        expiry_date: OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
            + Duration::minutes(minutes)
            + Duration::microseconds(123_456),
    };

    let mut before = record(10, "written before");
    theirs.create(&mut before).await.unwrap();
    assert_eq!(ours.load(&before.id).await.unwrap(), Some(before.clone()));
    let mut live = record(10, "live");
    ours.create(&mut live).await.unwrap();
    assert_eq!(theirs.load(&live.id).await.unwrap(), Some(live.clone()), "and the other way round");
    live.data.insert("more".into(), serde_json::json!(1));
    ours.save(&live).await.unwrap();
    assert_eq!(ours.load(&live.id).await.unwrap(), Some(live.clone()), "saved over");

    let mut expired = record(-1, "expired");
    ours.create(&mut expired).await.unwrap();
    assert_eq!(ours.load(&expired.id).await.unwrap(), None);
    ours.delete_expired().await.unwrap();
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM tower_sessions.session ORDER BY id").fetch_all(&pool).await.unwrap();
    let mut kept = vec![(before.id.to_string(),), (live.id.to_string(),)];
    kept.sort();
    assert_eq!(left, kept);
    ours.delete(&live.id).await.unwrap();
    assert_eq!(ours.load(&live.id).await.unwrap(), None);
    pool.close().await;
    db.close().await;
}
