//! Receiving packs (`receive_pack::ingest`), checked against real git: the
//! index written for a pack must be byte-identical to `git index-pack`'s,
//! a thin pack must be completed to the objects `git index-pack --fix-thin`
//! resolves (and into a pack git itself indexes to the same bytes), and a
//! refused pack must leave nothing that looks accepted.
//!
//! Most packs come from the history of `fixtures/ingest.sh`; some are
//! written here, entry by entry, for shapes git's pack-objects does not
//! produce on its own.

mod support;

use gix_hash::ObjectId;
use nimbus_git::objects::ObjectDb;
use nimbus_git::receive_pack::ingest::{IngestError, IngestLimits, ReceivedPack, ingest};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::Repo;

/// The fixture history (see the script): branch `main`, branch `old` at
/// its 12th commit, tags `v1` and `v2`.
const HISTORY: &str = include_str!("fixtures/ingest.sh");

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// Run `git args…` in `dir` with `input` on its standard input; its output.
fn git_in(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run git");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // git may stop reading early; its exit status tells.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for git");
    writer.join().expect("the writing thread");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn hex_id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).expect("a hex object id")
}

/// The ids `git args…` lists first on each line (rev-list --objects).
fn listed_ids(dir: &Path, args: &[&str]) -> BTreeSet<ObjectId> {
    String::from_utf8(git_in(dir, args, b""))
        .expect("utf-8")
        .lines()
        .map(|line| hex_id(&line[..40]))
        .collect()
}

/// One line of `git show-index`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexEntry {
    offset: u64,
    id: ObjectId,
    crc: u32,
}

/// The entries of a version-2 index, as git reads them.
fn show_index(idx: &[u8]) -> Vec<IndexEntry> {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = String::from_utf8(git_in(
        dir.path(),
        &["show-index", "--object-format=sha1"],
        idx,
    ))
    .expect("utf-8");
    text.lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let offset = fields.next().expect("offset").parse().expect("a number");
            let id = hex_id(fields.next().expect("id"));
            let crc = fields.next().expect("crc");
            let crc = u32::from_str_radix(crc.trim_matches(['(', ')']), 16).expect("hex crc");
            IndexEntry { offset, id, crc }
        })
        .collect()
}

/// The git type number of the entry at `offset`, and its base id if it is
/// a reference delta.
fn entry_type(pack: &[u8], offset: u64) -> (u8, Option<ObjectId>) {
    let mut at = offset as usize;
    let first = pack[at];
    at += 1;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = pack[at];
        at += 1;
    }
    let kind = (first >> 4) & 7;
    let base = (kind == REF_DELTA).then(|| ObjectId::from_bytes_or_panic(&pack[at..at + 20]));
    (kind, base)
}

/// How many entries of each git type `pack` holds (by its index entries).
fn type_counts(pack: &[u8], entries: &[IndexEntry]) -> BTreeMap<u8, usize> {
    let mut counts = BTreeMap::new();
    for entry in entries {
        *counts.entry(entry_type(pack, entry.offset).0).or_default() += 1;
    }
    counts
}

fn object_count_in_header(pack: &[u8]) -> u32 {
    u32::from_be_bytes(pack[8..12].try_into().expect("four bytes"))
}

fn trailer_hex(pack: &[u8]) -> String {
    hex::encode(&pack[pack.len() - 20..])
}

/// The objects directory of an empty repository.
fn empty_objects(dir: &Path) -> ObjectDb {
    std::fs::create_dir_all(dir.join("pack")).expect("create pack/");
    ObjectDb::open(dir).expect("open the empty object database")
}

/// An objects directory (at `dir`) holding, in one pack, the objects
/// reachable from `revs` in `repo`.
fn objects_of(repo: &Repo, revs: &[u8], dir: &Path) -> ObjectDb {
    let pack = dir.join("pack");
    std::fs::create_dir_all(&pack).expect("create pack/");
    let base = pack.join("pack");
    git_in(
        &repo.work,
        &[
            "pack-objects",
            "--revs",
            "-q",
            base.to_str().expect("utf-8 path"),
        ],
        revs,
    );
    ObjectDb::open(dir).expect("open the object database")
}

