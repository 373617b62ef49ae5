//! The two servers under test: Nimbus on its embedded defaults, and `git http-backend` behind the
//! tool's own CGI server; and how one operation against either is measured.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::git::Git;
use crate::process::{self, TreeSampler};

/// The owner token the benchmark's Nimbus runs with.
const TOKEN: &str = "nimbus_bench_owner_token_0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nimbus,
    Reference,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Nimbus => "Nimbus",
            Kind::Reference => "git http-backend",
        }
    }
}

/// What one operation cost one server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Seconds on the client's clock, from the first command to the last one's exit.
    pub wall: f64,
    /// Server CPU seconds (user + system), background work that followed included.
    pub cpu: f64,
    /// Server peak resident memory during the operation, in bytes.
    pub peak_rss: u64,
    /// Server peak anonymous memory (resident, not file-backed) during the operation, sampled, in
    /// bytes.
    pub peak_anon: u64,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    child: Child,
    /// `host:port` on loopback.
    address: String,
    /// The reference's project root (its bare repositories); Nimbus's data directory.
    root: PathBuf,
    /// The `nimbus` binary, for its command line (Nimbus only).
    binary: Option<PathBuf>,
    ticks_per_second: f64,
}

fn free_address() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn wait_until_listening(child: &mut Child, address: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {address} within a minute")
}

