//! The metadata suite: every behaviour of `MetadataStore`, checked on
//! SQLite (real database files) and on PostgreSQL (a fresh database per test
//! on the server named by `NIMBUS_TEST_POSTGRES_URL`), plus what only SQLite
//! has (reopening a file, in-memory stores).

use nimbus_store::{PgMetadata, SqliteMetadata};
use nimbus_types::UserId;
use nimbus_types::identity::{
    AuditEvent, AuditQuery, Invitation, InvitationRefusal, LoginFlow, NewAccount, NewAuditEvent,
    NewInvitation, NewSession, Rotation, SessionRecord, SigningKey,
};
use nimbus_types::metadata::{
    MetadataError, MetadataStore, NewToken, PackRecord, PackReplacement, PushRecord,
    RefUpdateRejection, ReplacementConflict, RetiredPack,
};
use nimbus_types::webhooks::{
    Delivery, DeliveryOutcome, DeliveryStatus, HookId, NewDelivery, NewWebhook, Webhook,
    WebhookUpdate,
};
use nimbus_types::{
    Access, NewRepository, ObjectId, RefName, RefUpdate, RepoId, RepoName, RepoUpdate, Repository,
    Scopes, Visibility,
};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tempfile::TempDir;

/// Which metadata backend a shared test runs against.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The variable that holds the URL of a PostgreSQL server whose role may
/// create databases; `scripts/postgres` prints one.
const POSTGRES_URL_VARIABLE: &str = "NIMBUS_TEST_POSTGRES_URL";

impl Backend {
    /// An empty database of this backend, dropped with the returned value.
    async fn fresh_database(self) -> anyhow::Result<FreshDatabase> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let path = dir.path().join("nimbus.db");
                Ok(FreshDatabase::Sqlite { _dir: dir, path })
            }
            Backend::Postgres => FreshDatabase::postgres().await,
        }
    }
}

/// A database for one test. Each PostgreSQL test creates its own, so tests
/// run in parallel (and in separate processes under cargo-nextest).
enum FreshDatabase {
    Sqlite {
        _dir: TempDir,
        path: std::path::PathBuf,
    },
    Postgres(PostgresDatabase),
}

impl FreshDatabase {
    async fn postgres() -> anyhow::Result<Self> {
        // Never skip: a missing server would otherwise pass as green.
        let admin_url = match std::env::var(POSTGRES_URL_VARIABLE) {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => {
                anyhow::bail!("{POSTGRES_URL_VARIABLE} is not set; scripts/test starts PostgreSQL")
            }
            _ => anyhow::bail!(
                "{POSTGRES_URL_VARIABLE} is not set; scripts/test starts PostgreSQL \
                 (or run: export {POSTGRES_URL_VARIABLE}=\"$(scripts/postgres)\")"
            ),
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!(
            "nimbus_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        // The name is made of ASCII letters, digits and underscores above.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(&admin_url, &name)?;
        Ok(FreshDatabase::Postgres(PostgresDatabase {
            admin_url,
            name,
            url,
        }))
    }

    /// A new store on this database: opening it twice stands for two server
    /// processes sharing it.
    async fn open(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        Ok(match self {
            FreshDatabase::Sqlite { path, .. } => Arc::new(SqliteMetadata::open(path).await?),
            FreshDatabase::Postgres(database) => {
                Arc::new(PgMetadata::connect(&database.url).await?)
            }
        })
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow::anyhow!("{POSTGRES_URL_VARIABLE} is not a URL"))?;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut replaced = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    Ok(replaced)
}

/// A database created for one test, dropped (with any connections still
/// open to it) when the test ends, passed or failed.
struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await; a runtime of its own on a thread of its own
        // works inside and outside the test's runtime.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error:#}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

/// Each shared test is an `async fn(Backend) -> anyhow::Result<()>`; this
/// runs it once per backend, as `sqlite::<name>` and `postgres::<name>`.
macro_rules! metadata_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

fn oid(digit: char) -> ObjectId {
    ObjectId::from_hex(digit.to_string().repeat(40).as_bytes()).expect("40 hex digits")
}

fn ref_name(name: &str) -> RefName {
    RefName::new(name.as_bytes()).expect("valid ref name")
}

fn repo_name(name: &str) -> RepoName {
    RepoName::new(name).expect("valid repository name")
}

async fn create_repo(metadata: &dyn MetadataStore, name: &str) -> anyhow::Result<Repository> {
    Ok(metadata
        .create_repository(&NewRepository {
            name: repo_name(name),
            visibility: Visibility::Public,
            default_branch: "main".into(),
        })
        .await?)
}

fn pack(name: &str) -> PackRecord {
    PackRecord {
        name: name.into(),
        pack_size: 1234,
        index_size: 56,
        object_count: 7,
        created_at: 1_700_000_000,
    }
}

fn update(name: &str, old: Option<char>, new: Option<char>) -> RefUpdate {
    RefUpdate {
        name: ref_name(name),
        old: old.map(oid),
        new: new.map(oid),
        new_peeled: None,
    }
}

fn push(packs: &[&str], updates: Vec<RefUpdate>, atomic: bool) -> PushRecord {
    PushRecord {
        packs: packs.iter().map(|name| pack(name)).collect(),
        updates,
        atomic,
        pack_generation: 0,
        events: Vec::new(),
    }
}

fn stale(current: Option<char>) -> Result<(), RefUpdateRejection> {
    Err(RefUpdateRejection::Stale {
        current: current.map(oid),
    })
}

/// The refs of a repository as (name, target) pairs, for comparisons.
async fn ref_targets(
    metadata: &dyn MetadataStore,
    repo: RepoId,
) -> anyhow::Result<Vec<(String, ObjectId)>> {
    Ok(metadata
        .refs(repo)
        .await?
        .into_iter()
        .map(|r| (r.name.to_string(), r.target))
        .collect())
}

async fn repositories_are_created_listed_and_found_by_name(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let created = metadata
        .create_repository(&NewRepository {
            name: repo_name("Nimbus"),
            visibility: Visibility::Private,
            default_branch: "trunk".into(),
        })
        .await?;
    assert_eq!(created.name.as_str(), "Nimbus");
    assert_eq!(created.visibility, Visibility::Private);
    assert_eq!(created.default_branch, "trunk");
    assert_eq!(created.created_at, created.updated_at);
    assert!(created.created_at > 1_600_000_000);

    let other = create_repo(&*metadata, "another").await?;
    assert_ne!(created.id, other.id);

    assert_eq!(
        metadata.repository(&repo_name("Nimbus")).await?,
        Some(created.clone())
    );
    // Names are case-insensitive, like GitHub's; the stored spelling is kept.
    assert_eq!(
        metadata.repository(&repo_name("nimbus")).await?,
        Some(created.clone())
    );
    assert_eq!(metadata.repository(&repo_name("missing")).await?, None);

    let names: Vec<String> = metadata
        .list_repositories()
        .await?
        .into_iter()
        .map(|repo| repo.name.to_string())
        .collect();
    assert_eq!(names, ["another", "Nimbus"]);
    Ok(())
}

async fn repository_names_are_unique_regardless_of_case(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    create_repo(&*metadata, "project").await?;
    for taken in ["project", "PROJECT", "Project"] {
        let error = create_repo(&*metadata, taken)
            .await
            .expect_err("the name is taken");
        assert!(
            matches!(
                error.downcast_ref::<MetadataError>(),
                Some(MetadataError::RepositoryExists { name }) if name == taken
            ),
            "{error:?}"
        );
    }
    assert_eq!(metadata.list_repositories().await?.len(), 1);
    Ok(())
}

async fn repositories_are_updated_and_renamed(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "old-name").await?;
    let taken = create_repo(&*metadata, "taken").await?;

    let renamed = metadata
        .update_repository(
            repo.id,
            &RepoUpdate {
                name: Some(repo_name("new-name")),
                visibility: Some(Visibility::Private),
                default_branch: Some("develop".into()),
            },
        )
        .await?;
    assert_eq!(renamed.id, repo.id);
    assert_eq!(renamed.name.as_str(), "new-name");
    assert_eq!(renamed.visibility, Visibility::Private);
    assert_eq!(renamed.default_branch, "develop");
    assert_eq!(renamed.created_at, repo.created_at);
    assert!(renamed.updated_at >= repo.updated_at);
    assert_eq!(metadata.repository(&repo_name("old-name")).await?, None);
    assert_eq!(
        metadata.repository(&repo_name("new-name")).await?,
        Some(renamed.clone())
    );

    // Only the given fields change.
    let made_public = metadata
        .update_repository(
            repo.id,
            &RepoUpdate {
                visibility: Some(Visibility::Public),
                ..RepoUpdate::default()
            },
        )
        .await?;
    assert_eq!(made_public.name.as_str(), "new-name");
    assert_eq!(made_public.default_branch, "develop");
    assert_eq!(made_public.visibility, Visibility::Public);

    // An empty update changes nothing.
    let unchanged = metadata
        .update_repository(repo.id, &RepoUpdate::default())
        .await?;
    assert_eq!(unchanged, made_public);

    // A repository may change the case of its own name...
    let recased = metadata
        .update_repository(
            repo.id,
            &RepoUpdate {
                name: Some(repo_name("New-Name")),
                ..RepoUpdate::default()
            },
        )
        .await?;
    assert_eq!(recased.name.as_str(), "New-Name");

    // ...but not take another's, in any case.
    let error = metadata
        .update_repository(
            repo.id,
            &RepoUpdate {
                name: Some(repo_name("TAKEN")),
                visibility: Some(Visibility::Private),
                ..RepoUpdate::default()
            },
        )
        .await
        .expect_err("the name is taken");
    assert!(
        matches!(&error, MetadataError::RepositoryExists { name } if name == "TAKEN"),
        "{error:?}"
    );
    let after_refusal = metadata.repository(&repo_name("New-Name")).await?;
    assert_eq!(
        after_refusal.map(|r| r.visibility),
        Some(Visibility::Public),
        "a refused update changes nothing"
    );
    assert_eq!(metadata.repository(&repo_name("taken")).await?, Some(taken));

    let error = metadata
        .update_repository(RepoId(9999), &RepoUpdate::default())
        .await
        .expect_err("no such repository");
    assert!(
        matches!(error, MetadataError::RepositoryNotFound),
        "{error:?}"
    );
    let error = metadata
        .update_repository(
            RepoId(9999),
            &RepoUpdate {
                visibility: Some(Visibility::Private),
                ..RepoUpdate::default()
            },
        )
        .await
        .expect_err("no such repository");
    assert!(
        matches!(error, MetadataError::RepositoryNotFound),
        "{error:?}"
    );
    Ok(())
}

/// Each store keeps the refs it read, by `ref_version`: a second server on
/// the same database moving a ref is seen by the first at once.
async fn refs_read_again_show_pushes_from_other_servers(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let first = database.open().await?;
    let second = database.open().await?;
    let repo = create_repo(&*first, "shared").await?;
    assert!(first.refs(repo.id).await?.is_empty());
    let targets = |refs: Vec<nimbus_types::Ref>| -> Vec<(String, ObjectId)> {
        refs.into_iter()
            .map(|r| (r.name.to_string(), r.target))
            .collect()
    };
    for (old, new) in [(None, '1'), (Some('1'), '2'), (Some('2'), '3')] {
        let outcomes = second
            .apply_push(
                repo.id,
                &push(&[], vec![update("refs/heads/main", old, Some(new))], false),
            )
            .await?;
        assert_eq!(outcomes, [Ok(())]);
        let expected = vec![("refs/heads/main".to_owned(), oid(new))];
        // Twice each: read from the database, then from the cache.
        for _ in 0..2 {
            assert_eq!(targets(first.refs(repo.id).await?), expected);
            assert_eq!(targets(first.repo_state(repo.id).await?.refs), expected);
        }
    }
    Ok(())
}

async fn deleting_a_repository_removes_its_refs_and_packs(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "doomed").await?;
    let kept = create_repo(&*metadata, "kept").await?;
    for target in [&repo, &kept] {
        let outcomes = metadata
            .apply_push(
                target.id,
                &push(
                    &["pack-1"],
                    vec![update("refs/heads/main", None, Some('1'))],
                    false,
                ),
            )
            .await?;
        assert_eq!(outcomes, [Ok(())]);
    }

    metadata.delete_repository(repo.id).await?;
    assert_eq!(metadata.repository(&repo_name("doomed")).await?, None);
    assert!(metadata.refs(repo.id).await?.is_empty());
    assert!(metadata.packs(repo.id).await?.is_empty());
    assert_eq!(metadata.refs(kept.id).await?.len(), 1);
    assert_eq!(metadata.packs(kept.id).await?.len(), 1);

    let error = metadata
        .delete_repository(repo.id)
        .await
        .expect_err("already deleted");
    assert!(
        matches!(error, MetadataError::RepositoryNotFound),
        "{error:?}"
    );

    // Storage keys derive from ids: a new repository never reuses one.
    let newest = create_repo(&*metadata, "doomed").await?;
    assert!(newest.id > kept.id, "{newest:?} reuses an id");
    Ok(())
}