/// The file names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A fresh, empty staging directory in `dir`.
fn staging_in(dir: &Path) -> PathBuf {
    let staging = dir.join("staging");
    std::fs::create_dir(&staging).expect("create the staging directory");
    staging
}

fn accept(pack: &[u8], staging: &Path, existing: &ObjectDb) -> ReceivedPack {
    ingest(pack, staging, existing, IngestLimits::default())
        .unwrap_or_else(|err| panic!("the pack was refused: {err}"))
        .expect("a pack with objects")
}

/// Where two byte strings first differ, for failure messages.
fn first_difference(ours: &[u8], theirs: &[u8]) -> String {
    match ours.iter().zip(theirs).position(|(a, b)| a != b) {
        Some(at) => format!(
            "first difference at byte {at} (ours {:#04x}, git's {:#04x}); lengths {} and {}",
            ours[at],
            theirs[at],
            ours.len(),
            theirs.len()
        ),
        None => format!("lengths {} (ours) and {} (git's)", ours.len(), theirs.len()),
    }
}

/// What the received files and the returned description must say about
/// themselves, whatever the pack.
fn assert_consistent(received: &ReceivedPack) -> (Vec<u8>, Vec<u8>) {
    let pack = std::fs::read(&received.pack_path).expect("read our pack");
    let idx = std::fs::read(&received.index_path).expect("read our index");
    let trailer = trailer_hex(&pack);
    assert_eq!(received.name, format!("pack-{trailer}"));
    assert_eq!(
        received.pack_path.file_name().and_then(|n| n.to_str()),
        Some(format!("pack-{trailer}.pack").as_str())
    );
    assert_eq!(
        received.index_path.file_name().and_then(|n| n.to_str()),
        Some(format!("pack-{trailer}.idx").as_str())
    );
    // The index names the pack it indexes.
    assert_eq!(hex::encode(&idx[idx.len() - 40..idx.len() - 20]), trailer);
    assert_eq!(received.pack_size, pack.len() as u64);
    assert_eq!(received.index_size, idx.len() as u64);
    assert_eq!(
        u64::from(object_count_in_header(&pack)),
        received.object_count
    );
    assert_eq!(
        received.bundle.index.num_objects() as u64,
        received.object_count
    );
    (pack, idx)
}

/// Ingest `pack` (complete, not thin) with an empty repository and check
/// the result against `git index-pack` on the same bytes: the index must
/// be byte-identical. Returns git's index entries.
fn assert_indexed_like_git(pack: &[u8]) -> Vec<IndexEntry> {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = empty_objects(&dir.path().join("empty"));
    let staging = staging_in(dir.path());
    let received = accept(pack, &staging, &existing);
    let (our_pack, our_idx) = assert_consistent(&received);

    let reference = dir.path().join("reference");
    std::fs::create_dir(&reference).expect("create a directory");
    std::fs::write(reference.join("ref.pack"), pack).expect("write the pack");
    let printed = git_in(
        &reference,
        &["index-pack", "-o", "ref.idx", "ref.pack"],
        b"",
    );
    let git_idx = std::fs::read(reference.join("ref.idx")).expect("read git's index");
    let git_entries = show_index(&git_idx);

    assert!(our_pack == pack, "the stored pack differs from the input");
    assert_eq!(
        String::from_utf8_lossy(&printed).trim(),
        trailer_hex(pack),
        "git names the pack by its trailer"
    );
    assert_eq!(received.name, format!("pack-{}", trailer_hex(pack)));
    assert_eq!(received.object_count, git_entries.len() as u64);
    assert_eq!(
        u64::from(object_count_in_header(pack)),
        received.object_count
    );
    if our_idx != git_idx {
        let ours = show_index(&our_idx);
        let differing: Vec<_> = ours
            .iter()
            .zip(&git_entries)
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!(
            "our index differs from git's: {}; first differing entries (ours, git's): {differing:?}",
            first_difference(&our_idx, &git_idx)
        );
    }
    git_entries
}

