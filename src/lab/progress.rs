//! A spinner on the terminal while a big lab is being built or torn down.
//!
//! Scripts build labs one `node()`/`link()` at a time, so the total is not
//! known in advance: the line counts what exists so far. It appears once a
//! lab passes `SHOW_FROM_NODES` nodes, is cleared by the first command that
//! is not building (an `exec`, a `ping`…), and never draws when stderr is
//! not a terminal (indicatif's stderr target stays hidden then).
use indicatif::ProgressBar;

/// Labs up to this size build too fast to need a progress line.
pub const SHOW_FROM_NODES: usize = 20;

/// The line on screen, if any, so that script output can step around it.
static SHOWN: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

/// Runs `f` (which prints) with the progress line, if any, out of the way.
pub fn print_around<R>(f: impl FnOnce() -> R) -> R {
    let shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match shown {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

fn shown_bar(slot: &mut Option<ProgressBar>) -> &ProgressBar {
    slot.get_or_insert_with(|| {
        let bar = ProgressBar::new_spinner();
        *SHOWN.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        bar
    })
}

#[derive(Default)]
pub struct BuildProgress {
    bar: Option<ProgressBar>,
}

impl BuildProgress {
    /// Says how far the build is (shown only for labs past the threshold).
    pub fn building(&mut self, nodes: usize, links: usize) {
        if self.bar.is_none() && nodes <= SHOW_FROM_NODES {
            return;
        }
        let bar = shown_bar(&mut self.bar);
        bar.set_message(format!("building the lab: {nodes} nodes, {links} links"));
        bar.tick();
    }

    /// Shows `what` while a long step runs (tearing down a big lab).
    pub fn step(&mut self, nodes: usize, what: String) {
        if nodes > SHOW_FROM_NODES {
            let bar = shown_bar(&mut self.bar);
            bar.set_message(what);
            bar.tick();
        }
    }

    pub fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            SHOWN.lock().unwrap_or_else(|p| p.into_inner()).take();
            bar.finish_and_clear();
        }
    }
}
