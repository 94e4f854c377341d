//! [`LinuxHost`], the real [`NodeHost`]: starts nodes of every kind,
//! resolves what they boot from (keeping clonet's images once found),
//! releases a lab's storage, and moves disks in and out of saved labs.
//!
//! Owns: the image cache and the choice of node implementation. Must not
//! touch: the topology model, `unsafe` code.
use std::sync::{Arc, Mutex};

use super::ns::start_ns;
use super::ns_root::release_storage;
use super::syscall::{LinuxSyscall, Syscall};
use super::{BootMedia, HostError, KvmBoot, NodeHost, NodeSpec, RunningNode};

/// The real host: Linux namespaces. Its clones share what they found
/// (clonet's images), so a process that runs many labs checks them once.
#[derive(Clone)]
pub struct LinuxHost {
    images: ImageCache,
    sys: Arc<dyn Syscall>,
}

impl Default for LinuxHost {
    fn default() -> LinuxHost {
        LinuxHost { images: ImageCache::default(), sys: Arc::new(LinuxSyscall) }
    }
}

impl NodeHost for LinuxHost {
    fn make_room_for_interfaces(&self, count: usize) {
        super::raise_neighbour_limits(count);
    }

    fn release(&self, run_dir: &std::path::Path) {
        release_storage(&*self.sys, run_dir);
        // Control groups of ns nodes with limits live outside it too.
        super::cgroup::remove_recorded(run_dir);
        // Plug sockets live where the user put them (after a SIGKILL,
        // their list in the run directory says which are clonet's).
        super::plug::clean_made(run_dir);
    }

    fn disk_at_rest(
        &self,
        kind: crate::vocab::NodeKind,
        run_dir: &std::path::Path,
        node: &str,
    ) -> Option<std::path::PathBuf> {
        Some(super::disks::at_rest(kind, run_dir, node)).filter(|p| p.exists())
    }

    fn export_disk(
        &self,
        kind: crate::vocab::NodeKind,
        layer: &std::path::Path,
        dest: &std::path::Path,
        node: &str,
    ) -> Result<String, HostError> {
        super::disks::export(kind, layer, dest, node)
    }

    fn import_disk(
        &self,
        kind: crate::vocab::NodeKind,
        saved: &std::path::Path,
        run_dir: &std::path::Path,
        node: &str,
    ) -> Result<std::path::PathBuf, HostError> {
        super::disks::import(&*self.sys, kind, saved, run_dir, node)
    }

    fn resolve_boot(
        &self,
        node: &str,
        kind: crate::vocab::NodeKind,
        options: &crate::vocab::NodeOptions,
    ) -> Result<BootMedia, HostError> {
        let fail = |why: String| HostError::start(node.to_string(), why);
        let no_image = |path: &std::path::Path| fail(format!("no image at {}", path.display()));
        match kind {
            crate::vocab::NodeKind::Ns => match &options.oci {
                None => Ok(BootMedia::Namespace),
                Some(text) => {
                    let reference: crate::image::oci::ImageRef = text.parse().map_err(|e| fail(format!("{e}")))?;
                    let reference = reference.absolute();
                    let image = match crate::image::oci::cached(&reference.to_string()) {
                        Some(i) => i,
                        None => {
                            eprintln!("clonet: pulling {reference} for {node}");
                            crate::image::oci::pull(&reference, &mut |_| {}).map_err(|e| fail(e.to_string()))?
                        }
                    };
                    Ok(BootMedia::Oci(Box::new(image)))
                }
            },
            crate::vocab::NodeKind::Host => Ok(BootMedia::HostIface),
            crate::vocab::NodeKind::Plug => Ok(BootMedia::Plug),
            crate::vocab::NodeKind::Vxlan => Ok(BootMedia::Vxlan),
            crate::vocab::NodeKind::Nat => match super::on_path("passt") {
                true => Ok(BootMedia::Nat),
                false => Err(fail("passt is missing: install Debian's passt package".into())),
            },
            crate::vocab::NodeKind::Uml => {
                let image = match &options.image {
                    Some(path) => path.clone(),
                    None => self.images.busybox().map(|i| i.path).map_err(|e| fail(e.to_string()))?,
                };
                if !image.is_file() {
                    return Err(no_image(&image));
                }
                Ok(BootMedia::Uml { image })
            }
            crate::vocab::NodeKind::Kvm => {
                if let Some(path) = options.image.as_ref().filter(|p| !p.is_file()) {
                    return Err(no_image(path));
                }
                let built = self.images.kvm().map_err(|e| fail(e.to_string()))?;
                let accel = match options.accel {
                    Some(chosen) => chosen,
                    None => {
                        let cache = crate::image::cache_dir().join(crate::image::ACCEL_CACHE);
                        super::kvm::choose_accel(&built.kernel, &built.initrd, &cache)
                    }
                };
                Ok(BootMedia::Kvm(KvmBoot {
                    kernel: built.kernel,
                    initrd: built.initrd,
                    disk: options.image.clone().unwrap_or(built.disk),
                    accel,
                }))
            }
        }
    }

