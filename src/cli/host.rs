//! The subcommands that look after what clonet keeps on the host: guest
//! images in their cache (`image build`, `image ls`, `image gc`) and what
//! labs killed with SIGKILL left behind (`clean`).
//!
//! Owns: their console output. Must not touch: building images or
//! cleaning up (the library's `image` and `lab::rundir`), running labs.
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use colored::Colorize;

use clonet::lab::rundir;

use super::CliError;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build the busybox guest image (from Debian's busybox-static), unless
    /// the cached one is up to date.
    Build {
        /// Rebuild even if up to date.
        #[arg(long)]
        force: bool,
    },
    /// List cached images (guest images and container images), and files
    /// of the cache no image uses.
    Ls,
    /// Remove the files of the cache no image uses (left by interrupted
    /// builds, or layers of removed container images).
    Gc,
    /// Pull a container image into the cache: `registry/repo:tag` (or
    /// `@sha256:…`), `oci:DIR[:TAG]`, `docker-archive:FILE`,
    /// `oci-archive:FILE`. Nodes pull theirs on first use too.
    Pull { reference: String },
    /// Forget a container image (its layers go with `gc` once no other
    /// image uses them).
    Rm { reference: String },
}

/// `clonet image build|ls|gc`.
pub fn image(cmd: ImageCmd) -> Result<ExitCode, CliError> {
    let dir = clonet::image::cache_dir();
    match cmd {
        ImageCmd::Ls => {
            let images = clonet::image::list(&dir);
            if images.is_empty() {
                println!("no images in {} (build one with `clonet image build`)", dir.display());
            }
            for i in images {
                println!("{:<16} {:>6} MiB  {}  {}", i.name, i.bytes >> 20, i.fingerprint, i.path.display());
            }
            if let Some(k) = clonet::image::kvm::find(&dir) {
                let mib = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() >> 20);
                let parts = [&k.kernel, &k.initrd, &k.disk].map(|p| mib(p)).iter().sum::<u64>();
                println!("{:<16} {:>6} MiB  {}  {}", "kvm-busybox", parts, k.fingerprint, k.disk.display());
                println!("{:<16} {:>6}      kernel {}, initramfs {}", "", "", k.kernel.display(), k.initrd.display());
            }
            for i in clonet::image::oci::list() {
                let present = i.layers.iter().all(|l| l.is_dir());
                println!(
                    "{:<16} {:>6} MiB  {}  {} layer(s){}  {}",
                    "container",
                    i.bytes >> 20,
                    &i.id[7..19],
                    i.layers.len(),
                    if present { "" } else { " (some missing: pull again)" },
                    i.reference
                );
            }
            let unused = clonet::image::unused(&dir);
            if !unused.is_empty() {
                let total: u64 = unused.iter().map(|(_, b)| b).sum();
                println!("unused ({} KiB; `clonet image gc` removes them):", total >> 10);
                for (p, b) in unused {
                    println!("  {:>8} KiB  {}", b >> 10, p.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Gc => {
            let removed = clonet::image::gc(&dir).map_err(CliError::error)?;
            let total: u64 = removed.iter().map(|(_, b)| b).sum();
            for (p, _) in &removed {
                println!("removed {}", p.display());
            }
            println!("{} unused file(s), {} KiB freed", removed.len(), total >> 10);
            let layers = clonet::image::oci::gc();
            println!("unused container image layers: {} KiB freed", layers >> 10);
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Pull { reference } => {
            use clonet::image::oci::{self, ImageRef, Progress};
            let parsed: ImageRef = reference.parse().map_err(CliError::error)?;
            let parsed = parsed.absolute();
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(format!("pulling {parsed}"));
            let result = oci::pull(&parsed, &mut |p| match p {
                Progress::Layer { index, count, size, cached } => {
                    bar.set_length(count as u64);
                    bar.set_position(index as u64);
                    let what = if cached {
                        "cached".to_string()
                    } else {
                        size.map_or("unpacking".into(), |s| format!("{} KiB", s >> 10))
                    };
                    bar.set_message(format!("{parsed}: layer {} ({what})", index + 1));
                }
                Progress::Done => bar.set_position(bar.length().unwrap_or(0)),
            });
            bar.finish_and_clear();
            let image = result.map_err(CliError::error)?;
            println!(
                "{}: {} layer(s), {} MiB, id {}",
                image.reference,
                image.layers.len(),
                image.bytes >> 20,
                &image.id[7..19]
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Rm { reference } => {
            let parsed: clonet::image::oci::ImageRef = reference.parse().map_err(CliError::error)?;
            clonet::image::oci::remove(&parsed.absolute().to_string()).map_err(CliError::error)?;
            println!("removed {reference} (its unused layers go with `clonet image gc`)");
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Build { force } => {
            let recipe = clonet::image::default_recipe().map_err(CliError::error)?;
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(std::time::Duration::from_millis(100));
            let mut step = |s: &str| spinner.set_message(format!("{}: {s}", recipe.name));
            let result = clonet::image::build(&recipe, &dir, force, &mut step);
            spinner.finish_and_clear();
            let (info, built) = result.map_err(CliError::error)?;
            let what = |b| match b {
                clonet::image::Built::Fresh => "built",
                clonet::image::Built::UpToDate => "up to date",
            };
            println!("{} {}: {} ({} MiB)", info.name, what(built), info.path.display(), info.bytes >> 20);
            // The kvm image is made from it; a host without a kernel
            // package still gets its uml image.
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(std::time::Duration::from_millis(100));
            let mut step = |s: &str| spinner.set_message(format!("kvm-busybox: {s}"));
            let kvm = clonet::image::kvm::build(&dir, &info, force, &mut step);
            spinner.finish_and_clear();
            match kvm {
                Ok((k, built)) => {
                    println!("kvm-busybox {}: {} (kernel {})", what(built), k.disk.display(), k.kernel.display())
                }
                Err(e) => eprintln!("{}: no kvm image: {e}", "warning".yellow().bold()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `clonet clean`.
pub fn clean() -> Result<ExitCode, CliError> {
    let host = clonet::host::linux::LinuxHost::default();
    let r = rundir::clean(&rundir::base_dir(), &host).map_err(CliError::error)?;
    for lab in &r.removed {
        println!("removed lab {lab}");
    }
    if !r.killed.is_empty() {
        println!("killed processes {:?}", r.killed);
    }
    for m in &r.unmounted {
        println!("unmounted {m}");
    }
    for lab in &r.running {
        println!("left running lab {lab} alone");
    }
    for entry in &r.foreign {
        println!("left {entry} alone: not a directory of this user's");
    }
    if r.removed.is_empty() {
        println!("nothing to clean");
    }
    Ok(ExitCode::SUCCESS)
}