// SQLite only: a database file reopened.
#[tokio::test]
async fn data_survives_reopening_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nimbus.db");
    let metadata = SqliteMetadata::open(&path).await?;
    let repo = create_repo(&metadata, "durable").await?;
    metadata
        .apply_push(
            repo.id,
            &push(&[], vec![update("refs/heads/main", None, Some('a'))], false),
        )
        .await?;
    metadata.close().await;

    let reopened = SqliteMetadata::open(&path).await?;
    assert_eq!(
        reopened.repository(&repo_name("durable")).await?,
        Some(repo.clone())
    );
    assert_eq!(
        ref_targets(&reopened, repo.id).await?,
        [("refs/heads/main".to_string(), oid('a'))]
    );
    Ok(())
}

async fn ref_updates_are_compare_and_swap(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "cas").await?.id;
    let apply = |update: RefUpdate| {
        let metadata = metadata.clone();
        async move {
            let mut outcomes = metadata
                .apply_push(repo, &push(&[], vec![update], false))
                .await?;
            assert_eq!(outcomes.len(), 1);
            Ok::<_, MetadataError>(outcomes.remove(0))
        }
    };
    let main = "refs/heads/main";

    // Create: the ref must not exist.
    assert_eq!(apply(update(main, None, Some('1'))).await?, Ok(()));
    assert_eq!(
        apply(update(main, None, Some('2'))).await?,
        stale(Some('1'))
    );

    // Update: the ref must have the old value.
    assert_eq!(
        apply(update(main, Some('9'), Some('2'))).await?,
        stale(Some('1'))
    );
    assert_eq!(apply(update(main, Some('1'), Some('2'))).await?, Ok(()));
    assert_eq!(
        apply(update("refs/heads/missing", Some('1'), Some('2'))).await?,
        stale(None)
    );

    // Delete: the ref must have the old value.
    assert_eq!(
        apply(update(main, Some('1'), None)).await?,
        stale(Some('2'))
    );
    assert_eq!(
        ref_targets(&*metadata, repo).await?,
        [(main.to_string(), oid('2'))]
    );
    assert_eq!(apply(update(main, Some('2'), None)).await?, Ok(()));
    assert!(metadata.refs(repo).await?.is_empty());
    assert_eq!(apply(update(main, Some('2'), None)).await?, stale(None));

    // Neither old nor new: succeeds only while the ref does not exist.
    assert_eq!(apply(update(main, None, None)).await?, Ok(()));
    assert_eq!(apply(update(main, None, Some('3'))).await?, Ok(()));
    assert_eq!(apply(update(main, None, None)).await?, stale(Some('3')));
    Ok(())
}

async fn peeled_values_are_stored_and_cleared(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "tags").await?.id;
    let tag = RefUpdate {
        name: ref_name("refs/tags/v1"),
        old: None,
        new: Some(oid('a')),
        new_peeled: Some(oid('b')),
    };
    metadata
        .apply_push(repo, &push(&[], vec![tag], false))
        .await?;
    let refs = metadata.refs(repo).await?;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].target, oid('a'));
    assert_eq!(refs[0].peeled, Some(oid('b')));

    metadata
        .apply_push(
            repo,
            &push(
                &[],
                vec![update("refs/tags/v1", Some('a'), Some('c'))],
                false,
            ),
        )
        .await?;
    let refs = metadata.refs(repo).await?;
    assert_eq!(refs[0].target, oid('c'));
    assert_eq!(refs[0].peeled, None);
    Ok(())
}

async fn refs_are_sorted_bytewise(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "sorted").await?.id;
    let names = [
        "refs/tags/v1",
        "refs/heads/a.x/b",
        "refs/heads/Z",
        "refs/heads/a-b",
        "refs/heads/a",
        "refs/heads/\u{e9}t\u{e9}",
        "refs/heads/b",
    ];
    let updates = names
        .iter()
        .map(|name| update(name, None, Some('1')))
        .collect();
    let outcomes = metadata.apply_push(repo, &push(&[], updates, true)).await?;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");

    let mut expected: Vec<&[u8]> = names.iter().map(|name| name.as_bytes()).collect();
    expected.sort();
    let stored = metadata.refs(repo).await?;
    let stored: Vec<&[u8]> = stored.iter().map(|r| r.name.as_bytes()).collect();
    assert_eq!(stored, expected);
    Ok(())
}

async fn an_atomic_push_applies_all_or_nothing(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "atomic").await?.id;
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-base"],
                vec![
                    update("refs/heads/main", None, Some('1')),
                    update("refs/heads/dev", None, Some('1')),
                ],
                true,
            ),
        )
        .await?;

    let outcomes = metadata
        .apply_push(
            repo,
            &push(
                &["pack-new"],
                vec![
                    update("refs/heads/main", Some('1'), Some('2')),
                    update("refs/heads/dev", Some('9'), Some('2')),
                    update("refs/heads/topic", None, Some('2')),
                ],
                true,
            ),
        )
        .await?;
    assert_eq!(
        outcomes,
        [
            Err(RefUpdateRejection::AtomicPushFailed),
            stale(Some('1')),
            Err(RefUpdateRejection::AtomicPushFailed),
        ]
    );
    assert_eq!(
        ref_targets(&*metadata, repo).await?,
        [
            ("refs/heads/dev".to_string(), oid('1')),
            ("refs/heads/main".to_string(), oid('1')),
        ]
    );
    let packs: Vec<String> = metadata
        .packs(repo)
        .await?
        .into_iter()
        .map(|pack| pack.name)
        .collect();
    assert_eq!(
        packs,
        ["pack-base"],
        "the failed push's pack is not recorded"
    );

    let outcomes = metadata
        .apply_push(
            repo,
            &push(
                &["pack-new"],
                vec![
                    update("refs/heads/main", Some('1'), Some('2')),
                    update("refs/heads/dev", Some('1'), None),
                ],
                true,
            ),
        )
        .await?;
    assert_eq!(outcomes, [Ok(()), Ok(())]);
    assert_eq!(
        ref_targets(&*metadata, repo).await?,
        [("refs/heads/main".to_string(), oid('2'))]
    );
    assert_eq!(metadata.packs(repo).await?.len(), 2);
    Ok(())
}

async fn a_non_atomic_push_applies_what_it_can(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "partial").await?;
    metadata
        .apply_push(
            repo.id,
            &push(&[], vec![update("refs/heads/main", None, Some('1'))], false),
        )
        .await?;

    let outcomes = metadata
        .apply_push(
            repo.id,
            &push(
                &["pack-partial"],
                vec![
                    update("refs/heads/main", Some('7'), Some('2')),
                    update("refs/heads/feature", None, Some('2')),
                ],
                false,
            ),
        )
        .await?;
    assert_eq!(outcomes, [stale(Some('1')), Ok(())]);
    assert_eq!(
        ref_targets(&*metadata, repo.id).await?,
        [
            ("refs/heads/feature".to_string(), oid('2')),
            ("refs/heads/main".to_string(), oid('1')),
        ]
    );
    assert_eq!(metadata.packs(repo.id).await?, [pack("pack-partial")]);
    let after = metadata.repository(&repo.name).await?.expect("still there");
    assert!(after.updated_at >= repo.updated_at);
    Ok(())
}

/// `push` with the events of each update (as the git service builds them).
fn push_with_events(repo: &Repository, updates: Vec<RefUpdate>, atomic: bool) -> PushRecord {
    let repository = nimbus_types::events::EventRepository {
        id: repo.id.0,
        name: repo.name.to_string(),
    };
    let events = updates
        .iter()
        .map(|update| {
            nimbus_types::events::ref_update_events(
                &repository,
                None,
                update,
                nimbus_types::events::PushDetail::default(),
                1_700_000_000,
            )
        })
        .collect();
    PushRecord {
        events,
        ..push(&[], updates, atomic)
    }
}

fn kinds_and_refs(events: &[nimbus_types::events::StoredEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|stored| {
            let json = serde_json::to_value(&stored.event).expect("json");
            (
                stored.event.kind().to_owned(),
                json["data"]["ref"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn events_are_written_with_the_updates_they_describe(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "outbox").await?;
    let main = update("refs/heads/main", None, Some('1'));
    metadata
        .apply_push(repo.id, &push_with_events(&repo, vec![main], false))
        .await?;
    // One stale update and one applied: only the applied one's events.
    metadata
        .apply_push(
            repo.id,
            &push_with_events(
                &repo,
                vec![
                    update("refs/heads/main", Some('7'), Some('2')),
                    update("refs/tags/v1", None, Some('1')),
                ],
                false,
            ),
        )
        .await?;
    // A failed atomic push and a push that applies nothing: no events.
    metadata
        .apply_push(
            repo.id,
            &push_with_events(
                &repo,
                vec![
                    update("refs/heads/main", Some('1'), Some('3')),
                    update("refs/heads/other", Some('9'), Some('3')),
                ],
                true,
            ),
        )
        .await?;
    metadata
        .apply_push(
            repo.id,
            &push_with_events(
                &repo,
                vec![update("refs/heads/main", Some('8'), None)],
                false,
            ),
        )
        .await?;

    let pending = metadata.unpublished_events(100).await?;
    assert_eq!(
        kinds_and_refs(&pending),
        [
            ("repository.created".to_owned(), String::new()),
            ("branch.created".to_owned(), "refs/heads/main".to_owned()),
            ("push".to_owned(), "refs/heads/main".to_owned()),
            ("tag.created".to_owned(), "refs/tags/v1".to_owned()),
            ("push".to_owned(), "refs/tags/v1".to_owned()),
        ]
    );
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(pending.iter().all(|e| e.published_at.is_none()));
    assert!(pending.iter().all(|e| e.event.repository.name == "outbox"));

    // Publishing marks them; they stay readable in order.
    metadata
        .mark_events_published(&[pending[0].seq, pending[1].seq], 1_700_000_100)
        .await?;
    let rest = metadata.unpublished_events(100).await?;
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].seq, pending[2].seq);
    let all = metadata.events_after(0, 100).await?;
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].published_at, Some(1_700_000_100));
    assert_eq!(all[0].event, pending[0].event);
    let later = metadata.events_after(pending[1].seq, 1).await?;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].seq, pending[2].seq);
    assert_eq!(metadata.unpublished_events(1).await?.len(), 1);
    Ok(())
}

async fn repository_changes_are_events(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let actor = nimbus_types::events::EventActor {
        id: 1,
        name: "owner".into(),
    };
    let repo = metadata
        .create_repository_by(
            &NewRepository {
                name: repo_name("before"),
                visibility: Visibility::Private,
                default_branch: "main".into(),
            },
            Some(&actor),
        )
        .await?;
    // An update that renames nothing is no event; a rename is one.
    metadata
        .update_repository_by(
            repo.id,
            &RepoUpdate {
                visibility: Some(Visibility::Public),
                ..RepoUpdate::default()
            },
            Some(&actor),
        )
        .await?;
    metadata
        .update_repository_by(
            repo.id,
            &RepoUpdate {
                name: Some(repo_name("after")),
                ..RepoUpdate::default()
            },
            Some(&actor),
        )
        .await?;
    // A failed rename (taken name) and a failed delete write nothing.
    create_repo(&*metadata, "taken").await?;
    assert!(
        metadata
            .update_repository_by(
                repo.id,
                &RepoUpdate {
                    name: Some(repo_name("taken")),
                    ..RepoUpdate::default()
                },
                None,
            )
            .await
            .is_err()
    );
    metadata.delete_repository_by(repo.id, Some(&actor)).await?;
    assert!(metadata.delete_repository_by(repo.id, None).await.is_err());

    let events: Vec<serde_json::Value> = metadata
        .events_after(0, 100)
        .await?
        .iter()
        .map(|stored| serde_json::to_value(&stored.event).expect("json"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "repository.created",
            "repository.renamed",
            "repository.created",
            "repository.deleted"
        ]
    );
    assert_eq!(events[0]["data"]["visibility"], "private");
    assert_eq!(events[0]["actor"]["name"], "owner");
    assert_eq!(events[1]["data"]["from"], "before");
    assert_eq!(events[1]["data"]["to"], "after");
    assert_eq!(events[3]["repository"]["name"], "after");
    assert_eq!(events[3]["repository"]["id"], repo.id.0);
    Ok(())
}

async fn leases_have_one_holder_until_they_expire(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert!(metadata.acquire_lease("relay", "a", 100, 10).await?);
    assert!(!metadata.acquire_lease("relay", "b", 105, 10).await?);
    assert!(
        metadata.acquire_lease("relay", "a", 105, 10).await?,
        "renewal"
    );
    assert!(!metadata.acquire_lease("relay", "b", 114, 10).await?);
    assert!(
        metadata.acquire_lease("relay", "b", 115, 10).await?,
        "expired"
    );
    assert!(!metadata.acquire_lease("relay", "a", 116, 10).await?);
    assert!(metadata.acquire_lease("other", "a", 116, 10).await?);
    Ok(())
}

async fn a_push_that_applies_nothing_records_no_packs(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "nothing").await?.id;
    metadata
        .apply_push(
            repo,
            &push(&[], vec![update("refs/heads/main", None, Some('1'))], false),
        )
        .await?;
    let outcomes = metadata
        .apply_push(
            repo,
            &push(
                &["pack-orphan"],
                vec![
                    update("refs/heads/main", Some('5'), Some('2')),
                    update("refs/heads/main", None, Some('2')),
                ],
                false,
            ),
        )
        .await?;
    assert_eq!(outcomes, [stale(Some('1')), stale(Some('1'))]);
    assert!(metadata.packs(repo).await?.is_empty());

    let outcomes = metadata
        .apply_push(repo, &push(&["pack-no-updates"], vec![], false))
        .await?;
    assert!(outcomes.is_empty());
    assert!(metadata.packs(repo).await?.is_empty());
    Ok(())
}