/// `git pack-objects ARGS` in the repository with `input`.
fn pack_objects(repo: &Repo, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut all = vec!["pack-objects", "-q"];
    all.extend_from_slice(args);
    git_in(&repo.work, &all, input)
}

#[test]
fn offset_delta_pack_indexes_like_git() {
    let repo = Repo::new(HISTORY);
    let pack = pack_objects(
        &repo,
        &["--revs", "--all", "--stdout", "--delta-base-offset"],
        b"",
    );
    let entries = assert_indexed_like_git(&pack);
    let counts = type_counts(&pack, &entries);
    assert!(
        counts.get(&OFS_DELTA).copied().unwrap_or(0) >= 20,
        "the pack should be mostly offset deltas: {counts:?}"
    );
    assert_eq!(counts.get(&REF_DELTA), None, "{counts:?}");
    // Every object of the history, both annotated tags included.
    let all = listed_ids(&repo.work, &["rev-list", "--objects", "--all"]);
    let listed: BTreeSet<ObjectId> = entries.iter().map(|e| e.id).collect();
    assert_eq!(listed, all);
    for tag in ["v1", "v2"] {
        assert!(listed.contains(&repo.id(tag)), "tag object {tag}");
        assert_eq!(repo.git(&["cat-file", "-t", tag]).trim(), "tag");
    }
}

#[test]
fn reference_delta_pack_indexes_like_git() {
    let repo = Repo::new(HISTORY);
    // Without --delta-base-offset every delta names its base by id; with
    // --no-reuse-delta git computes them again rather than copying the
    // offset deltas of the repository's pack.
    let pack = pack_objects(
        &repo,
        &["--revs", "--all", "--stdout", "--no-reuse-delta"],
        b"",
    );
    let entries = assert_indexed_like_git(&pack);
    let counts = type_counts(&pack, &entries);
    assert!(
        counts.get(&REF_DELTA).copied().unwrap_or(0) >= 20,
        "the pack should be mostly reference deltas: {counts:?}"
    );
    assert_eq!(counts.get(&OFS_DELTA), None, "{counts:?}");
}

#[test]
fn generated_history_round_trips() {
    let (repo, marks) = Repo::fast_import(&support::generated_history(11, 1200));
    assert!(marks.len() > 1000);
    let pack = pack_objects(
        &repo,
        &["--revs", "--all", "--stdout", "--delta-base-offset"],
        b"",
    );
    let entries = assert_indexed_like_git(&pack);
    assert!(entries.len() > 3000, "{} objects", entries.len());
    let counts = type_counts(&pack, &entries);
    assert!(
        counts.get(&OFS_DELTA).copied().unwrap_or(0) > 200,
        "{counts:?}"
    );
}

/// What git's `index-pack --fix-thin` makes of a thin pack, in a scratch
/// repository holding the objects of `existing_dir`.
struct GitCompletion {
    entries: Vec<IndexEntry>,
}

fn complete_with_git(thin: &[u8], existing_dir: &Path, scratch: &Path) -> GitCompletion {
    git_in(
        scratch.parent().expect("a parent"),
        &[
            "init",
            "-q",
            "--bare",
            scratch.to_str().expect("utf-8 path"),
        ],
        b"",
    );
    let packs = scratch.join("objects/pack");
    for name in listing(&existing_dir.join("pack")) {
        std::fs::copy(existing_dir.join("pack").join(&name), packs.join(&name))
            .expect("copy the old pack");
    }
    let printed = git_in(scratch, &["index-pack", "--stdin", "--fix-thin"], thin);
    let printed = String::from_utf8(printed).expect("utf-8");
    let hash = printed
        .trim()
        .strip_prefix("pack\t")
        .expect("pack <hash>")
        .to_owned();
    let idx = std::fs::read(packs.join(format!("pack-{hash}.idx"))).expect("git's index");
    GitCompletion {
        entries: show_index(&idx),
    }
}

