//! The only place where `unsafe` is allowed.
//!
//! Owns: raw ioctls on `/dev/net/tun`, `fork`, `pre_exec` hooks and the
//! per-thread `setns` dance, `lsetxattr`. Everything here is a thin, documented wrapper;
//! policy (which namespace, which name, when) lives in the callers.
//! Must not touch: topology, lab state, Rhai.
#![allow(unsafe_code)]

pub mod netns;
pub mod proc;
pub mod socket;
pub mod tap;
pub mod xattr;
