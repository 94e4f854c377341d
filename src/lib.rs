//! clonet: a lab engine for virtual networks of virtual machines, scripted
//! in Rhai, with its own userspace Ethernet switch. See `src/README.md` for
//! the map of the code.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod fuzzing;
pub mod gui;
pub mod host;
pub mod image;
pub mod import;
pub mod interrupt;
pub mod lab;
pub mod remote;
pub mod repl;
pub mod script;
pub mod switch;
pub mod sys;
pub mod testing;
pub mod vocab;

#[cfg(test)]
mod layering;
