//! Running the `git` client: one isolated configuration for every command the tool runs.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The git client, with a private `HOME` so the user's configuration never changes a measurement.
#[derive(Debug, Clone)]
pub struct Git {
    home: PathBuf,
}

impl Git {
    /// A client whose global configuration lives in `home` (created if missing).
    pub fn new(home: &Path) -> Result<Git> {
        std::fs::create_dir_all(home)?;
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = Bench\n\temail = bench@example.com\n\
             [protocol]\n\tversion = 2\n\
             [advice]\n\tdetachedHead = false\n\
             [gc]\n\tauto = 0\n",
        )?;
        Ok(Git {
            home: home.to_owned(),
        })
    }

    pub fn program(&self) -> &'static str {
        "git"
    }

    /// The environment every git command gets.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("HOME", self.home.clone().into_os_string()),
            (
                "XDG_CONFIG_HOME",
                self.home.join(".config").into_os_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            ("LC_ALL", "C".into()),
        ]
    }

    /// A command in `directory` (the current one when `None`) with `args` then `paths`.
    pub fn command<'a>(
        &self,
        directory: Option<&Path>,
        args: impl IntoIterator<Item = &'a str>,
        paths: impl IntoIterator<Item = &'a OsStr>,
    ) -> Command {
        let mut command = Command::new(self.program());
        if let Some(directory) = directory {
            command.current_dir(directory);
        }
        command.args(args).args(paths).envs(self.env());
        command
    }

    /// Runs a command; fails with its standard error when it fails.
    pub fn run<'a>(
        &self,
        directory: Option<&Path>,
        args: impl IntoIterator<Item = &'a str>,
        paths: impl IntoIterator<Item = &'a OsStr>,
    ) -> Result<String> {
        let mut command = self.command(directory, args, paths);
        let output = command
            .output()
            .with_context(|| format!("running {command:?}"))?;
        checked(&command, output)
    }

    pub fn rev_parse(&self, repository: &Path, revision: &str) -> Result<String> {
        Ok(self
            .run(Some(repository), ["rev-parse", "--verify", revision], [])?
            .trim()
            .to_owned())
    }

    /// `git --version`.
    pub fn version(&self) -> Result<String> {
        Ok(self.run(None, ["--version"], [])?.trim().to_owned())
    }
}

/// The standard output of a finished command, or an error naming it and quoting its standard error.
pub fn checked(command: &Command, output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("git printed something that is not UTF-8")
}
