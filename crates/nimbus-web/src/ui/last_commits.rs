//! The last commit of every entry of a directory, for tree listings,
//! computed off the request path and kept in memory.
//!
//! Finding when each file last changed walks history
//! (`nimbus_git::last_commit`), which on a large repository takes far
//! longer than a page may. So a listing asks [`LastCommitCache::lookup`]:
//! a cached answer is shown at once; otherwise one background computation
//! starts (never two for the same key) and the page that started it waits
//! at most [`WAIT`] for it, then renders without the column (a later view
//! shows it). Views while it runs do not wait: a long walk (a file
//! untouched since the first commit of a large history) costs each of
//! them nothing.
//!
//! Keys are (repository, commit id, directory). A commit id names its whole
//! history, so an answer never goes stale: a push moves a branch to a new
//! commit, which is a new key, and the old answers age out of the LRU.
//! That is how ref updates invalidate this cache. It is bounded by the
//! total number of entries held, not only by keys, since one directory may
//! have up to `browse::MAX_TREE_ENTRIES` entries.

use gix_hash::ObjectId;
use lru::LruCache;
use nimbus_git::browse::BrowseError;
use nimbus_git::last_commit::{self, LastCommitLimits, LastCommits};
use nimbus_git::objects::{Objects, READS_PER_MAPPING};
use nimbus_git::service::GitService;
use nimbus_types::{RepoId, Repository};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// How long the page that starts a computation waits for it.
pub const WAIT: Duration = Duration::from_millis(50);
/// The most directory entries held across all cached answers.
pub const MAX_CACHED_ENTRIES: usize = 500_000;

type Key = (RepoId, ObjectId, Vec<u8>);

/// What [`LastCommitCache::start`] found.
enum Start {
    Cached(Arc<LastCommits>),
    Running,
    /// Started now; signalled when done.
    Started(Arc<Notify>),
}

#[derive(Default)]
struct State {
    done: Option<LruCache<Key, Arc<LastCommits>>>,
    /// Entries held in `done`.
    held: usize,
    running: HashMap<Key, Arc<Notify>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct LastCommitCache {
    state: Mutex<State>,
}

impl std::fmt::Debug for LastCommitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("LastCommitCache")
            .field("held", &state.held)
            .field("running", &state.running.len())
            .finish()
    }
}

impl LastCommitCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every
        // update is a single insert or remove), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answer for `dir` (`b""` is the root) at `commit` if it is
    /// cached or becomes ready within [`WAIT`]; otherwise `None`, and it is
    /// being computed in the background.
    pub async fn lookup(
        self: &Arc<Self>,
        git: &Arc<GitService>,
        repo: &Repository,
        commit: ObjectId,
        dir: &[u8],
    ) -> Option<Arc<LastCommits>> {
        let key: Key = (repo.id, commit, dir.to_vec());
        let notify = match self.start(git, repo, &key) {
            Start::Cached(found) => return Some(found),
            Start::Running => return None,
            Start::Started(notify) => notify,
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The computation may have finished between `start` and `enable`.
        if let Some(found) = self.cached(&key) {
            return Some(found);
        }
        let _ = tokio::time::timeout(WAIT, notified).await;
        self.cached(&key)
    }

    /// Start computing `dir` at `commit` unless it is cached or running:
    /// after a push, so the first view of the new commit finds it ready.
    pub fn warm(
        self: &Arc<Self>,
        git: &Arc<GitService>,
        repo: &Repository,
        commit: ObjectId,
        dir: &[u8],
    ) {
        let _ = self.start(git, repo, &(repo.id, commit, dir.to_vec()));
    }

    /// The cached answer, or start computing it unless that is already
    /// running.
    fn start(self: &Arc<Self>, git: &Arc<GitService>, repo: &Repository, key: &Key) -> Start {
        let mut state = self.lock();
        if let Some(found) = state.done.as_mut().and_then(|done| done.get(key)) {
            return Start::Cached(found.clone());
        }
        if state.running.contains_key(key) {
            return Start::Running;
        }
        let notify = Arc::new(Notify::new());
        state.running.insert(key.clone(), notify.clone());
        tokio::spawn(compute(
            self.clone(),
            git.clone(),
            repo.clone(),
            key.clone(),
        ));
        Start::Started(notify)
    }

    fn cached(&self, key: &Key) -> Option<Arc<LastCommits>> {
        self.lock()
            .done
            .as_mut()
            .and_then(|done| done.get(key))
            .cloned()
    }

    fn finish(&self, key: Key, answer: Option<LastCommits>) {
        let mut state = self.lock();
        if let Some(answer) = answer {
            let size = answer.entries.len().max(1);
            state.held += size;
            let done = state.done.get_or_insert_with(LruCache::unbounded);
            if let Some(replaced) = done.put(key.clone(), Arc::new(answer)) {
                state.held -= replaced.entries.len().max(1);
            }
            while state.held > MAX_CACHED_ENTRIES {
                let Some((_, evicted)) = state.done.as_mut().and_then(LruCache::pop_lru) else {
                    break;
                };
                state.held -= evicted.entries.len().max(1);
            }
        }
        if let Some(notify) = state.running.remove(&key) {
            notify.notify_waiters();
        }
    }
}

/// Compute one answer on a blocking thread and store it; failures are
/// logged and not cached (the next view tries again).
async fn compute(cache: Arc<LastCommitCache>, git: Arc<GitService>, repo: Repository, key: Key) {
    let (_, commit, dir) = key.clone();
    let answer = match git.snapshot(&repo).await {
        Ok(snapshot) => {
            let work = tokio::task::spawn_blocking(move || {
                // A walk of a large history reads most of its pack: through
                // mappings of its own, renewed as it goes, so that the pages
                // it has read do not all stay resident.
                let mut objects = Objects::remapping(snapshot.db, READS_PER_MAPPING);
                last_commit::last_commits(&mut objects, commit, &dir, &LastCommitLimits::default())
            })
            .await;
            match work {
                Ok(Ok(answer)) => answer,
                Ok(Err(err)) => {
                    log_failure(&repo, &err);
                    None
                }
                Err(err) => {
                    tracing::warn!(repo = %repo.name, error = %err, "computing last commits panicked");
                    None
                }
            }
        }
        Err(err) => {
            tracing::warn!(repo = %repo.name, error = %err, "computing last commits: no snapshot");
            None
        }
    };
    cache.finish(key, answer);
}

fn log_failure(repo: &Repository, err: &BrowseError) {
    tracing::warn!(repo = %repo.name, error = %err, "computing last commits failed");
}