/// Ingest the thin pack `thin` against `existing` (the objects in
/// `existing_dir`) and compare with git's completion of it.
fn assert_completed_like_git(thin: &[u8], existing_dir: &Path, existing: &ObjectDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = complete_with_git(thin, existing_dir, &dir.path().join("scratch.git"));
    let thin_end = (thin.len() - 20) as u64;
    let thin_count = object_count_in_header(thin) as usize;

    // The pack really is thin: git appended bases, and reference deltas
    // name objects that are not in the pack.
    let in_thin: Vec<&IndexEntry> = git.entries.iter().filter(|e| e.offset < thin_end).collect();
    assert_eq!(in_thin.len(), thin_count);
    assert!(
        git.entries.len() > thin_count,
        "git appended no base: the pack is not thin"
    );
    let thin_ids: BTreeSet<ObjectId> = in_thin.iter().map(|e| e.id).collect();
    let external_bases: BTreeSet<ObjectId> = in_thin
        .iter()
        .filter_map(|e| entry_type(thin, e.offset).1)
        .filter(|base| !thin_ids.contains(base))
        .collect();
    assert!(!external_bases.is_empty(), "no delta on an outside base");

    let staging = staging_in(dir.path());
    let received = match ingest(thin, &staging, existing, IngestLimits::default()) {
        Ok(received) => received.expect("a pack with objects"),
        Err(err) => {
            let message = err.to_string();
            let named_in_pack: Vec<&ObjectId> = thin_ids
                .iter()
                .filter(|id| message.contains(&id.to_string()))
                .collect();
            panic!(
                "the thin pack was refused: {message}\n\
                 ids it names that are objects of the pack itself: {named_in_pack:?}; \
                 outside bases git appended: {external_bases:?}"
            );
        }
    };
    let (our_pack, our_idx) = assert_consistent(&received);
    assert_eq!(received.object_count, git.entries.len() as u64);
    let ours = show_index(&our_idx);
    let our_ids: Vec<ObjectId> = ours.iter().map(|e| e.id).collect();
    let git_ids: Vec<ObjectId> = git.entries.iter().map(|e| e.id).collect();
    assert_eq!(our_ids, git_ids, "the completed packs hold other objects");
    // The received entries stay where they were, with the same CRCs;
    // appended objects come after them.
    assert!(our_pack[12..thin_end as usize] == thin[12..thin_end as usize]);
    for (our, their) in ours.iter().zip(&git.entries) {
        if their.offset < thin_end {
            assert_eq!(our, their);
        } else {
            assert!(our.offset >= thin_end, "{our:?}");
        }
    }

    // git accepts the completed pack with our index…
    git_in(
        dir.path(),
        &[
            "verify-pack",
            "-v",
            received.index_path.to_str().expect("utf-8"),
        ],
        b"",
    );
    // …and indexes it to the same bytes.
    let check = dir.path().join("check.idx");
    git_in(
        dir.path(),
        &[
            "index-pack",
            "-o",
            check.to_str().expect("utf-8"),
            received.pack_path.to_str().expect("utf-8"),
        ],
        b"",
    );
    let git_idx = std::fs::read(&check).expect("git's index of our pack");
    assert!(
        our_idx == git_idx,
        "git indexes our completed pack differently: {}",
        first_difference(&our_idx, &git_idx)
    );
}

#[test]
fn thin_pack_is_completed_like_git_fix_thin() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    let existing_dir = dir.path().join("objects");
    let existing = objects_of(&repo, b"old\n", &existing_dir);
    let thin = pack_objects(
        &repo,
        &["--revs", "--thin", "--stdout", "--delta-base-offset"],
        b"main\n^old\n",
    );
    assert_completed_like_git(&thin, &existing_dir, &existing);
}

/// Without offset deltas a thin pack chains reference deltas: a delta on
/// an outside base, then deltas on the object that delta makes.
#[test]
fn thin_pack_of_reference_deltas_is_completed_like_git_fix_thin() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    let existing_dir = dir.path().join("objects");
    let existing = objects_of(&repo, b"old\n", &existing_dir);
    let thin = pack_objects(&repo, &["--revs", "--thin", "--stdout"], b"main\n^old\n");
    assert_completed_like_git(&thin, &existing_dir, &existing);
}

