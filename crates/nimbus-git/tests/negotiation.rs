//! Negotiation as pkt-lines in, pkt-lines out. Each request is answered by
//! the engine and by real `git upload-pack --stateless-rpc` on the same
//! repository (made by `fixtures/linear.sh`); the acknowledgment and
//! shallow sections must be identical, line for line.

use bstr::ByteSlice;
use gix_hash::ObjectId;
use nimbus_git::advertise::Head;
use nimbus_git::objects::ObjectDb;
use nimbus_git::objects::{CommitSource, Objects};
use nimbus_git::pktline::{Packet, decode, write_delim, write_flush, write_line};
use nimbus_git::upload_pack::pack::PackStats;
use nimbus_git::upload_pack::plan::{ShallowPlan, plan_pack};
use nimbus_git::upload_pack::reach::CommitGraph;
use nimbus_git::upload_pack::request::FetchRequest;
use nimbus_git::upload_pack::{ClonePackCache, ReachIndex, RepoView, serve_v0, serve_v2};
use nimbus_types::{Ref, RefName};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    db: ObjectDb,
    refs: Vec<Ref>,
    head: Head,
}

impl Fixture {
    fn new() -> Self {
        Self::from_script("linear.sh")
    }

    /// The repository made by `tests/fixtures/{script}`, which has
    /// branches main and topic.
    fn from_script(script: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(script);
        let status = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .status()
            .expect("run the fixture script");
        assert!(status.success(), "fixture script failed");
        let repo = dir.path().join("repo.git");
        let db = ObjectDb::open(&repo.join("objects")).expect("open the packs");
        let mut refs = Vec::new();
        for name in ["refs/heads/main", "refs/heads/topic"] {
            refs.push(Ref {
                name: RefName::new(name.as_bytes()).expect("valid"),
                target: rev(&repo, name),
                peeled: None,
            });
        }
        let head = Head::resolve(RefName::new(b"refs/heads/main").expect("valid"), &refs);
        Fixture {
            _dir: dir,
            repo,
            db,
            refs,
            head,
        }
    }

    fn id(&self, rev_spec: &str) -> ObjectId {
        rev(&self.repo, rev_spec)
    }

    fn ours(&self, version: u8, body: &[u8]) -> Vec<u8> {
        self.served(version, body, None).0
    }

    /// The engine's response, and whether its pack came from `cache`.
    fn served(&self, version: u8, body: &[u8], cache: Option<&ClonePackCache>) -> (Vec<u8>, bool) {
        let (out, pack) = self.served_with(version, body, cache, None, None);
        (out, pack.is_some_and(|pack| pack.from_cache))
    }

    /// The engine's response and its pack's figures, with `cache` and `reach`.
    fn served_with(
        &self,
        version: u8,
        body: &[u8],
        cache: Option<&ClonePackCache>,
        reach: Option<&ReachIndex>,
        commit_graph: Option<Arc<dyn CommitSource>>,
    ) -> (Vec<u8>, Option<PackStats>) {
        let view = RepoView {
            db: &self.db,
            refs: &self.refs,
            head: &self.head,
            repo_id: 1,
            clone_packs: cache,
            pack_generation: 1,
            reach,
            commit_graph,
        };
        let mut out = Vec::new();
        let summary = if version == 2 {
            serve_v2(&view, body, &mut out).expect("write to a vec")
        } else {
            serve_v0(&view, body, &mut out).expect("write to a vec")
        };
        (out, summary.pack)
    }

