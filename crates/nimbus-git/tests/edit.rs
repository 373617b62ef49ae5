//! Commits built on the server (`nimbus_git::edit`) checked with real git:
//! the pack is indexed into the fixture repository, which must pass
//! `git fsck --strict`, and `git diff --name-status` between the parent
//! and the new commit must be exactly the requested change. Then the whole
//! push path of `GitService::commit_edit` over SQLite and a local object
//! store: the branch moves, a `push` event is written, and a stale parent
//! is a conflict that changes nothing.

use gix_hash::ObjectId;
use nimbus_git::edit::{
    self, BuiltCommit, Change, CommitEditError, CommitRequest, EditError, Identity,
};
use nimbus_git::objects::{ObjectDb, Objects};
use nimbus_git::receive_pack::ingest::IngestLimits;
use nimbus_git::service::{GitService, GitServiceConfig};
use nimbus_store::{LocalObjectStore, PackCache, SqliteMetadata};
use nimbus_types::events::{EventActor, EventData};
use nimbus_types::metadata::MetadataStore;
use nimbus_types::{NewRepository, RefName, RepoName, Visibility};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const FIXTURE: &str = r#"
set -euo pipefail
mkdir -p src/deep/inner single
printf 'hello\n' > README.md
printf 'fn a() {}\n' > src/deep/inner/a.rs
printf 'b\n' > src/deep/b.txt
printf 'only\n' > single/only.txt
printf '#!/bin/sh\necho hi\n' > tool.sh
chmod +x tool.sh
ln -s README.md link
git add -A
GIT_AUTHOR_DATE="1700000000 +0000" GIT_COMMITTER_DATE="1700000000 +0000" git commit -q -m initial
git repack -adq
"#;