/// Asserts that the refused ingest left nothing named like an accepted
/// pack in `staging` (a partial `incoming.pack` is allowed), and that the
/// existing objects are untouched.
fn assert_nothing_accepted(
    what: &str,
    staging: &Path,
    existing_dir: &Path,
    existing_before: &[String],
) {
    let left = listing(staging);
    assert!(
        left.iter().all(|name| name == "incoming.pack"),
        "a refused pack ({what}) left {left:?}"
    );
    assert_eq!(listing(&existing_dir.join("pack")), existing_before);
}

fn refused(what: &str, pack: &[u8], existing_dir: &Path, existing: &ObjectDb) -> IngestError {
    refused_with(what, pack, existing_dir, existing, IngestLimits::default())
}

fn refused_with(
    what: &str,
    pack: &[u8],
    existing_dir: &Path,
    existing: &ObjectDb,
    limits: IngestLimits,
) -> IngestError {
    let dir = tempfile::tempdir().expect("tempdir");
    let staging = staging_in(dir.path());
    let before = listing(&existing_dir.join("pack"));
    let err = match ingest(pack, &staging, existing, limits) {
        Ok(Some(received)) => panic!("the pack ({what}) was accepted as {}", received.name),
        Ok(None) => panic!("the pack ({what}) was taken as empty"),
        Err(err) => err,
    };
    assert_nothing_accepted(what, &staging, existing_dir, &before);
    err
}

#[test]
fn thin_pack_without_its_bases_is_refused() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    let thin = pack_objects(
        &repo,
        &["--revs", "--thin", "--stdout", "--delta-base-offset"],
        b"main\n^old\n",
    );
    // The bases it needs, as git sees them.
    let old_objects = objects_of(&repo, b"old\n", &dir.path().join("old"));
    drop(old_objects);
    let git = complete_with_git(
        &thin,
        &dir.path().join("old"),
        &dir.path().join("scratch.git"),
    );
    let thin_end = (thin.len() - 20) as u64;
    let thin_ids: BTreeSet<ObjectId> = git
        .entries
        .iter()
        .filter(|e| e.offset < thin_end)
        .map(|e| e.id)
        .collect();
    let external_bases: BTreeSet<ObjectId> = git
        .entries
        .iter()
        .filter(|e| e.offset < thin_end)
        .filter_map(|e| entry_type(&thin, e.offset).1)
        .filter(|base| !thin_ids.contains(base))
        .collect();
    assert!(!external_bases.is_empty());

    let empty_dir = dir.path().join("empty");
    let empty = empty_objects(&empty_dir);
    let err = refused("thin, no bases", &thin, &empty_dir, &empty);
    let message = err.to_string();
    assert!(
        external_bases
            .iter()
            .any(|base| message.contains(&base.to_string())),
        "the refusal should name a missing base ({external_bases:?}): {message}"
    );
}

#[test]
fn pack_missing_a_parent_is_refused() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    // Complete (not thin), but its oldest commit's parent and the
    // unchanged files are in `old`, which the repository does not have.
    let pack = pack_objects(
        &repo,
        &["--revs", "--stdout", "--delta-base-offset"],
        b"main\n^old\n",
    );
    let in_pack = listed_ids(&repo.work, &["rev-list", "--objects", "main", "^old"]);
    let in_old = listed_ids(&repo.work, &["rev-list", "--objects", "old"]);
    let empty_dir = dir.path().join("empty");
    let empty = empty_objects(&empty_dir);
    match refused("missing a parent", &pack, &empty_dir, &empty) {
        IngestError::MissingObject { id, missing } => {
            assert!(in_pack.contains(&id), "{id} is not in the pack");
            assert!(in_old.contains(&missing), "{missing} is not an old object");
            assert!(!in_pack.contains(&missing));
        }
        other => panic!("expected MissingObject, got {other:?}"),
    }
    // With the old objects, the same pack is fine.
    let old_dir = dir.path().join("old");
    let old = objects_of(&repo, b"old\n", &old_dir);
    let staging = staging_in(&old_dir);
    accept(&pack, &staging, &old);
}

