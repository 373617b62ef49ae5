//! The `nimbus repo` command line: create, list, rename and delete work on
//! the data directory, and mistakes get a message naming the problem.

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