struct Repo {
    _dir: tempfile::TempDir,
    work: PathBuf,
    home: PathBuf,
    head: ObjectId,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let repo = Repo {
            _dir: dir,
            work,
            home,
            head: ObjectId::null(gix_hash::Kind::Sha1),
        };
        std::fs::create_dir_all(&repo.work).expect("work");
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Fixture"]);
        repo.git(&["config", "user.email", "fixture@example.com"]);
        let status = repo
            .command("bash")
            .args(["-c", FIXTURE])
            .status()
            .expect("bash");
        assert!(status.success(), "fixture script failed");
        let head = ObjectId::from_hex(repo.git(&["rev-parse", "HEAD"]).trim().as_bytes())
            .expect("head id");
        Repo { head, ..repo }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &self.home);
        command
    }

    fn git(&self, args: &[&str]) -> String {
        let output = self.command("git").args(args).output().expect("git");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    fn objects(&self) -> Objects {
        let db = ObjectDb::open(&self.work.join(".git/objects")).expect("open objects");
        Objects::new(db.handle())
    }

    /// Build `changes` on HEAD.
    fn build(&self, changes: Vec<Change>) -> Result<BuiltCommit, EditError> {
        edit::build_commit(&mut self.objects(), &request(self.head, changes))
    }

    /// Index the built pack into the repository and check it with fsck.
    fn index(&self, built: &BuiltCommit) {
        let pack = built.pack().expect("pack");
        let mut child = self
            .command("git")
            .args(["index-pack", "--stdin", "--strict"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("index-pack");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&pack)
            .expect("write pack");
        assert!(child.wait().expect("wait").success(), "index-pack failed");
        self.git(&["fsck", "--strict", "--no-dangling"]);
        let commit = built.commit.to_string();
        assert_eq!(self.git(&["cat-file", "-t", &commit]).trim(), "commit");
    }

    fn name_status(&self, commit: ObjectId) -> String {
        self.git(&[
            "diff",
            "--no-renames",
            "--name-status",
            &self.head.to_string(),
            &commit.to_string(),
        ])
    }
}

fn author() -> Identity {
    Identity {
        name: "Ada Editor".to_owned(),
        email: "ada@example.com".to_owned(),
        time: 1_700_000_500,
        offset_seconds: 3600,
    }
}

fn request(parent: ObjectId, changes: Vec<Change>) -> CommitRequest {
    CommitRequest {
        parent,
        changes,
        message: "Edit in the browser\r\n\r\nWith a body.  \n".to_owned(),
        author: author(),
    }
}

fn write(path: &str, content: &str) -> Change {
    Change::Write {
        path: path.to_owned(),
        content: content.as_bytes().to_vec(),
    }
}

fn delete(path: &str) -> Change {
    Change::Delete {
        path: path.to_owned(),
    }
}

#[test]
fn edit_in_nested_directory() {
    let repo = Repo::new();
    let built = repo
        .build(vec![write("src/deep/inner/a.rs", "fn a() { 1 }\n")])
        .expect("build");
    // One blob, three trees (inner, deep, src, root), the commit.
    assert_eq!(built.objects.len(), 6);
    repo.index(&built);
    assert_eq!(repo.name_status(built.commit), "M\tsrc/deep/inner/a.rs\n");
    let commit = built.commit.to_string();
    assert_eq!(
        repo.git(&["show", &format!("{commit}:src/deep/inner/a.rs")]),
        "fn a() { 1 }\n"
    );
    let shown = repo.git(&["cat-file", "-p", &commit]);
    let expected = format!(
        "tree {}\nparent {}\nauthor Ada Editor <ada@example.com> 1700000500 +0100\n\
         committer Ada Editor <ada@example.com> 1700000500 +0100\n\n\
         Edit in the browser\n\nWith a body.\n",
        built.tree, repo.head
    );
    assert_eq!(shown, expected);
    assert_eq!(
        repo.git(&["rev-parse", &format!("{commit}^{{tree}}")])
            .trim(),
        built.tree.to_string()
    );
}

#[test]
fn create_file_in_new_directories() {
    let repo = Repo::new();
    let built = repo
        .build(vec![write("src/new/dir/c.txt", "new\n")])
        .expect("build");
    repo.index(&built);
    assert_eq!(repo.name_status(built.commit), "A\tsrc/new/dir/c.txt\n");
    let listing = repo.git(&["ls-tree", "-r", &built.commit.to_string(), "src/new"]);
    assert!(listing.starts_with("100644 blob "), "{listing}");
}

#[test]
fn deleting_the_only_file_removes_the_directory() {
    let repo = Repo::new();
    let built = repo.build(vec![delete("single/only.txt")]).expect("build");
    // No blob: the root tree and the commit.
    assert_eq!(built.objects.len(), 2);
    repo.index(&built);
    assert_eq!(repo.name_status(built.commit), "D\tsingle/only.txt\n");
    let top = repo.git(&["ls-tree", "--name-only", &built.commit.to_string()]);
    assert_eq!(top, "README.md\nlink\nsrc\ntool.sh\n");
}

#[test]
fn executable_keeps_its_mode() {
    let repo = Repo::new();
    let built = repo
        .build(vec![write("tool.sh", "#!/bin/sh\necho bye\n")])
        .expect("build");
    repo.index(&built);
    assert_eq!(repo.name_status(built.commit), "M\ttool.sh\n");
    let listing = repo.git(&["ls-tree", &built.commit.to_string(), "tool.sh"]);
    assert!(listing.starts_with("100755 blob "), "{listing}");
}

#[test]
fn several_changes_in_one_commit() {
    let repo = Repo::new();
    let built = repo
        .build(vec![
            write("README.md", "hello again\n"),
            delete("src/deep/b.txt"),
            write("docs/new.md", "first\n"),
            // The content of an existing blob: not packed again.
            write("docs/copy.md", "only\n"),
        ])
        .expect("build");
    repo.index(&built);
    assert_eq!(
        repo.name_status(built.commit),
        "M\tREADME.md\nA\tdocs/copy.md\nA\tdocs/new.md\nD\tsrc/deep/b.txt\n"
    );
    let blobs = built
        .objects
        .iter()
        .filter(|o| o.kind == gix_object::Kind::Blob)
        .count();
    assert_eq!(blobs, 2);
}

#[test]
fn invalid_requests_are_refused() {
    let repo = Repo::new();
    let check = |changes: Vec<Change>, expected: fn(&EditError) -> bool| {
        let error = repo.build(changes).expect_err("must be refused");
        assert!(expected(&error), "unexpected error {error:?}");
    };
    for path in [
        "",
        "/a",
        "a/",
        "a//b",
        "./a",
        "a/../b",
        "..",
        ".git/config",
        "src/.Git/x",
        "a\0b",
    ] {
        check(vec![write(path, "x")], |e| {
            matches!(e, EditError::InvalidPath { .. })
        });
    }
    check(vec![write(&"a".repeat(4097), "x")], |e| {
        matches!(e, EditError::InvalidPath { .. })
    });
    check(vec![write("src/deep", "x")], |e| {
        matches!(e, EditError::IsDirectory { .. })
    });
    check(vec![write("README.md/x", "x")], |e| {
        matches!(e, EditError::ParentIsFile { .. })
    });
    check(vec![write("link", "x")], |e| {
        matches!(e, EditError::NotAFile { .. })
    });
    check(vec![delete("missing.txt")], |e| {
        matches!(e, EditError::NotFound { .. })
    });
    check(vec![delete("nope/missing.txt")], |e| {
        matches!(e, EditError::NotFound { .. })
    });
    check(vec![delete("src")], |e| {
        matches!(e, EditError::IsDirectory { .. })
    });
    check(vec![write("README.md", "hello\n")], |e| {
        matches!(e, EditError::NoChange)
    });
    check(vec![write("x", "1"), delete("x")], |e| {
        matches!(e, EditError::DuplicatePath { .. })
    });
    check(vec![], |e| matches!(e, EditError::NoChanges));
    check(
        (0..101).map(|i| write(&format!("f{i}"), "x")).collect(),
        |e| matches!(e, EditError::TooManyChanges { .. }),
    );
    check(
        vec![Change::Write {
            path: "big".to_owned(),
            content: vec![b'a'; edit::MAX_CONTENT_BYTES + 1],
        }],
        |e| matches!(e, EditError::ContentTooLarge { .. }),
    );

    let mut objects = repo.objects();
    let mut empty_message = request(repo.head, vec![write("a", "x")]);
    empty_message.message = " \n\n".to_owned();
    assert!(matches!(
        edit::build_commit(&mut objects, &empty_message),
        Err(EditError::EmptyMessage)
    ));
    let mut bad_author = request(repo.head, vec![write("a", "x")]);
    bad_author.author.email = "a>b".to_owned();
    assert!(matches!(
        edit::build_commit(&mut objects, &bad_author),
        Err(EditError::BadAuthor { .. })
    ));
    let missing = request(ObjectId::from_hex(&[b'1'; 40]).expect("id"), vec![]);
    let missing = CommitRequest {
        changes: vec![write("a", "x")],
        ..missing
    };
    assert!(matches!(
        edit::build_commit(&mut objects, &missing),
        Err(EditError::MissingParent { .. })
    ));
}

/// A git service over SQLite and a local object store in `dir`.
async fn service(dir: &Path) -> (GitService, Arc<SqliteMetadata>) {
    let meta = Arc::new(SqliteMetadata::in_memory().await.expect("sqlite"));
    let store = Arc::new(LocalObjectStore::new(dir.join("objects")));
    let cache = PackCache::new(dir.join("cache"), store.clone(), 1 << 30).expect("cache");
    let service = GitService::new(
        meta.clone(),
        store,
        cache,
        GitServiceConfig {
            staging_dir: dir.join("tmp"),
            ingest_limits: IngestLimits::default(),
            clone_packs: None,
            bundle_uri: None,
            reach: None,
        },
    );
    (service, meta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_edit_takes_the_push_path() {
    let fixture = Repo::new();
    let pack = fixture
        .command("git")
        .args(["pack-objects", "--all", "--stdout"])
        .stdin(Stdio::null())
        .output()
        .expect("pack-objects");
    assert!(pack.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, meta) = service(dir.path()).await;
    let repo = meta
        .create_repository(&NewRepository {
            name: RepoName::new("edited").expect("name"),
            visibility: Visibility::Private,
            default_branch: "main".to_owned(),
        })
        .await
        .expect("create");
    let main = RefName::new(b"refs/heads/main").expect("ref name");
    service
        .import_pack(
            &repo,
            std::io::Cursor::new(pack.stdout),
            vec![(main.clone(), fixture.head)],
        )
        .await
        .expect("import");
    let seq = meta.latest_event_seq().await.expect("seq");
    let actor = EventActor {
        id: 7,
        name: "ada".to_owned(),
    };

    let new = service
        .commit_edit(
            &repo,
            Some(actor.clone()),
            "main",
            request(fixture.head, vec![write("src/deep/inner/a.rs", "edited\n")]),
        )
        .await
        .expect("commit");
    let refs = meta.refs(repo.id).await.expect("refs");
    let branch = refs.iter().find(|r| r.name == main).expect("main");
    assert_eq!(branch.target, new);
    let events = meta.events_after(seq, 100).await.expect("events");
    let push = events
        .iter()
        .find(|e| e.event.data.kind() == "push")
        .expect("a push event");
    assert_eq!(push.event.actor, Some(actor.clone()));
    let EventData::Push {
        ref_name,
        before,
        after,
        commits,
        ..
    } = &push.event.data
    else {
        unreachable!()
    };
    assert_eq!(ref_name, "refs/heads/main");
    assert_eq!(before, &fixture.head.to_string());
    assert_eq!(after, &new.to_string());
    assert_eq!(commits.len(), 1);

    // The stored objects are readable: the new commit's parent is HEAD.
    let snapshot = service.snapshot(&repo).await.expect("snapshot");
    let mut objects = Objects::new(snapshot.db.handle());
    let info = objects.expect_commit(&new).expect("new commit stored");
    assert_eq!(info.parents, vec![fixture.head]);
    drop(objects);
    drop(snapshot);

    // A page loaded before that commit: a conflict, and nothing changes.
    let stale = service
        .commit_edit(
            &repo,
            Some(actor.clone()),
            "main",
            request(fixture.head, vec![write("README.md", "other\n")]),
        )
        .await;
    match stale {
        Err(CommitEditError::Conflict { current }) => assert_eq!(current, Some(new)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let missing_branch = service
        .commit_edit(
            &repo,
            None,
            "nope",
            request(new, vec![write("README.md", "other\n")]),
        )
        .await;
    assert!(matches!(
        missing_branch,
        Err(CommitEditError::Conflict { current: None })
    ));
    assert!(matches!(
        service
            .commit_edit(&repo, None, "bad..name", request(new, vec![]))
            .await,
        Err(CommitEditError::BadBranch { .. })
    ));
    let after = meta.refs(repo.id).await.expect("refs");
    assert_eq!(after, refs);
    let events = meta.events_after(seq, 100).await.expect("events");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.data.kind() == "push")
            .count(),
        1
    );
}