async fn packs_are_recorded_once_and_listed_oldest_first(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "packs").await?.id;
    let mut older = pack("pack-zzz");
    older.created_at = 100;
    let newer = PackRecord {
        name: "pack-aaa".into(),
        pack_size: u64::from(u32::MAX) + 10,
        index_size: 1,
        object_count: 0,
        created_at: 200,
    };
    metadata
        .apply_push(
            repo,
            &PushRecord {
                packs: vec![newer.clone(), older.clone()],
                updates: vec![update("refs/heads/main", None, Some('1'))],
                atomic: false,
                pack_generation: 0,
                events: Vec::new(),
            },
        )
        .await?;
    // The same pack again (same content, same name) is not a second pack.
    metadata
        .apply_push(
            repo,
            &PushRecord {
                packs: vec![older.clone()],
                updates: vec![update("refs/heads/main", Some('1'), Some('2'))],
                atomic: false,
                pack_generation: 0,
                events: Vec::new(),
            },
        )
        .await?;
    assert_eq!(metadata.packs(repo).await?, [older, newer]);
    Ok(())
}

async fn a_push_to_a_missing_repository_fails(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let error = metadata
        .apply_push(
            RepoId(42),
            &push(
                &["pack-x"],
                vec![update("refs/heads/main", None, Some('1'))],
                false,
            ),
        )
        .await
        .expect_err("no such repository");
    assert!(
        matches!(error, MetadataError::RepositoryNotFound),
        "{error:?}"
    );
    Ok(())
}

/// Race two pushes updating the same ref from the same old value, `rounds`
/// times; exactly one must win each round and the other must see the
/// winner's value.
async fn race_on_one_ref(
    first: Arc<dyn MetadataStore>,
    second: Arc<dyn MetadataStore>,
    repo: RepoId,
    rounds: usize,
) -> anyhow::Result<()> {
    let digits: Vec<char> = "0123456789abcdef".chars().collect();
    let mut current: Option<ObjectId> = None;
    for round in 0..rounds {
        let candidates = [
            oid(digits[(2 * round) % 16]),
            oid(digits[(2 * round + 1) % 16]),
        ];
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (metadata, new) in [(&first, candidates[0]), (&second, candidates[1])] {
            let metadata = Arc::clone(metadata);
            let barrier = Arc::clone(&barrier);
            let record = PushRecord {
                packs: vec![pack(&format!("pack-{round}-{new}"))],
                updates: vec![RefUpdate {
                    name: ref_name("refs/heads/main"),
                    old: current,
                    new: Some(new),
                    new_peeled: None,
                }],
                atomic: true,
                pack_generation: 0,
                events: Vec::new(),
            };
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                metadata.apply_push(repo, &record).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await??);
        }
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i] == [Ok(())]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0];
        let loser = 1 - winner;
        assert_eq!(
            outcomes[loser],
            [Err(RefUpdateRejection::Stale {
                current: Some(candidates[winner])
            })],
            "round {round}"
        );
        let refs = first.refs(repo).await?;
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].target, candidates[winner]);
        // Only the winner's pack was recorded.
        assert_eq!(first.packs(repo).await?.len(), round + 1);
        current = Some(candidates[winner]);
    }
    Ok(())
}

async fn concurrent_pushes_to_one_ref_from_one_store_have_one_winner(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "race").await?.id;
    race_on_one_ref(Arc::clone(&metadata), metadata, repo, 20).await
}

/// Two stores on one database (two pools) stand for two server processes
/// sharing it.
async fn concurrent_pushes_to_one_ref_from_two_stores_have_one_winner(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let first = database.open().await?;
    let second = database.open().await?;
    let repo = create_repo(&*first, "race").await?.id;
    race_on_one_ref(first, second, repo, 20).await
}

/// Pushes racing to create `refs/heads/<x>` and `refs/heads/<x>/sub` from two
/// stores: exactly one may win, as git cannot hold both. A per-ref
/// compare-and-swap does not see this conflict; only serialising the
/// pushes of a repository does.
async fn concurrent_pushes_of_conflicting_ref_names_have_one_winner(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let first = database.open().await?;
    let second = database.open().await?;
    let repo = create_repo(&*first, "race").await?.id;
    for round in 0..20 {
        let names = [
            format!("refs/heads/r{round}"),
            format!("refs/heads/r{round}/sub"),
        ];
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (metadata, name) in [(&first, &names[0]), (&second, &names[1])] {
            let metadata = Arc::clone(metadata);
            let barrier = Arc::clone(&barrier);
            let record = push(&[], vec![update(name, None, Some('1'))], false);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                metadata.apply_push(repo, &record).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await??);
        }
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i] == [Ok(())]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = winners[0];
        assert_eq!(
            outcomes[1 - winner],
            [Err(RefUpdateRejection::NameConflict {
                existing: names[winner].as_str().into()
            })],
            "round {round}"
        );
    }
    assert_eq!(first.refs(repo).await?.len(), 20);
    Ok(())
}

async fn the_owner_is_created_once(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert_eq!(metadata.owner().await?, None);
    let owner = metadata.create_owner("alice").await?;
    assert_eq!(owner.name, "alice");
    assert!(owner.is_owner);
    assert_eq!(metadata.owner().await?, Some(owner.clone()));

    let error = metadata
        .create_owner("bob")
        .await
        .expect_err("there already is an owner");
    assert!(
        matches!(&error, MetadataError::UserExists { name } if name == "alice"),
        "{error:?}"
    );
    assert_eq!(metadata.owner().await?, Some(owner));
    Ok(())
}

async fn tokens_are_found_by_hash_with_their_user(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let mut ids = Vec::new();
    for (hash, scopes, expires_at) in [
        (vec![1u8; 32], Scopes::parse("repo:read")?, None),
        (
            vec![2u8; 32],
            Scopes::parse("repo:write,api")?,
            Some(2_000_000_000),
        ),
        (vec![3u8; 32], Scopes::ALL, None),
    ] {
        let id = metadata
            .add_token(&NewToken {
                user: owner.id,
                description: format!("{scopes} token"),
                hash: hash.clone(),
                scopes,
                expires_at,
            })
            .await?;
        let found = metadata
            .token_by_hash(&hash)
            .await?
            .expect("the token was just added");
        assert_eq!(found.id, id);
        assert_eq!(found.user, owner);
        assert_eq!(found.scopes, scopes);
        assert_eq!(found.revoked_at, None);
        assert_eq!(found.expires_at, expires_at);
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);

    assert!(metadata.token_by_hash(&[9u8; 32]).await?.is_none());
    metadata.touch_token(ids[0], 1_800_000_000).await?;
    metadata.touch_token(12345, 1_800_000_000).await?;

    // A hash identifies one token.
    let duplicate = metadata
        .add_token(&NewToken {
            user: owner.id,
            description: "duplicate".into(),
            hash: vec![1u8; 32],
            scopes: Scopes::parse("repo:read")?,
            expires_at: None,
        })
        .await;
    assert!(
        matches!(duplicate, Err(MetadataError::Backend(_))),
        "{duplicate:?}"
    );
    Ok(())
}

async fn users_are_created_listed_and_deleted(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("owner").await?;
    let bob = metadata.create_user("bob").await?;
    let alice = metadata.create_user("alice").await?;
    assert!(!bob.is_owner);
    assert_eq!(metadata.user_by_name("bob").await?, Some(bob.clone()));
    assert_eq!(metadata.user_by_name("carol").await?, None);
    assert_eq!(
        metadata.list_users().await?,
        vec![owner.clone(), alice.clone(), bob.clone()]
    );
    let duplicate = metadata.create_user("bob").await;
    assert!(
        matches!(&duplicate, Err(MetadataError::UserExists { name }) if name == "bob"),
        "{duplicate:?}"
    );
    let duplicate_owner = metadata.create_user("owner").await;
    assert!(
        matches!(duplicate_owner, Err(MetadataError::UserExists { .. })),
        "{duplicate_owner:?}"
    );

    // Deleting a user takes their tokens and collaborations with them.
    let repo = create_repo(metadata.as_ref(), "shared").await?;
    metadata
        .set_collaborator(repo.id, bob.id, Access::Write)
        .await?;
    metadata
        .add_token(&NewToken {
            user: bob.id,
            description: "bob's".into(),
            hash: vec![7u8; 32],
            scopes: Scopes::ALL,
            expires_at: None,
        })
        .await?;
    metadata.delete_user(bob.id).await?;
    assert_eq!(metadata.user_by_name("bob").await?, None);
    assert!(metadata.token_by_hash(&[7u8; 32]).await?.is_none());
    assert!(metadata.list_collaborators(repo.id).await?.is_empty());
    assert!(matches!(
        metadata.delete_user(bob.id).await,
        Err(MetadataError::UserNotFound)
    ));
    assert!(matches!(
        metadata.delete_user(owner.id).await,
        Err(MetadataError::OwnerCannotBeDeleted)
    ));
    assert_eq!(metadata.list_users().await?, vec![owner, alice]);
    Ok(())
}

async fn collaborators_are_set_replaced_and_removed(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    let carol = metadata.create_user("carol").await?;
    let repo = create_repo(metadata.as_ref(), "project").await?;
    let other = create_repo(metadata.as_ref(), "other").await?;
    assert_eq!(metadata.collaborator_access(repo.id, bob.id).await?, None);
    metadata
        .set_collaborator(repo.id, carol.id, Access::Read)
        .await?;
    metadata
        .set_collaborator(repo.id, bob.id, Access::Read)
        .await?;
    metadata
        .set_collaborator(repo.id, bob.id, Access::Admin)
        .await?;
    assert_eq!(
        metadata.collaborator_access(repo.id, bob.id).await?,
        Some(Access::Admin)
    );
    assert_eq!(metadata.collaborator_access(other.id, bob.id).await?, None);
    let listed: Vec<(String, Access)> = metadata
        .list_collaborators(repo.id)
        .await?
        .into_iter()
        .map(|c| (c.user.name, c.access))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("bob".into(), Access::Admin),
            ("carol".into(), Access::Read)
        ]
    );
    assert!(metadata.remove_collaborator(repo.id, bob.id).await?);
    assert!(!metadata.remove_collaborator(repo.id, bob.id).await?);
    assert_eq!(metadata.collaborator_access(repo.id, bob.id).await?, None);

    // Deleting the repository removes its collaborators.
    metadata.delete_repository(repo.id).await?;
    assert!(metadata.list_collaborators(repo.id).await?.is_empty());
    let missing = metadata
        .set_collaborator(repo.id, carol.id, Access::Read)
        .await;
    assert!(
        matches!(missing, Err(MetadataError::RepositoryNotFound)),
        "{missing:?}"
    );
    Ok(())
}

async fn tokens_are_listed_and_revoked(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    let carol = metadata.create_user("carol").await?;
    let mut ids = Vec::new();
    for (i, scopes) in ["repo:read", "repo:read,repo:write,api"].iter().enumerate() {
        ids.push(
            metadata
                .add_token(&NewToken {
                    user: bob.id,
                    description: format!("token {i}"),
                    hash: vec![i as u8 + 10; 32],
                    scopes: Scopes::parse(scopes)?,
                    expires_at: Some(2_000_000_000),
                })
                .await?,
        );
    }
    metadata.touch_token(ids[1], 1_800_000_000).await?;
    let listed = metadata.list_tokens(bob.id).await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, ids[0]);
    assert_eq!(listed[0].description, "token 0");
    assert_eq!(listed[0].scopes, Scopes::parse("repo:read")?);
    assert_eq!(listed[0].last_used_at, None);
    assert_eq!(listed[1].last_used_at, Some(1_800_000_000));
    assert_eq!(listed[1].expires_at, Some(2_000_000_000));
    assert!(metadata.list_tokens(carol.id).await?.is_empty());

    // Only the token's own user can revoke it; revoking keeps the first time.
    assert!(
        !metadata
            .revoke_token(carol.id, ids[0], 1_900_000_000)
            .await?
    );
    assert!(metadata.revoke_token(bob.id, ids[0], 1_900_000_000).await?);
    assert!(metadata.revoke_token(bob.id, ids[0], 1_950_000_000).await?);
    assert!(
        !metadata
            .revoke_token(bob.id, 987_654, 1_900_000_000)
            .await?
    );
    let found = metadata
        .token_by_hash(&[10u8; 32])
        .await?
        .expect("revoked tokens are still found");
    assert_eq!(found.revoked_at, Some(1_900_000_000));
    assert_eq!(found.user, bob);
    let listed = metadata.list_tokens(bob.id).await?;
    assert_eq!(listed[0].revoked_at, Some(1_900_000_000));
    assert_eq!(listed[1].revoked_at, None);
    Ok(())
}

async fn repositories_keep_their_visibility(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let hidden = metadata
        .create_repository(&NewRepository {
            name: repo_name("unlisted"),
            visibility: Visibility::Hidden,
            default_branch: "main".into(),
        })
        .await?;
    assert_eq!(hidden.visibility, Visibility::Hidden);
    let found = metadata
        .repository(&repo_name("unlisted"))
        .await?
        .expect("created");
    assert_eq!(found.visibility, Visibility::Hidden);
    let changed = metadata
        .update_repository(
            hidden.id,
            &RepoUpdate {
                visibility: Some(Visibility::Private),
                ..RepoUpdate::default()
            },
        )
        .await?;
    assert_eq!(changed.visibility, Visibility::Private);
    Ok(())
}

