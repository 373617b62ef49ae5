//! The results as a Markdown table, printed and written into `docs/BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::generate::{RELEASE_TAGS, Scale};
use crate::operations::Operation;
use crate::servers::Sample;

/// The memory bound of the issue, for serving a clone and receiving an initial push.
pub const MEMORY_BOUND: u64 = 256 * 1024 * 1024;

/// All runs of one operation on both servers.
#[derive(Debug)]
pub struct Row {
    pub operation: Operation,
    pub nimbus: Vec<Sample>,
    pub reference: Vec<Sample>,
}

/// The results at one scale.
#[derive(Debug)]
pub struct ScaleReport {
    pub scale: Scale,
    pub runs: usize,
    /// Tags of the `ls-remote` repository.
    pub refs: usize,
    pub rows: Vec<Row>,
    /// Free-form lines about the setup (pack sizes, how long the first pushes took).
    pub notes: Vec<String>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Min, median and max of the per-run ratios Nimbus / reference; values below `floor` count as `floor`.
fn ratios(nimbus: &[f64], reference: &[f64], floor: f64) -> (f64, f64, f64) {
    let each: Vec<f64> = nimbus
        .iter()
        .zip(reference)
        .map(|(n, r)| n.max(floor) / r.max(floor))
        .collect();
    let min = each.iter().copied().fold(f64::INFINITY, f64::min);
    let max = each.iter().copied().fold(0.0, f64::max);
    (min, median(each), max)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Row {
    fn wall_ratios(&self) -> (f64, f64, f64) {
        let pick = |samples: &[Sample]| samples.iter().map(|s| s.wall).collect::<Vec<_>>();
        ratios(&pick(&self.nimbus), &pick(&self.reference), 0.001)
    }

    fn cpu_ratios(&self, tick: f64) -> (f64, f64, f64) {
        let pick = |samples: &[Sample]| samples.iter().map(|s| s.cpu).collect::<Vec<_>>();
        ratios(&pick(&self.nimbus), &pick(&self.reference), tick)
    }

    fn peak(samples: &[Sample]) -> u64 {
        samples.iter().map(|s| s.peak_rss).max().unwrap_or(0)
    }

    fn peak_anon(samples: &[Sample]) -> u64 {
        samples.iter().map(|s| s.peak_anon).max().unwrap_or(0)
    }
}

impl ScaleReport {
    /// The Markdown section of this scale, with the machine it ran on.
    pub fn markdown(&self, machine: &str, tick: f64) -> String {
        let scale = self.scale;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### {}: {} commits, {} files, {RELEASE_TAGS} tags\n",
            scale.name,
            thousands(scale.commits),
            thousands(scale.files)
        );
        let _ = writeln!(out, "{machine}\n");
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} runs per row, the servers alternating. Ratios are Nimbus / git http-backend per run \
             (below 1: Nimbus is faster or cheaper): min / median / max. Absolute figures are medians; \
             peak RSS is the largest of the runs.\n",
            self.runs
        );
        out.push_str(
            "| operation | wall s: Nimbus / git | wall ratio | CPU s: Nimbus / git | CPU ratio | peak RSS MiB: Nimbus / git | of it anonymous |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            let wall = |samples: &[Sample]| median(samples.iter().map(|s| s.wall).collect());
            let cpu = |samples: &[Sample]| median(samples.iter().map(|s| s.cpu).collect());
            let (wall_min, wall_median, wall_max) = row.wall_ratios();
            let (cpu_min, cpu_median, cpu_max) = row.cpu_ratios(tick);
            let label = match row.operation {
                Operation::LsRemote => format!("ls-remote ({} tags)", thousands(self.refs)),
                operation => operation.label().to_owned(),
            };
            let _ = writeln!(
                out,
                "| {label} | {:.3} / {:.3} | {wall_min:.2} / **{wall_median:.2}** / {wall_max:.2} | {:.2} / {:.2} | {cpu_min:.2} / **{cpu_median:.2}** / {cpu_max:.2} | {:.0} / {:.0} | {:.0} / {:.0} |",
                wall(&row.nimbus),
                wall(&row.reference),
                cpu(&row.nimbus),
                cpu(&row.reference),
                mib(Row::peak(&row.nimbus)),
                mib(Row::peak(&row.reference)),
                mib(Row::peak_anon(&row.nimbus)),
                mib(Row::peak_anon(&row.reference)),
            );
        }
        out.push('\n');
        let misses: Vec<&str> = self
            .rows
            .iter()
            .filter(|row| row.wall_ratios().1 > 1.0 || row.cpu_ratios(tick).1 > 1.0)
            .map(|row| row.operation.label())
            .collect();
        if misses.is_empty() {
            out.push_str(
                "Nimbus is at or below the reference on every row (median wall and CPU).\n",
            );
        } else {
            let _ = writeln!(
                out,
                "Rows where Nimbus's median wall time or CPU is above the reference's: {}.",
                misses.join("; ")
            );
        }
        for line in self.memory_bounds() {
            let _ = writeln!(out, "\n{line}");
        }
        out
    }

    /// The memory bound lines: Nimbus's peak RSS serving a full clone and receiving the initial push.
    pub fn memory_bounds(&self) -> Vec<String> {
        [Operation::ColdClone, Operation::InitialPush]
            .into_iter()
            .filter_map(|operation| {
                let row = self.rows.iter().find(|row| row.operation == operation)?;
                let peak = Row::peak(&row.nimbus);
                Some(format!(
                    "Memory bound: Nimbus's peak RSS during \"{}\" at the {} scale: {:.0} MiB, of it \
                     {:.0} MiB anonymous (bound 256 MiB on the RSS: {}).",
                    operation.label(),
                    self.scale.name,
                    mib(peak),
                    mib(Row::peak_anon(&row.nimbus)),
                    if peak <= MEMORY_BOUND { "holds" } else { "MISSED" }
                ))
            })
            .collect()
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Replaces (or appends) the section of `scale` in the Markdown file `path`.
pub fn write_section(path: &Path, scale: &str, section: &str) -> Result<()> {
    let begin = format!("<!-- nimbus-bench:{scale}:begin -->");
    let end = format!("<!-- nimbus-bench:{scale}:end -->");
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let block = format!("{begin}\n{section}{end}");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!(
                "{}{block}{}",
                &existing[..start],
                &existing[stop + end.len()..]
            )
        }
        _ => {
            let separator = if existing.is_empty() || existing.ends_with("\n\n") {
                ""
            } else if existing.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{existing}{separator}{block}\n")
        }
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_per_run_with_a_floor() {
        let (min, mid, max) = ratios(&[1.0, 2.0, 0.0], &[2.0, 2.0, 0.0], 0.01);
        assert_eq!((min, mid, max), (0.5, 1.0, 1.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
    }

    #[test]
    fn sections_are_replaced_in_place_and_others_kept() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("B.md");
        std::fs::write(&path, "# Benchmarks\n\nweb pages\n").expect("write");
        write_section(&path, "small", "first\n").expect("append");
        write_section(&path, "medium", "other\n").expect("append");
        write_section(&path, "small", "second\n").expect("replace");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(
            "# Benchmarks\n\nweb pages\n\n<!-- nimbus-bench:small:begin -->\nsecond\n"
        ));
        assert!(!text.contains("first"));
        assert!(text.contains("other\n<!-- nimbus-bench:medium:end -->"));
    }
}