impl Server {
    /// Starts `nimbus serve` on a fresh data directory under `work`.
    pub fn nimbus(binary: &Path, work: &Path) -> Result<Server> {
        let data = work.join("nimbus-data");
        std::fs::create_dir_all(&data)?;
        let address = free_address()?;
        let mut child = Command::new(binary)
            .arg("serve")
            .env("NIMBUS_DATA_DIR", &data)
            .env("NIMBUS_OWNER_TOKEN", TOKEN)
            .env("NIMBUS_LISTEN", &address)
            .env("NIMBUS_LOG", "warn")
            // Bundles are written by the bundle row itself: one written after the initial push
            // would be background work counted in that row.
            .env("NIMBUS_BUNDLE_REFRESH", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        wait_until_listening(&mut child, &address, "nimbus serve")?;
        Ok(Server {
            kind: Kind::Nimbus,
            child,
            address,
            root: data,
            binary: Some(binary.to_owned()),
            ticks_per_second: process::ticks_per_second() as f64,
        })
    }

    /// Starts this tool's CGI server (`nimbus-bench cgi-server`) on a fresh project root under `work`.
    pub fn reference(work: &Path) -> Result<Server> {
        let root = work.join("reference");
        std::fs::create_dir_all(&root)?;
        let address = free_address()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["cgi-server", "--listen", &address, "--root"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the CGI server")?;
        wait_until_listening(&mut child, &address, "the CGI server")?;
        Ok(Server {
            kind: Kind::Reference,
            child,
            address,
            root,
            binary: None,
            ticks_per_second: process::ticks_per_second() as f64,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The clone URL of repository `name`, with credentials.
    pub fn url(&self, name: &str) -> String {
        match self.kind {
            Kind::Nimbus => format!("http://bench:{TOKEN}@{}/{name}.git", self.address),
            Kind::Reference => format!("http://{}/{name}.git", self.address),
        }
    }

    /// Creates an empty repository whose default branch is `main`.
    pub fn create_repository(&self, git: &Git, name: &str) -> Result<()> {
        match self.kind {
            Kind::Nimbus => {
                let body = serde_json::json!({ "name": name, "default_branch": "main" });
                ureq::post(format!("http://{}/api/v1/repos", self.address))
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .send_json(&body)
                    .with_context(|| format!("creating {name} on Nimbus"))?;
            }
            Kind::Reference => {
                let path = self.root.join(format!("{name}.git"));
                git.run(
                    None,
                    ["init", "-q", "--bare", "-b", "main"],
                    [path.as_os_str()],
                )?;
                // What a server admin sets for partial clones and fetches by commit id (Gitea does
                // the same); `git gc --auto` off so no pause lands in the middle of a measurement.
                for (key, value) in [
                    ("uploadpack.allowFilter", "true"),
                    ("uploadpack.allowAnySHA1InWant", "true"),
                    ("receive.autogc", "false"),
                ] {
                    git.run(Some(&path), ["config", key, value], [])?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a repository made by `create_repository`.
    pub fn delete_repository(&self, name: &str) -> Result<()> {
        match self.kind {
            Kind::Nimbus => {
                ureq::delete(format!("http://{}/api/v1/repos/{name}", self.address))
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .call()
                    .with_context(|| format!("deleting {name} on Nimbus"))?;
            }
            Kind::Reference => {
                std::fs::remove_dir_all(self.root.join(format!("{name}.git")))?;
            }
        }
        Ok(())
    }

    /// Maintenance after the repository's first push, as each server's operator would have it:
    /// `git gc` for the reference (one pack, reachability bitmaps and a commit-graph, since bare
    /// repositories write bitmaps by default); `nimbus repo gc` for Nimbus (one pack and its
    /// reachability index), which its servers also run every `NIMBUS_GC_INTERVAL`.
    pub fn after_initial_push(&self, git: &Git, name: &str) -> Result<()> {
        match self.kind {
            Kind::Reference => {
                let path = self.root.join(format!("{name}.git"));
                git.run(Some(&path), ["gc", "-q"], [])?;
            }
            Kind::Nimbus => self.nimbus_command(&["repo", "gc", name])?,
        }
        Ok(())
    }

    /// Runs the `nimbus` command line on this server's data directory (Nimbus only).
    fn nimbus_command(&self, args: &[&str]) -> Result<()> {
        let Some(binary) = &self.binary else {
            return Ok(());
        };
        let output = Command::new(binary)
            .args(args)
            .env("NIMBUS_DATA_DIR", &self.root)
            .env("NIMBUS_LOG", "warn")
            .output()
            .with_context(|| format!("running {} {}", binary.display(), args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "nimbus {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Writes the bundle Nimbus offers to clones of `name` (`nimbus repo bundle`; nothing when the
    /// newest already holds the current refs). The reference offers no bundles.
    pub fn write_bundle(&self, name: &str) -> Result<()> {
        self.nimbus_command(&["repo", "bundle", name])
    }

    /// Empties Nimbus's cache of generated clone packs (its data directory's `clone-packs`); the
    /// reference has no such cache.
    pub fn empty_clone_cache(&self) -> Result<()> {
        if self.kind == Kind::Nimbus {
            let directory = self.root.join("clone-packs");
            for entry in std::fs::read_dir(&directory)
                .with_context(|| format!("reading {}", directory.display()))?
            {
                let path = entry?.path();
                if path
                    .extension()
                    .is_some_and(|extension| extension == "pack")
                {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `operation` against this server and measures it.
    pub fn measure(&self, operation: impl FnOnce() -> Result<()>) -> Result<Sample> {
        let pid = self.pid();
        let before = process::settled_cpu_ticks(pid)?;
        if self.kind == Kind::Nimbus {
            process::reset_peak_rss(pid)?;
        }
        // Nimbus is one process; the reference's work is done by the CGI server's children.
        let sampler = TreeSampler::start(pid, self.kind == Kind::Nimbus);
        let start = Instant::now();
        let result = operation();
        let wall = start.elapsed().as_secs_f64();
        let after = process::settled_cpu_ticks(pid)?;
        let (sampled_rss, peak_anon) = sampler.finish();
        let peak_rss = match self.kind {
            Kind::Nimbus => process::peak_rss(pid)?.max(sampled_rss),
            Kind::Reference => sampled_rss,
        };
        result?;
        Ok(Sample {
            wall,
            cpu: after.saturating_sub(before) as f64 / self.ticks_per_second,
            peak_rss,
            peak_anon,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
