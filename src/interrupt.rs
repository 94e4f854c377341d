//! The process-wide "stop what you are doing" flag, set by SIGINT, SIGTERM
//! and SIGHUP, and polled by long operations (script progress, `exec`,
//! `sleep`) so that they end early and the lab is torn down.
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

static FLAG: AtomicBool = AtomicBool::new(false);
/// Set while a REPL waits for input: nothing polls the flag then, so a
/// termination signal must end the process itself.
static TERM_EXITS: AtomicBool = AtomicBool::new(false);

/// Makes SIGTERM and SIGHUP exit at once (after removing run directories;
/// the nodes die with the process). For interactive sessions.
pub fn exit_on_termination(on: bool) {
    TERM_EXITS.store(on, Ordering::Relaxed);
}
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// What a signal that ends the process at once does first; the lab layer
/// registers the removal of its run directories (this layer sits below
/// the lab and does not know it).
static BEFORE_FORCED_EXIT: OnceLock<fn()> = OnceLock::new();

/// Sets what to do before a termination signal ends the process without
/// unwinding (the first registration wins).
pub fn before_forced_exit(cleanup: fn()) {
    let _ = BEFORE_FORCED_EXIT.set(cleanup);
}

/// Whether an interrupt was requested.
pub fn requested() -> bool {
    FLAG.load(Ordering::Relaxed)
}

/// The signal that requested it, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Forgets a handled interrupt (the REPL goes on after one).
pub fn clear() {
    FLAG.store(false, Ordering::Relaxed);
    SIGNAL.store(0, Ordering::Relaxed);
}

pub fn request(sig: i32) {
    SIGNAL.store(sig, Ordering::Relaxed);
    FLAG.store(true, Ordering::Relaxed);
}

/// Installs the handlers on a dedicated thread. A second signal while
/// the first is being handled exits at once; node processes still die with
/// us (PDEATHSIG) and `clonet clean` removes the run directory.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("clonet-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig != SIGINT && TERM_EXITS.load(Ordering::Relaxed) {
                if let Some(cleanup) = BEFORE_FORCED_EXIT.get() {
                    cleanup();
                }
                std::process::exit(128 + sig);
            }
            if requested() {
                eprintln!("clonet: second signal, exiting now (run `clonet clean` if anything is left)");
                std::process::exit(128 + sig);
            }
            request(sig);
        }
    })?;
    Ok(())
}