// SQLite only: in-memory databases.
#[tokio::test]
async fn an_in_memory_store_works_like_a_file() -> anyhow::Result<()> {
    let metadata = SqliteMetadata::in_memory().await?;
    let repo = create_repo(&metadata, "ephemeral").await?;
    let outcomes = metadata
        .apply_push(
            repo.id,
            &push(
                &["pack-1"],
                vec![update("refs/heads/main", None, Some('1'))],
                true,
            ),
        )
        .await?;
    assert_eq!(outcomes, [Ok(())]);
    assert_eq!(metadata.packs(repo.id).await?.len(), 1);

    // Each in-memory store is its own database.
    let other = SqliteMetadata::in_memory().await?;
    assert!(other.list_repositories().await?.is_empty());
    Ok(())
}

/// Regression: a push could create `refs/heads/dir` while
/// `refs/heads/dir/sub` existed (and the reverse), which git refuses and
/// which clients cannot store.
async fn refs_cannot_be_both_a_file_and_a_directory(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "conflicts").await?;
    let outcomes = metadata
        .apply_push(
            repo.id,
            &push(
                &[],
                vec![update("refs/heads/dir/sub", None, Some('a'))],
                false,
            ),
        )
        .await?;
    assert_eq!(outcomes, vec![Ok(())]);
    let outcomes = metadata
        .apply_push(
            repo.id,
            &push(
                &[],
                vec![
                    update("refs/heads/dir", None, Some('b')),
                    update("refs/heads/dir/sub/deeper", None, Some('b')),
                    update("refs/heads/dir-ok", None, Some('b')),
                    update("refs/heads/di", None, Some('b')),
                ],
                false,
            ),
        )
        .await?;
    assert_eq!(
        outcomes,
        vec![
            Err(RefUpdateRejection::NameConflict {
                existing: "refs/heads/dir/sub".into()
            }),
            Err(RefUpdateRejection::NameConflict {
                existing: "refs/heads/dir/sub".into()
            }),
            Ok(()),
            Ok(()),
        ]
    );
    let names: Vec<String> = metadata
        .refs(repo.id)
        .await?
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["refs/heads/di", "refs/heads/dir-ok", "refs/heads/dir/sub"]
    );
    Ok(())
}

async fn repo_state_counts_ref_changes(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "state").await?.id;
    let empty = metadata.repo_state(repo).await?;
    assert!(empty.refs.is_empty() && empty.packs.is_empty());
    assert_eq!((empty.pack_generation, empty.ref_version), (0, 0));

    metadata
        .apply_push(
            repo,
            &push(
                &["pack-a"],
                vec![update("refs/heads/main", None, Some('1'))],
                false,
            ),
        )
        .await?;
    // A push that changes nothing does not count.
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-b"],
                vec![update("refs/heads/main", None, Some('2'))],
                false,
            ),
        )
        .await?;
    let state = metadata.repo_state(repo).await?;
    assert_eq!(state.ref_version, 1);
    assert_eq!(state.pack_generation, 0);
    assert_eq!(state.packs, [pack("pack-a")]);
    assert_eq!(state.refs.len(), 1);
    let missing = metadata.repo_state(RepoId(4242)).await;
    assert!(
        matches!(missing, Err(MetadataError::RepositoryNotFound)),
        "{missing:?}"
    );
    Ok(())
}

async fn compaction_replaces_packs_and_retires_them(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "compact").await?.id;
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-a"],
                vec![update("refs/heads/main", None, Some('1'))],
                false,
            ),
        )
        .await?;
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-b"],
                vec![update("refs/heads/main", Some('1'), Some('2'))],
                false,
            ),
        )
        .await?;
    let replacement = PackReplacement {
        remove: vec!["pack-a".into(), "pack-b".into()],
        add: Some(pack("pack-ab")),
        prune_at_ref_version: None,
    };
    assert_eq!(
        metadata.replace_packs(repo, &replacement, 500).await?,
        Ok(())
    );
    let state = metadata.repo_state(repo).await?;
    assert_eq!(state.packs, [pack("pack-ab")]);
    // Compaction keeps every object: pushes need not be checked again.
    assert_eq!(state.pack_generation, 0);
    assert_eq!(
        metadata.retired_packs(repo).await?,
        [
            RetiredPack {
                name: "pack-a".into(),
                retired_at: 500
            },
            RetiredPack {
                name: "pack-b".into(),
                retired_at: 500
            },
        ]
    );

    // A second run that read the same packs lost the race: nothing changes.
    let late = PackReplacement {
        remove: vec!["pack-a".into(), "pack-b".into()],
        add: Some(pack("pack-other")),
        prune_at_ref_version: None,
    };
    assert_eq!(
        metadata.replace_packs(repo, &late, 600).await?,
        Err(ReplacementConflict::PackGone {
            name: "pack-a".into()
        })
    );
    assert_eq!(metadata.packs(repo).await?, [pack("pack-ab")]);
    assert_eq!(metadata.retired_packs(repo).await?.len(), 2);

    metadata.forget_retired_pack(repo, "pack-a").await?;
    assert_eq!(
        metadata.retired_packs(repo).await?,
        [RetiredPack {
            name: "pack-b".into(),
            retired_at: 500
        }]
    );
    Ok(())
}

async fn garbage_collection_needs_unmoved_refs_and_rechecks_pushes(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "gc").await?.id;
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-a"],
                vec![update("refs/heads/main", None, Some('1'))],
                false,
            ),
        )
        .await?;
    let walked = metadata.repo_state(repo).await?;

    // A push lands after the reachability walk: the collection must not swap.
    metadata
        .apply_push(
            repo,
            &push(
                &["pack-b"],
                vec![update("refs/heads/topic", None, Some('2'))],
                false,
            ),
        )
        .await?;
    let stale_walk = PackReplacement {
        remove: vec!["pack-a".into()],
        add: Some(pack("pack-gc")),
        prune_at_ref_version: Some(walked.ref_version),
    };
    assert_eq!(
        metadata.replace_packs(repo, &stale_walk, 700).await?,
        Err(ReplacementConflict::RefsMoved)
    );
    let unchanged = metadata.repo_state(repo).await?;
    assert_eq!(unchanged.packs, [pack("pack-a"), pack("pack-b")]);
    assert!(metadata.retired_packs(repo).await?.is_empty());

    // With the refs as walked, it swaps and moves the generation on.
    let fresh_walk = PackReplacement {
        remove: vec!["pack-a".into(), "pack-b".into()],
        add: Some(pack("pack-gc")),
        prune_at_ref_version: Some(unchanged.ref_version),
    };
    assert_eq!(
        metadata.replace_packs(repo, &fresh_walk, 800).await?,
        Ok(())
    );
    let collected = metadata.repo_state(repo).await?;
    assert_eq!(collected.pack_generation, unchanged.pack_generation + 1);
    assert_eq!(collected.packs, [pack("pack-gc")]);

    // A push checked against the packs before the collection is refused
    // as a whole, and changes nothing, until it is checked again.
    let mut late_push = push(
        &["pack-late"],
        vec![update("refs/heads/main", Some('1'), Some('3'))],
        false,
    );
    late_push.pack_generation = unchanged.pack_generation;
    let refused = metadata.apply_push(repo, &late_push).await;
    assert!(
        matches!(refused, Err(MetadataError::PacksReplaced)),
        "{refused:?}"
    );
    assert_eq!(metadata.repo_state(repo).await?.packs, [pack("pack-gc")]);
    late_push.pack_generation = collected.pack_generation;
    assert_eq!(metadata.apply_push(repo, &late_push).await?, [Ok(())]);

    // Collecting a repository without refs leaves no pack at all.
    let state = metadata.repo_state(repo).await?;
    metadata
        .apply_push(
            repo,
            &PushRecord {
                packs: vec![],
                updates: vec![
                    update("refs/heads/main", Some('3'), None),
                    update("refs/heads/topic", Some('2'), None),
                ],
                atomic: true,
                pack_generation: state.pack_generation,
                events: Vec::new(),
            },
        )
        .await?;
    let emptied = metadata.repo_state(repo).await?;
    let nothing = PackReplacement {
        remove: emptied.packs.iter().map(|p| p.name.clone()).collect(),
        add: None,
        prune_at_ref_version: Some(emptied.ref_version),
    };
    assert_eq!(metadata.replace_packs(repo, &nothing, 900).await?, Ok(()));
    assert!(metadata.packs(repo).await?.is_empty());
    Ok(())
}

/// A Unix time the identity tests start from.
const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn new_session(id: &str, user: UserId, secret: u8, created_at: i64, expires_at: i64) -> NewSession {
    NewSession {
        id: id.into(),
        user,
        refresh_hash: vec![secret; 32],
        csrf: format!("csrf-{id}"),
        created_at,
        expires_at,
    }
}

fn new_invitation(
    secret: u8,
    created_by: UserId,
    grant: Option<(RepoId, Access)>,
    created_at: i64,
    expires_at: i64,
) -> NewInvitation {
    NewInvitation {
        hash: vec![secret; 32],
        created_by,
        grant,
        note: format!("invitation {secret}"),
        created_at,
        expires_at,
    }
}

fn account(name: &str, password_hash: Option<&str>, identity: Option<(&str, &str)>) -> NewAccount {
    NewAccount {
        name: name.into(),
        password_hash: password_hash.map(Into::into),
        identity: identity.map(|(provider, subject)| (provider.into(), subject.into())),
    }
}

async fn passwords_are_set_and_cleared(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert_eq!(metadata.user_credentials("bob").await?, None);
    let owner = metadata.create_owner("alice").await?;
    let bob = metadata.create_user("bob").await?;
    let carol = metadata.create_user("carol").await?;
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), None))
    );
    assert_eq!(metadata.user_credentials("Bob").await?, None);

    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    metadata.set_password_hash(bob.id, Some(hash)).await?;
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), Some(hash.to_owned())))
    );
    assert_eq!(
        metadata.user_credentials("carol").await?,
        Some((carol.clone(), None))
    );
    metadata
        .set_password_hash(owner.id, Some("owner-hash"))
        .await?;
    assert_eq!(
        metadata.user_credentials("alice").await?,
        Some((owner.clone(), Some("owner-hash".to_owned())))
    );

    metadata.set_password_hash(bob.id, None).await?;
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), None))
    );
    assert_eq!(
        metadata.user_credentials("alice").await?,
        Some((owner.clone(), Some("owner-hash".to_owned())))
    );

    // An unknown user is an error, and no one's hash changes.
    let missing = metadata
        .set_password_hash(UserId(987_654), Some("stray"))
        .await;
    assert!(
        matches!(missing, Err(MetadataError::UserNotFound)),
        "{missing:?}"
    );
    metadata.delete_user(carol.id).await?;
    let deleted = metadata.set_password_hash(carol.id, Some("stray")).await;
    assert!(
        matches!(deleted, Err(MetadataError::UserNotFound)),
        "{deleted:?}"
    );
    assert_eq!(metadata.user_credentials("carol").await?, None);
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), None))
    );
    assert_eq!(
        metadata.user_credentials("alice").await?,
        Some((owner.clone(), Some("owner-hash".to_owned())))
    );

    assert_eq!(metadata.user_by_id(owner.id).await?, Some(owner));
    assert_eq!(metadata.user_by_id(bob.id).await?, Some(bob));
    assert_eq!(metadata.user_by_id(carol.id).await?, None);
    assert_eq!(metadata.user_by_id(UserId(987_654)).await?, None);
    Ok(())
}

