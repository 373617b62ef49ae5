//! The `nimbus repo`, `user`, `token` and `collaborator` command line:
//! create, list, rename and delete work on the data directory, and mistakes
//! get a message naming the problem.

use std::path::Path;
use std::process::{Command, Output};

fn nimbus(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NIMBUS_LOG", "warn")
        .output()
        .expect("run nimbus")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = nimbus(data_dir, args);
    assert!(
        output.status.success(),
        "nimbus {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(data_dir: &Path, args: &[&str]) -> String {
    let output = nimbus(data_dir, args);
    assert!(!output.status.success(), "nimbus {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn repositories_are_created_listed_renamed_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    assert_eq!(
        ok(data, &["repo", "create", "alpha"]),
        "created public repository 'alpha' (default branch main)\n"
    );
    assert_eq!(
        ok(
            data,
            &[
                "repo",
                "create",
                "beta",
                "--private",
                "--default-branch",
                "trunk"
            ]
        ),
        "created private repository 'beta' (default branch trunk)\n"
    );
    assert_eq!(
        ok(data, &["repo", "list"]),
        "alpha\tpublic\tmain\nbeta\tprivate\ttrunk\n"
    );
    assert_eq!(
        ok(data, &["repo", "rename", "alpha", "gamma"]),
        "renamed 'alpha' to 'gamma'\n"
    );
    assert_eq!(
        ok(data, &["repo", "delete", "beta"]),
        "deleted repository 'beta'\n"
    );
    assert_eq!(ok(data, &["repo", "list"]), "gamma\tpublic\tmain\n");
}

#[test]
fn users_tokens_and_collaborators_are_managed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    assert_eq!(
        ok(
            data,
            &["repo", "create", "secret", "--visibility", "hidden"]
        ),
        "created hidden repository 'secret' (default branch main)\n"
    );
    assert_eq!(
        ok(data, &["user", "add", "alice"]),
        "created user 'alice'\n"
    );
    ok(data, &["user", "add", "bob"]);
    assert_eq!(ok(data, &["user", "list"]), "alice\tuser\nbob\tuser\n");
    assert!(fails(data, &["user", "add", "alice"]).contains("already exists"));
    assert!(fails(data, &["user", "add", "a/b"]).contains("user name"));

    assert_eq!(
        ok(
            data,
            &[
                "collaborator",
                "add",
                "secret",
                "alice",
                "--access",
                "write"
            ]
        ),
        "'alice' has write access to 'secret'\n"
    );
    ok(data, &["collaborator", "add", "secret", "bob"]);
    assert_eq!(
        ok(data, &["collaborator", "list", "secret"]),
        "alice\twrite\nbob\tread\n"
    );
    assert!(
        fails(
            data,
            &["collaborator", "add", "secret", "bob", "--access", "owner"]
        )
        .contains("unknown access level")
    );
    ok(data, &["collaborator", "remove", "secret", "bob"]);
    assert_eq!(
        ok(data, &["collaborator", "list", "secret"]),
        "alice\twrite\n"
    );

    let output = nimbus(
        data,
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scopes",
            "repo:read,repo:write",
            "--expires",
            "30d",
            "--description",
            "laptop",
        ],
    );
    assert!(output.status.success());
    let secret = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(secret.starts_with("nimbus_"), "{secret}");
    let listing = ok(data, &["token", "list", "--user", "alice"]);
    assert!(listing.contains("repo:read,repo:write"), "{listing}");
    assert!(listing.contains("laptop"), "{listing}");
    assert!(!listing.contains(&secret), "the listing shows the secret");
    let id = listing
        .lines()
        .nth(1)
        .and_then(|line| line.split('\t').next())
        .expect("a token line")
        .to_owned();
    assert!(
        fails(
            data,
            &["token", "create", "--user", "alice", "--scopes", "root"]
        )
        .contains("unknown scope")
    );
    assert!(fails(data, &["token", "revoke", "--user", "bob", &id]).contains("no token"));
    assert_eq!(
        ok(data, &["token", "revoke", "--user", "alice", &id]),
        format!("revoked token {id} of 'alice'\n")
    );
    let listing = ok(data, &["token", "list", "--user", "alice"]);
    let revoked = listing.lines().nth(1).expect("a token line");
    assert_ne!(revoked.split('\t').nth(5), Some("-"), "{listing}");

    assert_eq!(
        ok(data, &["user", "remove", "alice"]),
        "removed user 'alice'\n"
    );
    assert_eq!(ok(data, &["collaborator", "list", "secret"]), "");
    assert!(fails(data, &["user", "remove", "alice"]).contains("user 'alice' not found"));
}

#[test]
fn mistakes_are_named_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    ok(data, &["repo", "create", "alpha"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["repo", "create", "alpha"],
            "repository \"alpha\" already exists",
        ),
        (&["repo", "create", "ALPHA"], "already exists"),
        (
            &["repo", "create", "bad/name"],
            "only letters, digits, '.', '_' and '-' are allowed",
        ),
        (&["repo", "create", ".hidden"], "must not start with a dot"),
        (&["repo", "create", "x.git"], "must not end in '.git'"),
        (
            &["repo", "create", "ok", "--default-branch", "a..b"],
            "invalid default branch",
        ),
        (
            &["repo", "delete", "missing"],
            "repository 'missing' not found",
        ),
        (&["repo", "rename", "alpha", "a b"], "contains ' '"),
    ];
    for (args, message) in cases {
        let stderr = fails(data, args);
        assert!(stderr.starts_with("nimbus: error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert_eq!(ok(data, &["repo", "list"]), "alpha\tpublic\tmain\n");
}
