//! `nimbus-bench`: Nimbus against `git http-backend`, side by side on the same machine in one run.
//!
//! ```text
//! nimbus-bench --nimbus target/release/nimbus --scale small,medium,large --runs 3 --out docs/BENCHMARKS.md
//! ```
//!
//! For each scale it generates (or reuses) a deterministic repository, starts both servers, pushes the
//! repository to each, then runs every operation of [`operations::Operation::ALL`] `--runs` times,
//! alternating which server goes first, and prints a table of wall time, server CPU and server peak
//! memory as Nimbus / reference ratios. `scripts/bench` builds Nimbus in release mode and runs this.

mod cgi;
mod generate;
mod git;
mod operations;
mod process;
mod report;
mod servers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use generate::Scale;
use operations::{MANY_REFS_REPOSITORY, Operation, REPOSITORY, Setup};
use report::{Row, ScaleReport};
use servers::Server;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks Nimbus against git http-backend on generated repositories.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    /// The Nimbus binary to measure (build it with `--release`).
    #[arg(long)]
    nimbus: Option<PathBuf>,
    /// Comma-separated scales: small (1,000 commits), medium (20,000 commits, 5,000 files), large
    /// (200,000 commits, 10,000 files).
    #[arg(long, value_delimiter = ',', default_value = "small")]
    scale: Vec<String>,
    /// How many times each operation runs on each server.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where generated repositories are kept between runs.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Scratch directory for the servers' data and the clients (emptied first, removed after).
    #[arg(long)]
    work: Option<PathBuf>,
    /// A Markdown file to write each scale's section into (other sections are kept).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these operations (comma-separated keys: clone, shallow, partial, fetch1, fetch100, noop,
    /// ls-remote, push1, push1000, initial-push, concurrent).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// How many tags the repository of the `ls-remote` row has (a multiple of 1,000, at most 10,000).
    #[arg(long, default_value_t = generate::MANY_REFS)]
    refs: usize,
    /// Check every clone with `git fsck` too (slower; the smoke test does).
    #[arg(long)]
    verify: bool,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// The reference server: `git http-backend` behind a CGI server (started by the tool itself).
    #[command(hide = true)]
    CgiServer {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        root: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Internal::CgiServer { listen, root }) = &cli.command {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        return cgi::serve(listener, root, &cgi::http_backend_binary()?);
    }
    let nimbus = cli
        .nimbus
        .clone()
        .context("--nimbus PATH is required (scripts/bench builds one and passes it)")?;
    if !nimbus.is_file() {
        bail!("--nimbus {}: no such file", nimbus.display());
    }
    let scales = cli
        .scale
        .iter()
        .map(|name| Scale::by_name(name))
        .collect::<Result<Vec<_>>>()?;
    let operations = selected(&cli.only)?;
    if cli.refs == 0 || cli.refs % 1000 != 0 || cli.refs > generate::MANY_REFS {
        bail!("--refs must be a multiple of 1,000 between 1,000 and 10,000");
    }
    if cli.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = cli
        .cache
        .clone()
        .unwrap_or_else(|| home.join(".cache/nimbus-bench"));
    let work = cli.work.clone().unwrap_or_else(|| cache.join("work"));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("emptying {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let git = git::Git::new(&work.join("home"))?;
    let machine = machine(&git);
    let tick = 1.0 / process::ticks_per_second() as f64;
    println!("{machine}");
    for scale in scales {
        let report = run_scale(&cli, &git, &nimbus, &cache, &work, scale, &operations)?;
        let section = report.markdown(&machine, tick);
        println!("\n{section}");
        if let Some(out) = &cli.out {
            report::write_section(out, scale.name, &section)?;
        }
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

fn selected(only: &[String]) -> Result<Vec<Operation>> {
    if only.is_empty() {
        return Ok(Operation::ALL.to_vec());
    }
    only.iter()
        .map(|key| {
            Operation::ALL
                .into_iter()
                .find(|operation| operation.key() == key)
                .with_context(|| format!("--only: unknown operation {key:?}"))
        })
        .collect()
}

fn run_scale(
    cli: &Cli,
    git: &git::Git,
    nimbus_binary: &Path,
    cache: &Path,
    work: &Path,
    scale: Scale,
    operations: &[Operation],
) -> Result<ScaleReport> {
    let fixture = generate::fixture(git, cache, scale)?;
    let scale_work = work.join(scale.name);
    std::fs::create_dir_all(&scale_work)?;
    let servers = [
        Server::nimbus(nimbus_binary, &scale_work)?,
        Server::reference(&scale_work)?,
    ];
    let mut notes = vec![format!(
        "Source repository: {} of packs after `git gc`.",
        pack_size(&fixture.source)
    )];
    for server in &servers {
        server.create_repository(git, REPOSITORY)?;
        let start = Instant::now();
        operations::push_everything(git, &fixture.source, &server.url(REPOSITORY))?;
        let pushed = start.elapsed().as_secs_f64();
        let start = Instant::now();
        server.after_initial_push(git, REPOSITORY)?;
        let maintained = start.elapsed().as_secs_f64();
        if operations.contains(&Operation::LsRemote) {
            server.create_repository(git, MANY_REFS_REPOSITORY)?;
            operations::push_many_refs(
                git,
                &fixture.source,
                &server.url(MANY_REFS_REPOSITORY),
                cli.refs,
            )?;
            server.after_initial_push(git, MANY_REFS_REPOSITORY)?;
        }
        notes.push(match server.kind {
            servers::Kind::Nimbus => format!(
                "Setup: the first push to Nimbus took {pushed:.1} s, then `nimbus repo gc` \
                 (one pack and its reachability index, as its servers' periodic maintenance leaves it) {maintained:.1} s."
            ),
            servers::Kind::Reference => format!(
                "Setup: the first push to git http-backend took {pushed:.1} s, then `git gc` \
                 (one pack, bitmaps, commit-graph, as a Gitea-style server's maintenance leaves it) {maintained:.1} s."
            ),
        });
    }
    let setup = Setup {
        git,
        fixture: &fixture,
        scratch: scale_work.join("scratch"),
        verify: cli.verify,
        refs: cli.refs,
    };
    let mut rows = Vec::new();
    for &operation in operations {
        let mut row = Row {
            operation,
            nimbus: Vec::new(),
            reference: Vec::new(),
        };
        for run in 0..cli.runs {
            let order: [&Server; 2] = if run % 2 == 0 {
                [&servers[0], &servers[1]]
            } else {
                [&servers[1], &servers[0]]
            };
            for server in order {
                let sample = operation.run(&setup, server, run).with_context(|| {
                    format!("{} against {}", operation.label(), server.kind.label())
                })?;
                eprintln!(
                    "nimbus-bench: {} {} run {}: {:.3} s wall, {:.2} s CPU, {} MiB ({} MiB anonymous)",
                    scale.name,
                    operation.key(),
                    run + 1,
                    sample.wall,
                    sample.cpu,
                    sample.peak_rss / (1024 * 1024),
                    sample.peak_anon / (1024 * 1024)
                );
                match server.kind {
                    servers::Kind::Nimbus => row.nimbus.push(sample),
                    servers::Kind::Reference => row.reference.push(sample),
                }
            }
        }
        rows.push(row);
    }
    Ok(ScaleReport {
        scale,
        runs: cli.runs,
        refs: cli.refs,
        rows,
        notes,
    })
}

/// The total size of a repository's packs, for the notes.
fn pack_size(repository: &Path) -> String {
    let bytes: u64 = std::fs::read_dir(repository.join("objects/pack"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".pack"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One line about the machine: CPU, cores, memory, kernel, git, and the Nimbus commit.
fn machine(git: &git::Git) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = process::kib_field(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        "MemTotal",
    )
    .map_or_else(
        || "?".to_owned(),
        |kib| format!("{:.0}", kib as f64 / 1024.0 / 1024.0),
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = git.version().unwrap_or_default();
    let commit = git
        .run(
            Some(Path::new(env!("CARGO_MANIFEST_DIR"))),
            ["rev-parse", "--short", "HEAD"],
            [],
        )
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "Machine: {model}, {cores} cores, {memory} GiB memory, Linux {}; {version} (client and reference); \
         Nimbus at commit {commit}; measured {date}.",
        kernel.trim()
    )
}