async fn sessions_rotate_their_secret_and_detect_reuse(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    metadata
        .create_session(&new_session("s1", bob.id, 1, NOW, NOW + DAY))
        .await?;
    let created = SessionRecord {
        id: "s1".into(),
        user: bob.clone(),
        csrf: "csrf-s1".into(),
        created_at: NOW,
        refreshed_at: NOW,
        expires_at: NOW + DAY,
        revoked_at: None,
    };
    assert_eq!(metadata.session("s1").await?, Some(created.clone()));
    assert_eq!(metadata.session("s2").await?, None);

    // A wrong secret, or an unknown session, is refused and changes nothing.
    assert_eq!(
        metadata
            .rotate_session("s1", &[9u8; 32], &[2u8; 32], NOW + 5)
            .await?,
        Rotation::Refused
    );
    assert_eq!(
        metadata
            .rotate_session("s2", &[1u8; 32], &[2u8; 32], NOW + 5)
            .await?,
        Rotation::Refused
    );
    assert_eq!(metadata.session("s1").await?, Some(created.clone()));

    // The current secret rotates; the new one is then current.
    let rotated = SessionRecord {
        refreshed_at: NOW + 10,
        ..created.clone()
    };
    assert_eq!(
        metadata
            .rotate_session("s1", &[1u8; 32], &[2u8; 32], NOW + 10)
            .await?,
        Rotation::Rotated(rotated.clone())
    );
    assert_eq!(metadata.session("s1").await?, Some(rotated.clone()));
    assert_eq!(
        metadata
            .rotate_session("s1", &[9u8; 32], &[3u8; 32], NOW + 15)
            .await?,
        Rotation::Refused
    );
    assert_eq!(metadata.session("s1").await?, Some(rotated));
    let rotated_again = SessionRecord {
        refreshed_at: NOW + 20,
        ..created.clone()
    };
    assert_eq!(
        metadata
            .rotate_session("s1", &[2u8; 32], &[3u8; 32], NOW + 20)
            .await?,
        Rotation::Rotated(rotated_again.clone())
    );
    // Two generations back is not the previous secret: merely refused.
    assert_eq!(
        metadata
            .rotate_session("s1", &[1u8; 32], &[4u8; 32], NOW + 25)
            .await?,
        Rotation::Refused
    );
    assert_eq!(metadata.session("s1").await?, Some(rotated_again.clone()));

    // The previous secret again: reuse, which revokes the session, after
    // which even the newest secret is refused.
    assert_eq!(
        metadata
            .rotate_session("s1", &[2u8; 32], &[4u8; 32], NOW + 30)
            .await?,
        Rotation::Reused
    );
    let revoked = SessionRecord {
        revoked_at: Some(NOW + 30),
        ..rotated_again
    };
    assert_eq!(metadata.session("s1").await?, Some(revoked.clone()));
    assert_eq!(
        metadata
            .rotate_session("s1", &[3u8; 32], &[4u8; 32], NOW + 40)
            .await?,
        Rotation::Refused
    );
    assert_eq!(
        metadata
            .rotate_session("s1", &[2u8; 32], &[4u8; 32], NOW + 40)
            .await?,
        Rotation::Refused
    );
    assert_eq!(metadata.session("s1").await?, Some(revoked));

    // An expired session is refused, even with its current secret, and
    // keeps that secret.
    metadata
        .create_session(&new_session("s2", bob.id, 5, NOW, NOW + 100))
        .await?;
    let live = metadata.session("s2").await?.expect("just created");
    assert_eq!(
        metadata
            .rotate_session("s2", &[5u8; 32], &[6u8; 32], NOW + 100)
            .await?,
        Rotation::Refused
    );
    assert_eq!(
        metadata
            .rotate_session("s2", &[5u8; 32], &[6u8; 32], NOW + 200)
            .await?,
        Rotation::Refused
    );
    assert_eq!(metadata.session("s2").await?, Some(live.clone()));
    assert_eq!(
        metadata
            .rotate_session("s2", &[5u8; 32], &[6u8; 32], NOW + 99)
            .await?,
        Rotation::Rotated(SessionRecord {
            refreshed_at: NOW + 99,
            ..live
        })
    );
    Ok(())
}

async fn sessions_are_revoked_and_go_with_their_user(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    let carol = metadata.create_user("carol").await?;
    for (id, user) in [
        ("bob-1", &bob),
        ("bob-2", &bob),
        ("bob-3", &bob),
        ("carol-1", &carol),
    ] {
        metadata
            .create_session(&new_session(id, user.id, 1, NOW, NOW + DAY))
            .await?;
    }

    assert!(metadata.revoke_session("bob-1", NOW + 10).await?);
    assert!(!metadata.revoke_session("bob-1", NOW + 20).await?);
    assert!(!metadata.revoke_session("nope", NOW + 20).await?);
    assert_eq!(
        metadata
            .session("bob-1")
            .await?
            .expect("revoked sessions are still found")
            .revoked_at,
        Some(NOW + 10)
    );
    assert_eq!(
        metadata
            .rotate_session("bob-1", &[1u8; 32], &[2u8; 32], NOW + 30)
            .await?,
        Rotation::Refused
    );

    // Only the user's own sessions that are still live.
    assert_eq!(metadata.revoke_user_sessions(bob.id, NOW + 40).await?, 2);
    assert_eq!(metadata.revoke_user_sessions(bob.id, NOW + 50).await?, 0);
    let revoked_at = |session: Option<SessionRecord>| session.and_then(|s| s.revoked_at);
    assert_eq!(revoked_at(metadata.session("bob-1").await?), Some(NOW + 10));
    assert_eq!(revoked_at(metadata.session("bob-2").await?), Some(NOW + 40));
    assert_eq!(revoked_at(metadata.session("bob-3").await?), Some(NOW + 40));
    let carols = metadata.session("carol-1").await?.expect("untouched");
    assert_eq!(carols.revoked_at, None);
    assert_eq!(
        metadata.revoke_user_sessions(UserId(987_654), NOW).await?,
        0
    );

    // A session that ended over a day ago goes when another is created.
    metadata
        .create_session(&new_session(
            "old",
            carol.id,
            1,
            NOW - 3 * DAY,
            NOW - 2 * DAY,
        ))
        .await?;
    assert!(metadata.session("old").await?.is_some());
    metadata
        .create_session(&new_session("carol-2", carol.id, 2, NOW, NOW + DAY))
        .await?;
    assert_eq!(metadata.session("old").await?, None);
    assert_eq!(metadata.session("carol-1").await?, Some(carols));

    // Deleting a user deletes their sessions.
    metadata
        .create_session(&new_session("bob-4", bob.id, 4, NOW, NOW + DAY))
        .await?;
    metadata.delete_user(bob.id).await?;
    for id in ["bob-1", "bob-2", "bob-3", "bob-4"] {
        assert_eq!(metadata.session(id).await?, None, "{id}");
    }
    assert_eq!(
        metadata
            .rotate_session("bob-4", &[4u8; 32], &[5u8; 32], NOW + 60)
            .await?,
        Rotation::Refused
    );
    assert!(metadata.session("carol-1").await?.is_some());
    assert!(metadata.session("carol-2").await?.is_some());
    Ok(())
}

/// The trait promises both revocations act on live sessions only: an
/// expired session is not live, so it is neither revoked nor counted.
async fn revoking_sessions_ignores_expired_ones(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    metadata
        .create_session(&new_session("live", bob.id, 1, NOW, NOW + DAY))
        .await?;
    metadata
        .create_session(&new_session("expired", bob.id, 2, NOW, NOW + 100))
        .await?;
    metadata
        .create_session(&new_session("ended", bob.id, 3, NOW, NOW + 100))
        .await?;
    let revoked_one = metadata.revoke_session("expired", NOW + 100).await?;
    let counted = metadata.revoke_user_sessions(bob.id, NOW + 200).await?;
    let revoked_at = |session: Option<SessionRecord>| session.and_then(|s| s.revoked_at);
    assert_eq!(
        (
            revoked_one,
            counted,
            revoked_at(metadata.session("expired").await?),
            revoked_at(metadata.session("ended").await?),
            revoked_at(metadata.session("live").await?),
        ),
        (false, 1, None, None, Some(NOW + 200)),
        "(revoke_session of an expired session, revoke_user_sessions count, \
         revoked_at of the two expired sessions, of the live one)"
    );
    Ok(())
}

async fn invitations_are_listed_and_accepted_once(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let repo = create_repo(metadata.as_ref(), "project").await?;
    let plain = metadata
        .create_invitation(&new_invitation(1, owner.id, None, NOW, NOW + DAY))
        .await?;
    let granted = metadata
        .create_invitation(&new_invitation(
            2,
            owner.id,
            Some((repo.id, Access::Write)),
            NOW + 1,
            NOW + DAY,
        ))
        .await?;
    assert_ne!(plain, granted);
    let pending_granted = Invitation {
        id: granted,
        created_by: Some("alice".into()),
        grant: Some(("project".into(), Access::Write)),
        note: "invitation 2".into(),
        created_at: NOW + 1,
        expires_at: NOW + DAY,
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    let pending_plain = Invitation {
        id: plain,
        created_by: Some("alice".into()),
        grant: None,
        note: "invitation 1".into(),
        created_at: NOW,
        expires_at: NOW + DAY,
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    assert_eq!(
        metadata.list_invitations().await?,
        [pending_granted.clone(), pending_plain.clone()]
    );
    assert_eq!(
        metadata.invitation_by_hash(&[2u8; 32]).await?,
        Some(pending_granted.clone())
    );
    assert_eq!(
        metadata.invitation_by_hash(&[1u8; 32]).await?,
        Some(pending_plain.clone())
    );
    assert_eq!(metadata.invitation_by_hash(&[9u8; 32]).await?, None);

    // Accepting creates the user, grants the access, links the identity
    // and marks the invitation used.
    let carol = metadata
        .accept_invitation(
            &[2u8; 32],
            &account(
                "carol",
                Some("carol-hash"),
                Some(("https://idp", "sub-carol")),
            ),
            NOW + 10,
        )
        .await?
        .expect("a usable invitation");
    assert_eq!(carol.name, "carol");
    assert!(!carol.is_owner);
    assert_eq!(metadata.user_by_id(carol.id).await?, Some(carol.clone()));
    assert_eq!(
        metadata.user_credentials("carol").await?,
        Some((carol.clone(), Some("carol-hash".to_owned())))
    );
    assert_eq!(
        metadata.collaborator_access(repo.id, carol.id).await?,
        Some(Access::Write)
    );
    assert_eq!(
        metadata
            .user_by_identity("https://idp", "sub-carol")
            .await?,
        Some(carol.clone())
    );
    assert_eq!(
        metadata.list_identities(carol.id).await?,
        [("https://idp".to_owned(), "sub-carol".to_owned())]
    );
    let used_granted = Invitation {
        used_at: Some(NOW + 10),
        used_by: Some("carol".into()),
        ..pending_granted.clone()
    };
    assert_eq!(
        metadata.invitation_by_hash(&[2u8; 32]).await?,
        Some(used_granted.clone())
    );
    assert_eq!(
        metadata.list_invitations().await?,
        [used_granted.clone(), pending_plain.clone()]
    );

    // A second acceptance is refused and creates no one.
    assert_eq!(
        metadata
            .accept_invitation(&[2u8; 32], &account("dave", None, None), NOW + 20)
            .await?,
        Err(InvitationRefusal::Used)
    );
    assert_eq!(metadata.user_by_name("dave").await?, None);
    // A used invitation cannot be revoked.
    assert!(!metadata.revoke_invitation(granted, NOW + 20).await?);
    assert_eq!(
        metadata.invitation_by_hash(&[2u8; 32]).await?,
        Some(used_granted.clone())
    );

    // A plain invitation creates a user with no access and no identity.
    let bob = metadata
        .accept_invitation(&[1u8; 32], &account("bob", None, None), NOW + 30)
        .await?
        .expect("a usable invitation");
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), None))
    );
    assert!(metadata.list_identities(bob.id).await?.is_empty());
    assert_eq!(metadata.collaborator_access(repo.id, bob.id).await?, None);
    assert_eq!(
        metadata.list_users().await?,
        [owner, bob.clone(), carol.clone()]
    );
    assert_eq!(
        metadata.list_invitations().await?,
        [
            used_granted,
            Invitation {
                used_at: Some(NOW + 30),
                used_by: Some("bob".into()),
                ..pending_plain
            }
        ]
    );

    // Unknown secrets are refused.
    assert_eq!(
        metadata
            .accept_invitation(&[99u8; 32], &account("erin", None, None), NOW + 40)
            .await?,
        Err(InvitationRefusal::Unknown)
    );
    assert_eq!(metadata.user_by_name("erin").await?, None);
    Ok(())
}

async fn expired_and_revoked_invitations_are_refused(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let repo = create_repo(metadata.as_ref(), "project").await?;
    let expiring = metadata
        .create_invitation(&new_invitation(
            3,
            owner.id,
            Some((repo.id, Access::Read)),
            NOW,
            NOW + 100,
        ))
        .await?;
    let revoked = metadata
        .create_invitation(&new_invitation(4, owner.id, None, NOW, NOW + DAY))
        .await?;

    // Expired at its expiry time.
    assert_eq!(
        metadata
            .accept_invitation(&[3u8; 32], &account("dave", None, None), NOW + 100)
            .await?,
        Err(InvitationRefusal::Expired)
    );
    assert_eq!(metadata.user_by_name("dave").await?, None);
    assert!(metadata.list_collaborators(repo.id).await?.is_empty());
    let unused = metadata
        .invitation_by_hash(&[3u8; 32])
        .await?
        .expect("still stored");
    assert_eq!((unused.used_at, unused.used_by), (None, None));
    assert_eq!(unused.id, expiring);

    assert!(metadata.revoke_invitation(revoked, NOW + 5).await?);
    assert!(!metadata.revoke_invitation(revoked, NOW + 6).await?);
    assert!(!metadata.revoke_invitation(987_654, NOW + 6).await?);
    assert_eq!(
        metadata
            .accept_invitation(&[4u8; 32], &account("dave", None, None), NOW + 10)
            .await?,
        Err(InvitationRefusal::Revoked)
    );
    assert_eq!(metadata.user_by_name("dave").await?, None);
    let found = metadata
        .invitation_by_hash(&[4u8; 32])
        .await?
        .expect("still stored");
    assert_eq!(found.revoked_at, Some(NOW + 5));
    assert_eq!((found.used_at, found.used_by), (None, None));
    assert_eq!(metadata.list_users().await?, [owner]);
    Ok(())
}

