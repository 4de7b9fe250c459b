//! Choosing the compute device at run time: one binary, `--device flex|wgpu|auto`.

use burn::tensor::{Device, DeviceKind, Tensor};
use serde::{Deserialize, Serialize};

/// A backend the user can pick.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A GPU through wgpu if one is found, else the flex CPU backend.
    #[default]
    Auto,
    /// burn-flex: pure-Rust CPU backend (SIMD, rayon).
    Flex,
    /// wgpu: Vulkan/Metal/DX12 GPU (or a software adapter such as lavapipe).
    Wgpu,
    /// burn-ndarray: deprecated CPU backend, only with the `ndarray` cargo feature.
    #[cfg(feature = "ndarray")]
    Ndarray,
}

/// A device together with a line for people saying what it is.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub device: Device,
    pub description: String,
}

/// The adapter name and whether it is a real GPU, or `None` if no wgpu adapter works.
/// Opening an adapter can panic inside wgpu when no driver is present; that is caught.
fn probe_wgpu() -> Option<(Device, String, bool)> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        let identity = device.as_dispatch().identity();
        let name = identity
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let gpu = identity.is_some_and(|i| i.physical.is_some());
        (device, name, gpu)
    });
    std::panic::set_hook(hook);
    probe.ok()
}

/// Resolves a choice to a device. `auto` takes a real GPU when wgpu finds one and otherwise
/// flex (a software adapter such as lavapipe is slower than flex, so auto skips it).
pub fn choose(choice: DeviceChoice) -> Result<Chosen, String> {
    match choice {
        DeviceChoice::Flex => Ok(Chosen {
            device: Device::flex(),
            description: "flex (CPU)".into(),
        }),
        DeviceChoice::Wgpu => match probe_wgpu() {
            Some((device, name, gpu)) => Ok(Chosen {
                device,
                description: format!(
                    "wgpu ({name}{})",
                    if gpu { "" } else { ", software adapter" }
                ),
            }),
            None => Err("--device wgpu: no wgpu adapter could be opened (no GPU driver; for a software Vulkan adapter install mesa-vulkan-drivers)".into()),
        },
        DeviceChoice::Auto => match probe_wgpu() {
            Some((device, name, true)) => Ok(Chosen {
                device,
                description: format!("wgpu ({name}) [auto: GPU found]"),
            }),
            Some((_, name, false)) => Ok(Chosen {
                device: Device::flex(),
                description: format!(
                    "flex (CPU) [auto: only a software adapter ({name}), no GPU]"
                ),
            }),
            None => Ok(Chosen {
                device: Device::flex(),
                description: "flex (CPU) [auto: no GPU adapter]".into(),
            }),
        },
        #[cfg(feature = "ndarray")]
        DeviceChoice::Ndarray => Ok(Chosen {
            device: Device::ndarray(),
            description: "ndarray (CPU, deprecated)".into(),
        }),
    }
}

/// The devices of `count` data-parallel replicas: the chosen device first, then wgpu's
/// discrete GPUs 1 to count − 1 (the chosen GPU being the first), each opened and checked; on
/// the CPU every replica is the same device (the plumbing runs, nothing is faster).
pub fn replicas(chosen: &Chosen, count: usize) -> Result<Vec<Device>, String> {
    let mut devices = vec![chosen.device.clone()];
    for i in 1..count {
        if is_cpu(&chosen.device) {
            devices.push(chosen.device.clone());
            continue;
        }
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(|| {
            let device = Device::wgpu(DeviceKind::DiscreteGpu(i));
            let _ = Tensor::<1>::zeros([1], &device).into_data();
            device
        });
        std::panic::set_hook(hook);
        devices.push(opened.map_err(|_| {
            format!(
                "replicas {count}: wgpu could not open discrete GPU {i} (this machine has fewer GPUs; lower replicas)"
            )
        })?);
    }
    Ok(devices)
}

/// Whether `device` computes on the CPU (flex, or the deprecated ndarray).
pub fn is_cpu(device: &Device) -> bool {
    let plain = device.clone().inner();
    #[cfg(feature = "ndarray")]
    if plain == Device::ndarray() {
        return true;
    }
    plain == Device::flex()
}

/// Examples per forward pass when the user names no batch: 128 on the CPU, where a small batch
/// keeps the convolutions' unfolded inputs in cache (on 2 cores the reference cnn certifies
/// 16% faster at 128 than at 1024, and PGD runs 24% faster than at 256), else `gpu`.
pub fn default_batch(device: &Device, gpu: usize) -> usize {
    if is_cpu(device) { 128 } else { gpu }
}

/// glibc's malloc serves allocations above its mmap threshold (128 KiB at first, raised only
/// by frees of mapped blocks) with fresh mappings, so every batch's activations were new,
/// zero-filled pages: 4.1 s of system time in one 23 s cnn training epoch on 10,000 images.
/// With the threshold at its 32 MiB maximum and freed memory kept for reuse, the same epoch
/// spends 1.2 s there and takes 19.4 s (flex, 2 cores). Same effect as
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824`.
/// Call it first thing in `main`, before any thread starts (the binary and `benches/layers.rs`
/// do).
pub fn keep_freed_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread
    // starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Keeps Mesa's Vulkan device-selection layer (`VK_LAYER_MESA_device_select`) from printing
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." four times whenever wgpu
/// looks for adapters on a machine with no desktop session (servers, containers, CI): the layer
/// tries to reach a Wayland display to learn which GPU the desktop uses. With no session
/// (`XDG_RUNTIME_DIR` and `WAYLAND_DISPLAY` unset) and none of the layer's own settings given
/// (`NODEVICE_SELECT`, `MESA_VK_DEVICE_SELECT[_FORCE_DEFAULT_DEVICE]`, `DRI_PRIME`), it is
/// switched off with `NODEVICE_SELECT=1`; wgpu still lists every adapter and Rampart picks
/// among them itself.
///
/// # Safety
///
/// It sets an environment variable, so no other thread may be running: call it first thing in
/// `main`.
pub unsafe fn quiet_headless_vulkan() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let headless = !set("XDG_RUNTIME_DIR") && !set("WAYLAND_DISPLAY");
    let chosen = [
        "NODEVICE_SELECT",
        "MESA_VK_DEVICE_SELECT",
        "MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE",
        "DRI_PRIME",
    ]
    .iter()
    .any(|name| set(name));
    if headless && !chosen {
        // SAFETY: the caller guarantees that no other thread is running.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// The device named by environment variable `var` (`flex`, `wgpu` or `auto`; unset or anything
/// else: flex). For benchmarks: `RAMPART_BENCH_DEVICE=wgpu cargo bench`.
pub fn from_env(var: &str) -> Result<Chosen, String> {
    let choice = match std::env::var(var).as_deref() {
        Ok("wgpu") => DeviceChoice::Wgpu,
        Ok("auto") => DeviceChoice::Auto,
        _ => DeviceChoice::Flex,
    };
    choose(choice).map_err(|e| format!("{var}: {e}"))
}