#[test]
fn damaged_packs_are_refused() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().join("empty");
    let empty = empty_objects(&empty_dir);
    let pack = pack_objects(
        &repo,
        &["--revs", "--all", "--stdout", "--delta-base-offset"],
        b"",
    );
    let len = pack.len();
    // One byte flipped: in the middle, in the first entry, in the object
    // count, in the trailer, at the end of the last entry.
    for at in [len / 2, len / 3, 13, 20, 11, len - 1, len - 21] {
        let mut damaged = pack.clone();
        damaged[at] ^= 0x5a;
        let what = format!("byte {at} of {len} flipped");
        match refused(&what, &damaged, &empty_dir, &empty) {
            IngestError::InvalidPack { .. } => {}
            other => panic!("byte {at} of {len} flipped: expected InvalidPack, got {other:?}"),
        }
    }
    // Cut short, cut before the trailer, followed by more data, no pack.
    let cases: [(&str, Vec<u8>); 5] = [
        ("truncated", pack[..len / 2].to_vec()),
        ("without its trailer", pack[..len - 20].to_vec()),
        ("with a partial trailer", pack[..len - 3].to_vec()),
        ("not a pack", b"PACK but not really a pack at all".to_vec()),
        (
            "of another version",
            [&b"PACK\0\0\0\x04"[..], &pack[8..]].concat(),
        ),
    ];
    for (what, bytes) in cases {
        match refused(what, &bytes, &empty_dir, &empty) {
            IngestError::InvalidPack { .. } => {}
            other => panic!("a pack {what}: expected InvalidPack, got {other:?}"),
        }
    }
    match refused("no data", b"", &empty_dir, &empty) {
        IngestError::InvalidPack { .. } => {}
        other => panic!("no data: expected InvalidPack, got {other:?}"),
    }
    // One byte over the limit is too large; exactly the limit is fine.
    let limits = IngestLimits {
        max_pack_bytes: len as u64 - 1,
        ..IngestLimits::default()
    };
    match refused_with("one byte too large", &pack, &empty_dir, &empty, limits) {
        IngestError::TooLarge { limit } => assert_eq!(limit, len as u64 - 1),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // An object over the limit (src/big.txt is about 17 KiB).
    let limits = IngestLimits {
        max_object_bytes: 10_000,
        ..IngestLimits::default()
    };
    match refused_with("an object too large", &pack, &empty_dir, &empty, limits) {
        IngestError::InvalidPack { message } => assert!(message.contains("limit"), "{message}"),
        other => panic!("expected InvalidPack, got {other:?}"),
    }
    // More objects than allowed, counted from the pack's header.
    let count = u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]]);
    let limits = IngestLimits {
        max_objects: count - 1,
        ..IngestLimits::default()
    };
    match refused_with("too many objects", &pack, &empty_dir, &empty, limits) {
        IngestError::InvalidPack { message } => {
            assert!(
                message.contains(&format!("holds {count} objects")),
                "{message}"
            )
        }
        other => panic!("expected InvalidPack, got {other:?}"),
    }
    let limits = IngestLimits {
        max_pack_bytes: len as u64,
        max_objects: count,
        ..IngestLimits::default()
    };
    let staging = staging_in(dir.path());
    ingest(&pack[..], &staging, &empty, limits)
        .expect("a pack at the limit")
        .expect("objects");
}

#[test]
fn data_after_the_pack_is_refused_leaving_no_pack() {
    let repo = Repo::new(HISTORY);
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = dir.path().join("empty");
    let empty = empty_objects(&empty_dir);
    let pack = pack_objects(
        &repo,
        &["--revs", "--all", "--stdout", "--delta-base-offset"],
        b"",
    );
    let followed = [&pack[..], b"x"].concat();
    match refused("followed by more data", &followed, &empty_dir, &empty) {
        IngestError::InvalidPack { .. } => {}
        other => panic!("expected InvalidPack, got {other:?}"),
    }
}