async fn a_refused_acceptance_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let repo = create_repo(metadata.as_ref(), "project").await?;
    let bob = metadata.create_user("bob").await?;
    assert!(
        metadata
            .link_identity(bob.id, "https://idp", "sub-bob")
            .await?
    );
    let invitation = metadata
        .create_invitation(&new_invitation(
            5,
            owner.id,
            Some((repo.id, Access::Admin)),
            NOW,
            NOW + DAY,
        ))
        .await?;
    let pending = metadata
        .invitation_by_hash(&[5u8; 32])
        .await?
        .expect("just created");
    let users = metadata.list_users().await?;

    // A taken name: refused, and the invitation stays usable.
    assert_eq!(
        metadata
            .accept_invitation(
                &[5u8; 32],
                &account("bob", Some("hash"), Some(("https://idp", "sub-new"))),
                NOW + 10,
            )
            .await?,
        Err(InvitationRefusal::NameTaken("bob".into()))
    );
    assert_eq!(
        metadata.invitation_by_hash(&[5u8; 32]).await?,
        Some(pending.clone())
    );
    assert_eq!(metadata.list_users().await?, users);
    assert_eq!(
        metadata.user_by_identity("https://idp", "sub-new").await?,
        None
    );
    assert_eq!(
        metadata.user_credentials("bob").await?,
        Some((bob.clone(), None))
    );
    assert!(metadata.list_collaborators(repo.id).await?.is_empty());

    // An identity linked to someone else: refused, nothing created.
    assert_eq!(
        metadata
            .accept_invitation(
                &[5u8; 32],
                &account("erin", Some("hash"), Some(("https://idp", "sub-bob"))),
                NOW + 20,
            )
            .await?,
        Err(InvitationRefusal::IdentityLinked)
    );
    assert_eq!(
        metadata.invitation_by_hash(&[5u8; 32]).await?,
        Some(pending.clone())
    );
    assert_eq!(metadata.user_by_name("erin").await?, None);
    assert_eq!(metadata.list_users().await?, users);
    assert!(metadata.list_collaborators(repo.id).await?.is_empty());
    assert_eq!(
        metadata.user_by_identity("https://idp", "sub-bob").await?,
        Some(bob.clone())
    );

    // The invitation can still be accepted, under another name.
    let erin = metadata
        .accept_invitation(
            &[5u8; 32],
            &account("erin", Some("hash"), Some(("https://idp", "sub-erin"))),
            NOW + 30,
        )
        .await?
        .expect("still usable");
    assert_eq!(erin.name, "erin");
    assert_eq!(
        metadata.collaborator_access(repo.id, erin.id).await?,
        Some(Access::Admin)
    );
    assert_eq!(
        metadata.user_by_identity("https://idp", "sub-erin").await?,
        Some(erin.clone())
    );
    let used = metadata
        .invitation_by_hash(&[5u8; 32])
        .await?
        .expect("still stored");
    assert_eq!(used.id, invitation);
    assert_eq!(used.used_at, Some(NOW + 30));
    assert_eq!(used.used_by.as_deref(), Some("erin"));
    Ok(())
}

async fn deleting_a_repository_removes_its_pending_invitations(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let doomed = create_repo(metadata.as_ref(), "doomed").await?;
    let kept = create_repo(metadata.as_ref(), "kept").await?;
    let on_doomed = metadata
        .create_invitation(&new_invitation(
            6,
            owner.id,
            Some((doomed.id, Access::Read)),
            NOW,
            NOW + DAY,
        ))
        .await?;
    let on_kept = metadata
        .create_invitation(&new_invitation(
            7,
            owner.id,
            Some((kept.id, Access::Write)),
            NOW + 1,
            NOW + DAY,
        ))
        .await?;
    let plain = metadata
        .create_invitation(&new_invitation(8, owner.id, None, NOW + 2, NOW + DAY))
        .await?;
    let ids = |invitations: Vec<Invitation>| -> Vec<i64> {
        invitations.into_iter().map(|i| i.id).collect()
    };
    assert_eq!(
        ids(metadata.list_invitations().await?),
        [plain, on_kept, on_doomed]
    );

    metadata.delete_repository(doomed.id).await?;
    let listed = metadata.list_invitations().await?;
    assert_eq!(ids(listed.clone()), [plain, on_kept]);
    assert_eq!(listed[1].grant, Some(("kept".into(), Access::Write)));
    assert_eq!(metadata.invitation_by_hash(&[6u8; 32]).await?, None);
    assert_eq!(
        metadata
            .accept_invitation(&[6u8; 32], &account("dave", None, None), NOW + 10)
            .await?,
        Err(InvitationRefusal::Unknown)
    );
    assert_eq!(metadata.user_by_name("dave").await?, None);

    // A grant on a repository that does not exist is refused.
    let missing = metadata
        .create_invitation(&new_invitation(
            9,
            owner.id,
            Some((doomed.id, Access::Read)),
            NOW,
            NOW + DAY,
        ))
        .await;
    assert!(
        matches!(missing, Err(MetadataError::RepositoryNotFound)),
        "{missing:?}"
    );
    assert_eq!(metadata.invitation_by_hash(&[9u8; 32]).await?, None);
    Ok(())
}

async fn identities_are_linked_once(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let bob = metadata.create_user("bob").await?;
    let carol = metadata.create_user("carol").await?;
    assert_eq!(metadata.user_by_identity("github", "1").await?, None);
    assert!(metadata.link_identity(bob.id, "github", "1").await?);
    assert!(!metadata.link_identity(bob.id, "github", "1").await?);
    assert!(!metadata.link_identity(carol.id, "github", "1").await?);
    assert_eq!(
        metadata.user_by_identity("github", "1").await?,
        Some(bob.clone())
    );
    assert_eq!(metadata.user_by_identity("github", "2").await?, None);
    assert_eq!(metadata.user_by_identity("gitlab", "1").await?, None);
    assert!(metadata.link_identity(bob.id, "accounts", "x").await?);
    assert!(metadata.link_identity(carol.id, "gitlab", "1").await?);
    assert_eq!(
        metadata.list_identities(bob.id).await?,
        [
            ("accounts".to_owned(), "x".to_owned()),
            ("github".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(
        metadata.list_identities(carol.id).await?,
        [("gitlab".to_owned(), "1".to_owned())]
    );

    // Only its own user unlinks an identity.
    assert!(!metadata.unlink_identity(carol.id, "github", "1").await?);
    assert!(metadata.unlink_identity(bob.id, "github", "1").await?);
    assert!(!metadata.unlink_identity(bob.id, "github", "1").await?);
    assert_eq!(metadata.user_by_identity("github", "1").await?, None);
    assert_eq!(
        metadata.list_identities(bob.id).await?,
        [("accounts".to_owned(), "x".to_owned())]
    );
    assert!(metadata.link_identity(carol.id, "github", "1").await?);
    assert_eq!(
        metadata.user_by_identity("github", "1").await?,
        Some(carol.clone())
    );

    let missing = metadata.link_identity(UserId(987_654), "github", "2").await;
    assert!(
        matches!(missing, Err(MetadataError::UserNotFound)),
        "{missing:?}"
    );
    assert_eq!(metadata.user_by_identity("github", "2").await?, None);

    // Deleting a user unlinks their identities.
    metadata.delete_user(carol.id).await?;
    assert_eq!(metadata.user_by_identity("github", "1").await?, None);
    assert_eq!(metadata.user_by_identity("gitlab", "1").await?, None);
    assert!(metadata.list_identities(carol.id).await?.is_empty());
    assert!(metadata.link_identity(bob.id, "github", "1").await?);
    Ok(())
}

fn login_flow(state: u8, created_at: i64, expires_at: i64) -> LoginFlow {
    LoginFlow {
        state_hash: vec![state; 32],
        provider: "https://idp".into(),
        nonce: format!("nonce-{state}"),
        pkce_verifier: format!("verifier-{state}"),
        invitation_hash: state.is_multiple_of(2).then(|| vec![state + 100; 32]),
        created_at,
        expires_at,
    }
}

async fn login_flows_are_taken_once(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert_eq!(metadata.take_login_flow(&[1u8; 32], NOW).await?, None);
    for state in [1, 2] {
        metadata
            .create_login_flow(&login_flow(state, NOW, NOW + 600))
            .await?;
    }
    assert_eq!(
        metadata.take_login_flow(&[1u8; 32], NOW + 10).await?,
        Some(login_flow(1, NOW, NOW + 600))
    );
    assert_eq!(metadata.take_login_flow(&[1u8; 32], NOW + 10).await?, None);
    assert_eq!(
        metadata.take_login_flow(&[2u8; 32], NOW + 599).await?,
        Some(login_flow(2, NOW, NOW + 600))
    );

    // An expired flow is not returned, and is gone afterwards.
    metadata
        .create_login_flow(&login_flow(3, NOW, NOW + 600))
        .await?;
    assert_eq!(metadata.take_login_flow(&[3u8; 32], NOW + 600).await?, None);
    assert_eq!(metadata.take_login_flow(&[3u8; 32], NOW + 10).await?, None);

    // Creating a flow removes the ones expired by then, and only those.
    metadata
        .create_login_flow(&login_flow(4, NOW, NOW + 60))
        .await?;
    metadata
        .create_login_flow(&login_flow(5, NOW, NOW + 600))
        .await?;
    metadata
        .create_login_flow(&login_flow(6, NOW + 60, NOW + 660))
        .await?;
    assert_eq!(metadata.take_login_flow(&[4u8; 32], NOW + 30).await?, None);
    assert_eq!(
        metadata.take_login_flow(&[5u8; 32], NOW + 70).await?,
        Some(login_flow(5, NOW, NOW + 600))
    );
    assert_eq!(
        metadata.take_login_flow(&[6u8; 32], NOW + 70).await?,
        Some(login_flow(6, NOW + 60, NOW + 660))
    );
    Ok(())
}

fn signing_key(kid: &str, secret: u8, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        algorithm: "EdDSA".into(),
        private_key: vec![secret; 48],
        public_key: vec![secret + 1; 32],
        created_at,
    }
}

async fn signing_keys_are_kept_newest_first(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert!(metadata.signing_keys().await?.is_empty());
    metadata.add_signing_key(&signing_key("k1", 1, NOW)).await?;
    // Another process racing to create the first key: the first one stays.
    metadata
        .add_signing_key(&signing_key("k1", 9, NOW + 50))
        .await?;
    assert_eq!(metadata.signing_keys().await?, [signing_key("k1", 1, NOW)]);
    metadata
        .add_signing_key(&signing_key("k2", 2, NOW + 100))
        .await?;
    metadata
        .add_signing_key(&signing_key("k0", 3, NOW - 100))
        .await?;
    assert_eq!(
        metadata.signing_keys().await?,
        [
            signing_key("k2", 2, NOW + 100),
            signing_key("k1", 1, NOW),
            signing_key("k0", 3, NOW - 100)
        ]
    );
    Ok(())
}

async fn audit_events_are_recorded_and_filtered(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    assert!(
        metadata
            .list_audit(&AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            })
            .await?
            .is_empty()
    );
    let alice = metadata.create_owner("alice").await?;
    let bob = metadata.create_user("bob").await?;
    let events = [
        (100, Some(&alice), "login", None, Some("alice")),
        (200, None, "login.failed", None, Some("bob")),
        (300, Some(&alice), "token.created", None, Some("1")),
        (400, Some(&bob), "repo.created", Some("project"), None),
        (500, Some(&bob), "repo.visibility", Some("project"), None),
        (600, Some(&alice), "token.revoked", None, Some("1")),
        (700, Some(&alice), "login", None, Some("alice")),
        (800, Some(&bob), "repo.created", Some("other"), None),
    ];
    for (at, actor, action, repo, target) in events {
        metadata
            .record_audit(&NewAuditEvent {
                at,
                actor: actor.cloned(),
                action: action.into(),
                repo: repo.map(Into::into),
                target: target.map(Into::into),
                client: Some("127.0.0.1".into()),
                detail: format!("at {at}"),
            })
            .await?;
    }
    let list = |query: AuditQuery| {
        let metadata = metadata.clone();
        async move {
            anyhow::Ok(
                metadata
                    .list_audit(&AuditQuery {
                        limit: if query.limit == 0 { 100 } else { query.limit },
                        ..query
                    })
                    .await?,
            )
        }
    };
    let times = |events: &[AuditEvent]| -> Vec<i64> { events.iter().map(|e| e.at).collect() };

    // Newest first, as recorded.
    let all = list(AuditQuery::default()).await?;
    assert_eq!(times(&all), [800, 700, 600, 500, 400, 300, 200, 100]);
    assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id));
    let by_at = |at: i64| all.iter().find(|e| e.at == at).expect("recorded").clone();
    assert_eq!(
        by_at(200),
        AuditEvent {
            id: by_at(200).id,
            at: 200,
            actor: None,
            action: "login.failed".into(),
            repo: None,
            target: Some("bob".into()),
            client: Some("127.0.0.1".into()),
            detail: "at 200".into(),
        }
    );
    assert_eq!(
        by_at(500),
        AuditEvent {
            id: by_at(500).id,
            at: 500,
            actor: Some("bob".into()),
            action: "repo.visibility".into(),
            repo: Some("project".into()),
            target: None,
            client: Some("127.0.0.1".into()),
            detail: "at 500".into(),
        }
    );

    let action = |action: &str| AuditQuery {
        action: Some(action.into()),
        ..AuditQuery::default()
    };
    // An exact action, or a prefix ending in a dot.
    assert_eq!(times(&list(action("login")).await?), [700, 100]);
    assert_eq!(times(&list(action("login.")).await?), [200]);
    assert_eq!(times(&list(action("token.")).await?), [600, 300]);
    assert_eq!(times(&list(action("token")).await?), [] as [i64; 0]);
    assert_eq!(times(&list(action("repo.created")).await?), [800, 400]);
    assert_eq!(times(&list(action("repo")).await?), [] as [i64; 0]);
    assert_eq!(times(&list(action("repo.")).await?), [800, 500, 400]);

    let actor = |actor: &str| AuditQuery {
        actor: Some(actor.into()),
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(actor("alice")).await?), [700, 600, 300, 100]);
    assert_eq!(times(&list(actor("bob")).await?), [800, 500, 400]);
    assert_eq!(times(&list(actor("carol")).await?), [] as [i64; 0]);

    let repo = |repo: &str| AuditQuery {
        repo: Some(repo.into()),
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(repo("project")).await?), [500, 400]);
    assert_eq!(times(&list(repo("other")).await?), [800]);

    let since = AuditQuery {
        since: Some(500),
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(since).await?), [800, 700, 600, 500]);

    // Paging backwards by id.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(AuditQuery {
            before,
            limit: 3,
            ..AuditQuery::default()
        })
        .await?;
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id);
        pages.push(times(&page));
    }
    assert_eq!(
        pages,
        [vec![800, 700, 600], vec![500, 400, 300], vec![200, 100]]
    );
    let first = AuditQuery {
        limit: 1,
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(first).await?), [800]);

    // All filters combined.
    let combined = AuditQuery {
        action: Some("token.".into()),
        actor: Some("alice".into()),
        since: Some(400),
        before: Some(by_at(700).id),
        limit: 10,
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(combined).await?), [600]);
    let combined = AuditQuery {
        action: Some("repo.".into()),
        actor: Some("bob".into()),
        repo: Some("project".into()),
        before: Some(by_at(500).id),
        limit: 10,
        ..AuditQuery::default()
    };
    assert_eq!(times(&list(combined).await?), [400]);
    Ok(())
}

