//! A smoke run of the benchmark tool: every operation once on the small scale, against the debug build of
//! Nimbus that the workspace's tests use, with `--verify` (each clone `git fsck`ed). It checks that the
//! tool works end to end and that both servers answered every operation correctly; it never looks at
//! timings.

use std::path::PathBuf;
use std::process::Command;

/// `target/debug/nimbus`, built by `cargo test --workspace` for the `nimbus` package's own tests.
fn nimbus_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test's own path");
    let profile_directory = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let binary = profile_directory.join("nimbus");
    assert!(
        binary.is_file(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) or `cargo build -p nimbus` first",
        binary.display()
    );
    binary
}

#[test]
fn every_operation_runs_once_on_the_small_scale() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let out = directory.path().join("BENCHMARKS.md");
    std::fs::write(&out, "# Benchmarks\n\nKept as it is.\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus-bench"))
        .arg("--nimbus")
        .arg(nimbus_binary())
        .args([
            "--scale", "small", "--runs", "1", "--refs", "1000", "--verify",
        ])
        .arg("--cache")
        .arg(directory.path().join("cache"))
        .arg("--work")
        .arg(directory.path().join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running nimbus-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nimbus-bench failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report");
    assert!(
        report.starts_with("# Benchmarks\n\nKept as it is.\n"),
        "{report}"
    );
    for operation in [
        "full clone, clone pack cache empty",
        "full clone, clone pack cache warm",
        "shallow clone (--depth 1)",
        "partial clone (blob:none)",
        "full clone with transfer.bundleURI",
        "fetch after 1 new commit",
        "fetch after 100 new commits",
        "no-op fetch",
        "ls-remote (1,000 tags)",
        "push 1 commit",
        "push 1,000 commits",
        "initial push (whole repository)",
        "16 concurrent full clones",
    ] {
        let row = report
            .lines()
            .find(|line| line.starts_with(&format!("| {operation} |")))
            .unwrap_or_else(|| panic!("no row for {operation:?} in\n{report}"));
        // Six columns, each a pair of numbers or a ratio triple.
        let cells: Vec<&str> = row
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells.len(), 7, "{row}");
        for cell in &cells[1..] {
            for number in cell.split('/') {
                let number = number.trim().trim_matches('*');
                assert!(
                    number.parse::<f64>().is_ok_and(f64::is_finite),
                    "{number:?} in {row}"
                );
            }
        }
    }
    assert!(
        report.contains(
            "Memory bound: Nimbus's peak RSS during \"full clone, clone pack cache empty\""
        ),
        "{report}"
    );
    assert!(report.contains("Machine: "), "{report}");
    // Each operation was logged once per server.
    assert_eq!(
        stderr.matches("nimbus-bench: small clone run 1:").count(),
        2,
        "{stderr}"
    );
}