    fn gits(&self, version: u8, body: &[u8]) -> Vec<u8> {
        let mut child = Command::new("git")
            .args(["upload-pack", "--stateless-rpc"])
            .arg(&self.repo)
            .env("GIT_PROTOCOL", format!("version={version}"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.repo.parent().expect("parent"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run git upload-pack");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("write the request");
        child.wait_with_output().expect("git upload-pack").stdout
    }
}

fn rev(repo: &Path, spec: &str) -> ObjectId {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", spec])
        .output()
        .expect("git rev-parse");
    ObjectId::from_hex(out.stdout.trim()).expect("an object id")
}

/// The response as text lines, up to where pack data begins.
fn lines(mut response: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Some((packet, used))) = decode(response) {
        match packet {
            Packet::Flush => out.push("0000".to_owned()),
            Packet::Delim => out.push("0001".to_owned()),
            Packet::ResponseEnd => out.push("0002".to_owned()),
            Packet::Data(data) => {
                if matches!(data.first(), Some(1..=3)) {
                    out.push("<side-band>".to_owned());
                    break;
                }
                let line = packet.line().expect("data").to_str_lossy().into_owned();
                let is_pack_start = line == "packfile";
                out.push(line);
                if is_pack_start {
                    break;
                }
            }
        }
        response = &response[used..];
    }
    out
}

fn request(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        match line.as_str() {
            "0000" => write_flush(&mut out),
            "0001" => write_delim(&mut out),
            line => write_line(&mut out, line),
        }
        .expect("write to a vec");
    }
    out
}

fn v2_fetch(args: &[String]) -> Vec<u8> {
    let mut all = vec![
        "command=fetch".to_owned(),
        "object-format=sha1".to_owned(),
        "0001".to_owned(),
    ];
    all.extend_from_slice(args);
    all.push("0000".to_owned());
    request(&all)
}

/// Compare the engine with git for one request.
fn same_as_git(fixture: &Fixture, version: u8, body: &[u8]) -> Vec<String> {
    let ours = lines(&fixture.ours(version, body));
    let gits = lines(&fixture.gits(version, body));
    assert_eq!(
        ours, gits,
        "nimbus (left) and git upload-pack (right) differ"
    );
    ours
}

#[test]
fn v2_acknowledges_common_haves_and_says_ready_like_git() {
    let f = Fixture::new();
    let want = format!("want {}", f.id("topic"));
    let cases: Vec<Vec<String>> = vec![
        // A common have that is not an ancestor of the want: not ready.
        vec![want.clone(), format!("have {}", f.id("main"))],
        // The fork point is common too: ready, then the pack.
        vec![
            want.clone(),
            format!("have {}", f.id("main")),
            format!("have {}", f.id("main~2")),
        ],
        // Unknown haves only: NAK.
        vec![want.clone(), format!("have {}", "1".repeat(40))],
        // wait-for-done suppresses ready.
        vec![
            want.clone(),
            "wait-for-done".into(),
            format!("have {}", f.id("main~2")),
        ],
        // done: no acknowledgments section at all.
        vec![
            want.clone(),
            format!("have {}", f.id("main~2")),
            "done".into(),
        ],
        // A shallow clone gets its shallow-info section.
        vec![want, "deepen 2".into(), "done".into()],
    ];
    let expected_endings = ["0000", "packfile", "0000", "0000", "packfile", "packfile"];
    for (args, ending) in cases.iter().zip(expected_endings) {
        let seen = same_as_git(&f, 2, &v2_fetch(args));
        assert_eq!(
            seen.last().map(String::as_str),
            Some(ending),
            "{args:?}: {seen:?}"
        );
    }
}

#[test]
fn v0_multi_ack_detailed_rounds_match_git() {
    let f = Fixture::new();
    let first = format!(
        "want {} multi_ack_detailed side-band-64k thin-pack ofs-delta no-done",
        f.id("topic")
    );
    let unknown = format!("have {}", "1".repeat(40));
    let fork = format!("have {}", f.id("main~2"));
    let tip = format!("have {}", f.id("main"));
    let rounds: Vec<Vec<String>> = vec![
        // Only the want section: git answers nothing (a shallow-list probe).
        vec![first.clone(), "0000".into()],
        // A round of haves without done.
        vec![
            first.clone(),
            "0000".into(),
            tip.clone(),
            unknown.clone(),
            "0000".into(),
        ],
        // Common fork point with no-done: ready, then straight to the pack.
        vec![
            first.clone(),
            "0000".into(),
            tip.clone(),
            fork.clone(),
            "0000".into(),
        ],
        // done after haves.
        vec![first.clone(), "0000".into(), fork, "done".into()],
        // done with no haves at all.
        vec![first, "0000".into(), "done".into()],
    ];
    for round in rounds {
        same_as_git(&f, 0, &request(&round));
    }
}

#[test]
fn v0_shallow_requests_match_git() {
    let f = Fixture::new();
    let want = format!(
        "want {} multi_ack_detailed side-band-64k ofs-delta",
        f.id("main")
    );
    for deepen in [
        "deepen 1",
        "deepen 3",
        "deepen-since 1700000003",
        "deepen-not refs/heads/topic",
    ] {
        let probe = request(&[want.clone(), deepen.into(), "0000".into()]);
        same_as_git(&f, 0, &probe);
        let full = request(&[want.clone(), deepen.into(), "0000".into(), "done".into()]);
        same_as_git(&f, 0, &full);
    }
}

/// The `.pack` files in a cache directory.
fn cached_packs(directory: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = std::fs::read_dir(directory)
        .expect("cache directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "pack"))
        .collect();
    packs.sort();
    packs
}

/// The pack bytes of a v2 response (side-band 1 data after `packfile`), checked by `git index-pack`.
fn v2_pack(fixture: &Fixture, response: &[u8]) -> Vec<u8> {
    let mut rest = response;
    let mut pack = Vec::new();
    let mut in_pack = false;
    while let Ok(Some((packet, used))) = decode(rest) {
        if let Packet::Data(data) = packet {
            if in_pack && data.first() == Some(&1) {
                pack.extend_from_slice(&data[1..]);
            } else if data.trim_end() == b"packfile" {
                in_pack = true;
            }
        }
        rest = &rest[used..];
    }
    index_pack(fixture, &pack);
    pack
}

/// A bare repository holding `pack`, indexed by `git index-pack` (which must accept it).
fn index_pack(fixture: &Fixture, pack: &[u8]) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("tempdir");
    let status = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(directory.path())
        .status()
        .expect("git init");
    assert!(status.success());
    let mut child = Command::new("git")
        .args(["index-pack", "--stdin", "--fix-thin"])
        .current_dir(directory.path())
        .env("HOME", fixture.repo.parent().expect("parent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("git index-pack");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pack)
        .expect("write the pack");
    assert!(
        child.wait().expect("index-pack").success(),
        "git index-pack refused the pack"
    );
    directory
}

/// The ids of the objects in a v2 response's pack.
fn pack_objects(fixture: &Fixture, response: &[u8]) -> Vec<String> {
    let pack = v2_pack(fixture, response);
    let repo = index_pack(fixture, &pack);
    let out = Command::new("git")
        .args([
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ])
        .current_dir(repo.path())
        .output()
        .expect("git cat-file");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("hex ids")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn negotiation_from_the_commit_graph_matches_git() {
    let f = Fixture::new();
    // Parse every commit once, as garbage collection does.
    let mut objects = Objects::new(f.db.handle());
    let clone = FetchRequest {
        wants: vec![f.id("main"), f.id("topic")],
        done: true,
        ..Default::default()
    };
    plan_pack(&mut objects, &clone, &[], &ShallowPlan::default(), &f.refs).expect("plan");
    let graph = CommitGraph::build(1, objects.parsed_commits());
    assert_eq!(graph.len(), 6, "every commit of the fixture");
    let graph: Arc<dyn CommitSource> = Arc::new(graph);
    let want = format!("want {}", f.id("topic"));
    for args in [
        vec![want.clone(), format!("have {}", f.id("main"))],
        vec![
            want.clone(),
            format!("have {}", f.id("main")),
            format!("have {}", f.id("main~2")),
        ],
        vec![want.clone(), "deepen 2".into(), "done".into()],
        vec![
            format!("want {}", f.id("main")),
            format!("have {}", f.id("main~3")),
            "done".into(),
        ],
    ] {
        let body = v2_fetch(&args);
        let (ours, pack) = f.served_with(2, &body, None, None, Some(graph.clone()));
        let gits = f.gits(2, &body);
        assert_eq!(lines(&ours), lines(&gits), "{args:?}");
        if pack.is_some() {
            assert_eq!(pack_objects(&f, &ours), pack_objects(&f, &gits), "{args:?}");
        }
    }
}

#[test]
fn fetches_mark_what_the_client_has_sparsely_like_git() {
    // main~1 has keep/a.txt; main adds new/copy.txt with the same content
    // in a new directory. Walking only the paths that changed (git's
    // pack.useSparse, its default), neither git nor Nimbus reads keep/, so
    // both send that blob again: the packs are the same, object for
    // object. (Marking every object below main~1 first would leave it out;
    // so does git when the repository has reachability bitmaps.)
    let f = Fixture::from_script("sparse.sh");
    let copy = f.id("main:new/copy.txt");
    assert_eq!(copy, f.id("main~1:keep/a.txt"), "the fixture's premise");
    for thin in [false, true] {
        let mut args = vec![
            format!("want {}", f.id("main")),
            format!("have {}", f.id("main~1")),
            "ofs-delta".into(),
            "done".into(),
        ];
        if thin {
            args.push("thin-pack".into());
        }
        let body = v2_fetch(&args);
        let ours = pack_objects(&f, &f.ours(2, &body));
        assert_eq!(ours, pack_objects(&f, &f.gits(2, &body)), "thin: {thin}");
        assert!(ours.contains(&copy.to_string()), "{ours:?}");
        // What did not change is not sent.
        assert!(!ours.contains(&f.id("main:keep").to_string()));
        assert!(!ours.contains(&f.id("main:keep/b.txt").to_string()));
        assert!(ours.contains(&f.id("main:src/x.txt").to_string()));
    }
}

#[test]
fn clones_planned_from_the_reachability_index_get_what_git_sends() {
    let f = Fixture::new();
    let directory = tempfile::tempdir().expect("tempdir");
    let index = ReachIndex::new(directory.path().to_owned()).expect("index");
    let clone_of = |wants: &[&str]| {
        let mut args: Vec<String> = wants
            .iter()
            .map(|rev| format!("want {}", f.id(rev)))
            .collect();
        args.extend(["ofs-delta".into(), "include-tag".into(), "done".into()]);
        v2_fetch(&args)
    };
    let check = |wants: &[&str], expect_from_index: bool, expect_whole_pack: bool| {
        let body = clone_of(wants);
        let (response, pack) = f.served_with(2, &body, None, Some(&index), None);
        let pack = pack.expect("a pack was sent");
        assert_eq!(pack.from_index, expect_from_index, "wants {wants:?}");
        // The fixture is one pack, and clones send most of it: all of it
        // as it is, or entries located from the pack index.
        assert_eq!(pack.whole_pack, expect_whole_pack, "wants {wants:?}");
        assert_eq!(
            pack.sizes_from_pack_index, !expect_whole_pack,
            "wants {wants:?}"
        );
        assert_eq!(
            pack_objects(&f, &response),
            pack_objects(&f, &f.gits(2, &body)),
            "the clone of {wants:?} has the objects git sends"
        );
        assert!(!response.is_empty());
    };
    // No index yet: a full walk, which writes one for main~2.
    check(&["main~2"], false, false);
    let written = index.load(1, 1).expect("the clone wrote an index");
    assert_eq!(written.tips, [f.id("main~2")]);
    assert_eq!(
        index.load(1, 2),
        None,
        "only for the pack generation it was made at"
    );
    // main moved on (and topic forked from main~2): planned from the index.
    check(&["main", "topic"], true, true);
    let tips = index.load(1, 1).expect("rewritten").tips;
    let mut expected = vec![f.id("main"), f.id("topic")];
    expected.sort();
    assert_eq!(tips, expected, "the index follows the last clone");
    // main and topic reach every object of the fixture's pack: the pack
    // file itself was sent (and git's index-pack took it above). The
    // clones of main~2 and of main below reach fewer: their packs are
    // generated, never the whole file with objects they do not reach.
    // A clone without topic would get topic's objects from the index: a full walk.
    check(&["main"], false, false);
    // The same tips again: the index is used and left as it is.
    check(&["main"], true, false);

    // A fetch of one commit sends a few objects of the pack: their sizes
    // are found by inflating them, not by reading the whole pack index.
    let fetch = v2_fetch(&[
        format!("want {}", f.id("main")),
        format!("have {}", f.id("main~1")),
        "ofs-delta".into(),
        "done".into(),
    ]);
    let (response, pack) = f.served_with(2, &fetch, None, Some(&index), None);
    let pack = pack.expect("a pack was sent");
    assert!(!pack.from_index && !pack.sizes_from_pack_index);
    assert_eq!(
        pack_objects(&f, &response),
        pack_objects(&f, &f.gits(2, &fetch))
    );
}

#[test]
fn clone_packs_are_kept_and_served_again_byte_for_byte() {
    let f = Fixture::new();
    let directory = tempfile::tempdir().expect("tempdir");
    let cache = ClonePackCache::new(directory.path().to_owned(), 64 << 20).expect("cache");
    let clone = v2_fetch(&[
        format!("want {}", f.id("main")),
        format!("want {}", f.id("topic")),
        "ofs-delta".into(),
        "include-tag".into(),
        "done".into(),
    ]);
    let (first, first_cached) = f.served(2, &clone, Some(&cache));
    assert!(!first_cached, "nothing was cached yet");
    assert_eq!(
        cached_packs(directory.path()).len(),
        1,
        "the clone's pack is kept"
    );
    let (second, second_cached) = f.served(2, &clone, Some(&cache));
    assert!(second_cached, "the same request is served from the cache");
    assert_eq!(first, second, "byte for byte the generated response");
    assert_eq!(first, f.ours(2, &clone), "and the response without a cache");
    let pack = v2_pack(&f, &second);
    assert_eq!(
        std::fs::read(&cached_packs(directory.path())[0]).expect("cached pack"),
        pack
    );

    // The same wants in another order and repeated: the same entry.
    let reordered = v2_fetch(&[
        format!("want {}", f.id("topic")),
        format!("want {}", f.id("main")),
        format!("want {}", f.id("topic")),
        "ofs-delta".into(),
        "include-tag".into(),
        "done".into(),
    ]);
    assert!(f.served(2, &reordered, Some(&cache)).1);

    // v0 with side-band-64k: its own framing around the same cached pack.
    let v0 = request(&[
        format!("want {} side-band-64k ofs-delta include-tag", f.id("main")),
        format!("want {}", f.id("topic")),
        "0000".into(),
        "done".into(),
    ]);
    let (v0_first, _) = f.served(0, &v0, Some(&cache));
    let (v0_again, v0_cached) = f.served(0, &v0, Some(&cache));
    assert!(v0_cached);
    assert_eq!(v0_first, v0_again);
    assert_eq!(v0_first, f.ours(0, &v0));
}

#[test]
fn packs_that_depend_on_the_client_are_not_cached() {
    let f = Fixture::new();
    let directory = tempfile::tempdir().expect("tempdir");
    let cache = ClonePackCache::new(directory.path().to_owned(), 64 << 20).expect("cache");
    let want = format!("want {}", f.id("topic"));
    // A fetch with a have in common: its pack depends on what the client has.
    let fetch = v2_fetch(&[
        want.clone(),
        format!("have {}", f.id("main~2")),
        "done".into(),
    ]);
    assert!(!f.served(2, &fetch, Some(&cache)).1);
    assert!(!f.served(2, &fetch, Some(&cache)).1);
    // Deepening from existing shallow boundaries.
    let deepen = v2_fetch(&[
        want.clone(),
        format!("shallow {}", f.id("topic~1")),
        "deepen 1".into(),
        "deepen-relative".into(),
        "done".into(),
    ]);
    assert!(!f.served(2, &deepen, Some(&cache)).1);
    assert!(!f.served(2, &deepen, Some(&cache)).1);
    assert!(cached_packs(directory.path()).is_empty());

    // A shallow clone is cached, per depth; and still answers exactly like git.
    for depth in [1, 2] {
        let shallow = v2_fetch(&[want.clone(), format!("deepen {depth}"), "done".into()]);
        assert!(!f.served(2, &shallow, Some(&cache)).1);
        let (again, cached) = f.served(2, &shallow, Some(&cache));
        assert!(cached);
        assert_eq!(again, f.ours(2, &shallow));
        same_as_git(&f, 2, &shallow);
    }
    assert_eq!(cached_packs(directory.path()).len(), 2);
}

#[test]
fn the_cache_stays_within_its_bound() {
    let f = Fixture::new();
    let directory = tempfile::tempdir().expect("tempdir");
    let one = {
        let probe = tempfile::tempdir().expect("tempdir");
        let cache = ClonePackCache::new(probe.path().to_owned(), 64 << 20).expect("cache");
        f.served(
            2,
            &v2_fetch(&[format!("want {}", f.id("main")), "done".into()]),
            Some(&cache),
        );
        std::fs::metadata(&cached_packs(probe.path())[0])
            .expect("pack")
            .len()
    };
    // Room for about two packs the size of main's.
    let bound = one * 5 / 2;
    let cache = ClonePackCache::new(directory.path().to_owned(), bound).expect("cache");
    for spec in ["main", "main~1", "main~2", "topic", "main~3"] {
        let clone = v2_fetch(&[format!("want {}", f.id(spec)), "done".into()]);
        f.served(2, &clone, Some(&cache));
        let total: u64 = cached_packs(directory.path())
            .iter()
            .map(|path| std::fs::metadata(path).expect("pack").len())
            .sum();
        assert!(total <= bound, "{total} bytes cached, bound {bound}");
    }
    // The most recent one is still there.
    let last = v2_fetch(&[format!("want {}", f.id("main~3")), "done".into()]);
    assert!(f.served(2, &last, Some(&cache)).1);
}

#[test]
fn identical_clones_arriving_together_generate_one_pack() {
    let f = Fixture::new();
    let directory = tempfile::tempdir().expect("tempdir");
    let cache = ClonePackCache::new(directory.path().to_owned(), 64 << 20).expect("cache");
    let clone = v2_fetch(&[
        format!("want {}", f.id("main")),
        format!("want {}", f.id("topic")),
        "ofs-delta".into(),
        "done".into(),
    ]);
    let expected = f.ours(2, &clone);
    let results: Vec<(Vec<u8>, bool)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| f.served(2, &clone, Some(&cache))))
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("no panic"))
            .collect()
    });
    for (response, _) in &results {
        assert_eq!(response, &expected);
    }
    let generated = results.iter().filter(|(_, cached)| !cached).count();
    assert_eq!(
        generated, 1,
        "one request generates, the others stream its pack"
    );
}