fn new_webhook(repo: Option<RepoId>, url: &str, events: &[&str], active: bool) -> NewWebhook {
    NewWebhook {
        repo,
        url: url.into(),
        secret: format!("secret of {url}"),
        events: events.iter().map(|event| (*event).to_owned()).collect(),
        active,
        created_by: None,
        now: NOW,
    }
}

/// Attempt `attempt` of event `seq` to `hook`, due at `due_at`.
fn new_delivery(hook: HookId, seq: i64, attempt: u32, due_at: i64) -> NewDelivery {
    NewDelivery {
        hook,
        guid: format!("guid-{hook}-{seq}"),
        event_seq: seq,
        event_id: format!("evt_{seq}"),
        event_type: "branch.created".into(),
        github_event: "create".into(),
        attempt,
        redelivery: false,
        due_at,
        body: format!("{{\"seq\":{seq}}}"),
        created_at: NOW,
    }
}

fn answered(status: u16, at: i64) -> DeliveryOutcome {
    DeliveryOutcome {
        delivered_at: at,
        duration_ms: 42,
        request_headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Hub-Signature-256".into(), "[redacted]".into()),
        ],
        response_status: Some(status),
        response_headers: vec![("Server".into(), "receiver".into())],
        response_body: "thanks".into(),
        error: None,
    }
}

fn unreachable_outcome(at: i64) -> DeliveryOutcome {
    DeliveryOutcome {
        delivered_at: at,
        duration_ms: 10_000,
        request_headers: vec![("Content-Type".into(), "application/json".into())],
        response_status: None,
        response_headers: Vec::new(),
        response_body: String::new(),
        error: Some("connection refused".into()),
    }
}

fn delivery_ids(deliveries: &[Delivery]) -> Vec<i64> {
    deliveries.iter().map(|delivery| delivery.id).collect()
}

fn hook_ids(hooks: &[Webhook]) -> Vec<HookId> {
    hooks.iter().map(|hook| hook.id).collect()
}

async fn webhooks_are_created_listed_updated_and_deleted(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let owner = metadata.create_owner("alice").await?;
    let repo = create_repo(&*metadata, "project").await?;

    let mut wanted = new_webhook(Some(repo.id), "https://a.example/hook", &["push"], true);
    wanted.created_by = Some(owner.id);
    let on_repo = metadata.create_webhook(&wanted).await?;
    assert_eq!(on_repo.repo, Some(repo.id));
    assert_eq!(on_repo.url, "https://a.example/hook");
    assert_eq!(on_repo.secret, "secret of https://a.example/hook");
    assert_eq!(on_repo.events, ["push"]);
    assert!(on_repo.active);
    assert_eq!(on_repo.created_by, Some(owner.id));
    assert_eq!((on_repo.created_at, on_repo.updated_at), (NOW, NOW));
    assert!(on_repo.wants("push") && !on_repo.wants("branch.created"));

    let instance = metadata
        .create_webhook(&new_webhook(None, "https://b.example/", &["*"], false))
        .await?;
    assert_eq!(instance.repo, None);
    assert!(instance.wants("anything"));
    let second_on_repo = metadata
        .create_webhook(&new_webhook(
            Some(repo.id),
            "https://c.example/",
            &["push", "branch.created"],
            true,
        ))
        .await?;
    assert!(on_repo.id < instance.id && instance.id < second_on_repo.id);

    assert_eq!(metadata.webhook(on_repo.id).await?, Some(on_repo.clone()));
    assert_eq!(metadata.webhook(instance.id + 1000).await?, None);
    assert_eq!(
        metadata.list_webhooks(Some(repo.id)).await?,
        [on_repo.clone(), second_on_repo.clone()]
    );
    assert_eq!(
        metadata.list_webhooks(None).await?,
        std::slice::from_ref(&instance)
    );
    let other = create_repo(&*metadata, "other").await?;
    assert_eq!(metadata.list_webhooks(Some(other.id)).await?, []);

    // Only the given fields change.
    let updated = metadata
        .update_webhook(
            on_repo.id,
            &WebhookUpdate {
                events: Some(vec!["*".into()]),
                active: Some(false),
                now: NOW + 5,
                ..WebhookUpdate::default()
            },
        )
        .await?
        .expect("the webhook exists");
    assert_eq!(
        updated,
        Webhook {
            events: vec!["*".into()],
            active: false,
            updated_at: NOW + 5,
            ..on_repo.clone()
        }
    );
    let updated = metadata
        .update_webhook(
            on_repo.id,
            &WebhookUpdate {
                url: Some("https://d.example/".into()),
                secret: Some("rotated".into()),
                now: NOW + 6,
                ..WebhookUpdate::default()
            },
        )
        .await?
        .expect("the webhook exists");
    assert_eq!(
        (
            updated.url.as_str(),
            updated.secret.as_str(),
            updated.active,
            updated.updated_at
        ),
        ("https://d.example/", "rotated", false, NOW + 6)
    );
    assert_eq!(metadata.webhook(on_repo.id).await?, Some(updated));
    assert_eq!(
        metadata
            .update_webhook(
                instance.id + 1000,
                &WebhookUpdate {
                    active: Some(true),
                    now: NOW,
                    ..WebhookUpdate::default()
                }
            )
            .await?,
        None
    );

    assert!(metadata.delete_webhook(on_repo.id).await?);
    assert!(!metadata.delete_webhook(on_repo.id).await?);
    assert_eq!(metadata.webhook(on_repo.id).await?, None);
    assert_eq!(
        hook_ids(&metadata.list_webhooks(Some(repo.id)).await?),
        [second_on_repo.id]
    );

    // A missing repository is named; a deleted creator leaves the webhook.
    let error = metadata
        .create_webhook(&new_webhook(
            Some(RepoId(other.id.0 + 1000)),
            "https://e.example/",
            &["*"],
            true,
        ))
        .await
        .expect_err("no such repository");
    assert!(
        matches!(error, MetadataError::RepositoryNotFound),
        "{error:?}"
    );
    let bob = metadata.create_user("bob").await?;
    let mut by_bob = new_webhook(None, "https://f.example/", &["*"], true);
    by_bob.created_by = Some(bob.id);
    let by_bob = metadata.create_webhook(&by_bob).await?;
    metadata.delete_user(bob.id).await?;
    assert_eq!(
        metadata
            .webhook(by_bob.id)
            .await?
            .map(|hook| hook.created_by),
        Some(None)
    );
    let mut by_nobody = new_webhook(None, "https://g.example/", &["*"], true);
    by_nobody.created_by = Some(bob.id);
    let error = metadata
        .create_webhook(&by_nobody)
        .await
        .expect_err("no such user");
    assert!(matches!(error, MetadataError::UserNotFound), "{error:?}");
    Ok(())
}

async fn webhooks_start_after_the_newest_event(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let before_any = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    assert_eq!(before_any.since_seq, 0);
    // Creating a repository writes a repository.created event.
    create_repo(&*metadata, "first").await?;
    create_repo(&*metadata, "second").await?;
    let newest = metadata.latest_event_seq().await?;
    assert!(newest > 0);
    let hook = metadata
        .create_webhook(&new_webhook(None, "https://b.example/", &["*"], true))
        .await?;
    assert_eq!(hook.since_seq, newest);
    assert_eq!(metadata.webhook(hook.id).await?, Some(hook));
    Ok(())
}

async fn webhooks_for_a_repository_are_its_own_and_the_instance_ones(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "project").await?;
    let other = create_repo(&*metadata, "other").await?;
    let create = |repo: Option<RepoId>, url: &'static str, active: bool| {
        let metadata = Arc::clone(&metadata);
        async move {
            metadata
                .create_webhook(&new_webhook(repo, url, &["*"], active))
                .await
        }
    };
    let instance = create(None, "https://instance.example/", true).await?;
    let own = create(Some(repo.id), "https://own.example/", true).await?;
    create(Some(other.id), "https://other.example/", true).await?;
    create(Some(repo.id), "https://inactive.example/", false).await?;
    create(None, "https://inactive-instance.example/", false).await?;
    let later_own = create(Some(repo.id), "https://later.example/", true).await?;

    let seen = metadata.webhooks_for_repository(repo.id).await?;
    assert_eq!(hook_ids(&seen), [instance.id, own.id, later_own.id]);
    assert_eq!(seen[1], own);

    // Deactivating a webhook takes it out; reactivating brings it back.
    metadata
        .update_webhook(
            own.id,
            &WebhookUpdate {
                active: Some(false),
                now: NOW + 1,
                ..WebhookUpdate::default()
            },
        )
        .await?;
    assert_eq!(
        hook_ids(&metadata.webhooks_for_repository(repo.id).await?),
        [instance.id, later_own.id]
    );
    Ok(())
}

async fn deleting_a_repository_deletes_its_webhooks(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let doomed = create_repo(&*metadata, "doomed").await?;
    let kept = create_repo(&*metadata, "kept").await?;
    let on_doomed = metadata
        .create_webhook(&new_webhook(
            Some(doomed.id),
            "https://a.example/",
            &["*"],
            true,
        ))
        .await?;
    let on_kept = metadata
        .create_webhook(&new_webhook(
            Some(kept.id),
            "https://b.example/",
            &["*"],
            true,
        ))
        .await?;
    let instance = metadata
        .create_webhook(&new_webhook(None, "https://c.example/", &["*"], true))
        .await?;
    let delivery = metadata
        .add_delivery(&new_delivery(on_doomed.id, 1, 1, NOW))
        .await?;

    metadata.delete_repository(doomed.id).await?;
    assert_eq!(metadata.webhook(on_doomed.id).await?, None);
    assert_eq!(metadata.delivery(on_doomed.id, delivery.id).await?, None);
    assert_eq!(metadata.due_deliveries(NOW, 10).await?, []);
    assert_eq!(metadata.list_webhooks(Some(doomed.id)).await?, []);
    assert_eq!(metadata.list_webhooks(Some(kept.id)).await?, [on_kept]);
    assert_eq!(metadata.list_webhooks(None).await?, [instance]);
    Ok(())
}