    fn start_node(&self, spec: &NodeSpec) -> Result<Box<dyn RunningNode>, HostError> {
        let wrong_media = || {
            HostError::start(spec.name.clone(), format!("{:?} is no boot medium of a {} node", spec.boot, spec.kind))
        };
        match spec.kind {
            crate::vocab::NodeKind::Ns => start_ns(&self.sys, spec),
            crate::vocab::NodeKind::Nat => super::nat::start(spec),
            crate::vocab::NodeKind::Host => super::host_iface::start(&self.sys, spec),
            crate::vocab::NodeKind::Plug => super::plug::start(spec),
            crate::vocab::NodeKind::Vxlan => super::vxlan::start(spec),
            crate::vocab::NodeKind::Uml => {
                let BootMedia::Uml { image } = &spec.boot else { return Err(wrong_media()) };
                super::uml::start(spec, image, spec.options.mem_mb.map_or(super::uml::DEFAULT_MEM_MB, |m| m.get()))
            }
            crate::vocab::NodeKind::Kvm => {
                let BootMedia::Kvm(boot) = &spec.boot else { return Err(wrong_media()) };
                super::kvm::start(
                    spec,
                    boot,
                    spec.options.mem_mb.map_or(super::kvm::DEFAULT_MEM_MB, |m| m.get()),
                    spec.options.cpus.map_or(1, |c| c.get()),
                )
            }
        }
    }
}

/// clonet's own images, built or checked on first use and then kept for
/// the life of the host value (and its clones). Checking the busybox
/// recipe reads and hashes megabytes (busybox, iperf3 and its libraries)
/// and runs `ldd`: done once, not for every node.
#[derive(Clone, Default)]
struct ImageCache {
    busybox: std::sync::Arc<Mutex<Option<crate::image::ImageInfo>>>,
    kvm: std::sync::Arc<Mutex<Option<crate::image::kvm::KvmImage>>>,
}

impl ImageCache {
    /// The busybox image (uml nodes boot it; kvm nodes' disk is made from it).
    fn busybox(&self) -> Result<crate::image::ImageInfo, crate::image::ImageError> {
        let mut found = self.busybox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(info) = &*found {
            return Ok(info.clone());
        }
        let recipe = crate::image::default_recipe()?;
        let info = crate::image::build(&recipe, &crate::image::cache_dir(), false, &mut |_| {})?.0;
        *found = Some(info.clone());
        Ok(info)
    }

    /// The kvm kernel, initramfs and disk.
    fn kvm(&self) -> Result<crate::image::kvm::KvmImage, crate::image::ImageError> {
        let mut found = self.kvm.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(images) = &*found {
            return Ok(images.clone());
        }
        let rootfs = self.busybox()?;
        let images = crate::image::kvm::build(&crate::image::cache_dir(), &rootfs, false, &mut |_| {})?.0;
        *found = Some(images.clone());
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{NodeKind, NodeOptions};

    #[test]
    fn boot_media_of_a_missing_image_say_the_node_did_not_start() {
        let host = LinuxHost::default();
        let options = NodeOptions { image: Some("/nonexistent.img".into()), ..NodeOptions::default() };
        for kind in [NodeKind::Uml, NodeKind::Kvm] {
            let err = host.resolve_boot("m", kind, &options).unwrap_err();
            assert_eq!(err.to_string(), "node \"m\" did not start: no image at /nonexistent.img", "{kind}");
        }
        assert_eq!(host.resolve_boot("n", NodeKind::Ns, &options).unwrap(), BootMedia::Namespace);
    }
}