#[test]
fn empty_pack_is_no_pack() {
    // What git sends when a push has no objects: a header with a count of
    // zero and its checksum. git index-pack accepts it too.
    let mut pack = b"PACK\0\0\0\x02\0\0\0\0".to_vec();
    let trailer = sha1(&pack);
    pack.extend_from_slice(&trailer);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x.pack"), &pack).expect("write the pack");
    git_in(dir.path(), &["index-pack", "-o", "x.idx", "x.pack"], b"");
    let existing = empty_objects(&dir.path().join("empty"));
    let staging = staging_in(dir.path());
    let result = ingest(&pack[..], &staging, &existing, IngestLimits::default())
        .expect("an empty pack is fine");
    assert!(result.is_none());
    assert_eq!(listing(&staging), Vec::<String>::new());
}

// Packs written entry by entry.

fn sha1(bytes: &[u8]) -> [u8; 20] {
    let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
    hasher.update(bytes);
    let id = hasher.try_finalize().expect("sha1");
    id.as_slice().try_into().expect("20 bytes")
}

fn blob_id(data: &[u8]) -> ObjectId {
    gix_object::compute_hash(gix_hash::Kind::Sha1, gix_object::Kind::Blob, data)
        .expect("hash a blob")
}

enum Base {
    /// An earlier entry of the pack, by position.
    Offset(usize),
    /// An object, by id.
    Id(ObjectId),
}

enum Written {
    Blob(Vec<u8>),
    Delta(Base, Vec<u8>),
}

