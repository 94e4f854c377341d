//! The engine's limit on open files.
//!
//! A lab holds several fds per node (its network namespace, an rtnetlink
//! socket, pidfds, a TAP per interface): a 1000-node ring needs about six
//! thousand, far above the soft limit of 1024 most shells start with, and
//! past it every new node or link would fail with EMFILE. The engine raises
//! its soft limit to the hard one at start, and the helpers that start
//! node processes put the original back, so programs in nodes see the
//! limit the user gave clonet.
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Where the soft limit clonet was started with is kept for the helpers.
const ORIGINAL_SOFT: &str = "CLONET_NOFILE_SOFT";

/// Raises the soft open-file limit to the hard limit. Call at the start of
/// `main`, before any thread exists (it sets an environment variable).
pub fn raise_open_files() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    if soft >= hard {
        return;
    }
    if std::env::var_os(ORIGINAL_SOFT).is_none() {
        std::env::set_var(ORIGINAL_SOFT, soft.to_string());
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// In a helper that starts node processes (`__ns-init`, `__ns-enter`):
/// puts back the soft limit clonet was started with. Call at the start of
/// `main`, before any thread exists.
pub fn restore_open_files() {
    let original = std::env::var(ORIGINAL_SOFT).ok().and_then(|s| s.parse::<u64>().ok());
    std::env::remove_var(ORIGINAL_SOFT);
    let (Some(original), Ok((_, hard))) = (original, getrlimit(Resource::RLIMIT_NOFILE)) else { return };
    let _ = setrlimit(Resource::RLIMIT_NOFILE, original.min(hard), hard);
}