async fn enqueueing_deliveries_moves_the_cursor_compare_and_swap(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let repo = create_repo(&*metadata, "project").await?;
    // The cursor starts at the newest event when the table is created: the
    // repository's event came later.
    assert_eq!(metadata.webhook_cursor().await?, 0);
    let seq = metadata.latest_event_seq().await?;
    let first = metadata
        .create_webhook(&new_webhook(
            Some(repo.id),
            "https://a.example/",
            &["*"],
            true,
        ))
        .await?;
    let second = metadata
        .create_webhook(&new_webhook(None, "https://b.example/", &["*"], true))
        .await?;

    // Moving without deliveries is fine too.
    assert!(metadata.enqueue_deliveries(0, seq, &[]).await?);
    assert_eq!(metadata.webhook_cursor().await?, seq);

    let batch = [
        new_delivery(first.id, seq + 1, 1, NOW),
        new_delivery(second.id, seq + 1, 1, NOW),
    ];
    assert!(metadata.enqueue_deliveries(seq, seq + 1, &batch).await?);
    assert_eq!(metadata.webhook_cursor().await?, seq + 1);
    // A dispatcher that read the cursor before the move lost the race:
    // nothing of its batch is written.
    let stale = [new_delivery(first.id, seq + 2, 1, NOW)];
    assert!(!metadata.enqueue_deliveries(seq, seq + 2, &stale).await?);
    assert_eq!(metadata.webhook_cursor().await?, seq + 1);

    let due = metadata.due_deliveries(NOW, 10).await?;
    assert_eq!(due.len(), 2);
    for (delivery, wanted) in due.iter().zip(&batch) {
        assert_eq!(delivery.hook, wanted.hook);
        assert_eq!(delivery.guid, wanted.guid);
        assert_eq!(delivery.event_seq, seq + 1);
        assert_eq!(delivery.event_id, wanted.event_id);
        assert_eq!(delivery.event_type, "branch.created");
        assert_eq!(delivery.github_event, "create");
        assert_eq!(delivery.attempt, 1);
        assert!(!delivery.redelivery);
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert_eq!(delivery.due_at, NOW);
        assert_eq!(delivery.created_at, NOW);
        assert_eq!(delivery.body, wanted.body);
        assert_eq!(delivery.outcome, None);
    }
    assert_eq!(metadata.deliveries(first.id, None, 10).await?.len(), 1);

    // A delivery for a webhook deleted meanwhile is dropped, not an error.
    metadata.delete_webhook(second.id).await?;
    let after_delete = [
        new_delivery(first.id, seq + 2, 1, NOW),
        new_delivery(second.id, seq + 2, 1, NOW),
    ];
    assert!(
        metadata
            .enqueue_deliveries(seq + 1, seq + 2, &after_delete)
            .await?
    );
    let due = metadata.due_deliveries(NOW, 10).await?;
    assert_eq!(
        due.iter()
            .map(|delivery| (delivery.hook, delivery.event_seq))
            .collect::<Vec<_>>(),
        [(first.id, seq + 1), (first.id, seq + 2)]
    );
    Ok(())
}

async fn due_deliveries_are_pending_and_due_oldest_first(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let hook = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    let late = metadata
        .add_delivery(&new_delivery(hook.id, 1, 1, NOW + 60))
        .await?;
    let early = metadata
        .add_delivery(&new_delivery(hook.id, 2, 1, NOW))
        .await?;
    let same_time = metadata
        .add_delivery(&new_delivery(hook.id, 3, 1, NOW))
        .await?;
    let finished = metadata
        .add_delivery(&new_delivery(hook.id, 4, 1, NOW - 60))
        .await?;
    assert!(
        metadata
            .finish_delivery(finished.id, &answered(200, NOW - 59), None)
            .await?
    );

    assert_eq!(metadata.due_deliveries(NOW - 1, 10).await?, []);
    assert_eq!(
        delivery_ids(&metadata.due_deliveries(NOW, 10).await?),
        [early.id, same_time.id]
    );
    assert_eq!(
        delivery_ids(&metadata.due_deliveries(NOW + 60, 10).await?),
        [early.id, same_time.id, late.id]
    );
    assert_eq!(
        delivery_ids(&metadata.due_deliveries(NOW + 60, 1).await?),
        [early.id]
    );
    Ok(())
}

async fn finishing_a_delivery_records_its_outcome_once_and_schedules_the_retry(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let hook = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    let first = metadata
        .add_delivery(&new_delivery(hook.id, 7, 1, NOW))
        .await?;

    // Unreachable: failed, and the retry is scheduled in the same call.
    let retry = new_delivery(hook.id, 7, 2, NOW + 30);
    let outcome = unreachable_outcome(NOW + 10);
    assert!(
        metadata
            .finish_delivery(first.id, &outcome, Some(&retry))
            .await?
    );
    let recorded = metadata
        .delivery(hook.id, first.id)
        .await?
        .expect("the delivery exists");
    assert_eq!(recorded.status, DeliveryStatus::Failed);
    assert_eq!(recorded.outcome, Some(outcome.clone()));
    assert_eq!(recorded.attempt, 1);
    // Only once: a second outcome (another dispatcher) is refused, and its
    // retry is not scheduled.
    let again = new_delivery(hook.id, 7, 3, NOW + 31);
    assert!(
        !metadata
            .finish_delivery(first.id, &answered(200, NOW + 11), Some(&again))
            .await?
    );
    assert_eq!(
        metadata.delivery(hook.id, first.id).await?,
        Some(recorded.clone())
    );

    assert_eq!(metadata.due_deliveries(NOW + 29, 10).await?, []);
    let due = metadata.due_deliveries(NOW + 30, 10).await?;
    assert_eq!(due.len(), 1);
    let second = &due[0];
    assert_eq!(
        (second.attempt, second.guid.as_str(), second.due_at),
        (2, first.guid.as_str(), NOW + 30)
    );
    assert_eq!(second.status, DeliveryStatus::Pending);

    // Answered 2xx: succeeded, with what was sent and received.
    let outcome = answered(204, NOW + 31);
    assert!(metadata.finish_delivery(second.id, &outcome, None).await?);
    let recorded = metadata
        .delivery(hook.id, second.id)
        .await?
        .expect("the delivery exists");
    assert_eq!(recorded.status, DeliveryStatus::Succeeded);
    assert_eq!(recorded.outcome, Some(outcome));
    assert_eq!(metadata.due_deliveries(NOW + 1000, 10).await?, []);

    // Answered otherwise: failed, with the response kept.
    let third = metadata
        .add_delivery(&new_delivery(hook.id, 8, 1, NOW))
        .await?;
    let outcome = answered(500, NOW + 40);
    assert!(metadata.finish_delivery(third.id, &outcome, None).await?);
    let recorded = metadata
        .delivery(hook.id, third.id)
        .await?
        .expect("the delivery exists");
    assert_eq!(recorded.status, DeliveryStatus::Failed);
    assert_eq!(recorded.outcome, Some(outcome));

    assert!(
        !metadata
            .finish_delivery(third.id + 1000, &answered(200, NOW), None)
            .await?
    );
    Ok(())
}

async fn the_delivery_log_pages_newest_first_per_webhook(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let hook = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    let other = metadata
        .create_webhook(&new_webhook(None, "https://b.example/", &["*"], true))
        .await?;
    let mut ids = Vec::new();
    for seq in 1..=5 {
        ids.push(
            metadata
                .add_delivery(&new_delivery(hook.id, seq, 1, NOW))
                .await?
                .id,
        );
        metadata
            .add_delivery(&new_delivery(other.id, seq, 1, NOW))
            .await?;
    }
    // A manual redelivery: a new attempt with the same guid.
    let redelivery = NewDelivery {
        redelivery: true,
        attempt: 2,
        ..new_delivery(hook.id, 3, 1, NOW + 100)
    };
    let added = metadata.add_delivery(&redelivery).await?;
    assert!(added.redelivery);
    assert_eq!(added.attempt, 2);
    assert_eq!(added.guid, format!("guid-{}-3", hook.id));
    assert_eq!(added.status, DeliveryStatus::Pending);
    assert_eq!(added.due_at, NOW + 100);
    assert_eq!(added.outcome, None);
    assert_eq!(
        metadata.delivery(hook.id, added.id).await?,
        Some(added.clone())
    );
    ids.push(added.id);

    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    let page = metadata.deliveries(hook.id, None, 4).await?;
    assert_eq!(delivery_ids(&page), newest_first[..4]);
    let next = metadata.deliveries(hook.id, Some(page[3].id), 4).await?;
    assert_eq!(delivery_ids(&next), newest_first[4..]);
    assert_eq!(metadata.deliveries(hook.id, Some(ids[0]), 4).await?, []);
    assert!(
        metadata
            .deliveries(other.id, None, 10)
            .await?
            .iter()
            .all(|delivery| delivery.hook == other.id)
    );

    // Another webhook's delivery is not found through this one.
    let others = metadata.deliveries(other.id, None, 1).await?;
    assert_eq!(metadata.delivery(hook.id, others[0].id).await?, None);
    assert_eq!(metadata.delivery(other.id, ids[0]).await?, None);
    Ok(())
}

async fn pruning_forgets_finished_deliveries_only(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let hook = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    let old_success = metadata
        .add_delivery(&new_delivery(hook.id, 1, 1, NOW - DAY))
        .await?;
    let old_failure = metadata
        .add_delivery(&new_delivery(hook.id, 2, 1, NOW - DAY))
        .await?;
    let recent = metadata
        .add_delivery(&new_delivery(hook.id, 3, 1, NOW - DAY))
        .await?;
    let old_pending = metadata
        .add_delivery(&new_delivery(hook.id, 4, 1, NOW - DAY))
        .await?;
    metadata
        .finish_delivery(old_success.id, &answered(200, NOW - DAY), None)
        .await?;
    metadata
        .finish_delivery(old_failure.id, &unreachable_outcome(NOW - DAY + 1), None)
        .await?;
    metadata
        .finish_delivery(recent.id, &answered(200, NOW), None)
        .await?;

    assert_eq!(metadata.prune_deliveries(NOW).await?, 2);
    assert_eq!(
        delivery_ids(&metadata.deliveries(hook.id, None, 10).await?),
        [old_pending.id, recent.id]
    );
    assert_eq!(metadata.prune_deliveries(NOW).await?, 0);
    assert_eq!(
        delivery_ids(&metadata.due_deliveries(NOW, 10).await?),
        [old_pending.id]
    );
    Ok(())
}

async fn deleting_a_webhook_deletes_its_deliveries(backend: Backend) -> anyhow::Result<()> {
    let database = backend.fresh_database().await?;
    let metadata = database.open().await?;
    let doomed = metadata
        .create_webhook(&new_webhook(None, "https://a.example/", &["*"], true))
        .await?;
    let kept = metadata
        .create_webhook(&new_webhook(None, "https://b.example/", &["*"], true))
        .await?;
    let finished = metadata
        .add_delivery(&new_delivery(doomed.id, 1, 1, NOW))
        .await?;
    metadata
        .finish_delivery(finished.id, &answered(200, NOW), None)
        .await?;
    let pending = metadata
        .add_delivery(&new_delivery(doomed.id, 2, 1, NOW))
        .await?;
    let other = metadata
        .add_delivery(&new_delivery(kept.id, 2, 1, NOW))
        .await?;

    assert!(metadata.delete_webhook(doomed.id).await?);
    assert_eq!(metadata.deliveries(doomed.id, None, 10).await?, []);
    assert_eq!(metadata.delivery(doomed.id, pending.id).await?, None);
    assert_eq!(
        delivery_ids(&metadata.due_deliveries(NOW, 10).await?),
        [other.id]
    );
    // Its in-flight attempt cannot finish, nor schedule a retry.
    assert!(
        !metadata
            .finish_delivery(
                pending.id,
                &unreachable_outcome(NOW + 1),
                Some(&new_delivery(doomed.id, 2, 2, NOW + 30))
            )
            .await?
    );
    assert_eq!(metadata.deliveries(kept.id, None, 10).await?, [other]);
    Ok(())
}

metadata_suite! {
    refs_read_again_show_pushes_from_other_servers,
    repo_state_counts_ref_changes,
    compaction_replaces_packs_and_retires_them,
    garbage_collection_needs_unmoved_refs_and_rechecks_pushes,
    repositories_are_created_listed_and_found_by_name,
    repository_names_are_unique_regardless_of_case,
    repositories_are_updated_and_renamed,
    deleting_a_repository_removes_its_refs_and_packs,
    ref_updates_are_compare_and_swap,
    peeled_values_are_stored_and_cleared,
    refs_are_sorted_bytewise,
    an_atomic_push_applies_all_or_nothing,
    a_non_atomic_push_applies_what_it_can,
    a_push_that_applies_nothing_records_no_packs,
    packs_are_recorded_once_and_listed_oldest_first,
    a_push_to_a_missing_repository_fails,
    concurrent_pushes_to_one_ref_from_one_store_have_one_winner,
    concurrent_pushes_to_one_ref_from_two_stores_have_one_winner,
    concurrent_pushes_of_conflicting_ref_names_have_one_winner,
    the_owner_is_created_once,
    tokens_are_found_by_hash_with_their_user,
    refs_cannot_be_both_a_file_and_a_directory,
    users_are_created_listed_and_deleted,
    collaborators_are_set_replaced_and_removed,
    tokens_are_listed_and_revoked,
    repositories_keep_their_visibility,
    passwords_are_set_and_cleared,
    sessions_rotate_their_secret_and_detect_reuse,
    sessions_are_revoked_and_go_with_their_user,
    revoking_sessions_ignores_expired_ones,
    events_are_written_with_the_updates_they_describe,
    leases_have_one_holder_until_they_expire,
    repository_changes_are_events,
    invitations_are_listed_and_accepted_once,
    expired_and_revoked_invitations_are_refused,
    a_refused_acceptance_changes_nothing,
    deleting_a_repository_removes_its_pending_invitations,
    identities_are_linked_once,
    login_flows_are_taken_once,
    signing_keys_are_kept_newest_first,
    audit_events_are_recorded_and_filtered,
    webhooks_are_created_listed_updated_and_deleted,
    webhooks_start_after_the_newest_event,
    webhooks_for_a_repository_are_its_own_and_the_instance_ones,
    deleting_a_repository_deletes_its_webhooks,
    enqueueing_deliveries_moves_the_cursor_compare_and_swap,
    due_deliveries_are_pending_and_due_oldest_first,
    finishing_a_delivery_records_its_outcome_once_and_schedules_the_retry,
    the_delivery_log_pages_newest_first_per_webhook,
    pruning_forgets_finished_deliveries_only,
    deleting_a_webhook_deletes_its_deliveries,
}