fn varint_size(out: &mut Vec<u8>, mut size: usize) {
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A delta making `base` followed by `added` (under 128 bytes) out of
/// `base` (at most 16 MiB): one copy, one insert.
fn append_delta(base_len: usize, added: &[u8]) -> Vec<u8> {
    assert!(base_len > 0 && base_len < 1 << 24 && !added.is_empty() && added.len() < 128);
    let mut delta = Vec::new();
    varint_size(&mut delta, base_len);
    varint_size(&mut delta, base_len + added.len());
    // Copy from offset 0 (no offset bytes), size in up to three bytes.
    let mut command = 0x80u8;
    let mut size_bytes = Vec::new();
    for (bit, byte) in (base_len as u32).to_le_bytes()[..3].iter().enumerate() {
        if *byte != 0 {
            command |= 0x10 << bit;
            size_bytes.push(*byte);
        }
    }
    delta.push(command);
    delta.extend_from_slice(&size_bytes);
    delta.push(added.len() as u8);
    delta.extend_from_slice(added);
    delta
}

/// A version-2 pack of `entries`, in order.
fn write_pack(entries: &[Written]) -> Vec<u8> {
    let mut pack = b"PACK\0\0\0\x02".to_vec();
    pack.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    let mut offsets = Vec::new();
    for entry in entries {
        let offset = pack.len();
        offsets.push(offset);
        let (kind, data) = match entry {
            Written::Blob(data) => (3u8, data),
            Written::Delta(Base::Offset(_), delta) => (OFS_DELTA, delta),
            Written::Delta(Base::Id(_), delta) => (REF_DELTA, delta),
        };
        let mut size = data.len();
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size != 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        match entry {
            Written::Delta(Base::Offset(base), _) => {
                // git's offset encoding: big-endian, each continued byte
                // one less.
                let mut distance = offset - offsets[*base];
                let mut encoded = vec![(distance & 0x7f) as u8];
                distance >>= 7;
                while distance != 0 {
                    distance -= 1;
                    encoded.push(0x80 | (distance & 0x7f) as u8);
                    distance >>= 7;
                }
                encoded.reverse();
                pack.extend_from_slice(&encoded);
            }
            Written::Delta(Base::Id(id), _) => pack.extend_from_slice(id.as_slice()),
            Written::Blob(_) => {}
        }
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("compress");
        pack.extend_from_slice(&encoder.finish().expect("compress"));
    }
    let trailer = sha1(&pack);
    pack.extend_from_slice(&trailer);
    pack
}

/// Deltas on one large blob holding more decoded bytes than the indexer
/// keeps for bases (32 MiB per thread, or 64 MiB in all, depending on the
/// version): a spine of offset deltas, each 10 MiB, eight deep, and on
/// every spine object a reference delta (a leaf). Offset deltas are
/// resolved before reference deltas, so each spine object is still needed
/// for its leaf after the whole spine below it: about 80 MiB of bases
/// are pending at the deepest point, and the indexer has to drop some and
/// decode them again from the pack. The leaves come first in the pack,
/// before their bases, and an offset delta on a leaf follows them.
#[test]
fn deep_delta_chains_of_large_blobs_index_like_git() {
    const SPINE: usize = 8;
    let root: Vec<u8> = (0..10 << 20)
        .map(|i: usize| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let extended = |base: &[u8], line: &str| [base, line.as_bytes()].concat();
    // spine[0] is the root; spine[i] = spine[i - 1] + a line.
    let mut spine = vec![root];
    for i in 1..=SPINE {
        let next = extended(&spine[i - 1], &format!("spine {i}\n"));
        spine.push(next);
    }
    let mut entries = Vec::new();
    let mut expected = BTreeSet::new();
    // Leaves: reference deltas on every spine object but the last.
    for (i, base) in spine.iter().enumerate().take(SPINE) {
        let line = format!("leaf {i}\n");
        entries.push(Written::Delta(
            Base::Id(blob_id(base)),
            append_delta(base.len(), line.as_bytes()),
        ));
        expected.insert(blob_id(&extended(base, &line)));
    }
    // An offset delta on the first leaf.
    let leaf = extended(&spine[0], "leaf 0\n");
    entries.push(Written::Delta(
        Base::Offset(0),
        append_delta(leaf.len(), b"on a leaf\n"),
    ));
    expected.insert(blob_id(&extended(&leaf, "on a leaf\n")));
    // The root, then the spine, each on the entry before it.
    entries.push(Written::Blob(spine[0].clone()));
    for i in 1..=SPINE {
        let before = entries.len() - 1;
        entries.push(Written::Delta(
            Base::Offset(before),
            append_delta(spine[i - 1].len(), format!("spine {i}\n").as_bytes()),
        ));
    }
    expected.extend(spine.iter().map(|data| blob_id(data)));

    let pack = write_pack(&entries);
    let git_entries = assert_indexed_like_git(&pack);
    let listed: BTreeSet<ObjectId> = git_entries.iter().map(|e| e.id).collect();
    assert_eq!(listed, expected);
}

/// A thin pack whose reference delta is on an object another reference
/// delta of the pack makes from an outside base: D1 = X + "one" (X in the
/// repository), D2 = D1 + "two". Also an offset delta on D2.
#[test]
fn thin_pack_with_chained_reference_deltas_is_completed_like_git_fix_thin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let x: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("outside line {i}\n").into_bytes())
        .collect();
    let mut one = x.clone();
    one.extend_from_slice(b"one\n");
    let mut two = one.clone();
    two.extend_from_slice(b"two\n");
    let mut three = two.clone();
    three.extend_from_slice(b"three\n");

    // The repository: a pack holding X only.
    let existing_dir = dir.path().join("objects");
    let existing_pack = write_pack(&[Written::Blob(x.clone())]);
    std::fs::create_dir_all(existing_dir.join("pack")).expect("create pack/");
    let name = format!("pack-{}", trailer_hex(&existing_pack));
    let pack_file = existing_dir.join("pack").join(format!("{name}.pack"));
    std::fs::write(&pack_file, &existing_pack).expect("write the pack");
    git_in(
        dir.path(),
        &["index-pack", pack_file.to_str().expect("utf-8")],
        b"",
    );
    for name in listing(&existing_dir.join("pack")) {
        // Only the pack and its index: the database lists both.
        if name.ends_with(".rev") {
            std::fs::remove_file(existing_dir.join("pack").join(name)).expect("remove");
        }
    }
    let existing = ObjectDb::open(&existing_dir).expect("open the objects");

    let thin = write_pack(&[
        Written::Delta(Base::Id(blob_id(&x)), append_delta(x.len(), b"one\n")),
        Written::Delta(Base::Id(blob_id(&one)), append_delta(one.len(), b"two\n")),
        Written::Delta(Base::Offset(1), append_delta(two.len(), b"three\n")),
    ]);
    assert_completed_like_git(&thin, &existing_dir, &existing);
}
